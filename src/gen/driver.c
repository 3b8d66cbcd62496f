/* Rank-0 driver (see driver.h). */
#include "config.h"
#include "gen/driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "common/util.h"
#include "gen/jbuf.h"
#include "gen/reader.h"
#include "gen/resume.h"
#include "gen/stop.h"
#include "gen/writer.h"

#define MAX_LINE ((size_t)64 << 20)

typedef struct seq_state {
    bool active;
    pb_record rec;
    uint64_t out_no;       /* output ordinal */
    int32_t *prompt;
    int n_prompt;
    int cached;            /* tokens in the KV cache */
    int generated;
    int32_t last;          /* last sampled token, fed at the next decode */
    pb_detok *detok;
    double t_admit;
} seq_state;

typedef struct driver {
    const pb_driver_opts *o;
    pb_pipe *pipe;
    const pb_tokenizer *tok;
    pb_reader *in;
    pb_writer *out;
    seq_state *slots;
    int n_slots;
    int max_batch_tokens;
    int reorder_cap;
    bool input_done;
    uint64_t record_no;    /* records seen (non-blank lines), for sharding */
    uint64_t out_next;     /* next output ordinal */
    pb_microbatch *mbs;    /* one per chunk */
    int *fifo;             /* chunk ids in flight, oldest first */
    int fifo_head, fifo_n;
    bool *in_flight;
    uint64_t tag;
    pb_jbuf line;
    pb_driver_stats *st;
    double t0, t_last_result, t_progress;
    double ttft_sum;
    uint64_t ttft_n;
    bool aborted;
    /* resume */
    char *state_path;      /* NULL: no state (stdout) */
    pb_resume_state state; /* fingerprints and the last durable point */
    uint64_t skip;         /* outputs already in the file: not generated again */
    uint64_t *line_of;     /* input line of output k at [k % line_ring] */
    uint64_t line_ring;
    /* stop signal */
    bool stopping;         /* no new prompts */
    bool dropping;         /* grace over: no new micro-batches */
    double deadline;
} driver;

/* ---- output records --------------------------------------------------- */

static pb_status put_line(driver *d, uint64_t out_no)
{
    PB_CHECK(pb_jbuf_status(&d->line));
    return pb_writer_put(d->out, out_no, d->line.data, d->line.len);
}

static pb_status write_error(driver *d, pb_record *r, uint64_t out_no)
{
    pb_jbuf *b = &d->line;
    pb_jbuf_reset(b);
    d->st->errors++;
    if (r->openai) {
        pb_jbuf_printf(b, "{\"id\": \"batch_req_%llu\", \"custom_id\": %s, \"response\": null, "
                       "\"error\": {\"code\": \"invalid_request\", \"line\": %llu, \"message\": ",
                       (unsigned long long)r->line, r->custom_id_json ? r->custom_id_json : "null",
                       (unsigned long long)r->line);
    } else {
        pb_jbuf_printf(b, "{\"id\": %s, \"error\": {\"line\": %llu, \"message\": ", r->id_json,
                       (unsigned long long)r->line);
    }
    pb_jbuf_str(b, r->error, strlen(r->error));
    pb_jbuf_puts(b, "}}");
    if (d->o->verbosity >= PB_LOG_VERBOSE)
        pb_log_verbose("line %llu: %s", (unsigned long long)r->line, r->error);
    PB_CHECK(put_line(d, out_no));
    if (d->o->abort_on_error) {
        d->aborted = true;
        return pb_error(PB_ERR_INPUT, "%s: line %llu: %s (--on-error=abort)",
                        pb_reader_name(d->in), (unsigned long long)r->line, r->error);
    }
    return PB_OK;
}

static pb_status write_result(driver *d, seq_state *s, const char *text, size_t len,
                              const char *finish)
{
    pb_jbuf *b = &d->line;
    pb_record *r = &s->rec;
    pb_jbuf_reset(b);
    if (r->openai) {
        pb_jbuf_printf(b, "{\"id\": \"batch_req_%llu\", \"custom_id\": %s, \"response\": "
                       "{\"status_code\": 200, \"request_id\": \"req_%llu\", \"body\": "
                       "{\"id\": \"cmpl-%llu\", \"object\": \"text_completion\", \"model\": ",
                       (unsigned long long)r->line, r->custom_id_json ? r->custom_id_json : "null",
                       (unsigned long long)r->line, (unsigned long long)r->line);
        const char *m = d->o->model_name ? d->o->model_name : "";
        pb_jbuf_str(b, m, strlen(m));
        pb_jbuf_puts(b, ", \"choices\": [{\"index\": 0, \"text\": ");
        pb_jbuf_str(b, text, len);
        pb_jbuf_printf(b, ", \"logprobs\": null, \"finish_reason\": \"%s\"}], \"usage\": "
                       "{\"prompt_tokens\": %d, \"completion_tokens\": %d, \"total_tokens\": %d}}}, "
                       "\"error\": null}", finish, s->n_prompt, s->generated,
                       s->n_prompt + s->generated);
    } else {
        pb_jbuf_printf(b, "{\"id\": %s, \"text\": ", r->id_json);
        pb_jbuf_str(b, text, len);
        pb_jbuf_printf(b, ", \"finish_reason\": \"%s\", \"prompt_tokens\": %d, \"completion_tokens\": %d}",
                       finish, s->n_prompt, s->generated);
    }
    d->st->records++;
    d->st->prompt_tokens += (uint64_t)s->n_prompt;
    d->st->completion_tokens += (uint64_t)s->generated;
    return put_line(d, s->out_no);
}

static void slot_release(seq_state *s)
{
    pb_record_clear(&s->rec);
    free(s->prompt);
    pb_detok_free(s->detok);
    memset(s, 0, sizeof *s);
}

/* ---- admission -------------------------------------------------------- */

/* Read records until one needs the model (returned in *rec, true) or the
 * input ends (false). Error records and zero-token requests are answered
 * here. */
static pb_status next_prompt(driver *d, seq_state *s, bool *got)
{
    *got = false;
    while (!d->input_done && !d->stopping) {
        /* bounded reorder buffer: read on only when the output can take it */
        if (d->out_next >= pb_writer_records(d->out) + (uint64_t)d->reorder_cap)
            return PB_OK;
        const char *line;
        size_t len;
        uint64_t line_no;
        bool too_long;
        PB_CHECK(pb_reader_next(d->in, &line, &len, &line_no, &too_long));
        if (!line) {
            d->input_done = true;
            if (d->out_next < d->skip)
                return pb_error(PB_ERR_USAGE, "--resume: the input has %llu records, but the "
                                "output already holds %llu: the input changed",
                                (unsigned long long)d->out_next, (unsigned long long)d->skip);
            break;
        }
        if (!too_long && pb_line_is_blank(line, len))
            continue;
        uint64_t k = d->record_no++;
        if (d->o->shard_count > 0 && k % (uint64_t)d->o->shard_count != (uint64_t)d->o->shard_index)
            continue;
        uint64_t out_no = d->out_next++;
        d->line_of[out_no % d->line_ring] = line_no;
        if (out_no < d->skip) {
            /* written by the interrupted run; its last one must be the same line */
            if (out_no + 1 == d->skip && line_no != d->state.input_line)
                return pb_error(PB_ERR_USAGE, "--resume: output record %llu was input line %llu, "
                                "but is line %llu now: the input or --shard changed",
                                (unsigned long long)d->skip, (unsigned long long)d->state.input_line,
                                (unsigned long long)line_no);
            continue;
        }
        pb_record rec;
        if (too_long) {
            memset(&rec, 0, sizeof rec);
            rec.line = line_no;
            char num[32];
            snprintf(num, sizeof num, "%llu", (unsigned long long)line_no);
            rec.id_json = pb_strdup(num);
            if (!rec.id_json)
                return pb_error(PB_ERR_NOMEM, "out of memory");
            PB_CHECK(pb_record_set_error(&rec, "line longer than %zu bytes", MAX_LINE));
        } else {
            pb_status st = pb_record_parse(line, len, line_no, d->o->base, &rec);
            if (st != PB_OK) {
                pb_record_clear(&rec);
                return st;
            }
        }
        if (rec.error) {
            pb_status st = write_error(d, &rec, out_no);
            pb_record_clear(&rec);
            PB_CHECK(st);
            continue;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        pb_status st = pb_tokenizer_encode(d->tok, rec.prompt, rec.prompt_len, true, &ids, &n);
        if (st != PB_OK) {
            if (st != PB_ERR_INPUT) {
                pb_record_clear(&rec);
                return st;
            }
            st = pb_record_set_error(&rec, "prompt: %s", pb_last_error());
        } else if (n == 0 && rec.gs.max_tokens > 0) {
            st = pb_record_set_error(&rec, "prompt has no tokens (empty prompt and no BOS token)");
        } else if (n >= (size_t)d->o->context && rec.gs.max_tokens > 0) {
            st = pb_record_set_error(&rec, "prompt has %zu tokens; the context is %d tokens, "
                                     "which leaves no room to generate", n, d->o->context);
        }
        if (st != PB_OK || rec.error) {
            free(ids);
            if (st == PB_OK)
                st = write_error(d, &rec, out_no);
            pb_record_clear(&rec);
            PB_CHECK(st);
            continue;
        }
        memset(s, 0, sizeof *s);
        s->rec = rec;
        s->out_no = out_no;
        s->prompt = ids;
        s->n_prompt = (int)n;
        if (rec.gs.max_tokens == 0) {
            st = write_result(d, s, "", 0, "length");
            slot_release(s);
            PB_CHECK(st);
            continue;
        }
        st = pb_detok_create(d->tok, ids, n, &s->detok);
        if (st != PB_OK) {
            slot_release(s);
            return st;
        }
        s->active = true;
        s->t_admit = pb_now();
        *got = true;
        return PB_OK;
    }
    return PB_OK;
}

/* ---- micro-batches ---------------------------------------------------- */

static pb_mb_seq seq_desc(const seq_state *s, int slot, int pos, int n, uint32_t flags)
{
    pb_mb_seq q;
    memset(&q, 0, sizeof q);
    q.slot = slot;
    q.pos = pos;
    q.n_tokens = n;
    q.flags = flags;
    q.sample = s->rec.gs.sample;
    q.key.seed = s->rec.gs.seed;
    /* a record with its own seed draws the same whatever its position */
    q.key.record = s->rec.gs.own_seed ? 0 : s->rec.line;
    q.key.step = (uint64_t)s->generated;
    return q;
}

/* Build chunk c's next micro-batch: decode steps first, then prefill (new
 * prompts admitted into free slots) within the token budget. */
static pb_status build(driver *d, int c, pb_microbatch *mb)
{
    pb_mb_clear(mb);
    if (d->dropping)
        return PB_OK;
    int C = d->o->chunks, budget = d->max_batch_tokens;
    for (int slot = c; slot < d->n_slots; slot += C) {
        seq_state *s = &d->slots[slot];
        if (!s->active || s->cached < s->n_prompt)
            continue;
        pb_mb_seq q = seq_desc(s, slot, s->cached, 1, PB_SEQ_SAMPLE);
        PB_CHECK(pb_mb_add(mb, &q, &s->last));
        budget--;
    }
    for (int slot = c; slot < d->n_slots && budget > 0; slot += C) {
        seq_state *s = &d->slots[slot];
        if (!s->active) {
            bool got;
            PB_CHECK(next_prompt(d, s, &got));
            if (!got)
                continue;
        }
        if (s->cached >= s->n_prompt)
            continue;
        int n = s->n_prompt - s->cached;
        if (n > budget)
            n = budget;
        uint32_t flags = (s->cached == 0 ? PB_SEQ_NEW : 0) |
                         (s->cached + n == s->n_prompt ? PB_SEQ_SAMPLE : 0);
        pb_mb_seq q = seq_desc(s, slot, s->cached, n, flags);
        PB_CHECK(pb_mb_add(mb, &q, s->prompt + s->cached));
        budget -= n;
    }
    return PB_OK;
}

/* ---- results ---------------------------------------------------------- */

static bool is_eos(const driver *d, int32_t t)
{
    for (int i = 0; i < d->o->n_eos; i++)
        if (d->o->eos_ids[i] == t)
            return true;
    return false;
}

static pb_status finish(driver *d, seq_state *s, const char *reason, bool cut, size_t cut_at)
{
    size_t len;
    const char *text;
    if (!cut) {
        const char *nt;
        size_t nl;
        PB_CHECK(pb_detok_finish(s->detok, &nt, &nl));
        text = pb_detok_text(s->detok, &len);
        /* the rest released at the end may complete a stop string */
        size_t off;
        int which;
        if (s->rec.gs.n_stops && nl &&
            pb_detok_find_stop(s->detok, (const char *const *)s->rec.gs.stops, s->rec.gs.n_stops, nl,
                               &off, &which)) {
            len = off;
            reason = "stop";
        }
    } else {
        text = pb_detok_text(s->detok, &len);
        len = cut_at;
    }
    pb_status st = write_result(d, s, text, len, reason);
    slot_release(s);
    return st;
}

static pb_status on_token(driver *d, seq_state *s, int32_t t)
{
    if (s->generated == 0) {
        double now = pb_now(), dt = now - s->t_admit;
        d->ttft_sum += dt;
        d->ttft_n++;
        if (dt > d->st->ttft_max)
            d->st->ttft_max = dt;
        if (d->st->first_token_seconds == 0)
            d->st->first_token_seconds = now - d->t0;
    }
    s->generated++;
    s->last = t;
    if (is_eos(d, t))
        return finish(d, s, "stop", false, 0);
    const char *nt;
    size_t nl;
    PB_CHECK(pb_detok_push(s->detok, t, &nt, &nl));
    size_t off;
    int which;
    if (s->rec.gs.n_stops && nl &&
        pb_detok_find_stop(s->detok, (const char *const *)s->rec.gs.stops, s->rec.gs.n_stops, nl,
                           &off, &which))
        return finish(d, s, "stop", true, off);
    if (s->generated >= s->rec.gs.max_tokens || s->n_prompt + s->generated >= d->o->context)
        return finish(d, s, "length", false, 0);
    return PB_OK;
}

static pb_status process(driver *d, const pb_microbatch *mb, const pb_mb_result *res)
{
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        seq_state *s = &d->slots[q->slot];
        if (!s->active || s->cached != q->pos)
            return pb_error(PB_ERR_INTERNAL, "driver: result for slot %d out of step", (int)q->slot);
        s->cached += q->n_tokens;
        if (q->flags & PB_SEQ_SAMPLE) {
            if (res->tokens[i] < 0)
                return pb_error(PB_ERR_INTERNAL, "driver: no token sampled for slot %d", (int)q->slot);
            PB_CHECK(on_token(d, s, res->tokens[i]));
        }
    }
    return PB_OK;
}

/* ---- progress --------------------------------------------------------- */

static void progress(driver *d, bool final)
{
    if (d->o->verbosity < 1)
        return;
    double now = pb_now(), el = now - d->t0;
    double every = d->o->progress_tty ? 0.5 : 5.0;
    if (!final && now - d->t_progress < every)
        return;
    d->t_progress = now;
    double tps = el > 0 ? (double)d->st->completion_tokens / el : 0;
    char eta[64] = "";
    int64_t size = pb_reader_size(d->in);
    uint64_t off = pb_reader_offset(d->in);
    if (!final && size > 0 && off > 0) {
        double frac = (double)off / (double)size;
        double left = frac > 0 ? el * (1 - frac) / frac : 0;
        snprintf(eta, sizeof eta, ", %.0f%% of input, ETA %.0fs", frac * 100, left);
    }
    if (d->o->progress_tty) {
        fprintf(stderr, "\r\033[Kpippy-batch: %llu records (%llu errors), %.1f tokens/s%s",
                (unsigned long long)d->st->records, (unsigned long long)d->st->errors, tps, eta);
        if (final)
            fputc('\n', stderr);
    } else if (!final) {
        fprintf(stderr, "pippy-batch: %llu records (%llu errors), %llu tokens, %.1f tokens/s%s\n",
                (unsigned long long)d->st->records, (unsigned long long)d->st->errors,
                (unsigned long long)d->st->completion_tokens, tps, eta);
    }
    fflush(stderr);
}

/* ---- main loop -------------------------------------------------------- */

static int in_flight_records(const driver *d)
{
    int n = 0;
    for (int i = 0; i < d->n_slots; i++)
        n += d->slots[i].active;
    return n;
}

/* After a stop signal: no new prompts at once; after the grace period no new
 * micro-batches either (what is in flight is dropped, the pipe drains). */
static void check_stop(driver *d)
{
    if (!d->stopping && pb_stop_requested()) {
        d->stopping = true;
        d->deadline = pb_now() + d->o->grace_seconds;
        pb_log_info("%s: stopping: no new prompts; finishing %d records in flight within %gs",
                    pb_stop_signal_name(), in_flight_records(d), d->o->grace_seconds);
    }
    if (d->stopping && !d->dropping && pb_now() >= d->deadline) {
        d->dropping = true;
        int n = in_flight_records(d);
        if (n)
            pb_log_info("grace period over: dropping %d records in flight", n);
    }
}

static pb_status submit_chunk(driver *d, int c, bool *submitted)
{
    *submitted = false;
    pb_microbatch *mb = &d->mbs[c];
    PB_CHECK(build(d, c, mb));
    if (mb->n_seqs == 0)
        return PB_OK;
    mb->tag = ++d->tag;
    PB_CHECK(pb_pipe_submit(d->pipe, mb));
    d->fifo[(d->fifo_head + d->fifo_n) % d->o->chunks] = c;
    d->fifo_n++;
    d->in_flight[c] = true;
    *submitted = true;
    return PB_OK;
}

static pb_status loop(driver *d)
{
    pb_mb_result res;
    PB_CHECK(pb_mb_result_init(&res, d->n_slots));
    pb_status st = PB_OK;
    int C = d->o->chunks;
    d->t_last_result = pb_now();
    for (;;) {
        check_stop(d);
        for (int c = 0; c < C; c++) {
            if (d->in_flight[c])
                continue;
            bool sub;
            PB_CHECK_GOTO(submit_chunk(d, c, &sub), st, out);
        }
        if (d->fifo_n == 0)
            break; /* nothing in flight and nothing to submit: input done */
        int c = d->fifo[d->fifo_head];
        PB_CHECK_GOTO(pb_pipe_wait(d->pipe, &res), st, out);
        d->fifo_head = (d->fifo_head + 1) % C;
        d->fifo_n--;
        d->in_flight[c] = false;
        d->st->micro_batches++;
        /* share this interval between prefill and decode by token count */
        double now = pb_now(), dt = now - d->t_last_result;
        d->t_last_result = now;
        const pb_microbatch *mb = &d->mbs[c];
        int decode = 0;
        for (int i = 0; i < mb->n_seqs; i++)
            if (mb->seqs[i].pos >= d->slots[mb->seqs[i].slot].n_prompt)
                decode++;
        double fdec = mb->n_tokens ? (double)decode / mb->n_tokens : 0;
        d->st->decode_seconds += dt * fdec;
        d->st->prefill_seconds += dt * (1 - fdec);
        PB_CHECK_GOTO(process(d, mb, &res), st, out);
        PB_CHECK_GOTO(pb_writer_tick(d->out), st, out);
        progress(d, false);
    }
out:
    pb_mb_result_release(&res);
    return st;
}

/* ---- output and resume state ------------------------------------------ */

static pb_status on_frame(void *ctx, uint64_t records, uint64_t bytes)
{
    driver *d = ctx;
    d->state.records = records;
    d->state.bytes = bytes;
    d->state.input_line = records ? d->line_of[(records - 1) % d->line_ring] : 0;
    return pb_resume_save(d->state_path, &d->state);
}

static void count_error_line(void *ctx, const char *line, size_t len)
{
    driver *d = ctx;
    cJSON *o = cJSON_ParseWithLength(line, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (e && !cJSON_IsNull(e))
        d->st->resumed_errors++;
    cJSON_Delete(o);
}

static pb_status same(const char *what, const char *path, const char *was, const char *now)
{
    if (strcmp(was, now) == 0)
        return PB_OK;
    return pb_error(PB_ERR_USAGE, "--resume: different %s than the interrupted run "
                    "(%s has \"%s\", now \"%s\"); rerun with the same %s, or remove %s and "
                    "its .partial to start again", what, path, was, now, what, path);
}

/* Open the output: fresh (OUT.partial must not exist) or, with --resume,
 * continued from OUT.partial.state. *done: --resume found OUT complete. */
static pb_status open_output(driver *d, const pb_writer_opts *wo, bool *done)
{
    const pb_driver_opts *o = d->o;
    *done = false;
    if (strcmp(o->out_path, "-") == 0) {
        if (o->resume)
            return pb_error(PB_ERR_USAGE, "--resume needs --out FILE (standard output cannot be resumed)");
        return pb_writer_open(o->out_path, wo, &d->out);
    }
    size_t n = strlen(o->out_path);
    PB_CHECK(pb_malloc(n + sizeof ".partial.state", &d->state_path));
    memcpy(d->state_path, o->out_path, n);
    memcpy(d->state_path + n, ".partial.state", sizeof ".partial.state");
    char *partial = NULL;
    pb_status st;
    PB_CHECK_GOTO(pb_malloc(n + sizeof ".partial", &partial), st, out);
    memcpy(partial, o->out_path, n);
    memcpy(partial + n, ".partial", sizeof ".partial");

    pb_resume_state now;
    memset(&now, 0, sizeof now);
    now.compressed = n >= 4 && strcmp(o->out_path + n - 4, ".zst") == 0;
    now.model = pb_strdup(o->model_fp ? o->model_fp : "");
    if (!now.model) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto out;
    }
    struct stat in_sb;
    if (strcmp(o->in_path, "-") == 0 && !o->resume) {
        now.input = pb_strdup("<stdin>");
    } else if (!o->resume && (stat(o->in_path, &in_sb) != 0 || !S_ISREG(in_sb.st_mode))) {
        /* a pipe or process substitution (--in <(zstdcat p.jsonl.zst)): read once,
         * never resumable, so it has no fingerprint; open errors come from the reader */
        char tag[PATH_MAX + 16];
        snprintf(tag, sizeof tag, "<stream %s>", o->in_path);
        now.input = pb_strdup(tag);
    } else {
        PB_CHECK_GOTO(pb_resume_input_fp(o->in_path, &now.input), st, out);
    }
    PB_CHECK_GOTO(pb_resume_settings_fp(o->base, o->context, o->shard_index, o->shard_count,
                                        o->abort_on_error, &now.settings), st, out);
    if (!now.input) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto out;
    }
    bool have_partial = pb_file_exists(partial);
    if (!o->resume) {
        if (have_partial) {
            st = pb_error(PB_ERR_USAGE, "%s exists: an interrupted run left it; continue it with "
                          "--resume, or remove it (and %s) to start again", partial, d->state_path);
            goto out;
        }
    } else {
        pb_resume_state was;
        bool have_state;
        PB_CHECK_GOTO(pb_resume_load(d->state_path, &was, &have_state), st, out);
        if (!have_state && have_partial) {
            st = pb_error(PB_ERR_USAGE, "--resume: %s has no state file %s (not written by "
                          "pippy-batch, or from an older build); remove it to start again",
                          partial, d->state_path);
            goto out;
        }
        if (!have_state && pb_file_exists(o->out_path)) {
            pb_log_info("--resume: %s is complete; nothing to do", o->out_path);
            *done = true;
            /* its error records still decide the exit status (3), as for the run that wrote it */
            st = pb_writer_scan(o->out_path, wo, count_error_line, d);
            goto out;
        }
        if (have_state) {
            st = same("model", d->state_path, was.model, now.model);
            if (st == PB_OK)
                st = same("input", d->state_path, was.input, now.input);
            if (st == PB_OK)
                st = same("settings", d->state_path, was.settings, now.settings);
            if (st == PB_OK && was.compressed != now.compressed)
                st = pb_error(PB_ERR_USAGE, "--resume: %s: compression differs", d->state_path);
            if (st == PB_OK && !have_partial && was.records > 0) {
                if (pb_file_exists(o->out_path)) {
                    /* stopped between the rename and removing the state */
                    pb_log_info("--resume: %s is complete; nothing to do", o->out_path);
                    if (unlink(d->state_path) == 0)
                        (void)pb_writer_sync_dir(d->state_path);
                    *done = true;
                    st = pb_writer_scan(o->out_path, wo, count_error_line, d);
                } else {
                    st = pb_error(PB_ERR_USAGE, "--resume: %s records %llu records, but %s is "
                                  "missing", d->state_path, (unsigned long long)was.records, partial);
                }
            }
            if (st == PB_OK && !*done && have_partial) {
                now.records = was.records;
                now.bytes = was.bytes;
                now.input_line = was.input_line;
                d->skip = was.records;
                st = pb_writer_resume(o->out_path, wo, was.records, was.bytes, count_error_line, d,
                                      &d->out);
                if (st == PB_OK) {
                    d->st->resumed_records = was.records;
                    pb_log_info("--resume: %s: %llu records done, continuing after input line %llu",
                                partial, (unsigned long long)was.records,
                                (unsigned long long)was.input_line);
                }
            }
            pb_resume_state_clear(&was);
            if (st != PB_OK || *done)
                goto out;
        }
    }
    d->state = now;
    memset(&now, 0, sizeof now);
    if (!d->out) {
        /* the state first: an OUT.partial never exists without one */
        PB_CHECK_GOTO(pb_resume_save(d->state_path, &d->state), st, out);
        PB_CHECK_GOTO(pb_writer_open(o->out_path, wo, &d->out), st, out);
    }
    pb_writer_set_frame_hook(d->out, on_frame, d);
    st = PB_OK;
out:
    pb_resume_state_clear(&now);
    free(partial);
    return st;
}

pb_status pb_driver_run(const pb_driver_opts *o, pb_pipe *pipe, const pb_tokenizer *tok,
                        pb_driver_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    driver dd, *d = &dd;
    memset(d, 0, sizeof *d);
    d->o = o;
    d->pipe = pipe;
    d->tok = tok;
    d->st = stats;
    d->t0 = pb_now();
    d->t_progress = d->t0;
    pb_jbuf_init(&d->line);
    const pb_mb_limits *lim = pb_pipe_limits(pipe);
    d->n_slots = o->batch_size;
    pb_status st = PB_OK;
    if (o->chunks < 1 || o->chunks > o->batch_size || o->batch_size > lim->n_slots ||
        o->context > lim->max_seq_len || o->chunks > pb_pipe_depth(pipe))
        return pb_error(PB_ERR_INTERNAL, "driver: batch %d, chunks %d do not fit the pipe (%d slots, depth %d)",
                        o->batch_size, o->chunks, lim->n_slots, pb_pipe_depth(pipe));
    d->max_batch_tokens = lim->max_batch_tokens;
    int per_chunk = (o->batch_size + o->chunks - 1) / o->chunks;
    if (d->max_batch_tokens < per_chunk)
        return pb_error(PB_ERR_INTERNAL, "driver: %d tokens per micro-batch cannot hold %d decode steps",
                        d->max_batch_tokens, per_chunk);
    PB_CHECK_GOTO(pb_calloc((size_t)d->n_slots, sizeof *d->slots, &d->slots), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)o->chunks, sizeof *d->mbs, &d->mbs), st, out);
    for (int c = 0; c < o->chunks; c++)
        PB_CHECK_GOTO(pb_mb_init(&d->mbs[c], per_chunk, d->max_batch_tokens), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)o->chunks, sizeof *d->fifo, &d->fifo), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)o->chunks, sizeof *d->in_flight, &d->in_flight), st, out);
    PB_CHECK_GOTO(pb_reader_open(o->in_path, MAX_LINE, &d->in), st, out);
    d->reorder_cap = o->batch_size + 64;
    d->line_ring = (uint64_t)d->reorder_cap + 2;
    PB_CHECK_GOTO(pb_calloc((size_t)d->line_ring, sizeof *d->line_of, &d->line_of), st, out);
    pb_writer_opts wo = {.frame_records = o->frame_records, .frame_seconds = o->frame_seconds,
                         .reorder_cap = d->reorder_cap, .zstd_level = 0, .zstd_workers = -1};
    bool done_before = false;
    PB_CHECK_GOTO(open_output(d, &wo, &done_before), st, out);
    if (done_before) {
        stats->already_complete = true;
        goto out;
    }
    pb_log_verbose("output %s%s (zstd workers: %d)", o->out_path,
                   pb_writer_compressed(d->out) ? ", zstd frames" : "", pb_writer_workers(d->out));

    st = loop(d);
    bool interrupted = false;
    if (st == PB_OK && d->stopping && (!d->input_done || in_flight_records(d) > 0))
        interrupted = true;
    if (st == PB_OK && !interrupted &&
        (uint64_t)(stats->records + stats->errors) + d->skip != d->out_next)
        st = pb_error(PB_ERR_INTERNAL, "driver: %llu outputs for %llu records",
                      (unsigned long long)(stats->records + stats->errors + d->skip),
                      (unsigned long long)d->out_next);
    {
        /* on failure or interruption keep what is in order in X.partial (a
         * durable point); never rename it */
        pb_status cst = pb_writer_close(d->out, st == PB_OK && !interrupted);
        d->out = NULL;
        if (st == PB_OK)
            st = cst;
    }
    if (st == PB_OK && !interrupted && d->state_path) {
        if (unlink(d->state_path) != 0 && errno != ENOENT)
            pb_log_warn("%s: %s", d->state_path, strerror(errno));
        else
            (void)pb_writer_sync_dir(d->state_path);
    }
    if (st == PB_OK && interrupted)
        st = pb_error(PB_ERR_INTERRUPTED, "interrupted by %s: %llu records of %s are complete; "
                      "continue with --resume", pb_stop_signal_name(),
                      (unsigned long long)d->state.records, o->out_path);
    stats->wall_seconds = pb_now() - d->t0;
    stats->ttft_mean = d->ttft_n ? d->ttft_sum / (double)d->ttft_n : 0;
    (void)pb_pipe_stats_get(pipe, &stats->pipe);
    progress(d, true);
out:
    if (d->out)
        (void)pb_writer_close(d->out, false);
    pb_reader_close(d->in);
    if (d->slots)
        for (int i = 0; i < d->n_slots; i++)
            slot_release(&d->slots[i]);
    free(d->slots);
    if (d->mbs)
        for (int c = 0; c < o->chunks; c++)
            pb_mb_release(&d->mbs[c]);
    free(d->mbs);
    free(d->fifo);
    free(d->in_flight);
    pb_jbuf_free(&d->line);
    free(d->line_of);
    free(d->state_path);
    pb_resume_state_clear(&d->state);
    return st;
}

pb_status pb_driver_write_metrics(const char *path, const pb_driver_stats *s)
{
    pb_jbuf b;
    pb_jbuf_init(&b);
    double gen_tps = s->wall_seconds > 0 ? (double)s->completion_tokens / s->wall_seconds : 0;
    pb_jbuf_printf(&b, "{\"records\": %llu, \"errors\": %llu, \"prompt_tokens\": %llu, "
                   "\"completion_tokens\": %llu, \"wall_seconds\": %.6f, \"tokens_per_second\": %.3f, "
                   "\"prefill_tokens_per_second\": %.3f, \"decode_tokens_per_second\": %.3f, "
                   "\"time_to_first_token_mean\": %.6f, \"time_to_first_token_max\": %.6f, "
                   "\"first_token_seconds\": %.6f, \"micro_batches\": %llu, \"stages\": [",
                   (unsigned long long)s->records, (unsigned long long)s->errors,
                   (unsigned long long)s->prompt_tokens, (unsigned long long)s->completion_tokens,
                   s->wall_seconds, gen_tps,
                   s->prefill_seconds > 0 ? (double)s->prompt_tokens / s->prefill_seconds : 0,
                   s->decode_seconds > 0 ? (double)s->completion_tokens / s->decode_seconds : 0,
                   s->ttft_mean, s->ttft_max, s->first_token_seconds,
                   (unsigned long long)s->micro_batches);
    for (int i = 0; i < s->pipe.n_stages && i < PB_PIPE_MAX_STAGES; i++)
        pb_jbuf_printf(&b, "%s{\"stage\": %d, \"busy_seconds\": %.6f, \"busy_fraction\": %.4f}",
                       i ? ", " : "", i, s->pipe.busy_seconds[i],
                       s->wall_seconds > 0 ? s->pipe.busy_seconds[i] / s->wall_seconds : 0);
    pb_jbuf_puts(&b, "]}\n");
    pb_status st = pb_jbuf_status(&b);
    if (st == PB_OK) {
        FILE *f = fopen(path, "w");
        if (!f) {
            st = pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
        } else {
            if (fwrite(b.data, 1, b.len, f) != b.len)
                st = pb_error(PB_ERR_IO, "%s: write failed", path);
            if (fclose(f) != 0 && st == PB_OK)
                st = pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
        }
    }
    pb_jbuf_free(&b);
    return st;
}

/* The runner (see runner.h). */
#include "config.h"
#include "gen/runner.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat/chat.h"
#include "common/log.h"
#include "common/util.h"
#include "gen/jbuf.h"
#include "gen/reader.h"
#include "gen/resume.h"
#include "gen/stop.h"
#include "gen/writer.h"

#define MAX_LINE ((size_t)64 << 20)

/* A completions line of several prompts (pb_record.n_prompts > 1): each prompt goes to the engine as a record
 * of its own, with the line's ordinal; their choices wait here for the last, then the line's one response is
 * written (or, where one prompt could not be generated for, an error record naming it: vLLM fails the
 * request). */
typedef struct joined {
    pb_record head;        /* the line's record, its prompts taken; its error, the first prompt's that failed */
    int left;              /* prompts not answered yet */
    int prompt_tokens, completion_tokens;
    uint64_t counted_prompt_tokens; /* the run's count: a prompt once a completion */
    pb_jbuf *part;         /* part[i]: prompt i's choices (record.h) */
} joined;

struct pb_runner {
    const pb_runner_opts *o;
    const pb_runner_model *m;
    pb_reader *in;
    pb_writer *out;
    pb_writer_opts wo;
    int reorder_cap;
    pb_jbuf line;
    pb_run_stats st;
    double t0, t_progress;
    /* input position */
    uint64_t record_no;    /* records seen (non-blank lines), for sharding */
    uint64_t out_next;     /* next output ordinal */
    /* output files (NULL for stdout) */
    char *partial, *state_path;
    bool have_partial;     /* OUT.partial existed at open */
    bool replace_partial;  /* --force: drop the leftover OUT.partial at run */
    bool have_state;       /* --resume: OUT.partial.state read into was */
    bool prepared, done;
    pb_resume_state was;   /* the interrupted run's state */
    pb_resume_state state; /* this run's fingerprints and last durable point */
    uint64_t skip;         /* outputs already in the file: not generated again */
    uint64_t *line_of;     /* input line of output k at [k % line_ring] */
    uint64_t line_ring;
    /* lines of several prompts: the one of output k at [k % line_ring] until written; the one whose prompts
     * are going to the engine, and its next */
    joined **joined;
    joined *splitting;
    uint64_t split_out;
    int split_next;
    /* chat records: the model's chat template, loaded at the first one */
    pb_chat *chat;
    bool chat_tried;
    char *chat_err;        /* why there is none (each chat record gets it) */
};

/* A chat record's prompt from the model's chat template. Template and record
 * problems make it an error record; only allocation failures fail. */
static pb_status render_chat(pb_runner *r, pb_record *rec)
{
    if (!r->chat_tried) {
        r->chat_tried = true;
        if (pb_chat_load_dir(r->m->dir, &r->chat) != PB_OK) {
            r->chat_err = pb_strdup(pb_last_error());
            if (!r->chat_err)
                return pb_error(PB_ERR_NOMEM, "out of memory");
            pb_log_warn("chat records: %s", r->chat_err);
        }
    }
    if (!r->chat)
        return pb_record_set_error(rec, "chat template: %s", r->chat_err);
    cJSON *body = cJSON_Parse(rec->chat_json);
    if (!body)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    char *prompt;
    size_t len;
    pb_status st = pb_chat_render(r->chat, body, &prompt, &len);
    cJSON_Delete(body);
    if (st == PB_ERR_NOMEM)
        return st;
    if (st != PB_OK)
        return pb_record_set_error(rec, "chat template: %s", pb_last_error());
    rec->prompt = prompt;
    rec->prompt_len = len;
    return PB_OK;
}

/* ---- checks before the model ------------------------------------------- */

/* The folder that will hold path exists and is writable. */
static pb_status check_dir(const char *opt, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? pb_strdup(path) : pb_strdup(".");
    if (!dir)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (slash)
        dir[slash == path ? 1 : slash - path] = '\0';
    struct stat sb;
    pb_status st = PB_OK;
    if (stat(dir, &sb) != 0)
        st = pb_error(PB_ERR_USAGE, "%s %s: directory %s: %s", opt, path, dir, strerror(errno));
    else if (!S_ISDIR(sb.st_mode))
        st = pb_error(PB_ERR_USAGE, "%s %s: %s is not a directory", opt, path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        st = pb_error(PB_ERR_USAGE, "%s %s: directory %s is not writable: %s", opt, path, dir,
                      strerror(errno));
    free(dir);
    return st;
}

static pb_status check_input(const pb_runner_opts *o, struct stat *sb, bool *have_sb)
{
    *have_sb = false;
    if (strcmp(o->in_path, "-") == 0) {
        *have_sb = fstat(0, sb) == 0;
        return PB_OK;
    }
    if (stat(o->in_path, sb) != 0)
        return pb_error(PB_ERR_USAGE, "--in %s: %s", o->in_path, strerror(errno));
    *have_sb = true;
    if (S_ISDIR(sb->st_mode))
        return pb_error(PB_ERR_USAGE, "--in %s is a directory, not a file of prompts", o->in_path);
    if (access(o->in_path, R_OK) != 0)
        return pb_error(PB_ERR_USAGE, "--in %s: %s", o->in_path, strerror(errno));
    return PB_OK;
}

static char *with_suffix(const char *path, const char *suffix)
{
    size_t a = strlen(path), b = strlen(suffix);
    char *s = malloc(a + b + 1);
    if (s) {
        memcpy(s, path, a);
        memcpy(s + a, suffix, b + 1);
    }
    return s;
}

/* --out: not a folder, not the input, not an existing file unless --force
 * (or --resume, which decides in prepare), in a writable folder; a leftover
 * OUT.partial only with --resume or --force. */
static pb_status check_output(pb_runner *r, const struct stat *in_sb, bool have_in_sb)
{
    const pb_runner_opts *o = r->o;
    const char *out = o->out_path;
    PB_CHECK(check_dir("--out", out));
    struct stat sb;
    if (stat(out, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return pb_error(PB_ERR_USAGE, "--out %s is a directory; name a file in it", out);
        if (!S_ISREG(sb.st_mode))
            return pb_error(PB_ERR_USAGE, "--out %s is not a regular file (for a pipe or "
                            "device use --out - and redirect)", out);
        /* device and inode: a relative path, a link or stdin redirected from it */
        if (have_in_sb && sb.st_dev == in_sb->st_dev && sb.st_ino == in_sb->st_ino)
            return pb_error(PB_ERR_USAGE, "--out %s is the input file %s; it is never "
                            "overwritten, not even with --force", out,
                            strcmp(o->in_path, "-") == 0 ? "(standard input)" : o->in_path);
        if (!o->resume && !o->force)
            return pb_error(PB_ERR_USAGE, "--out %s exists; pass --force to replace it", out);
    }
    r->partial = with_suffix(out, ".partial");
    r->state_path = with_suffix(out, ".partial.state");
    if (!r->partial || !r->state_path)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    r->have_partial = pb_file_exists(r->partial);
    if (o->resume) {
        PB_CHECK(pb_resume_load(r->state_path, &r->was, &r->have_state));
        if (!r->have_state && r->have_partial)
            return pb_error(PB_ERR_USAGE, "--resume: %s has no state file %s (not written by "
                            "pippy-batch, or from an older build); remove it to start again",
                            r->partial, r->state_path);
    } else if (r->have_partial) {
        if (!o->force)
            return pb_error(PB_ERR_USAGE, "%s exists: an interrupted run left it; continue it "
                            "with --resume, or pass --force (or remove it and %s) to start again",
                            r->partial, r->state_path);
        r->replace_partial = true;
    }
    return PB_OK;
}

pb_status pb_runner_open(const pb_runner_opts *o, pb_runner **out)
{
    *out = NULL;
    pb_runner *r;
    PB_CHECK(pb_calloc(1, sizeof *r, &r));
    r->o = o;
    pb_jbuf_init(&r->line);
    pb_status st;
    bool to_file = strcmp(o->out_path, "-") != 0;
    if (o->resume && !to_file) {
        st = pb_error(PB_ERR_USAGE, "--resume needs --out FILE (standard output cannot be resumed)");
        goto fail;
    }
    if (o->resume && o->force) {
        st = pb_error(PB_ERR_USAGE, "--force and --resume are exclusive");
        goto fail;
    }
    r->reorder_cap = o->batch_size + 64;
    r->line_ring = (uint64_t)r->reorder_cap + 2;
    PB_CHECK_GOTO(pb_calloc((size_t)r->line_ring, sizeof *r->line_of, &r->line_of), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)r->line_ring, sizeof *r->joined, &r->joined), st, fail);
    r->wo = (pb_writer_opts){.frame_records = o->frame_records, .frame_seconds = o->frame_seconds,
                             .reorder_cap = r->reorder_cap, .zstd_level = 0, .zstd_workers = -1};

    struct stat in_sb;
    bool have_in_sb;
    PB_CHECK_GOTO(check_input(o, &in_sb, &have_in_sb), st, fail);
    if (to_file) {
        /* the input's fingerprint, before the reader opens it (a FIFO opens once) */
        if (strcmp(o->in_path, "-") == 0 && !o->resume) {
            r->state.input = pb_strdup("<stdin>");
        } else if (!o->resume && !S_ISREG(in_sb.st_mode)) {
            /* a pipe or process substitution (--in <(zstdcat p.jsonl.zst)): read once,
             * never resumable, so it has no fingerprint */
            char tag[PATH_MAX + 16];
            snprintf(tag, sizeof tag, "<stream %s>", o->in_path);
            r->state.input = pb_strdup(tag);
        } else {
            PB_CHECK_GOTO(pb_resume_input_fp(o->in_path, &r->state.input), st, fail);
        }
        if (!r->state.input) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    if (to_file)
        PB_CHECK_GOTO(check_output(r, &in_sb, have_in_sb), st, fail);
    if (o->metrics_path)
        PB_CHECK_GOTO(check_dir("--metrics", o->metrics_path), st, fail);
    PB_CHECK_GOTO(pb_reader_open(o->in_path, MAX_LINE, &r->in), st, fail);
    *out = r;
    return PB_OK;
fail:
    pb_runner_free(r);
    return st;
}

/* ---- --resume ---------------------------------------------------------- */

static void count_error_line(void *ctx, const char *line, size_t len)
{
    pb_runner *r = ctx;
    cJSON *o = cJSON_ParseWithLength(line, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (e && !cJSON_IsNull(e))
        r->st.resumed_errors++;
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

/* OUT is complete: nothing to generate; its error records still decide the
 * exit status (3), as for the run that wrote it. */
static pb_status complete_before(pb_runner *r)
{
    pb_log_info("--resume: %s is complete; nothing to do", r->o->out_path);
    r->done = true;
    r->st.already_complete = true;
    return pb_writer_scan(r->o->out_path, &r->wo, count_error_line, r);
}

pb_status pb_runner_prepare(pb_runner *r, const pb_runner_model *m, bool *done)
{
    const pb_runner_opts *o = r->o;
    *done = false;
    r->m = m;
    r->prepared = true;
    if (!r->partial)
        return PB_OK; /* standard output */
    size_t n = strlen(o->out_path);
    r->state.compressed = n >= 4 && strcmp(o->out_path + n - 4, ".zst") == 0;
    PB_CHECK(pb_resume_model_fp(m->dir, m->index_path, &r->state.model));
    if (m->variant) {
        size_t a = strlen(r->state.model), b = strlen(m->variant);
        char *fp = realloc(r->state.model, a + b + 2);
        if (!fp)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        fp[a] = ' ';
        memcpy(fp + a + 1, m->variant, b + 1);
        r->state.model = fp;
    }
    PB_CHECK(pb_resume_settings_fp(m->base, m->context, o->shard_index, o->shard_count,
                                   o->abort_on_error, &r->state.settings));
    if (!o->resume)
        return PB_OK;
    if (!r->have_state) {
        if (pb_file_exists(o->out_path)) {
            PB_CHECK(complete_before(r));
            *done = true;
        }
        return PB_OK; /* else start afresh */
    }
    const pb_resume_state *was = &r->was;
    PB_CHECK(same("model", r->state_path, was->model, r->state.model));
    PB_CHECK(same("input", r->state_path, was->input, r->state.input));
    PB_CHECK(same("settings", r->state_path, was->settings, r->state.settings));
    if (was->compressed != r->state.compressed)
        return pb_error(PB_ERR_USAGE, "--resume: %s: compression differs", r->state_path);
    if (!r->have_partial && was->records > 0) {
        if (!pb_file_exists(o->out_path))
            return pb_error(PB_ERR_USAGE, "--resume: %s records %llu records, but %s is missing",
                            r->state_path, (unsigned long long)was->records, r->partial);
        /* stopped between the rename and removing the state */
        if (unlink(r->state_path) == 0)
            (void)pb_writer_sync_dir(r->state_path);
        PB_CHECK(complete_before(r));
        *done = true;
        return PB_OK;
    }
    if (r->have_partial) {
        /* checks the kept prefix and cuts the unfinished tail after it */
        PB_CHECK(pb_writer_resume(o->out_path, &r->wo, was->records, was->bytes, count_error_line,
                                  r, &r->out));
        r->state.records = was->records;
        r->state.bytes = was->bytes;
        r->state.input_line = was->input_line;
        r->skip = was->records;
        r->st.resumed_records = was->records;
        pb_log_info("--resume: %s: %llu records done, continuing after input line %llu",
                    r->partial, (unsigned long long)was->records,
                    (unsigned long long)was->input_line);
    }
    return PB_OK;
}

/* ---- records in, results out ------------------------------------------- */

static pb_status put_line(pb_runner *r, uint64_t out_no)
{
    PB_CHECK(pb_jbuf_status(&r->line));
    return pb_writer_put(r->out, out_no, r->line.data, r->line.len);
}

static pb_status write_error(pb_runner *r, const pb_record *rec, uint64_t out_no)
{
    pb_jbuf_reset(&r->line);
    pb_record_error_json(&r->line, rec);
    r->st.errors++;
    pb_log_verbose("line %llu: %s", (unsigned long long)rec->line, rec->error);
    PB_CHECK(put_line(r, out_no));
    if (r->o->abort_on_error)
        return pb_error(PB_ERR_INPUT, "%s: line %llu: %s (--on-error=abort)",
                        pb_reader_name(r->in), (unsigned long long)rec->line, rec->error);
    return PB_OK;
}

static void joined_free(joined *j)
{
    if (!j)
        return;
    for (int i = 0; j->part && i < j->head.n_prompts; i++)
        pb_jbuf_free(&j->part[i]);
    free(j->part);
    pb_record_clear(&j->head);
    free(j);
}

/* rec, a line of several prompts, moved into a new joined for output out_no */
static pb_status joined_new(pb_runner *r, pb_record *rec, uint64_t out_no, joined **out)
{
    joined *j;
    PB_CHECK(pb_calloc(1, sizeof *j, &j));
    pb_status st = pb_calloc((size_t)rec->n_prompts, sizeof *j->part, &j->part);
    if (st != PB_OK) {
        free(j);
        return st;
    }
    for (int i = 0; i < rec->n_prompts; i++)
        pb_jbuf_init(&j->part[i]);
    j->head = *rec;
    memset(rec, 0, sizeof *rec);
    j->left = j->head.n_prompts;
    r->joined[out_no % r->line_ring] = *out = j;
    return PB_OK;
}

/* One prompt's answer of a line of several: kept; the line written after its last. */
static pb_status joined_put(pb_runner *r, const pb_record *rec, uint64_t seq, const pb_result *res)
{
    joined *j = r->joined[seq % r->line_ring];
    if (!j || rec->prompt_index < 0 || rec->prompt_index >= j->head.n_prompts)
        return pb_error(PB_ERR_INTERNAL, "runner: line %llu: no prompt %d waiting", (unsigned long long)rec->line,
                        rec->prompt_index);
    if (!res && !j->head.error)
        PB_CHECK(pb_record_set_error(&j->head, "prompt %d: %s", rec->prompt_index, rec->error));
    if (res && !j->head.error) {
        pb_record_choices_json(&j->part[rec->prompt_index], rec, res);
        PB_CHECK(pb_jbuf_status(&j->part[rec->prompt_index]));
        j->prompt_tokens += res->prompt_tokens;
        j->completion_tokens += res->completion_tokens;
        j->counted_prompt_tokens += (uint64_t)res->prompt_tokens * (uint64_t)(res->n_choices > 1 ? res->n_choices : 1);
    }
    if (--j->left > 0)
        return PB_OK;
    r->joined[seq % r->line_ring] = NULL;
    pb_status st;
    if (j->head.error) {
        st = write_error(r, &j->head, seq);
    } else {
        pb_jbuf_reset(&r->line);
        pb_record_joined_json(&r->line, &j->head, r->m->name, j->part, j->head.n_prompts, j->prompt_tokens,
                              j->completion_tokens);
        r->st.records++;
        r->st.prompt_tokens += j->counted_prompt_tokens;
        r->st.completion_tokens += (uint64_t)j->completion_tokens;
        st = put_line(r, seq); /* the line's status: an append that failed */
    }
    joined_free(j);
    return st;
}

static pb_status on_result(void *ctx, const pb_record *rec, uint64_t seq, const pb_result *res)
{
    pb_runner *r = ctx;
    if (rec->n_prompts > 1)
        return joined_put(r, rec, seq, res);
    if (!res)
        return write_error(r, rec, seq);
    pb_jbuf_reset(&r->line);
    pb_record_result_json(&r->line, rec, r->m->name, res);
    r->st.records++;
    /* a prompt once a completion (n > 1: each started from it), as prompt_tokens_shared counts */
    r->st.prompt_tokens += (uint64_t)res->prompt_tokens * (uint64_t)(res->n_choices > 1 ? res->n_choices : 1);
    r->st.completion_tokens += (uint64_t)res->completion_tokens;
    return put_line(r, seq);
}

/* The splitting line's next prompt as a record of its own, for the engine. */
static pb_status split_next(pb_runner *r, pb_record *rec, uint64_t *seq, bool *got)
{
    joined *j = r->splitting;
    PB_CHECK(pb_record_take_prompt(rec, &j->head, r->split_next));
    *seq = r->split_out;
    *got = true;
    if (++r->split_next == j->head.n_prompts)
        r->splitting = NULL;
    return PB_OK;
}

/* The next record for the engine: blank lines, other shards and records
 * OUT.partial already holds are skipped; bad lines are answered here. */
static pb_status on_next(void *ctx, pb_record *rec, uint64_t *seq, bool *got, bool *ended)
{
    pb_runner *r = ctx;
    *got = *ended = false;
    if (r->splitting)
        return split_next(r, rec, seq, got);
    for (;;) {
        /* bounded reorder buffer: read on only when the output can take it */
        if (r->out_next >= pb_writer_records(r->out) + (uint64_t)r->reorder_cap)
            return PB_OK;
        const char *line;
        size_t len;
        uint64_t line_no;
        bool too_long;
        PB_CHECK(pb_reader_next(r->in, &line, &len, &line_no, &too_long));
        if (!line) {
            *ended = true;
            if (r->out_next < r->skip)
                return pb_error(PB_ERR_USAGE, "--resume: the input has %llu records, but the "
                                "output already holds %llu: the input changed",
                                (unsigned long long)r->out_next, (unsigned long long)r->skip);
            return PB_OK;
        }
        if (!too_long && pb_line_is_blank(line, len))
            continue;
        uint64_t k = r->record_no++;
        if (r->o->shard_count > 0 && k % (uint64_t)r->o->shard_count != (uint64_t)r->o->shard_index)
            continue;
        uint64_t out_no = r->out_next++;
        r->line_of[out_no % r->line_ring] = line_no;
        if (out_no < r->skip) {
            /* written by the interrupted run; its last one must be the same line */
            if (out_no + 1 == r->skip && line_no != r->state.input_line)
                return pb_error(PB_ERR_USAGE, "--resume: output record %llu was input line %llu, "
                                "but is line %llu now: the input or --shard changed",
                                (unsigned long long)r->skip, (unsigned long long)r->state.input_line,
                                (unsigned long long)line_no);
            continue;
        }
        memset(rec, 0, sizeof *rec);
        pb_status st;
        if (too_long) {
            rec->line = line_no;
            char num[32];
            snprintf(num, sizeof num, "%llu", (unsigned long long)line_no);
            rec->id_json = pb_strdup(num);
            st = rec->id_json ? pb_record_set_error(rec, "line longer than %zu bytes", MAX_LINE)
                              : pb_error(PB_ERR_NOMEM, "out of memory");
        } else {
            st = pb_record_parse(line, len, line_no, r->m->base, rec);
        }
        if (st == PB_OK && !rec->error && rec->chat)
            st = render_chat(r, rec);
        if (st == PB_OK && rec->error)
            st = write_error(r, rec, out_no);
        if (st != PB_OK || rec->error) {
            pb_record_clear(rec);
            PB_CHECK(st);
            continue;
        }
        if (rec->n_prompts > 1) {
            PB_CHECK(joined_new(r, rec, out_no, &r->splitting));
            r->split_out = out_no;
            r->split_next = 0;
            return split_next(r, rec, seq, got);
        }
        *seq = out_no;
        *got = true;
        return PB_OK;
    }
}

static void progress(pb_runner *r, bool final)
{
    const pb_runner_opts *o = r->o;
    if (o->verbosity < 1)
        return;
    double now = pb_now(), el = now - r->t0;
    double every = o->progress_tty ? 0.5 : 5.0;
    if (!final && now - r->t_progress < every)
        return;
    r->t_progress = now;
    const pb_run_stats *s = &r->st;
    double tps = el > 0 ? (double)s->completion_tokens / el : 0;
    char eta[64] = "";
    int64_t size = pb_reader_size(r->in);
    uint64_t off = pb_reader_offset(r->in);
    if (!final && size > 0 && off > 0) {
        double frac = (double)off / (double)size;
        double left = frac > 0 ? el * (1 - frac) / frac : 0;
        snprintf(eta, sizeof eta, ", %.0f%% of input, ETA %.0fs", frac * 100, left);
    }
    if (o->progress_tty) {
        fprintf(stderr, "\r\033[Kpippy-batch: %llu records (%llu errors), %.1f tokens/s%s",
                (unsigned long long)s->records, (unsigned long long)s->errors, tps, eta);
        if (final)
            fputc('\n', stderr);
    } else if (!final) {
        fprintf(stderr, "pippy-batch: %llu records (%llu errors), %llu tokens, %.1f tokens/s%s\n",
                (unsigned long long)s->records, (unsigned long long)s->errors,
                (unsigned long long)s->completion_tokens, tps, eta);
    }
    fflush(stderr);
}

static pb_status on_tick(void *ctx)
{
    pb_runner *r = ctx;
    PB_CHECK(pb_writer_tick(r->out));
    progress(r, false);
    return PB_OK;
}

/* At each durable frame end: the state follows the file. */
static pb_status on_frame(void *ctx, uint64_t records, uint64_t bytes)
{
    pb_runner *r = ctx;
    r->state.records = records;
    r->state.bytes = bytes;
    r->state.input_line = records ? r->line_of[(records - 1) % r->line_ring] : 0;
    return pb_resume_save(r->state_path, &r->state);
}

static void remove_leftover(const char *path)
{
    if (unlink(path) == 0)
        pb_log_info("--force: removed %s", path);
    else if (errno != ENOENT)
        pb_log_warn("%s: %s", path, strerror(errno));
}

pb_status pb_runner_run(pb_runner *r, const pb_engine_opts *eo, pb_pipe *pipe,
                        const pb_tokenizer *tok)
{
    const pb_runner_opts *o = r->o;
    if (!r->prepared || r->done)
        return pb_error(PB_ERR_INTERNAL, "runner: run without prepare, or after a complete --resume");
    r->t0 = r->t_progress = pb_now();
    if (!r->out) {
        if (r->partial) {
            if (r->replace_partial) {
                remove_leftover(r->state_path);
                remove_leftover(r->partial);
            }
            /* the state first: an OUT.partial never exists without one */
            PB_CHECK(pb_resume_save(r->state_path, &r->state));
        }
        PB_CHECK(pb_writer_open(o->out_path, &r->wo, &r->out));
    }
    if (r->partial)
        pb_writer_set_frame_hook(r->out, on_frame, r);
    pb_log_verbose("output %s%s (zstd workers: %d)", o->out_path,
                   pb_writer_compressed(r->out) ? ", zstd frames" : "", pb_writer_workers(r->out));

    pb_engine_io io = {.next = on_next, .result = on_result, .tick = on_tick, .ctx = r};
    pb_status st = pb_engine_run(eo, pipe, tok, &io, &r->st.engine);
    bool interrupted = st == PB_OK && r->st.engine.stopped;
    if (st == PB_OK && !interrupted && r->st.records + r->st.errors + r->skip != r->out_next)
        st = pb_error(PB_ERR_INTERNAL, "runner: %llu outputs for %llu records",
                      (unsigned long long)(r->st.records + r->st.errors + r->skip),
                      (unsigned long long)r->out_next);
    /* on failure or interruption keep what is in order in OUT.partial (a
     * durable point); never rename it */
    pb_status cst = pb_writer_close(r->out, st == PB_OK && !interrupted);
    r->out = NULL;
    if (st == PB_OK)
        st = cst;
    if (st == PB_OK && !interrupted && r->partial) {
        if (unlink(r->state_path) != 0 && errno != ENOENT)
            pb_log_warn("%s: %s", r->state_path, strerror(errno));
        else
            (void)pb_writer_sync_dir(r->state_path);
    }
    if (st == PB_OK && interrupted)
        st = pb_error(PB_ERR_INTERRUPTED, "interrupted by %s: %llu records of %s are complete; "
                      "continue with --resume", pb_stop_signal_name(),
                      (unsigned long long)r->state.records, o->out_path);
    r->st.wall_seconds = pb_now() - r->t0;
    progress(r, true);
    return st;
}

const pb_run_stats *pb_runner_stats(const pb_runner *r) { return &r->st; }

void pb_runner_free(pb_runner *r)
{
    if (!r)
        return;
    if (r->out)
        (void)pb_writer_close(r->out, false);
    pb_reader_close(r->in);
    pb_chat_free(r->chat);
    free(r->chat_err);
    pb_jbuf_free(&r->line);
    free(r->line_of);
    for (uint64_t k = 0; r->joined && k < r->line_ring; k++)
        joined_free(r->joined[k]);
    free(r->joined);
    free(r->partial);
    free(r->state_path);
    pb_resume_state_clear(&r->was);
    pb_resume_state_clear(&r->state);
    free(r);
}

double pb_run_prefill_rate(const pb_run_stats *s)
{
    const uint64_t sh = s->engine.prompt_tokens_shared, computed = s->prompt_tokens > sh ? s->prompt_tokens - sh : 0;
    return s->engine.prefill_seconds > 0 ? (double)computed / s->engine.prefill_seconds : 0;
}

pb_status pb_run_write_metrics(const char *path, const pb_run_stats *s)
{
    pb_jbuf b;
    pb_jbuf_init(&b);
    const pb_engine_stats *e = &s->engine;
    double gen_tps = s->wall_seconds > 0 ? (double)s->completion_tokens / s->wall_seconds : 0;
    pb_jbuf_printf(&b, "{\"records\": %llu, \"errors\": %llu, \"prompt_tokens\": %llu, "
                   "\"prompt_tokens_shared\": %llu, "
                   "\"completion_tokens\": %llu, \"wall_seconds\": %.6f, \"tokens_per_second\": %.3f, "
                   "\"prefill_tokens_per_second\": %.3f, \"decode_tokens_per_second\": %.3f, "
                   "\"time_to_first_token_mean\": %.6f, \"time_to_first_token_max\": %.6f, "
                   "\"first_token_seconds\": %.6f, \"micro_batches\": %llu, \"peak_rss_bytes\": %llu, \"stages\": [",
                   (unsigned long long)s->records, (unsigned long long)s->errors,
                   (unsigned long long)s->prompt_tokens, (unsigned long long)e->prompt_tokens_shared,
                   (unsigned long long)s->completion_tokens, s->wall_seconds, gen_tps,
                   pb_run_prefill_rate(s),
                   e->decode_seconds > 0 ? (double)s->completion_tokens / e->decode_seconds : 0,
                   e->ttft_mean, e->ttft_max, e->first_token_seconds,
                   (unsigned long long)e->micro_batches, (unsigned long long)pb_peak_rss_bytes());
    for (int i = 0; i < e->pipe.n_stages && i < PB_PIPE_MAX_STAGES; i++)
        pb_jbuf_printf(&b, "%s{\"stage\": %d, \"busy_seconds\": %.6f, \"busy_fraction\": %.4f}",
                       i ? ", " : "", i, e->pipe.busy_seconds[i],
                       e->pipe.wall_seconds > 0 ? e->pipe.busy_seconds[i] / e->pipe.wall_seconds : 0);
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

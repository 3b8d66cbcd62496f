/* Micro-batch wire format, validation, slot sampler and the pipe wrapper. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/pipe.h"

static int failures;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, pb_last_error()); failures++; } } while (0)

static pb_mb_seq seq(int slot, int pos, int n, unsigned flags)
{
    pb_mb_seq s = {.slot = slot, .pos = pos, .n_tokens = n, .flags = flags, .next_id = -1,
                   .sample = pb_sample_params_default(), .key = {42, (uint64_t)slot + 1, 0}};
    return s;
}

static void test_philox(void)
{
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        pb_philox4x32_10(kat[i], kat[i] + 4, out);
        CHECK(memcmp(out, kat[i] + 6, sizeof out) == 0);
    }
    pb_rng_key a = {1, 2, 3}, b = {1, 2, 4};
    double ua = pb_rng_uniform(&a), ub = pb_rng_uniform(&b);
    CHECK(ua >= 0 && ua < 1 && ub >= 0 && ub < 1 && ua != ub);
    CHECK(pb_rng_uniform(&a) == ua);
}

/* Unpacks the result message buf[0..len) (at most 512 bytes) with the 32-bit word at `at` set to v. */
static pb_status corrupt_unpack(const unsigned char *buf, size_t len, size_t at, uint32_t v, pb_mb_result *r)
{
    unsigned char cb[512];
    memcpy(cb, buf, len);
    for (int byte = 0; byte < 4; byte++)
        cb[at + (size_t)byte] = (unsigned char)(v >> (8 * byte));
    return pb_mb_result_unpack(cb, len, 100, 8, r);
}

static void test_pack(void)
{
    pb_mb_limits lim = {.n_slots = 8, .max_seq_len = 32, .max_batch_tokens = 64, .vocab = 100};
    pb_microbatch mb, back;
    CHECK(pb_mb_init(&mb, 1, 1) == PB_OK);
    CHECK(pb_mb_init(&back, 0, 0) == PB_OK);
    mb.tag = 0x1122334455667788ull;
    int32_t prompt[5] = {1, 2, 3, 4, 99};
    pb_mb_seq s0 = seq(3, 0, 5, PB_SEQ_NEW | PB_SEQ_SAMPLE);
    s0.sample.temperature = 0.7f; s0.sample.top_k = 5; s0.sample.top_p = 0.9f;
    s0.sample.min_p = 0.1f; s0.sample.repetition_penalty = 1.2f;
    s0.sample.frequency_penalty = -0.75f; s0.sample.presence_penalty = 1.5f; s0.sample.prompt_len = 4;
    s0.key.seed = ~0ull; s0.key.step = 77;
    CHECK(pb_mb_add(&mb, &s0, prompt) == PB_OK);
    int32_t one = 7;
    const pb_id_bias b0[2] = {{3, -100.0f}, {97, -INFINITY}}, b1[1] = {{0, 2.5f}};
    CHECK(pb_mb_add_bias(&mb, b0, 2) == PB_OK);
    pb_mb_seq s1 = seq(5, 10, 1, PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS);
    s1.n_logprobs = 20;
    const int32_t a1[3] = {0, 7, 99};
    CHECK(pb_mb_add(&mb, &s1, &one) == PB_OK && pb_mb_add_bias(&mb, b1, 1) == PB_OK &&
          pb_mb_add_allow(&mb, a1, 3) == PB_OK);
    CHECK(mb.n_bias == 3 && mb.seqs[0].n_bias == 2 && mb.seqs[1].n_bias == 1 && mb.n_allow == 3 &&
          mb.seqs[0].n_allow == 0 && mb.seqs[1].n_allow == 3);
    CHECK(pb_mb_validate(&mb, &lim) == PB_OK);
    size_t sz = pb_mb_packed_size(&mb), w = 0;
    CHECK(sz == 24 + 2 * 100 + 6 * 4 + 3 * 8 + 3 * 4 && sz <= pb_mb_max_size(2, 6, 1000));
    unsigned char *buf = malloc(sz);
    CHECK(pb_mb_pack(&mb, buf, sz - 1, &w) != PB_OK);
    CHECK(pb_mb_pack(&mb, buf, sz, &w) == PB_OK && w == sz);
    CHECK(pb_mb_unpack(buf, sz, &lim, &back) == PB_OK);
    CHECK(back.tag == mb.tag && back.n_seqs == 2 && back.n_tokens == 6);
    for (int i = 0; i < 2; i++) {
        const pb_mb_seq *x = &back.seqs[i], *y = &mb.seqs[i];
        CHECK(x->slot == y->slot && x->pos == y->pos && x->n_tokens == y->n_tokens &&
              x->flags == y->flags && x->sample.temperature == y->sample.temperature &&
              x->sample.top_k == y->sample.top_k && x->sample.top_p == y->sample.top_p &&
              x->sample.min_p == y->sample.min_p &&
              x->sample.repetition_penalty == y->sample.repetition_penalty &&
              x->sample.frequency_penalty == y->sample.frequency_penalty &&
              x->sample.presence_penalty == y->sample.presence_penalty &&
              x->sample.prompt_len == y->sample.prompt_len && x->n_logprobs == y->n_logprobs &&
              x->n_bias == y->n_bias && x->n_allow == y->n_allow &&
              x->key.seed == y->key.seed && x->key.record == y->key.record &&
              x->key.step == y->key.step);
    }
    CHECK(memcmp(back.tokens, mb.tokens, 6 * sizeof *mb.tokens) == 0);
    CHECK(back.n_bias == 3 && memcmp(back.bias, mb.bias, 3 * sizeof *mb.bias) == 0);
    CHECK(back.n_allow == 3 && memcmp(back.allow, mb.allow, 3 * sizeof *mb.allow) == 0);
    /* allowed ids: ascending, distinct, in range */
    static const struct { int at; int32_t id; } bada[] = {{0, 100}, {0, -1}, {1, 0}, {2, 7}};
    for (size_t i = 0; i < sizeof bada / sizeof bada[0]; i++) {
        int32_t keep = mb.allow[bada[i].at];
        mb.allow[bada[i].at] = bada[i].id;
        CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
        mb.allow[bada[i].at] = keep;
    }
    mb.seqs[1].n_allow = 4;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    mb.seqs[1].n_allow = 3;
    /* logit biases: ids ascending in range, biases in [-100, 100] or -inf, only where the sequence samples */
    static const struct { int at; int32_t id; float bias; } badb[] = {
        {0, 100, 1.0f}, {1, 3, 1.0f}, {1, 2, 1.0f}, {0, 1, 100.5f}, {0, 1, NAN}, {0, 1, INFINITY}, {2, 0, -101.0f}};
    for (size_t i = 0; i < sizeof badb / sizeof badb[0]; i++) {
        pb_id_bias keep = mb.bias[badb[i].at];
        mb.bias[badb[i].at] = (pb_id_bias){badb[i].id, badb[i].bias};
        CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
        mb.bias[badb[i].at] = keep;
    }
    mb.seqs[0].flags &= ~PB_SEQ_SAMPLE;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT); /* biases without a token to sample */
    mb.seqs[0].flags |= PB_SEQ_SAMPLE;
    mb.seqs[1].n_bias = 2;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT); /* more than the micro-batch holds */
    mb.seqs[1].n_bias = 1;
    CHECK(pb_mb_validate(&mb, &lim) == PB_OK);
    /* truncated, trailing byte, bad magic, bad token, bad slot */
    CHECK(pb_mb_unpack(buf, sz - 1, &lim, &back) == PB_ERR_FORMAT);
    CHECK(pb_mb_unpack(buf, 10, &lim, &back) == PB_ERR_FORMAT);
    unsigned char *big = calloc(1, sz + 1);
    memcpy(big, buf, sz);
    CHECK(pb_mb_unpack(big, sz + 1, &lim, &back) == PB_ERR_FORMAT);
    free(big);
    buf[0] ^= 1;
    CHECK(pb_mb_unpack(buf, sz, &lim, &back) == PB_ERR_FORMAT);
    buf[0] ^= 1;
    pb_mb_limits small = lim;
    small.vocab = 99; /* token 99 now out of range */
    CHECK(pb_mb_unpack(buf, sz, &small, &back) == PB_ERR_INPUT);
    small = lim;
    small.n_slots = 4; /* slot 5 out of range */
    CHECK(pb_mb_unpack(buf, sz, &small, &back) == PB_ERR_INPUT);
    small = lim;
    small.max_seq_len = 10; /* pos 10 + 1 > 10 */
    CHECK(pb_mb_unpack(buf, sz, &small, &back) == PB_ERR_INPUT);
    /* corrupt the count of sequences: claims many more than the bytes hold */
    buf[16] = 0xff; buf[17] = 0xff;
    CHECK(pb_mb_unpack(buf, sz, &lim, &back) == PB_ERR_FORMAT);
    free(buf);

    /* validation of hand-made bad batches */
    pb_mb_clear(&mb);
    pb_mb_seq d = seq(1, 0, 1, PB_SEQ_SAMPLE), e = seq(1, 4, 1, PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &d, &one) == PB_OK && pb_mb_add(&mb, &e, &one) == PB_OK);
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT); /* slot twice */
    pb_mb_clear(&mb);
    pb_mb_seq f = seq(1, 3, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &f, &one) == PB_OK);
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT); /* NEW at pos 3 */
    pb_mb_clear(&mb);
    pb_mb_seq g = seq(1, 0, 1, PB_SEQ_SAMPLE);
    g.sample.top_p = 0;
    CHECK(pb_mb_add(&mb, &g, &one) == PB_OK);
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT); /* top_p 0 */
    /* a forked sequence: NEW at pos > 0, fork_slot another slot in range; it travels */
    pb_mb_clear(&mb);
    pb_mb_seq k = seq(2, 6, 1, PB_SEQ_NEW | PB_SEQ_FORK | PB_SEQ_SAMPLE);
    k.fork_slot = 7;
    k.fork_from = 4; /* a beam's parent: its first 4 positions already the same */
    CHECK(pb_mb_add(&mb, &k, &one) == PB_OK && pb_mb_validate(&mb, &lim) == PB_OK);
    unsigned char kb[24 + 100 + 4];
    CHECK(pb_mb_pack(&mb, kb, sizeof kb, &w) == PB_OK && w == sizeof kb);
    CHECK(pb_mb_unpack(kb, w, &lim, &back) == PB_OK && back.seqs[0].fork_slot == 7 &&
          back.seqs[0].fork_from == 4 && back.seqs[0].flags == (PB_SEQ_NEW | PB_SEQ_FORK | PB_SEQ_SAMPLE) &&
          back.seqs[0].pos == 6);
    pb_mb_batch ba;
    CHECK(pb_mb_batch_init(&ba, 8) == PB_OK);
    pb_seq_batch sb = pb_mb_batch_of(&ba, &back);
    CHECK(sb.fork_src[0] == 7 && sb.fork_from[0] == 4);
    pb_mb_batch_free(&ba);
    kb[24 + 12] &= (unsigned char)~PB_SEQ_FORK; /* a fork slot without the flag */
    CHECK(pb_mb_unpack(kb, w, &lim, &back) == PB_ERR_FORMAT);
    static const struct { int slot, pos, fork, from; unsigned flags; } bad[] = {
        {2, 6, 8, 0, PB_SEQ_NEW | PB_SEQ_FORK}, {2, 6, -1, 0, PB_SEQ_NEW | PB_SEQ_FORK},
        {2, 0, 3, 0, PB_SEQ_NEW | PB_SEQ_FORK}, {2, 6, 3, 0, PB_SEQ_FORK}, {2, 6, 3, 6, PB_SEQ_NEW | PB_SEQ_FORK},
        {2, 6, 3, -1, PB_SEQ_NEW | PB_SEQ_FORK}, {2, 6, 0, 2, PB_SEQ_NEW}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb_mb_clear(&mb);
        pb_mb_seq b = seq(bad[i].slot, bad[i].pos, 1, bad[i].flags | PB_SEQ_SAMPLE);
        b.fork_slot = bad[i].fork;
        b.fork_from = bad[i].from;
        CHECK(pb_mb_add(&mb, &b, &one) == PB_OK);
        CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT); /* out of range, at 0, not NEW, from past pos */
    }
    /* prompt log probabilities: a prefill chunk's, next_id the token after it (-1 where it samples), not forked */
    static const struct { unsigned flags; int n, next; bool ok; } plps[] = {
        {PB_SEQ_PROMPT_LOGPROBS, 3, 5, true}, {PB_SEQ_PROMPT_LOGPROBS | PB_SEQ_SAMPLE, 0, -1, true},
        {PB_SEQ_PROMPT_LOGPROBS, 3, -1, false}, {PB_SEQ_PROMPT_LOGPROBS | PB_SEQ_SAMPLE, 3, 5, false},
        {PB_SEQ_PROMPT_LOGPROBS, 21, 5, false}, {PB_SEQ_PROMPT_LOGPROBS, 2, 100, false}, {0, 2, -1, false},
        {PB_SEQ_PROMPT_LOGPROBS | PB_SEQ_NEW | PB_SEQ_FORK, 2, 5, false}};
    for (size_t i = 0; i < sizeof plps / sizeof plps[0]; i++) {
        pb_mb_clear(&mb);
        pb_mb_seq b = seq(2, 6, 1, plps[i].flags);
        b.n_prompt_logprobs = plps[i].n;
        b.next_id = plps[i].next;
        b.fork_slot = 3;
        CHECK(pb_mb_add(&mb, &b, &one) == PB_OK);
        CHECK((pb_mb_validate(&mb, &lim) == PB_OK) == plps[i].ok);
        if (plps[i].ok) { /* travels */
            unsigned char pbuf[256];
            CHECK(pb_mb_pack(&mb, pbuf, sizeof pbuf, &w) == PB_OK && pb_mb_unpack(pbuf, w, &lim, &back) == PB_OK &&
                  back.seqs[0].next_id == plps[i].next && back.seqs[0].n_prompt_logprobs == plps[i].n);
        }
    }
    /* log probabilities: 0..20 with the flag and a sampled token, else none */
    static const struct { unsigned flags; int n; } badlp[] = {
        {PB_SEQ_SAMPLE, 3}, {PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS, 21}, {PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS, -1},
        {PB_SEQ_LOGPROBS, 0}};
    for (size_t i = 0; i < sizeof badlp / sizeof badlp[0]; i++) {
        pb_mb_clear(&mb);
        pb_mb_seq b = seq(2, 6, 1, badlp[i].flags);
        b.n_logprobs = badlp[i].n;
        CHECK(pb_mb_add(&mb, &b, &one) == PB_OK);
        CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    }
    pb_mb_clear(&mb); /* its own slot: a finished sequence's cache kept for the next prompt */
    pb_mb_seq own = seq(2, 6, 1, PB_SEQ_NEW | PB_SEQ_FORK | PB_SEQ_SAMPLE);
    own.fork_slot = 2;
    CHECK(pb_mb_add(&mb, &own, &one) == PB_OK && pb_mb_validate(&mb, &lim) == PB_OK);
    /* embeddings: one pooling flag, never with sampling (nor in a micro-batch that samples), the first token's
     * only from position 0 */
    const int32_t two[2] = {3, 4};
    static const struct { int pos; uint32_t f1, f2; bool ok; } emb[] = {
        {0, PB_SEQ_NEW | PB_SEQ_EMBED_LAST, PB_SEQ_EMBED_SUM, true},
        {0, PB_SEQ_NEW | PB_SEQ_EMBED_FIRST, 0, true},
        {2, PB_SEQ_EMBED_FIRST, 0, false},
        {0, PB_SEQ_NEW | PB_SEQ_EMBED_LAST | PB_SEQ_SAMPLE, 0, false},
        {0, PB_SEQ_NEW | PB_SEQ_EMBED_LAST | PB_SEQ_EMBED_SUM, 0, false},
        {0, PB_SEQ_NEW | PB_SEQ_EMBED_LAST, PB_SEQ_SAMPLE, false},
        {0, PB_SEQ_NEW, PB_SEQ_EMBED_SUM, true},
    };
    for (size_t i = 0; i < sizeof emb / sizeof *emb; i++) {
        pb_mb_clear(&mb);
        pb_mb_seq a = seq(0, emb[i].pos, 2, emb[i].f1), b2 = seq(1, 4, 2, emb[i].f2);
        CHECK(pb_mb_add(&mb, &a, two) == PB_OK && pb_mb_add(&mb, &b2, two) == PB_OK);
        CHECK((pb_mb_validate(&mb, &lim) == PB_OK) == emb[i].ok);
    }
    pb_mb_release(&mb);
    pb_mb_release(&back);

    /* results */
    pb_mb_result r, rb;
    CHECK(pb_mb_result_init(&r, 3) == PB_OK && pb_mb_result_init(&rb, 0) == PB_OK);
    r.tag = 9; r.n_seqs = 3; r.tokens[0] = 5; r.tokens[1] = -1; r.tokens[2] = 99;
    unsigned char rbuf[512];
    CHECK(pb_mb_result_pack(&r, rbuf, sizeof rbuf, &w) == PB_OK && w == 24 + 3 * 12 + 3 * 4);
    CHECK(pb_mb_result_unpack(rbuf, w, 100, 8, &rb) == PB_OK);
    CHECK(rb.tag == 9 && rb.n_seqs == 3 && rb.tokens[1] == -1 && rb.tokens[2] == 99 && rb.lps[0].n_top == -1 &&
          rb.lps[2].n_top == -1);
    CHECK(pb_mb_result_unpack(rbuf, w, 99, 8, &rb) == PB_ERR_FORMAT);
    CHECK(pb_mb_result_unpack(rbuf, w - 4, 100, 8, &rb) == PB_ERR_FORMAT);
    /* with log probabilities: sequence 0 with 2 of the most likely, sequence 2 with none listed */
    r.lps[0] = (pb_logprobs){.logprob = -0.25f, .n_top = 2, .top_id = {5, 7}, .top_logprob = {-0.25f, -3.5f}};
    r.lps[2] = (pb_logprobs){.logprob = -INFINITY, .n_top = 0};
    CHECK(pb_mb_result_pack(&r, rbuf, sizeof rbuf, &w) == PB_OK && w == 24 + 3 * 12 + 4 + 16 + 4 + 3 * 4 &&
          w <= pb_mb_result_max_size(3, 0, 8));
    CHECK(pb_mb_result_unpack(rbuf, w, 100, 8, &rb) == PB_OK);
    CHECK(rb.lps[0].n_top == 2 && rb.lps[0].logprob == -0.25f && rb.lps[0].top_id[1] == 7 &&
          rb.lps[0].top_logprob[1] == -3.5f && rb.lps[1].n_top == -1 && rb.lps[2].n_top == 0 &&
          rb.lps[2].logprob == -INFINITY);
    pb_mb_result rc;
    CHECK(pb_mb_result_init(&rc, 0) == PB_OK && pb_mb_result_copy(&rc, &rb) == PB_OK && rc.n_seqs == 3 &&
          rc.tag == 9 && rc.lps[0].top_id[0] == 5 && rc.tokens[2] == 99);
    pb_mb_result_release(&rc);
    CHECK(pb_mb_result_unpack(rbuf, w - 1, 100, 8, &rb) == PB_ERR_FORMAT);
    /* corrupt: a positive or NaN log probability, an id out of range, too many, for a token not sampled */
    const size_t at_lp = 24 + 24, at_id = at_lp + 4 + 8; /* after the ids and counts */
    static const struct { size_t at; uint32_t v; } bad_rs[] = {
        {at_lp, 0x3f800000u}, {at_lp + 8, 0x7fc00000u}, {at_id, 100}, {24 + 12, 21}, {24 + 12 + 4, 0}};
    for (size_t i = 0; i < sizeof bad_rs / sizeof bad_rs[0]; i++)
        CHECK(corrupt_unpack(rbuf, w, bad_rs[i].at, bad_rs[i].v, &rb) == PB_ERR_FORMAT);
    /* prompt tokens' entries: sequence 1 two (ranks 1 and 40; 1 and 0 listed), sequence 2 one */
    CHECK(pb_mb_result_reserve_plp(&r, 3) == PB_OK);
    r.n_plp[0] = 0; r.n_plp[1] = 2; r.n_plp[2] = 1;
    r.plp[0] = (pb_logprobs){.id = 4, .rank = 1, .logprob = -0.5f, .n_top = 1, .top_id = {4}, .top_logprob = {-0.5f}};
    r.plp[1] = (pb_logprobs){.id = 99, .rank = 40, .logprob = -9.0f, .n_top = 0};
    r.plp[2] = (pb_logprobs){.id = 0, .rank = 2, .logprob = -1.5f, .n_top = 1, .top_id = {3}, .top_logprob = {-0.25f}};
    const size_t wp = 24 + 3 * 12 + 4 + 16 + 4 + 3 * 16 + 2 * 8 + 3 * 4;
    CHECK(pb_mb_result_pack(&r, rbuf, sizeof rbuf, &w) == PB_OK && w == wp && w <= pb_mb_result_max_size(3, 3, 8));
    CHECK(pb_mb_result_unpack(rbuf, w, 100, 8, &rb) == PB_OK && rb.n_plp[1] == 2 && rb.n_plp[2] == 1 &&
          rb.plp[1].id == 99 && rb.plp[1].rank == 40 && rb.plp[1].logprob == -9.0f && rb.plp[2].top_id[0] == 3 &&
          rb.plp[2].top_logprob[0] == -0.25f && rb.lps[0].n_top == 2);
    pb_mb_result rd;
    CHECK(pb_mb_result_init(&rd, 0) == PB_OK && pb_mb_result_copy(&rd, &rb) == PB_OK && rd.n_plp[1] == 2 &&
          rd.plp[2].id == 0 && rd.plp[0].top_id[0] == 4);
    pb_mb_result_release(&rd);
    CHECK(pb_mb_result_unpack(rbuf, w - 1, 100, 8, &rb) == PB_ERR_FORMAT);
    /* corrupt: an entry's id out of range, rank 0, a positive log probability, too many listed, counts */
    const size_t at_plp = w - (3 * 16 + 2 * 8) - 3 * 4, at_n = at_plp - 12;
    const struct { size_t at; uint32_t v; } bad_pl[] = {
        {at_plp, 100}, {at_plp + 8, 0}, {at_plp + 4, 0x3f000000u}, {at_plp + 12, 21}, {at_n, 1}, {at_n + 4, 9}};
    for (size_t i = 0; i < sizeof bad_pl / sizeof bad_pl[0]; i++)
        CHECK(corrupt_unpack(rbuf, w, bad_pl[i].at, bad_pl[i].v, &rb) == PB_ERR_FORMAT);
    /* embeddings: sequence 1 (no token) holds the hidden size's 8 floats */
    r.n_plp[1] = r.n_plp[2] = 0;
    CHECK(pb_mb_result_reserve_emb(&r, 8) == PB_OK);
    r.n_emb[1] = 8;
    for (int x = 0; x < 8; x++)
        r.emb[x] = 0.5f * (float)x - 1.0f;
    const size_t we = 24 + 3 * 12 + 4 + 16 + 4 + 3 * 4 + 8 * 4;
    CHECK(pb_mb_result_pack(&r, rbuf, sizeof rbuf, &w) == PB_OK && w == we && w <= pb_mb_result_max_size(3, 0, 8));
    CHECK(pb_mb_result_unpack(rbuf, w, 100, 8, &rb) == PB_OK && rb.n_emb[0] == 0 && rb.n_emb[1] == 8 &&
          rb.n_emb[2] == 0 && rb.emb[0] == -1.0f && rb.emb[7] == 2.5f);
    pb_mb_result re;
    CHECK(pb_mb_result_init(&re, 0) == PB_OK && pb_mb_result_copy(&re, &rb) == PB_OK && re.n_emb[1] == 8 &&
          re.emb[3] == 0.5f);
    pb_mb_result_release(&re);
    /* corrupt: another hidden size, an embedding for a sampled token, a float short, one over */
    const size_t at_ne = we - 8 * 4 - 3 * 4;
    CHECK(pb_mb_result_unpack(rbuf, w, 100, 9, &rb) == PB_ERR_FORMAT);
    CHECK(corrupt_unpack(rbuf, w, at_ne, 8, &rb) == PB_ERR_FORMAT);
    CHECK(pb_mb_result_unpack(rbuf, w - 4, 100, 8, &rb) == PB_ERR_FORMAT);
    memset(rbuf + w, 0, 4);
    CHECK(pb_mb_result_unpack(rbuf, w + 4, 100, 8, &rb) == PB_ERR_FORMAT);
    pb_mb_result_release(&r);
    pb_mb_result_release(&rb);
}

/* Slot sampler: repetition penalty sees the prompt and the decode tokens of
 * its own slot only; greedy picks the argmax. */
/* Masks (constrained decoding): the wire, validation, one a sequence. */
static void test_mask(void)
{
    pb_mb_limits lim = {.n_slots = 8, .max_seq_len = 32, .max_batch_tokens = 64, .vocab = 70}; /* 3 words */
    pb_microbatch mb, back;
    CHECK(pb_mb_init(&mb, 1, 1) == PB_OK && pb_mb_init(&back, 0, 0) == PB_OK);
    int32_t one = 7;
    const uint32_t m0[3] = {0x80000001u, 0, 0x20u}, m2[3] = {0, 0x10u, 0};
    pb_mb_seq a = seq(0, 3, 1, PB_SEQ_SAMPLE), b = seq(1, 5, 1, PB_SEQ_SAMPLE), c = seq(2, 2, 1, PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &a, &one) == PB_OK && pb_mb_add_mask(&mb, m0, 3) == PB_OK);
    CHECK(pb_mb_add_mask(&mb, m0, 3) != PB_OK); /* one a sequence */
    CHECK(pb_mb_add(&mb, &b, &one) == PB_OK && pb_mb_add(&mb, &c, &one) == PB_OK);
    CHECK(pb_mb_add_mask(&mb, m2, 2) != PB_OK); /* another width */
    CHECK(pb_mb_add_mask(&mb, m2, 3) == PB_OK);
    CHECK(mb.n_masks == 2 && mb.mask_words == 3 && (mb.seqs[0].flags & PB_SEQ_MASK) && !(mb.seqs[1].flags & PB_SEQ_MASK)
          && (mb.seqs[2].flags & PB_SEQ_MASK));
    CHECK(pb_mb_validate(&mb, &lim) == PB_OK);
    size_t sz = pb_mb_packed_size(&mb), w = 0;
    CHECK(sz == 24 + 3 * 100 + 3 * 4 + 2 * 3 * 4 && sz <= pb_mb_max_size(3, 3, 70));
    unsigned char *buf = malloc(sz);
    CHECK(pb_mb_pack(&mb, buf, sz, &w) == PB_OK && w == sz);
    CHECK(pb_mb_unpack(buf, sz, &lim, &back) == PB_OK && back.n_masks == 2 && back.mask_words == 3 &&
          memcmp(back.mask, mb.mask, 6 * sizeof *mb.mask) == 0 && back.seqs[2].flags == mb.seqs[2].flags);
    pb_mb_limits other = lim;
    other.vocab = 100; /* 4 words a mask: the message is short */
    CHECK(pb_mb_unpack(buf, sz, &other, &back) == PB_ERR_FORMAT);
    CHECK(pb_mb_unpack(buf, sz - 4, &lim, &back) == PB_ERR_FORMAT);
    free(buf);
    /* an id past the vocabulary (70..95 in the last word), none at all, a mask where nothing is sampled */
    mb.mask[2] = 0x40u;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    mb.mask[0] = mb.mask[2] = 0;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    mb.mask[0] = 1;
    CHECK(pb_mb_validate(&mb, &lim) == PB_OK);
    mb.seqs[2].flags &= ~PB_SEQ_SAMPLE;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    mb.seqs[2].flags |= PB_SEQ_SAMPLE;
    mb.seqs[1].flags |= PB_SEQ_MASK; /* three flagged, two masks */
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    pb_mb_release(&mb);
    pb_mb_release(&back);

    /* the sampler: the best allowed id, greedy and with a penalty; the log probability stays the model's */
    enum { V = 40 };
    pb_slot_sampler *ss;
    CHECK(pb_slot_sampler_create(2, 16, V, &ss) == PB_OK);
    pb_mb_result res;
    CHECK(pb_mb_init(&mb, 2, 2) == PB_OK && pb_mb_result_init(&res, 2) == PB_OK);
    float logits[2 * V];
    for (int i = 0; i < 2 * V; i++)
        logits[i] = (float)(i % V) * 0.1f; /* id 39 the likeliest */
    const uint32_t allow[2] = {(1u << 3) | (1u << 20), 1u << 1}; /* ids 3, 20, 33 */
    pb_mb_seq g0 = seq(0, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS);
    pb_mb_seq g1 = seq(1, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE);
    g1.sample.temperature = 1.0f;
    g1.sample.top_k = 1;
    int32_t t33 = 33;
    CHECK(pb_mb_add(&mb, &g0, &t33) == PB_OK && pb_mb_add_mask(&mb, allow, 2) == PB_OK &&
          pb_mb_add(&mb, &g1, &t33) == PB_OK);
    mb.tag = 9;
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 33 && res.tokens[1] == 39);
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(i * 0.1 - 3.9);
    CHECK(fabs(res.lps[0].logprob - (3.3 - 3.9 - log(z))) < 1e-5);
    /* with a repetition penalty on 33 (in the slot's history): 3.3 / 2 < 2.0, so 20 */
    pb_mb_clear(&mb);
    pb_mb_seq g2 = seq(0, 1, 1, PB_SEQ_SAMPLE);
    g2.sample.repetition_penalty = 2.0f;
    CHECK(pb_mb_add(&mb, &g2, &t33) == PB_OK && pb_mb_add_mask(&mb, allow, 2) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 20);
    pb_slot_sampler_free(ss);
    pb_mb_release(&mb);
    pb_mb_result_release(&res);
}

/* logprob_token_ids (PB_SEQ_LP_IDS): the wire, validation, a micro-batch cleared for reuse, and the sampler listing
 * the ids asked for, in their order, with the same log probabilities as the most-likely list gives them. */
static void test_lp_ids(void)
{
    pb_mb_limits lim = {.n_slots = 8, .max_seq_len = 32, .max_batch_tokens = 64, .vocab = 40};
    pb_microbatch mb, back;
    CHECK(pb_mb_init(&mb, 1, 1) == PB_OK && pb_mb_init(&back, 0, 0) == PB_OK);
    int32_t one = 7;
    const int32_t ids[3] = {5, 39, 0};
    pb_mb_seq a = seq(0, 3, 1, PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS), b = seq(1, 5, 1, PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &b, &one) == PB_OK && pb_mb_add_lp_ids(&mb, ids, 3) != PB_OK); /* without LOGPROBS */
    CHECK(pb_mb_add(&mb, &a, &one) == PB_OK && pb_mb_add_lp_ids(&mb, ids, 0) != PB_OK &&
          pb_mb_add_lp_ids(&mb, ids, PB_MAX_LOGPROBS + 1) != PB_OK && pb_mb_add_lp_ids(&mb, ids, 3) == PB_OK);
    CHECK(pb_mb_add_lp_ids(&mb, ids, 3) != PB_OK); /* once a sequence */
    CHECK(mb.n_lp_ids == 3 && mb.seqs[1].n_logprobs == 3 && (mb.seqs[1].flags & PB_SEQ_LP_IDS) &&
          pb_mb_validate(&mb, &lim) == PB_OK);
    size_t sz = pb_mb_packed_size(&mb), w = 0;
    CHECK(sz == 24 + 2 * 100 + 2 * 4 + 3 * 4 && sz <= pb_mb_max_size(2, 2, 40));
    unsigned char *buf = malloc(sz);
    CHECK(pb_mb_pack(&mb, buf, sz, &w) == PB_OK && w == sz);
    CHECK(pb_mb_unpack(buf, sz, &lim, &back) == PB_OK && back.n_lp_ids == 3 &&
          memcmp(back.lp_ids, ids, sizeof ids) == 0 && back.seqs[1].flags == mb.seqs[1].flags);
    CHECK(pb_mb_unpack(buf, sz - 4, &lim, &back) == PB_ERR_FORMAT);
    unsigned char cb[512]; /* the second sequence asking more ids than a list holds */
    memcpy(cb, buf, sz);
    cb[24 + 100 + 76] = PB_MAX_LOGPROBS + 1;
    CHECK(pb_mb_unpack(cb, sz, &lim, &back) == PB_ERR_FORMAT);
    free(buf);
    mb.lp_ids[1] = 40; /* past the vocabulary */
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    mb.lp_ids[1] = 39;
    mb.seqs[1].flags &= ~PB_SEQ_LOGPROBS;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    mb.seqs[1].flags |= PB_SEQ_LOGPROBS;
    mb.seqs[0].flags |= PB_SEQ_LOGPROBS | PB_SEQ_LP_IDS; /* two flagged, the ids of one */
    mb.seqs[0].n_logprobs = 2;
    CHECK(pb_mb_validate(&mb, &lim) == PB_ERR_INPUT);
    pb_mb_clear(&mb);
    CHECK(mb.n_lp_ids == 0);
    pb_mb_release(&mb);
    pb_mb_release(&back);

    /* the sampler: the ids asked for, in their order, their values those of the most likely list */
    enum { V = 40 };
    pb_slot_sampler *ss;
    CHECK(pb_slot_sampler_create(2, 16, V, &ss) == PB_OK);
    pb_mb_result res;
    CHECK(pb_mb_init(&mb, 2, 2) == PB_OK && pb_mb_result_init(&res, 2) == PB_OK);
    float logits[2 * V];
    for (int i = 0; i < 2 * V; i++)
        logits[i] = (float)((i * 7) % V) * 0.1f;
    pb_mb_seq g0 = seq(0, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS);
    pb_mb_seq g1 = seq(1, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS);
    g1.n_logprobs = PB_MAX_LOGPROBS;
    CHECK(pb_mb_add(&mb, &g0, &one) == PB_OK && pb_mb_add_lp_ids(&mb, ids, 3) == PB_OK &&
          pb_mb_add(&mb, &g1, &one) == PB_OK);
    mb.tag = 3;
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK);
    const pb_logprobs *l0 = &res.lps[0], *l1 = &res.lps[1];
    CHECK(l0->n_top == 3 && l0->top_id[0] == 5 && l0->top_id[1] == 39 && l0->top_id[2] == 0 &&
          l0->logprob == l1->logprob && l1->n_top == PB_MAX_LOGPROBS);
    for (int k = 0; k < 3; k++) {
        double z = 0;
        for (int i = 0; i < V; i++)
            z += exp((double)logits[i]);
        CHECK(fabs(l0->top_logprob[k] - ((double)logits[ids[k]] - log(z))) < 1e-5);
        for (int j = 0; j < l1->n_top; j++) /* the same bits where both list an id */
            CHECK(l1->top_id[j] != ids[k] || l1->top_logprob[j] == l0->top_logprob[k]);
    }
    pb_slot_sampler_free(ss);
    pb_mb_release(&mb);
    pb_mb_result_release(&res);
}

static void test_slot_sampler(void)
{
    enum { V = 6 };
    pb_slot_sampler *ss;
    CHECK(pb_slot_sampler_create(2, 16, V, &ss) == PB_OK);
    pb_microbatch mb;
    CHECK(pb_mb_init(&mb, 2, 8) == PB_OK);
    pb_mb_result res;
    CHECK(pb_mb_result_init(&res, 2) == PB_OK);
    float logits[2 * V] = {1, 5, 4.5f, 0, 0, 0, 1, 5, 4.5f, 0, 0, 0};
    int32_t p0[2] = {1, 3}, p1[1] = {0};
    pb_mb_seq a = seq(0, 0, 2, PB_SEQ_NEW | PB_SEQ_SAMPLE), b = seq(1, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE);
    a.sample.repetition_penalty = 2.0f; /* id 1 seen: 5 -> 2.5 < 4.5 */
    b.sample.repetition_penalty = 2.0f; /* id 1 not seen in slot 1 */
    CHECK(pb_mb_add(&mb, &a, p0) == PB_OK && pb_mb_add(&mb, &b, p1) == PB_OK);
    mb.tag = 1;
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK);
    CHECK(res.tag == 1 && res.n_seqs == 2 && res.tokens[0] == 2 && res.tokens[1] == 1);
    /* decode: slot 1 now has id 1 -> penalised too */
    pb_mb_clear(&mb);
    pb_mb_seq b2 = seq(1, 1, 1, PB_SEQ_SAMPLE);
    b2.sample.repetition_penalty = 2.0f;
    CHECK(pb_mb_add(&mb, &b2, &res.tokens[1]) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK);
    CHECK(res.tokens[0] == 2);
    /* wrong position is an internal error (history out of step) */
    pb_mb_clear(&mb);
    pb_mb_seq bad = seq(1, 5, 1, PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &bad, p1) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_ERR_INTERNAL);
    /* a non-final prefill chunk samples nothing */
    pb_mb_clear(&mb);
    pb_mb_seq c = seq(0, 0, 2, PB_SEQ_NEW);
    CHECK(pb_mb_add(&mb, &c, p0) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == -1 && res.lps[0].n_top == -1);
    /* log probabilities: of the model's logits (before the penalty that chose id 2), the 3 likeliest */
    pb_mb_clear(&mb);
    pb_mb_seq l = seq(0, 2, 1, PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS);
    l.sample.repetition_penalty = 2.0f;
    l.n_logprobs = 3;
    CHECK(pb_mb_add(&mb, &l, p1) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 2 && res.lps[0].n_top == 3);
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp((double)logits[i] - 5);
    const double lse = 5 + log(z);
    CHECK(fabs(res.lps[0].logprob - (4.5 - lse)) < 1e-6 && res.lps[0].top_id[0] == 1 && res.lps[0].top_id[1] == 2 &&
          res.lps[0].top_id[2] == 0 && fabs(res.lps[0].top_logprob[0] - (5 - lse)) < 1e-6 &&
          fabs(res.lps[0].top_logprob[2] - (1 - lse)) < 1e-6);
    /* prompt log probabilities need every position's logits: not from pb_slot_sampler_run */
    pb_mb_clear(&mb);
    pb_mb_seq pl = seq(1, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE | PB_SEQ_PROMPT_LOGPROBS);
    CHECK(pb_mb_add(&mb, &pl, p1) == PB_OK && pb_slot_sampler_run(ss, &mb, logits, &res) == PB_ERR_INTERNAL);
    /* logit biases, before the penalty: id 3 + 4.75 = 4.75 > 4.5 (id 3 seen: 4.75 / 2 < 4.5, so 2 again); id 5 +5 */
    pb_mb_clear(&mb);
    pb_mb_seq lb = seq(1, 2, 1, PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &lb, p1) == PB_OK && pb_mb_add_bias(&mb, (const pb_id_bias[]){{5, 5.5f}}, 1) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 5);
    pb_mb_clear(&mb);
    pb_mb_seq lc = seq(0, 3, 1, PB_SEQ_SAMPLE);
    lc.sample.repetition_penalty = 2.0f;
    CHECK(pb_mb_add(&mb, &lc, p1) == PB_OK && pb_mb_add_bias(&mb, (const pb_id_bias[]){{3, 4.75f}}, 1) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 2);
    /* allowed ids: only 0 and 4 (4 + 0.5 over 0's 1) */
    pb_mb_clear(&mb);
    pb_mb_seq la = seq(1, 3, 1, PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &la, p1) == PB_OK && pb_mb_add_allow(&mb, (const int32_t[]){0, 4}, 2) == PB_OK &&
          pb_mb_add_bias(&mb, (const pb_id_bias[]){{4, 1.5f}}, 1) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 4);
    /* -inf bans: ids 1 and 2 banned, 0 boosted over the rest */
    pb_mb_clear(&mb);
    pb_mb_seq ld = seq(0, 4, 1, PB_SEQ_SAMPLE | PB_SEQ_LOGPROBS);
    CHECK(pb_mb_add(&mb, &ld, p1) == PB_OK &&
          pb_mb_add_bias(&mb, (const pb_id_bias[]){{0, 0.5f}, {1, -INFINITY}, {2, -INFINITY}}, 3) == PB_OK);
    CHECK(pb_slot_sampler_run(ss, &mb, logits, &res) == PB_OK && res.tokens[0] == 0 &&
          fabs(res.lps[0].logprob - (1 - (5 + log(exp(-4) + 1 + exp(-0.5) + 3 * exp(-5))))) < 1e-6);
    /* the model's log probability: before the bias */
    pb_slot_sampler_free(ss);
    pb_mb_release(&mb);
    pb_mb_result_release(&res);
}

/* Pipe wrapper over a fake implementation: depth, FIFO order, tag check. */
typedef struct fake { uint64_t tags[8]; int n[8]; int head, count; bool lie; } fake;
static pb_status fake_submit(void *self, const pb_microbatch *mb)
{
    fake *f = self;
    f->tags[(f->head + f->count) % 8] = mb->tag;
    f->n[(f->head + f->count) % 8] = mb->n_seqs;
    f->count++;
    return PB_OK;
}
static pb_status fake_wait(void *self, pb_mb_result *res)
{
    fake *f = self;
    PB_CHECK(pb_mb_result_reserve(res, f->n[f->head]));
    res->tag = f->tags[f->head] + (f->lie ? 1 : 0);
    res->n_seqs = f->n[f->head];
    for (int i = 0; i < res->n_seqs; i++)
        res->tokens[i] = (int32_t)res->tag;
    f->head = (f->head + 1) % 8;
    f->count--;
    return PB_OK;
}
static int destroyed;
static void fake_destroy(void *self) { (void)self; destroyed++; }
static const pb_pipe_ops fake_ops = {"fake", fake_submit, fake_wait, NULL, fake_destroy};

static void test_pipe_wrapper(void)
{
    static fake f;
    pb_mb_limits lim = {.n_slots = 4, .max_seq_len = 8, .max_batch_tokens = 8, .vocab = 50};
    pb_pipe *p;
    CHECK(pb_pipe_create(&fake_ops, &f, 2, &lim, &p) == PB_OK);
    pb_microbatch mb;
    pb_mb_result res;
    CHECK(pb_mb_init(&mb, 1, 1) == PB_OK && pb_mb_result_init(&res, 1) == PB_OK);
    int32_t t = 3;
    pb_mb_seq s = seq(0, 0, 1, PB_SEQ_NEW | PB_SEQ_SAMPLE);
    CHECK(pb_mb_add(&mb, &s, &t) == PB_OK);
    CHECK(pb_pipe_wait(p, &res) == PB_ERR_INTERNAL); /* nothing in flight */
    mb.tag = 10;
    CHECK(pb_pipe_submit(p, &mb) == PB_OK);
    mb.tag = 11;
    CHECK(pb_pipe_submit(p, &mb) == PB_OK);
    mb.tag = 12;
    CHECK(pb_pipe_submit(p, &mb) == PB_ERR_INTERNAL); /* depth 2 */
    CHECK(pb_pipe_in_flight(p) == 2);
    CHECK(pb_pipe_wait(p, &res) == PB_OK && res.tag == 10 && res.tokens[0] == 10);
    CHECK(pb_pipe_submit(p, &mb) == PB_OK);
    CHECK(pb_pipe_wait(p, &res) == PB_OK && res.tag == 11);
    f.lie = true;
    CHECK(pb_pipe_wait(p, &res) == PB_ERR_INTERNAL); /* wrong tag */
    /* invalid micro-batch refused before reaching the implementation */
    mb.tokens[0] = 50;
    CHECK(pb_pipe_submit(p, &mb) == PB_ERR_INTERNAL && pb_pipe_in_flight(p) == 0);
    pb_pipe_free(p);
    CHECK(destroyed == 1);
    pb_mb_release(&mb);
    pb_mb_result_release(&res);
}

int main(void)
{
    test_philox();
    test_pack();
    test_slot_sampler();
    test_mask();
    test_lp_ids();
    test_pipe_wrapper();
    if (failures)
        fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}

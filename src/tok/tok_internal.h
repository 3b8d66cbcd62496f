/* Internals of the tokenizer layer: shared between load, normalize,
 * pre-tokenize, BPE, encode and decode. Not part of the public API. */
#ifndef PB_TOK_INTERNAL_H
#define PB_TOK_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pcre2.h>

#include "common/status.h"
#include "tok/tokenizer.h"

/* ---- growable byte buffer ---- */
typedef struct tk_buf {
    char *p;
    size_t len, cap;
} tk_buf;
pb_status tk_buf_reserve(tk_buf *b, size_t extra);
pb_status tk_buf_put(tk_buf *b, const void *s, size_t n);
static inline pb_status tk_buf_putc(tk_buf *b, char c) { return tk_buf_put(b, &c, 1); }
pb_status tk_buf_put_cp(tk_buf *b, uint32_t cp);   /* UTF-8 encode a code point */
void tk_buf_free(tk_buf *b);

/* ---- UTF-8 ---- */
/* Decode one scalar at s[0..n) (n >= 1), valid UTF-8 assumed; returns its length. */
static inline size_t tk_utf8_next(const char *s, size_t n, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80 || n < 2) { *cp = u[0]; return 1; }
    if (u[0] < 0xE0) { *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); return 2; }
    if (u[0] < 0xF0 || n < 4) {
        if (n < 3) { *cp = u[0]; return 1; }
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}
static inline size_t tk_utf8_len(unsigned char lead)
{
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
/* Length of the longest valid UTF-8 sequence starting at s (0 = invalid), and
 * of the maximal subpart of an invalid one (at least 1). */
size_t tk_utf8_valid_at(const unsigned char *s, size_t n, size_t *maximal_subpart);
bool tk_utf8_valid(const char *s, size_t n);
/* Append s with each maximal invalid subpart replaced by U+FFFD (from_utf8_lossy). */
pb_status tk_utf8_lossy(tk_buf *out, const char *s, size_t n);

/* Unicode classes as Rust's char methods define them (via utf8proc). */
bool tk_is_whitespace(uint32_t cp);    /* char::is_whitespace (White_Space) */
bool tk_is_numeric(uint32_t cp);       /* char::is_numeric (N*) */
bool tk_is_alphanumeric(uint32_t cp);  /* char::is_alphanumeric */
bool tk_is_word(uint32_t cp);          /* regex \w */
bool tk_is_punct(uint32_t cp);         /* ASCII punctuation or P* */
bool tk_is_control(uint32_t cp);       /* Bert's is_control */
bool tk_is_mark_nonspacing(uint32_t cp); /* HF BertNormalizer's Mn */
bool tk_strips_as_accent(uint32_t cp);   /* HF StripAccents' marks */

/* ---- hash maps ---- */
/* string -> int32 (vocab). Keys point into an arena owned by the map. */
typedef struct tk_strmap {
    uint32_t *slots;       /* entry index + 1, 0 = empty */
    size_t mask;
    char **keys;           /* entry -> key (NUL-terminated, length in klen) */
    uint32_t *klen;
    int32_t *vals;
    size_t n, cap;
} tk_strmap;
pb_status tk_strmap_init(tk_strmap *m, size_t expect);
/* Insert or overwrite; copies the key. */
pb_status tk_strmap_put(tk_strmap *m, const char *k, size_t klen, int32_t v);
/* -1 if absent. */
int32_t tk_strmap_get(const tk_strmap *m, const char *k, size_t klen);
void tk_strmap_free(tk_strmap *m);
uint64_t tk_hash(const void *p, size_t n);

/* (left id, right id) -> (rank, merged id). */
typedef struct tk_pairmap {
    uint64_t *keys;        /* (a << 32 | b) + 1, 0 = empty */
    uint32_t *rank;
    int32_t *merged;
    size_t mask, n;
} tk_pairmap;
pb_status tk_pairmap_init(tk_pairmap *m, size_t expect);
void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
static inline bool tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b, uint32_t *rank,
                                  int32_t *merged)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & m->mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) { *rank = m->rank[i]; *merged = m->merged[i]; return true; }
        if (!k) return false;
        i = (i + 1) & m->mask;
    }
}
void tk_pairmap_free(tk_pairmap *m);

/* ---- regex (PCRE2 with JIT, Oniguruma-compatible translation) ---- */
typedef struct tk_regex {
    pcre2_code *code;      /* NULL for a literal */
    char *lit;             /* literal pattern (String patterns) */
    size_t lit_len;
    bool jit;
} tk_regex;
pb_status tk_regex_compile(tk_regex *re, const char *pattern, size_t len, bool literal,
                           const char *where);
void tk_regex_free(tk_regex *re);
/* Find the next match in s[0..n) at or after `from`; false when none.
 * md is a match data block made for re (tk_regex_match_data). */
bool tk_regex_find(const tk_regex *re, pcre2_match_data *md, const char *s, size_t n, size_t from,
                   size_t *ms, size_t *me);
pcre2_match_data *tk_regex_match_data(const tk_regex *re);

/* ---- pieces: the pre-tokenized string, one text buffer + spans ---- */
typedef struct tk_piece {
    size_t off, len;       /* bytes in the owning buffer */
    int32_t id;            /* added-token id, or -1 for text still to tokenize */
    bool first;            /* starts at original offset 0 (Metaspace "first") */
} tk_piece;
typedef struct tk_pieces {
    tk_buf text;
    tk_piece *v;
    size_t n, cap;
} tk_pieces;
pb_status tk_pieces_add(tk_pieces *p, const char *s, size_t len, int32_t id, bool first);
/* Add a span that already lies in p->text. */
pb_status tk_pieces_add_span(tk_pieces *p, size_t off, size_t len, int32_t id, bool first);
void tk_pieces_free(tk_pieces *p);
void tk_pieces_clear(tk_pieces *p);

/* ---- components ---- */
typedef enum tk_behavior {
    TK_REMOVED, TK_ISOLATED, TK_MERGED_PREV, TK_MERGED_NEXT, TK_CONTIGUOUS
} tk_behavior;

typedef enum tk_norm_kind {
    TK_NORM_SEQUENCE, TK_NORM_PREPEND, TK_NORM_REPLACE, TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC,
    TK_NORM_NFKD, TK_NORM_LOWERCASE, TK_NORM_STRIP, TK_NORM_STRIP_ACCENTS, TK_NORM_BERT
} tk_norm_kind;
typedef struct tk_norm {
    tk_norm_kind kind;
    struct tk_norm *sub;   /* Sequence children */
    size_t n_sub;
    char *str;             /* Prepend text, Replace content */
    size_t str_len;
    tk_regex re;           /* Replace pattern */
    bool left, right;      /* Strip; Bert: clean_text (left), chinese (right) */
    bool strip_accents, lowercase; /* Bert */
} tk_norm;

typedef enum tk_pre_kind {
    TK_PRE_SEQUENCE, TK_PRE_BYTELEVEL, TK_PRE_SPLIT, TK_PRE_METASPACE, TK_PRE_DIGITS,
    TK_PRE_WHITESPACE, TK_PRE_WHITESPACE_SPLIT, TK_PRE_PUNCTUATION, TK_PRE_BERT
} tk_pre_kind;
typedef enum tk_prepend { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend;
typedef struct tk_pre {
    tk_pre_kind kind;
    struct tk_pre *sub;
    size_t n_sub;
    tk_regex re;           /* Split, ByteLevel (use_regex), Whitespace */
    bool has_re;
    tk_behavior behavior;
    bool invert;
    bool add_prefix_space; /* ByteLevel */
    bool individual;       /* Digits */
    uint32_t replacement;  /* Metaspace */
    tk_prepend prepend;
    bool split;
} tk_pre;

typedef enum tk_post_kind { TK_POST_SEQUENCE, TK_POST_NOOP, TK_POST_TEMPLATE, TK_POST_CLS_SEP } tk_post_kind;
typedef struct tk_post {
    tk_post_kind kind;
    struct tk_post *sub;
    size_t n_sub;
    /* Template: ids before and after the sequence (A) in the `single` template */
    int32_t *before, *after;
    size_t n_before, n_after;
} tk_post;

typedef enum tk_dec_kind {
    TK_DEC_SEQUENCE, TK_DEC_BYTELEVEL, TK_DEC_METASPACE, TK_DEC_REPLACE, TK_DEC_BYTEFALLBACK,
    TK_DEC_FUSE, TK_DEC_STRIP, TK_DEC_BPE, TK_DEC_WORDPIECE
} tk_dec_kind;
typedef struct tk_dec {
    tk_dec_kind kind;
    struct tk_dec *sub;
    size_t n_sub;
    tk_regex re;           /* Replace */
    char *str;             /* Replace content, BPE suffix, WordPiece prefix */
    size_t str_len;
    uint32_t ch;           /* Metaspace replacement, Strip content */
    tk_prepend prepend;
    size_t start, stop;    /* Strip */
    bool cleanup;          /* WordPiece */
} tk_dec;

typedef struct tk_added {
    char *content;         /* as written */
    size_t len;
    char *match;           /* what is matched (normalized content when normalized) */
    size_t match_len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* Byte trie over added-token strings, leftmost-longest matching. */
typedef struct tk_trie_node {
    int32_t first_edge;    /* -1 if none */
    int32_t token;         /* index into tok->added, -1 if none */
} tk_trie_node;
typedef struct tk_trie_edge { int32_t child, next; unsigned char byte; } tk_trie_edge;
typedef struct tk_trie {
    tk_trie_node *nodes;
    tk_trie_edge *edges;
    size_t n_nodes, n_edges, cap_nodes, cap_edges;
    bool first_byte[256];
} tk_trie;

/* BPE word cache: direct-mapped, guarded by a trylock. */
typedef struct tk_cache_entry {
    uint64_t hash;
    char *key;
    uint32_t klen, n_ids;
    int32_t *ids;
} tk_cache_entry;

struct pb_tokenizer {
    char *name;
    /* model */
    tk_strmap vocab;
    char **id_tok;         /* id -> token (model vocab or added), NULL if none */
    uint32_t *id_tok_len;
    unsigned char *id_flags; /* TK_ID_* */
    int32_t n_ids;         /* max id + 1 */
    tk_pairmap merges;
    int32_t unk_id;        /* -1 if none, -2 if named but not in the vocab */
    char *unk_token;
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_ids[256]; /* "<0xXX>" ids for byte_fallback, -1 if absent */
    bool split_meta;       /* no token has U+2581 right after another character: BPE words
                              may be cut before such a U+2581 without changing the result */
    int32_t *char_ids;     /* vocab id of each single BMP character (no affixes), -1 if none */
    char *bl_bytes;        /* ByteLevel-only decoder: each id's bytes, back to back */
    uint32_t *bl_off;      /* n_ids + 1 offsets into bl_bytes */
    char *cont_prefix, *eow_suffix;
    size_t cont_prefix_len, eow_suffix_len;
    /* pipeline */
    tk_added *added;
    size_t n_added;
    tk_strmap added_map;   /* content -> id */
    tk_trie trie_raw, trie_norm;
    tk_norm *norm;         /* NULL = none */
    tk_pre *pre;
    tk_post *post;
    tk_dec *dec;
    /* cache */
    pthread_mutex_t cache_lock;
    tk_cache_entry *cache;
    size_t cache_mask;
};

enum {
    TK_ID_SPECIAL = 1,
    TK_ID_ADDED = 2,
    TK_ID_CONT = 4,        /* decoded text begins with a UTF-8 continuation byte */
    TK_ID_BYTE = 8,        /* a byte-fallback token <0xXX> */
};

/* The tokenizer has a token for id (padded model rows past it have none). */
static inline bool tk_known_id(const pb_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && tok->id_tok[id];
}

/* Byte-level (GPT-2) byte <-> code point tables. */
extern const uint16_t tk_byte_to_cp[256];
/* Inverse of tk_byte_to_cp: printable bytes map to themselves, the others
 * (0x00-0x20, 0x7F-0xA0, 0xAD) to 256.. in order. -1 if not a byte-level char. */
static inline int tk_cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE) ? (int)cp : -1;
    if (cp <= 288) return (int)cp - 256;
    if (cp <= 322) return (int)cp - 289 + 0x7F;
    return cp == 323 ? 0xAD : -1;
}

/* Components at work. */
pb_status tk_normalize(const tk_norm *n, const char *s, size_t len, tk_buf *out);
pb_status tk_pretokenize(const pb_tokenizer *tok, const tk_pre *p, tk_pieces *in, tk_pieces *tmp);
pb_status tk_bpe_word(const pb_tokenizer *tok, const char *w, size_t len, int32_t **ids,
                      size_t *n, size_t *cap);
pb_status tk_trie_build(tk_trie *t, const tk_added *added, size_t n_added, bool normalized);
void tk_trie_free(tk_trie *t);

void tk_norm_free(tk_norm *n);
void tk_pre_free(tk_pre *p);
void tk_post_free(tk_post *p);
void tk_dec_free(tk_dec *d);

/* Read a file, decompressing it when it is a zstd stream (NUL-terminated). */
pb_status tk_read_maybe_zstd(const char *path, char **out, size_t *out_len);

/* Decode ids[0..n) to text appended to out (NUL not added). */
pb_status tk_decode_into(const pb_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                         tk_buf *out);

#endif

/* A stage's packed weights kept in a file (--weights-cache DIR): the first
 * run writes the matrices the CPU backend packed; later runs with the same
 * key map them from the page cache instead of reading and packing the
 * checkpoint. Only the CPU backend (cpu.c) uses it.
 *
 * File (host byte order, x86-64 little-endian; one per stage and settings):
 *   header, 64 bytes: "PBWCACHE", u32 version, u32 n_entries, u64 key_len,
 *     u64 data_off, u64 file_size, u64 table_sum, 16 bytes zero
 *   the key (key_len bytes, no NUL), then n_entries entries of 40 bytes:
 *     u32 n_out, u32 n_in, u32 dtype, u32 zero, u64 offset, u64 bytes, u64 sum
 *   each matrix's packed bytes at its offset (4096-aligned, >= data_off).
 * table_sum covers the key and the entries, each entry's sum its bytes.
 *
 * Opening checks the whole file: size, header, key, entries (bounds, shapes,
 * sizes) and every checksum (on the backend's threads). A file that fails any
 * check is a miss with a warning that says why, and is rewritten; failing to
 * write one is a warning too. Nothing here fails a run. */
#ifndef PB_CPU_WCACHE_H
#define PB_CPU_WCACHE_H

#include <stdbool.h>

#include "common/status.h"
#include "cpu/kernels.h"

typedef struct pb_wcache pb_wcache;

/* The cache at path for key (the checkpoint, stage and settings it was packed
 * from; this file adds the packed layout's version). PB_ERR_NOMEM only. */
pb_status pb_wcache_open(const char *path, const char *key, pb_kctx *k, pb_wcache **out);
bool pb_wcache_hit(const pb_wcache *c);
/* The next matrix the stage asks for: a hit gives it over the mapped file when
 * the entry has this shape and dtype (NULL otherwise: pack it, then record). */
pb_kmat *pb_wcache_take(pb_wcache *c, int n_out, int n_in, pb_dtype dt);
/* Each matrix of the stage, in order (taken or packed): what a rewrite holds. */
pb_status pb_wcache_record(pb_wcache *c, const pb_kmat *m);
/* The stage's matrices are all in: writes the file unless every entry was a
 * hit (tmp file, fsync, rename). Warnings only. */
void pb_wcache_finish(pb_wcache *c, pb_kctx *k);
/* After the matrices taken from it are freed. NULL-safe. */
void pb_wcache_free(pb_wcache *c);

#endif

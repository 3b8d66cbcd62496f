/* JSON text re-written as Python writes it: json.dumps(json.loads(text), ensure_ascii=False), the form in
 * which vLLM returns a required tool call's arguments. Separators ", " and ": "; strings with only '"', '\',
 * control characters (\n \r \t \b \f, else \u00XX) escaped and every other character as itself; integers
 * as their digits ("-0" as 0); other numbers as Python's repr of the double they round to (shortest digits:
 * 1.0, 0.0001, 1e-05, 1e+16, Infinity); a key given twice keeps its first place and its last value. */
#ifndef PB_GEN_PYJSON_H
#define PB_GEN_PYJSON_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "gen/jbuf.h"

/* One JSON value (whitespace around it allowed) appended to out in Python's form; PB_ERR_INPUT (out
 * unchanged) where the text is not one JSON value, nested at most 512 deep. */
pb_status pb_pyjson_dumps(const char *s, size_t n, pb_jbuf *out);

/* A JSON value parsed for walking: a tree over the text. */
typedef struct pb_jnode pb_jnode;
pb_status pb_jnode_parse(const char *s, size_t n, pb_jnode **out);
void pb_jnode_free(pb_jnode *v);
/* 'o' object, 'a' array, 's' string, 'n' number, 't' true, 'f' false, 'z' null */
char pb_jnode_kind(const pb_jnode *v);
int pb_jnode_count(const pb_jnode *v);                      /* items of an array or members of an object */
const pb_jnode *pb_jnode_item(const pb_jnode *v, int i);    /* an array's item, an object's member's value */
const pb_jnode *pb_jnode_get(const pb_jnode *v, const char *key); /* an object's member (the last of a key) */
const char *pb_jnode_str(const pb_jnode *v, size_t *len);   /* a string's decoded UTF-8, else NULL */
/* v in Python's form, as pb_pyjson_dumps */
void pb_jnode_dumps(const pb_jnode *v, pb_jbuf *out);

#endif

/* A restricted unpickler for the data.pkl of a torch.save() zip archive. Like
 * torch's weights_only loader it builds only plain values (ints, floats,
 * strings, tuples, lists, dicts) and objects from an allow-list of globals:
 * collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter and the torch.*Storage types (in persistent
 * ids). Anything else is refused by name; no code is ever run. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_impl.h"
#include "common/util.h"

typedef enum okind {
    K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_TUPLE, K_LIST, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR, K_MARK
} okind;

typedef enum gid {
    G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_STORAGE
} gid;

typedef struct obj obj;
struct obj {
    okind k;
    int64_t i;                /* int, bool */
    double f;
    char *s;                  /* str (NUL-terminated, may contain NUL: len) */
    size_t len;
    obj **items;              /* tuple, list, dict (key, value pairs flattened) */
    int n, cap;
    gid g;                    /* global */
    pb_dtype dtype;           /* storage type (global) / storage / tensor */
    /* storage */
    char *key;
    uint64_t numel;
    /* tensor */
    obj *storage;
    uint64_t offset;
    int ndim;
    int64_t shape[PB_MAX_DIMS], stride[PB_MAX_DIMS];
};

typedef struct vm {
    const char *path;
    const unsigned char *p, *end, *start;
    obj **all;                /* every object, freed at the end */
    int n_all, cap_all;
    obj **stack;
    int sp, cap_stack;
    obj **memo;
    uint32_t n_memo;
    obj mark;                 /* the MARK sentinel */
} vm;

#define MAX_STACK (1 << 22)
#define MAX_MEMO (1u << 24)

static pb_status bad(vm *v, const char *what)
{
    return pb_error(PB_ERR_FORMAT, "%s: data.pkl: %s at byte %ld", v->path, what, (long)(v->p - v->start));
}

static pb_status new_obj(vm *v, okind k, obj **out)
{
    if (v->n_all == v->cap_all) {
        int cap = v->cap_all ? 2 * v->cap_all : 256;
        PB_CHECK(pb_realloc_array(&v->all, (size_t)cap, sizeof *v->all));
        v->cap_all = cap;
    }
    obj *o;
    PB_CHECK(pb_calloc(1, sizeof *o, &o));
    o->k = k;
    v->all[v->n_all++] = o;
    *out = o;
    return PB_OK;
}

static pb_status push(vm *v, obj *o)
{
    if (v->sp == v->cap_stack) {
        if (v->cap_stack >= MAX_STACK)
            return bad(v, "stack too deep");
        int cap = v->cap_stack ? 2 * v->cap_stack : 64;
        PB_CHECK(pb_realloc_array(&v->stack, (size_t)cap, sizeof *v->stack));
        v->cap_stack = cap;
    }
    v->stack[v->sp++] = o;
    return PB_OK;
}

static pb_status pop(vm *v, obj **out)
{
    if (v->sp == 0 || v->stack[v->sp - 1] == &v->mark)
        return bad(v, "stack underflow");
    *out = v->stack[--v->sp];
    return PB_OK;
}

static pb_status append_item(obj *c, obj *x)
{
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        PB_CHECK(pb_realloc_array(&c->items, (size_t)cap, sizeof *c->items));
        c->cap = cap;
    }
    c->items[c->n++] = x;
    return PB_OK;
}

/* Index of the topmost MARK. */
static pb_status find_mark(vm *v, int *at)
{
    for (int i = v->sp - 1; i >= 0; i--)
        if (v->stack[i] == &v->mark) {
            *at = i;
            return PB_OK;
        }
    return bad(v, "no MARK on the stack");
}

static pb_status need(vm *v, size_t n)
{
    if ((size_t)(v->end - v->p) < n)
        return bad(v, "truncated pickle");
    return PB_OK;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

static pb_status make_str(vm *v, size_t n)
{
    PB_CHECK(need(v, n));
    obj *o;
    PB_CHECK(new_obj(v, K_STR, &o));
    PB_CHECK(pb_malloc(n + 1, &o->s));
    memcpy(o->s, v->p, n);
    o->s[n] = '\0';
    o->len = n;
    v->p += n;
    return push(v, o);
}

static pb_status make_int(vm *v, int64_t x)
{
    obj *o;
    PB_CHECK(new_obj(v, K_INT, &o));
    o->i = x;
    return push(v, o);
}

static const struct { const char *name; pb_dtype dt; } storage_types[] = {
    {"FloatStorage", PB_DT_F32}, {"HalfStorage", PB_DT_F16},  {"BFloat16Storage", PB_DT_BF16},
    {"DoubleStorage", PB_DT_F64}, {"LongStorage", PB_DT_I64}, {"IntStorage", PB_DT_I32},
    {"ShortStorage", PB_DT_I16}, {"CharStorage", PB_DT_I8},   {"ByteStorage", PB_DT_U8},
    {"BoolStorage", PB_DT_BOOL},
};

static pb_status make_global(vm *v, const char *mod, size_t mlen, const char *name, size_t nlen)
{
    obj *o;
    PB_CHECK(new_obj(v, K_GLOBAL, &o));
#define IS(m, n) (mlen == strlen(m) && memcmp(mod, m, mlen) == 0 && nlen == strlen(n) && memcmp(name, n, nlen) == 0)
    if (IS("collections", "OrderedDict")) {
        o->g = G_ORDERED_DICT;
    } else if (IS("torch._utils", "_rebuild_tensor_v2")) {
        o->g = G_REBUILD_TENSOR_V2;
    } else if (IS("torch._utils", "_rebuild_parameter")) {
        o->g = G_REBUILD_PARAMETER;
    } else {
        bool found = false;
        if (mlen == 5 && memcmp(mod, "torch", 5) == 0)
            for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++)
                if (nlen == strlen(storage_types[i].name) && memcmp(name, storage_types[i].name, nlen) == 0) {
                    o->g = G_STORAGE;
                    o->dtype = storage_types[i].dt;
                    found = true;
                }
        if (!found) {
            char m[64], n[64];
            snprintf(m, sizeof m, "%.*s", (int)(mlen < 60 ? mlen : 60), mod);
            snprintf(n, sizeof n, "%.*s", (int)(nlen < 60 ? nlen : 60), name);
            for (char *c = m; *c; c++)
                if ((unsigned char)*c < 32 || *c == 127)
                    *c = '?';
            for (char *c = n; *c; c++)
                if ((unsigned char)*c < 32 || *c == 127)
                    *c = '?';
            return pb_error(PB_ERR_FORMAT,
                            "%s: data.pkl: global '%s.%s' is not allowed (only OrderedDict, torch tensors and "
                            "storages are loaded; no code is run)", v->path, m, n);
        }
    }
#undef IS
    return push(v, o);
}

static bool as_int(const obj *o, int64_t *x)
{
    if (o->k != K_INT && o->k != K_BOOL)
        return false;
    *x = o->i;
    return true;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
static pb_status rebuild_tensor(vm *v, const obj *args, obj **out)
{
    if (args->k != K_TUPLE || args->n < 4 || args->n > 7)
        return bad(v, "_rebuild_tensor_v2 with unexpected arguments");
    const obj *s = args->items[0], *size = args->items[2], *stride = args->items[3];
    int64_t off;
    if (s->k != K_STORAGE || !as_int(args->items[1], &off) || off < 0 || size->k != K_TUPLE || stride->k != K_TUPLE ||
        size->n != stride->n)
        return bad(v, "_rebuild_tensor_v2: bad storage, offset, size or stride");
    if (size->n > PB_MAX_DIMS)
        return bad(v, "tensor with too many dimensions");
    obj *t;
    PB_CHECK(new_obj(v, K_TENSOR, &t));
    t->storage = (obj *)s;
    t->dtype = s->dtype;
    t->offset = (uint64_t)off;
    t->ndim = size->n;
    uint64_t numel = 1, last = (uint64_t)off;
    for (int d = 0; d < size->n; d++) {
        int64_t a, b;
        if (!as_int(size->items[d], &a) || !as_int(stride->items[d], &b) || a < 0 || b < 0)
            return bad(v, "_rebuild_tensor_v2: size and stride must be non-negative integers");
        t->shape[d] = a;
        t->stride[d] = b;
        size_t m;
        if (!pb_mul_ok((size_t)numel, (size_t)a, &m))
            return bad(v, "tensor size overflows");
        numel = m;
    }
    if (numel) {
        for (int d = 0; d < size->n; d++) {
            size_t m, sum;
            if (!pb_mul_ok((size_t)(t->shape[d] - 1), (size_t)t->stride[d], &m) || !pb_add_ok((size_t)last, m, &sum))
                return bad(v, "tensor view overflows");
            last = sum;
        }
        if (last >= s->numel)
            return pb_error(PB_ERR_FORMAT, "%s: data.pkl: tensor view (offset %lld, last element %llu) is outside its "
                            "storage '%s' of %llu elements", v->path, (long long)off, (unsigned long long)last, s->key,
                            (unsigned long long)s->numel);
    }
    size_t bytes;
    if (!pb_mul_ok((size_t)numel, pb_dtype_size(t->dtype), &bytes))
        return bad(v, "tensor size overflows");
    *out = t;
    return PB_OK;
}

static pb_status do_reduce(vm *v)
{
    obj *args = NULL, *fn = NULL, *res = NULL;
    PB_CHECK(pop(v, &args));
    PB_CHECK(pop(v, &fn));
    if (fn->k != K_GLOBAL || args->k != K_TUPLE)
        return bad(v, "REDUCE of something that is not an allowed global");
    switch (fn->g) {
    case G_ORDERED_DICT:
        if (args->n != 0)
            return bad(v, "OrderedDict() with arguments");
        PB_CHECK(new_obj(v, K_DICT, &res));
        break;
    case G_REBUILD_TENSOR_V2:
        PB_CHECK(rebuild_tensor(v, args, &res));
        break;
    case G_REBUILD_PARAMETER:
        if (args->n < 1 || args->items[0]->k != K_TENSOR)
            return bad(v, "_rebuild_parameter without a tensor");
        res = args->items[0];
        break;
    case G_STORAGE:
        return bad(v, "storage types may appear only in persistent ids");
    }
    return push(v, res);
}

/* BINPERSID: ('storage', <torch.XStorage>, key, location, numel) */
static pb_status do_persid(vm *v)
{
    obj *pid = NULL, *st;
    PB_CHECK(pop(v, &pid));
    if (pid->k != K_TUPLE || pid->n != 5 || pid->items[0]->k != K_STR || strcmp(pid->items[0]->s, "storage") != 0 ||
        pid->items[1]->k != K_GLOBAL || pid->items[1]->g != G_STORAGE || pid->items[2]->k != K_STR ||
        pid->items[2]->len == 0 || strlen(pid->items[2]->s) != pid->items[2]->len || pid->items[4]->k != K_INT ||
        pid->items[4]->i < 0)
        return bad(v, "persistent id is not ('storage', torch.<type>Storage, key, location, numel)");
    for (const char *c = pid->items[2]->s; *c; c++)
        if (*c == '/' || (unsigned char)*c < 32)
            return bad(v, "storage key with '/' or control characters");
    PB_CHECK(new_obj(v, K_STORAGE, &st));
    st->dtype = pid->items[1]->dtype;
    st->key = pid->items[2]->s;
    st->numel = (uint64_t)pid->items[4]->i;
    return push(v, st);
}

static pb_status run(vm *v, obj **result)
{
    for (;;) {
        PB_CHECK(need(v, 1));
        unsigned char op = *v->p++;
        obj *o, *a = NULL, *b = NULL;
        int m = 0;
        switch (op) {
        case 0x80: /* PROTO */
            PB_CHECK(need(v, 1));
            if (*v->p > 5)
                return bad(v, "unsupported pickle protocol");
            v->p++;
            break;
        case 0x95: /* FRAME */
            PB_CHECK(need(v, 8));
            v->p += 8;
            break;
        case '}': PB_CHECK(new_obj(v, K_DICT, &o)); PB_CHECK(push(v, o)); break;
        case ']': PB_CHECK(new_obj(v, K_LIST, &o)); PB_CHECK(push(v, o)); break;
        case ')': PB_CHECK(new_obj(v, K_TUPLE, &o)); PB_CHECK(push(v, o)); break;
        case '(': PB_CHECK(push(v, &v->mark)); break;
        case 'N': PB_CHECK(new_obj(v, K_NONE, &o)); PB_CHECK(push(v, o)); break;
        case 0x88: case 0x89:
            PB_CHECK(new_obj(v, K_BOOL, &o));
            o->i = op == 0x88;
            PB_CHECK(push(v, o));
            break;
        case 'J': PB_CHECK(need(v, 4)); PB_CHECK(make_int(v, (int32_t)(uint32_t)le(v->p, 4))); v->p += 4; break;
        case 'K': PB_CHECK(need(v, 1)); PB_CHECK(make_int(v, v->p[0])); v->p += 1; break;
        case 'M': PB_CHECK(need(v, 2)); PB_CHECK(make_int(v, (int64_t)le(v->p, 2))); v->p += 2; break;
        case 0x8a: { /* LONG1 */
            PB_CHECK(need(v, 1));
            int n = *v->p++;
            PB_CHECK(need(v, (size_t)n));
            if (n > 8)
                return bad(v, "integer too large");
            uint64_t x = n ? le(v->p, n) : 0;
            if (n && n < 8 && (v->p[n - 1] & 0x80))
                x |= ~0ull << (8 * n); /* sign-extend */
            v->p += n;
            PB_CHECK(make_int(v, (int64_t)x));
            break;
        }
        case 'G': { /* BINFLOAT, big-endian */
            PB_CHECK(need(v, 8));
            uint64_t x = 0;
            for (int i = 0; i < 8; i++)
                x = (x << 8) | v->p[i];
            v->p += 8;
            PB_CHECK(new_obj(v, K_FLOAT, &o));
            memcpy(&o->f, &x, 8);
            PB_CHECK(push(v, o));
            break;
        }
        case 'X': case 'T': case 'B': PB_CHECK(need(v, 4)); { size_t n = (size_t)le(v->p, 4); v->p += 4; PB_CHECK(make_str(v, n)); } break;
        case 0x8c: case 'U': case 'C': PB_CHECK(need(v, 1)); { size_t n = *v->p++; PB_CHECK(make_str(v, n)); } break;
        case 0x8d: case 0x8e: PB_CHECK(need(v, 8)); {
            uint64_t n = le(v->p, 8);
            v->p += 8;
            if (n > (uint64_t)(v->end - v->p))
                return bad(v, "truncated pickle");
            PB_CHECK(make_str(v, (size_t)n));
        } break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const unsigned char *nl1 = memchr(v->p, '\n', (size_t)(v->end - v->p));
            if (!nl1)
                return bad(v, "truncated GLOBAL");
            const unsigned char *nl2 = memchr(nl1 + 1, '\n', (size_t)(v->end - nl1 - 1));
            if (!nl2)
                return bad(v, "truncated GLOBAL");
            PB_CHECK(make_global(v, (const char *)v->p, (size_t)(nl1 - v->p), (const char *)nl1 + 1,
                                 (size_t)(nl2 - nl1 - 1)));
            v->p = nl2 + 1;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            PB_CHECK(pop(v, &b));
            PB_CHECK(pop(v, &a));
            if (a->k != K_STR || b->k != K_STR)
                return bad(v, "STACK_GLOBAL of non-strings");
            PB_CHECK(make_global(v, a->s, a->len, b->s, b->len));
            break;
        case 'q': case 'r': case 0x94: { /* BINPUT, LONG_BINPUT, MEMOIZE */
            uint32_t idx;
            if (op == 'q') {
                PB_CHECK(need(v, 1));
                idx = *v->p++;
            } else if (op == 'r') {
                PB_CHECK(need(v, 4));
                idx = (uint32_t)le(v->p, 4);
                v->p += 4;
            } else {
                idx = v->n_memo;
            }
            if (v->sp == 0 || v->stack[v->sp - 1] == &v->mark)
                return bad(v, "memo store of an empty stack");
            if (idx >= MAX_MEMO)
                return bad(v, "memo index too large");
            if (idx >= v->n_memo) {
                uint32_t n = idx + 1 > 2 * v->n_memo ? idx + 1 : 2 * v->n_memo;
                if (n > MAX_MEMO)
                    n = MAX_MEMO;
                PB_CHECK(pb_realloc_array(&v->memo, n, sizeof *v->memo));
                memset(v->memo + v->n_memo, 0, (n - v->n_memo) * sizeof *v->memo);
                v->n_memo = n;
            }
            v->memo[idx] = v->stack[v->sp - 1];
            break;
        }
        case 'h': case 'j': {
            uint32_t idx;
            if (op == 'h') {
                PB_CHECK(need(v, 1));
                idx = *v->p++;
            } else {
                PB_CHECK(need(v, 4));
                idx = (uint32_t)le(v->p, 4);
                v->p += 4;
            }
            if (idx >= v->n_memo || !v->memo[idx])
                return bad(v, "memo get of an unset index");
            PB_CHECK(push(v, v->memo[idx]));
            break;
        }
        case 't': case 'l': case 'd': /* TUPLE, LIST, DICT from MARK */
            PB_CHECK(find_mark(v, &m));
            PB_CHECK(new_obj(v, op == 't' ? K_TUPLE : op == 'l' ? K_LIST : K_DICT, &o));
            if (op == 'd' && (v->sp - m - 1) % 2)
                return bad(v, "DICT with an odd number of items");
            for (int i = m + 1; i < v->sp; i++)
                PB_CHECK(append_item(o, v->stack[i]));
            v->sp = m;
            PB_CHECK(push(v, o));
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            int n = op - 0x84;
            if (v->sp < n)
                return bad(v, "stack underflow");
            for (int i = v->sp - n; i < v->sp; i++)
                if (v->stack[i] == &v->mark)
                    return bad(v, "MARK inside a tuple");
            PB_CHECK(new_obj(v, K_TUPLE, &o));
            for (int i = v->sp - n; i < v->sp; i++)
                PB_CHECK(append_item(o, v->stack[i]));
            v->sp -= n;
            PB_CHECK(push(v, o));
            break;
        }
        case 'a': /* APPEND */
            PB_CHECK(pop(v, &a));
            if (v->sp == 0 || v->stack[v->sp - 1]->k != K_LIST || v->stack[v->sp - 1] == &v->mark)
                return bad(v, "APPEND to a non-list");
            PB_CHECK(append_item(v->stack[v->sp - 1], a));
            break;
        case 'e': case 'u': /* APPENDS, SETITEMS */
            PB_CHECK(find_mark(v, &m));
            if (m == 0 || v->stack[m - 1]->k != (op == 'e' ? K_LIST : K_DICT))
                return bad(v, op == 'e' ? "APPENDS to a non-list" : "SETITEMS on a non-dict");
            if (op == 'u' && (v->sp - m - 1) % 2)
                return bad(v, "SETITEMS with an odd number of items");
            for (int i = m + 1; i < v->sp; i++)
                PB_CHECK(append_item(v->stack[m - 1], v->stack[i]));
            v->sp = m;
            break;
        case 's': /* SETITEM */
            PB_CHECK(pop(v, &b));
            PB_CHECK(pop(v, &a));
            if (v->sp == 0 || v->stack[v->sp - 1] == &v->mark || v->stack[v->sp - 1]->k != K_DICT)
                return bad(v, "SETITEM on a non-dict");
            PB_CHECK(append_item(v->stack[v->sp - 1], a));
            PB_CHECK(append_item(v->stack[v->sp - 1], b));
            break;
        case 'R': PB_CHECK(do_reduce(v)); break;
        case 'Q': PB_CHECK(do_persid(v)); break;
        case 'b': /* BUILD: state of an OrderedDict (_metadata) or tensor is ignored */
            PB_CHECK(pop(v, &a));
            if (v->sp == 0 || v->stack[v->sp - 1] == &v->mark ||
                (v->stack[v->sp - 1]->k != K_DICT && v->stack[v->sp - 1]->k != K_TENSOR))
                return bad(v, "BUILD on an object that is not a dict or tensor");
            break;
        case '0': PB_CHECK(pop(v, &a)); break;
        case '1': PB_CHECK(find_mark(v, &m)); v->sp = m; break;
        case '2':
            if (v->sp == 0 || v->stack[v->sp - 1] == &v->mark)
                return bad(v, "DUP of an empty stack");
            PB_CHECK(push(v, v->stack[v->sp - 1]));
            break;
        case '.': /* STOP */
            PB_CHECK(pop(v, result));
            return PB_OK;
        default: {
            char msg[64];
            snprintf(msg, sizeof msg, "opcode 0x%02x is not supported", op);
            v->p--;
            return bad(v, msg);
        }
        }
    }
}

void pb_bin_tensors_free(pb_bin_tensor *t, int n)
{
    if (!t)
        return;
    for (int i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].storage_key);
    }
    free(t);
}

pb_status pb_pickle_load_state_dict(const char *path, const unsigned char *data, size_t len, pb_bin_tensor **out,
                                    int *n_out)
{
    vm v = {.path = path, .p = data, .start = data, .end = data + len};
    pb_bin_tensor *t = NULL;
    int n = 0;
    obj *root = NULL;
    pb_status st = run(&v, &root);
    if (st != PB_OK)
        goto out;
    if (root->k != K_DICT) {
        st = pb_error(PB_ERR_FORMAT, "%s: data.pkl does not hold a state dict (a dict of tensors)", path);
        goto out;
    }
    int count = root->n / 2;
    PB_CHECK_GOTO(pb_calloc((size_t)count, sizeof *t, &t), st, out);
    for (int i = 0; i < count; i++) {
        const obj *k = root->items[2 * i], *val = root->items[2 * i + 1];
        if (k->k != K_STR || strlen(k->s) != k->len) {
            st = pb_error(PB_ERR_FORMAT, "%s: data.pkl: state dict key %d is not a string", path, i);
            goto out;
        }
        if (val->k != K_TENSOR) {
            st = pb_error(PB_ERR_FORMAT, "%s: data.pkl: state dict entry '%s' is not a tensor", path, k->s);
            goto out;
        }
        pb_bin_tensor *b = &t[n++];
        b->name = pb_strdup(k->s);
        size_t kl = strlen(val->storage->key);
        b->storage_key = malloc(kl + 6);
        if (!b->name || !b->storage_key) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(b->storage_key, "data/", 5);
        memcpy(b->storage_key + 5, val->storage->key, kl + 1);
        b->dtype = val->dtype;
        b->storage_numel = val->storage->numel;
        b->offset = val->offset;
        b->ndim = val->ndim;
        memcpy(b->shape, val->shape, sizeof b->shape);
        memcpy(b->stride, val->stride, sizeof b->stride);
    }
    *out = t;
    *n_out = n;
    t = NULL;
out:
    pb_bin_tensors_free(t, n);
    for (int i = 0; i < v.n_all; i++) {
        free(v.all[i]->s);
        free(v.all[i]->items);
        free(v.all[i]);
    }
    free(v.all);
    free(v.stack);
    free(v.memo);
    return st;
}

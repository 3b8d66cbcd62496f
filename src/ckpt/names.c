/* The checkpoint's view of the family table (model/family.h): base and layer
 * prefixes, and the full list of expected tensors with their shapes as stored
 * (nn.Linear weights [out, in]; GPT-2 Conv1D weights [in, out]). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_impl.h"
#include "common/util.h"

const char *pb_ckpt_canonical_name(const pb_family *f, const char *name)
{
    return pb_family_canonical(f, name);
}

int pb_ckpt_layer_name(const pb_family *f, int layer, const char *suffix, char *buf, size_t cap)
{
    return pb_family_layer_name(f, layer, suffix, buf, cap);
}

bool pb_names_is_buffer(const char *canonical)
{
    static const char *const bufs[] = {
        ".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
        ".attn.attention.bias", ".attn.attention.masked_bias", ".rotary_emb.inv_freq",
        ".attn.causal_mask", ".self_attn.rotary_emb.inv_freq",
    };
    size_t n = strlen(canonical);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        size_t k = strlen(bufs[i]);
        if (n >= k && strcmp(canonical + n - k, bufs[i]) == 0)
            return true;
    }
    return false;
}

static pb_status add(pb_expected **v, int *n, int *cap, const pb_witem *it, const char *name, int ndim, int64_t d0,
                     int64_t d1)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 64;
        PB_CHECK(pb_realloc_array(v, (size_t)c, sizeof **v));
        *cap = c;
    }
    pb_expected *e = &(*v)[(*n)++];
    memset(e, 0, sizeof *e);
    bool head = it->slot == PB_SLOT_FINAL_W || it->slot == PB_SLOT_FINAL_B || it->slot == PB_SLOT_PROJ_OUT ||
                it->slot == PB_SLOT_LM_HEAD;
    e->role = it->layer >= 0 ? PB_ROLE_LAYER : head ? PB_ROLE_HEAD : PB_ROLE_EMBED;
    e->layer = it->layer;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = d1;
    return PB_OK;
}

/* The tensors of the family table's weight list of the whole model, each
 * part and bias as stored (Conv1D weights [in, out]). */
pb_status pb_names_expected(const pb_model_config *cfg, pb_expected **out, int *n_out)
{
    pb_witem *items = NULL;
    int n_items = 0, n = 0, cap = 0;
    pb_expected *v = NULL;
    pb_status st = PB_OK;
    PB_CHECK(pb_family_items(cfg, 0, cfg->n_layers, true, true, cfg->max_position + cfg->pos_offset, &items,
                             &n_items));
    for (int i = 0; i < n_items && st == PB_OK; i++) {
        const pb_witem *it = &items[i];
        for (int p = 0; p < it->n_parts && st == PB_OK; p++) {
            if (!it->linear)
                st = add(&v, &n, &cap, it, it->name[p], 1, it->rows[p], 0);
            else if (it->conv1d)
                st = add(&v, &n, &cap, it, it->name[p], 2, it->n_in, it->rows[p]);
            else
                st = add(&v, &n, &cap, it, it->name[p], 2, it->rows[p], it->n_in);
            if (st == PB_OK && it->bias[p][0])
                st = add(&v, &n, &cap, it, it->bias[p], 1, it->rows[p], 0);
        }
        if (st == PB_OK && it->slot == PB_SLOT_TOK_EMB)
            v[n - 1].tied_embed = cfg->tie_word_embeddings;
    }
    free(items);
    if (st != PB_OK) {
        free(v);
        return st;
    }
    *out = v;
    *n_out = n;
    return PB_OK;
}

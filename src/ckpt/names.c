/* Tensor names per family: base prefixes, layer prefixes, and the full list of
 * expected tensors with their shapes as each HF modeling_<family>.py declares
 * them (nn.Linear weights [out, in]; GPT-2 Conv1D weights [in, out]). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_impl.h"
#include "common/util.h"

const char *pb_ckpt_canonical_name(pb_arch arch, const char *name)
{
    static const char *const prefixes[PB_ARCH_COUNT][3] = {
        [PB_ARCH_GPT2] = {"transformer."},         [PB_ARCH_OPT] = {"model.decoder.", "decoder."},
        [PB_ARCH_BLOOM] = {"transformer."},        [PB_ARCH_GPT_NEO] = {"transformer."},
        [PB_ARCH_GPTJ] = {"transformer."},         [PB_ARCH_CODEGEN] = {"transformer."},
        [PB_ARCH_GPT_NEOX] = {"gpt_neox."},        [PB_ARCH_LLAMA] = {"model."},
        [PB_ARCH_MISTRAL] = {"model."},            [PB_ARCH_QWEN2] = {"model."},
        [PB_ARCH_MIXTRAL] = {"model."},
    };
    if ((unsigned)arch >= PB_ARCH_COUNT)
        return name;
    for (int i = 0; i < 3 && prefixes[arch][i]; i++) {
        size_t n = strlen(prefixes[arch][i]);
        if (strncmp(name, prefixes[arch][i], n) == 0)
            return name + n;
    }
    return name;
}

static const char *layer_prefix(pb_arch arch)
{
    switch (arch) {
    case PB_ARCH_GPT2: case PB_ARCH_BLOOM: case PB_ARCH_GPT_NEO: case PB_ARCH_GPTJ: case PB_ARCH_CODEGEN:
        return "h";
    default:
        return "layers";
    }
}

int pb_ckpt_layer_name(pb_arch arch, int layer, const char *suffix, char *buf, size_t cap)
{
    return snprintf(buf, cap, "%s.%d.%s", layer_prefix(arch), layer, suffix);
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

typedef struct list {
    pb_expected *v;
    int n, cap;
    pb_status st;
} list;

static void add(list *l, pb_tensor_role role, int layer, const char *suffix, int ndim, int64_t d0, int64_t d1,
                pb_arch arch)
{
    if (l->st != PB_OK)
        return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        l->st = pb_realloc_array(&l->v, (size_t)cap, sizeof *l->v);
        if (l->st != PB_OK)
            return;
        l->cap = cap;
    }
    pb_expected *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    e->role = role;
    e->layer = role == PB_ROLE_LAYER ? layer : -1;
    if (role == PB_ROLE_LAYER)
        pb_ckpt_layer_name(arch, layer, suffix, e->name, sizeof e->name);
    else
        snprintf(e->name, sizeof e->name, "%s", suffix);
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = d1;
}

/* weight [out, in] (+ bias [out]) of an nn.Linear */
static void linear(list *l, int layer, const char *base, int64_t out, int64_t in, bool bias, pb_arch arch)
{
    char nm[96];
    snprintf(nm, sizeof nm, "%s.weight", base);
    add(l, PB_ROLE_LAYER, layer, nm, 2, out, in, arch);
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", base);
        add(l, PB_ROLE_LAYER, layer, nm, 1, out, 0, arch);
    }
}

/* weight [in, out] + bias [out] of a GPT-2 Conv1D */
static void conv1d(list *l, int layer, const char *base, int64_t in, int64_t out, pb_arch arch)
{
    char nm[96];
    snprintf(nm, sizeof nm, "%s.weight", base);
    add(l, PB_ROLE_LAYER, layer, nm, 2, in, out, arch);
    snprintf(nm, sizeof nm, "%s.bias", base);
    add(l, PB_ROLE_LAYER, layer, nm, 1, out, 0, arch);
}

static void norm(list *l, pb_tensor_role role, int layer, const char *base, int64_t dim, bool bias, pb_arch arch)
{
    char nm[96];
    snprintf(nm, sizeof nm, "%s.weight", base);
    add(l, role, layer, nm, 1, dim, 0, arch);
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", base);
        add(l, role, layer, nm, 1, dim, 0, arch);
    }
}

/* router [n_experts, H] and each expert's gate/up [I, H], down [H, I] */
static void moe_layer(list *l, const pb_model_config *cfg, int layer)
{
    const pb_moe_names *m = pb_moe_names_of(cfg->arch);
    const int64_t H = cfg->hidden_size, I = cfg->moe_intermediate_size;
    char nm[96];
    if (!m) {
        l->st = pb_error(PB_ERR_UNSUPPORTED, "%s: mixture-of-experts layers are not handled", cfg->model_type);
        return;
    }
    linear(l, layer, m->router, cfg->n_experts, H, false, cfg->arch);
    for (int e = 0; e < cfg->n_experts; e++) {
        snprintf(nm, sizeof nm, "%s.%d.%s", m->experts, e, m->gate);
        linear(l, layer, nm, I, H, false, cfg->arch);
        snprintf(nm, sizeof nm, "%s.%d.%s", m->experts, e, m->up);
        linear(l, layer, nm, I, H, false, cfg->arch);
        snprintf(nm, sizeof nm, "%s.%d.%s", m->experts, e, m->down);
        linear(l, layer, nm, H, I, false, cfg->arch);
    }
}

pb_status pb_names_expected(const pb_model_config *cfg, pb_expected **out, int *n_out)
{
    list l = {0};
    const pb_arch a = cfg->arch;
    const int64_t H = cfg->hidden_size, V = cfg->vocab_size, I = cfg->intermediate_size, P = cfg->max_position;
    const int64_t Q = (int64_t)cfg->n_heads * cfg->head_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const char *embed = NULL;   /* token embedding (tied head) */
    const char *head = "lm_head.weight";

    /* embeddings */
    switch (a) {
    case PB_ARCH_GPT2: case PB_ARCH_GPT_NEO:
        embed = "wte.weight";
        add(&l, PB_ROLE_EMBED, -1, embed, 2, V, H, a);
        add(&l, PB_ROLE_EMBED, -1, "wpe.weight", 2, P, H, a);
        break;
    case PB_ARCH_GPTJ: case PB_ARCH_CODEGEN:
        embed = "wte.weight";
        add(&l, PB_ROLE_EMBED, -1, embed, 2, V, H, a);
        break;
    case PB_ARCH_OPT: {
        int64_t E = cfg->word_embed_proj_dim ? cfg->word_embed_proj_dim : H;
        embed = "embed_tokens.weight";
        add(&l, PB_ROLE_EMBED, -1, embed, 2, V, E, a);
        add(&l, PB_ROLE_EMBED, -1, "embed_positions.weight", 2, P + cfg->pos_offset, H, a);
        if (cfg->word_embed_proj_dim)
            add(&l, PB_ROLE_EMBED, -1, "project_in.weight", 2, H, E, a);
        break;
    }
    case PB_ARCH_BLOOM:
        embed = "word_embeddings.weight";
        add(&l, PB_ROLE_EMBED, -1, embed, 2, V, H, a);
        norm(&l, PB_ROLE_EMBED, -1, "word_embeddings_layernorm", H, true, a);
        break;
    case PB_ARCH_GPT_NEOX:
        embed = "embed_in.weight";
        head = "embed_out.weight";
        add(&l, PB_ROLE_EMBED, -1, embed, 2, V, H, a);
        break;
    default:
        embed = "embed_tokens.weight";
        add(&l, PB_ROLE_EMBED, -1, embed, 2, V, H, a);
        break;
    }
    if (l.st == PB_OK)
        l.v[0].tied_embed = cfg->tie_word_embeddings;

    for (int i = 0; i < cfg->n_layers; i++) {
        switch (a) {
        case PB_ARCH_GPT2:
            norm(&l, PB_ROLE_LAYER, i, "ln_1", H, true, a);
            conv1d(&l, i, "attn.c_attn", H, 3 * H, a);
            conv1d(&l, i, "attn.c_proj", H, H, a);
            norm(&l, PB_ROLE_LAYER, i, "ln_2", H, true, a);
            conv1d(&l, i, "mlp.c_fc", H, I, a);
            conv1d(&l, i, "mlp.c_proj", I, H, a);
            break;
        case PB_ARCH_OPT:
            linear(&l, i, "self_attn.k_proj", H, H, cfg->qkv_bias, a);
            linear(&l, i, "self_attn.v_proj", H, H, cfg->qkv_bias, a);
            linear(&l, i, "self_attn.q_proj", H, H, cfg->qkv_bias, a);
            linear(&l, i, "self_attn.out_proj", H, H, cfg->out_bias, a);
            norm(&l, PB_ROLE_LAYER, i, "self_attn_layer_norm", H, true, a);
            linear(&l, i, "fc1", I, H, cfg->mlp_bias, a);
            linear(&l, i, "fc2", H, I, cfg->mlp_bias, a);
            norm(&l, PB_ROLE_LAYER, i, "final_layer_norm", H, true, a);
            break;
        case PB_ARCH_BLOOM:
            norm(&l, PB_ROLE_LAYER, i, "input_layernorm", H, true, a);
            linear(&l, i, "self_attention.query_key_value", 3 * H, H, true, a);
            linear(&l, i, "self_attention.dense", H, H, true, a);
            norm(&l, PB_ROLE_LAYER, i, "post_attention_layernorm", H, true, a);
            linear(&l, i, "mlp.dense_h_to_4h", I, H, true, a);
            linear(&l, i, "mlp.dense_4h_to_h", H, I, true, a);
            break;
        case PB_ARCH_GPT_NEO:
            norm(&l, PB_ROLE_LAYER, i, "ln_1", H, true, a);
            linear(&l, i, "attn.attention.k_proj", H, H, false, a);
            linear(&l, i, "attn.attention.v_proj", H, H, false, a);
            linear(&l, i, "attn.attention.q_proj", H, H, false, a);
            linear(&l, i, "attn.attention.out_proj", H, H, true, a);
            norm(&l, PB_ROLE_LAYER, i, "ln_2", H, true, a);
            linear(&l, i, "mlp.c_fc", I, H, true, a);
            linear(&l, i, "mlp.c_proj", H, I, true, a);
            break;
        case PB_ARCH_GPTJ:
            norm(&l, PB_ROLE_LAYER, i, "ln_1", H, true, a);
            linear(&l, i, "attn.k_proj", H, H, false, a);
            linear(&l, i, "attn.v_proj", H, H, false, a);
            linear(&l, i, "attn.q_proj", H, H, false, a);
            linear(&l, i, "attn.out_proj", H, H, false, a);
            linear(&l, i, "mlp.fc_in", I, H, true, a);
            linear(&l, i, "mlp.fc_out", H, I, true, a);
            break;
        case PB_ARCH_CODEGEN:
            norm(&l, PB_ROLE_LAYER, i, "ln_1", H, true, a);
            linear(&l, i, "attn.qkv_proj", 3 * H, H, false, a);
            linear(&l, i, "attn.out_proj", H, H, false, a);
            linear(&l, i, "mlp.fc_in", I, H, true, a);
            linear(&l, i, "mlp.fc_out", H, I, true, a);
            break;
        case PB_ARCH_GPT_NEOX:
            norm(&l, PB_ROLE_LAYER, i, "input_layernorm", H, true, a);
            norm(&l, PB_ROLE_LAYER, i, "post_attention_layernorm", H, true, a);
            linear(&l, i, "attention.query_key_value", 3 * H, H, cfg->qkv_bias, a);
            linear(&l, i, "attention.dense", H, H, cfg->out_bias, a);
            linear(&l, i, "mlp.dense_h_to_4h", I, H, true, a);
            linear(&l, i, "mlp.dense_4h_to_h", H, I, true, a);
            break;
        default: /* Llama, Mistral, Qwen2 */
            linear(&l, i, "self_attn.q_proj", Q, H, cfg->qkv_bias, a);
            linear(&l, i, "self_attn.k_proj", KV, H, cfg->qkv_bias, a);
            linear(&l, i, "self_attn.v_proj", KV, H, cfg->qkv_bias, a);
            linear(&l, i, "self_attn.o_proj", H, Q, cfg->out_bias, a);
            if (pb_model_layer_moe(cfg, i)) {
                moe_layer(&l, cfg, i);
            } else {
                linear(&l, i, "mlp.gate_proj", I, H, cfg->mlp_bias, a);
                linear(&l, i, "mlp.up_proj", I, H, cfg->mlp_bias, a);
                linear(&l, i, "mlp.down_proj", H, I, cfg->mlp_bias, a);
            }
            norm(&l, PB_ROLE_LAYER, i, "input_layernorm", H, false, a);
            norm(&l, PB_ROLE_LAYER, i, "post_attention_layernorm", H, false, a);
            break;
        }
    }

    /* final norm and head */
    switch (a) {
    case PB_ARCH_GPT2: case PB_ARCH_BLOOM: case PB_ARCH_GPT_NEO: case PB_ARCH_GPTJ: case PB_ARCH_CODEGEN:
        norm(&l, PB_ROLE_HEAD, -1, "ln_f", H, true, a);
        break;
    case PB_ARCH_OPT:
        if (cfg->final_norm)
            norm(&l, PB_ROLE_HEAD, -1, "final_layer_norm", H, true, a);
        if (cfg->word_embed_proj_dim)
            add(&l, PB_ROLE_HEAD, -1, "project_out.weight", 2, cfg->word_embed_proj_dim, H, a);
        break;
    case PB_ARCH_GPT_NEOX:
        norm(&l, PB_ROLE_HEAD, -1, "final_layer_norm", H, true, a);
        break;
    default:
        norm(&l, PB_ROLE_HEAD, -1, "norm", H, false, a);
        break;
    }
    if (!cfg->tie_word_embeddings) {
        int64_t E = a == PB_ARCH_OPT && cfg->word_embed_proj_dim ? cfg->word_embed_proj_dim : H;
        add(&l, PB_ROLE_HEAD, -1, head, 2, V, E, a);
    }
    if (cfg->lm_head_bias)
        add(&l, PB_ROLE_HEAD, -1, "lm_head.bias", 1, V, 0, a);
    (void)embed;
    if (l.st != PB_OK) {
        free(l.v);
        return l.st;
    }
    *out = l.v;
    *n_out = l.n;
    return PB_OK;
}

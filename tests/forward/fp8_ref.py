"""FP8 block-quantized checkpoints (HF transformers' "fine-grained FP8", as Qwen3-*-FP8 and DeepSeek-V3 ship them)
as a reference: convert_checkpoint writes such a folder from an ordinary one, dequantize_model puts the same
dequantized weights into HF transformers' f32 model, which then computes what pippy-batch computes on the folder
(tests/forward/fp8-families.py, tests/real/fp8.py).

A matrix in nn.Linear layout [n_out, n_in] (experts [E, n_out, n_in]), in blocks of [br, bc] = weight_block_size
(the last block of a dimension that is not a multiple of it is shorter), all in float32:
    s = amax(|w_block|) / 448, 1 for an all-zero block      q = e4m3(clamp(w / s, -448, 448))      w' = q * s
s is stored as weight_scale_inv [ceil(n_out / br), ceil(n_in / bc)] in F32, or rounded to BF16 first (q then
comes from the rounded s, so that w' = q * s holds for the stored pair). e4m3 is torch.float8_e4m3fn (448 its
largest value, subnormals k * 2^-9), the cast rounds to nearest even.
HF transformers 5.x's own quantizer (integrations/finegrained_fp8.py, Fp8Quantize) computes s as 1 / (448 / amax),
which may differ from amax / 448 in the last bit, gives an all-zero block s = 1 as here, clamps before the cast as
here, and leaves a matrix whose dimensions are not multiples of the block unquantized (so it makes no partial
blocks; its reader, Fp8Dequantize, derives the block from the scale grid, rows // grid rows, so it reads partial
blocks wrongly: only folders without them are read by HF in the tests).
Quantized: the linear layers of the decoder layers (q/k/v/o or fused qkv_proj, gate/up/down or fused gate_up_proj,
the MoE experts; a checkpoint's per-expert matrices each with its own blocks); kept as stored: embeddings, the LM
head, norms, biases, the MoE router (mlp.gate, shared_expert_gate), as HF's quantizer (which converts nn.Linear
modules but the output embeddings and tied weights, and the experts) and the published FP8 checkpoints do.

compressed-tensors (ct_*): the "float-quantized" checkpoints of vLLM's llm-compressor (RedHatAI/*-FP8-dynamic and
the like), made by the compressed_tensors package itself: X.weight in e4m3 with X.weight_scale of the weight's
dtype, one a matrix ([1], strategy "tensor", preset FP8, which adds static X.input_scale), a row ([n_out, 1],
"channel", FP8_DYNAMIC) or a block ([ceil(n_out / br), ceil(n_in / bc)], "block", FP8_BLOCK, blocks [128, 128]);
s = amax / 448 in the weight's dtype (its eps for an all-zero group), q = e4m3(clamp(w / s)) with w / s in the
weight's dtype; the dequantized weight e4m3(q) * s rounded once to float32 (ct_selftest checks the package
against that definition). The same tensors quantized as above (the LM head, embeddings, norms, biases and
routers kept); ct_save_pretrained runs the package end to end on a dense model, ct_convert_checkpoint quantizes
a folder tensor by tensor with it (the MoE experts too), ct_dequantize_model is the reference.
"""
import json
import os
import re
import shutil

import numpy as np

BLOCK = (128, 128)
E4M3_MAX = 448.0
LAYER = re.compile(r"(^|\.)layers\.\d+\.")
ROUTERS = ("gate", "shared_expert_gate")   # last component of a router's module name


def _torch():
    import torch
    return torch


def quantize(w, block=BLOCK, scale_dtype="F32"):
    """(q, s) of a float32 array [..., n_out, n_in]: q torch.float8_e4m3fn of the same shape, s [..., R, C]
    torch.float32 (scale_dtype "F32") or torch.bfloat16 ("BF16")."""
    torch = _torch()
    t = torch.as_tensor(np.ascontiguousarray(w, dtype=np.float32))
    (n_out, n_in), (br, bc) = t.shape[-2:], block
    R, C = -(-n_out // br), -(-n_in // bc)
    lead = t.shape[:-2]
    b = torch.nn.functional.pad(t, (0, C * bc - n_in, 0, R * br - n_out))   # zeros leave a block's amax
    b = b.reshape(*lead, R, br, C, bc)
    amax = b.abs().amax(dim=(-3, -1))
    s = torch.where(amax > 0, amax / torch.tensor(E4M3_MAX, dtype=torch.float32), torch.ones_like(amax))
    if scale_dtype == "BF16":
        s = s.to(torch.bfloat16)
    elif scale_dtype != "F32":
        raise ValueError(f"scale dtype {scale_dtype}")
    sf = s.float()[..., :, None, :, None]
    q = (b / sf).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    q = q.reshape(*lead, R * br, C * bc)[..., :n_out, :n_in].contiguous()
    return q, s.contiguous()


def dequant(q, s, block=BLOCK, grid="rows", apply_scale=True):
    """w' (float32 numpy) of (q, s) as quantize returns them (torch tensors or numpy arrays for s). The other
    arguments make wrong readers: grid "cols" reads the scale grid's flat array as if stored column by column
    (s[r, c] = flat[c * R + r]), "floor" with a row stride of floor(n_in / bc) blocks instead of ceil;
    apply_scale=False forgets the scale."""
    torch = _torch()
    q = torch.as_tensor(q)
    sf = torch.as_tensor(s).float()
    (n_out, n_in), (br, bc) = q.shape[-2:], block
    R, C = sf.shape[-2:]
    assert (R, C) == (-(-n_out // br), -(-n_in // bc)), (q.shape, sf.shape, block)
    flat = sf.reshape(*sf.shape[:-2], R * C)
    if grid == "cols":
        sf = flat.reshape(*sf.shape[:-2], C, R).transpose(-1, -2)
    elif grid == "floor":
        stride = max(1, n_in // bc)
        idx = (torch.arange(R)[:, None] * stride + torch.arange(C)[None, :]).reshape(-1)
        sf = flat[..., idx].reshape(sf.shape)
    elif grid != "rows":
        raise ValueError(grid)
    full = sf.repeat_interleave(br, dim=-2).repeat_interleave(bc, dim=-1)[..., :n_out, :n_in]
    w = q.float() * full if apply_scale else q.float()
    out = w.numpy()
    assert out.dtype == np.float32
    return out


def fake_quant(w, block=BLOCK, scale_dtype="F32", **reader):
    """dequant(quantize(w)): w' of a float32 array [..., n_out, n_in]."""
    q, s = quantize(w, block, scale_dtype)
    return dequant(q, s, block, **reader)


def quantized_key(key, shape, skip=()):
    """Whether a checkpoint tensor is quantized: a 2-D `.weight` of a module inside a decoder layer that is not a
    router nor named (its module name's ending) in skip."""
    if not key.endswith(".weight") or len(shape) != 2 or not LAYER.search(key):
        return False
    mod = key[:-len(".weight")]
    return mod.rsplit(".", 1)[-1] not in ROUTERS and not any(mod.endswith(s) for s in skip)


def _rewrite_folder(src, dst, tensor):
    """Writes into dst the HF safetensors folder src (one file or sharded with its index) with each tensor k, t
    replaced by the dict tensor(k, t) returns (None: kept), in the same file, the index's weight_map and
    total_size updated, every other file but config.json copied."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    os.makedirs(dst, exist_ok=True)
    files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {src}")
    where, total = {}, 0
    for fn in files:
        out = {}
        with safe_open(os.path.join(src, fn), "pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                t = f.get_tensor(k)
                out.update(tensor(k, t) or {k: t})
        for k, t in out.items():
            where[k] = fn
            total += t.numel() * t.element_size()
        save_file(out, os.path.join(dst, fn), metadata=dict(meta, format="pt"))
    for fn in os.listdir(src):
        p = os.path.join(src, fn)
        if fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json") or fn == "config.json" \
                or not os.path.isfile(p):
            continue
        shutil.copy(p, os.path.join(dst, fn))
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.isfile(index) or len(files) > 1:
        meta = {}
        if os.path.isfile(index):
            with open(index) as f:
                meta = json.load(f).get("metadata", {})
        with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": dict(meta, total_size=total), "weight_map": dict(sorted(where.items()))}, f,
                      indent=2)


def convert_checkpoint(src, dst, block=BLOCK, scale_dtype="F32", skip=()):
    """Writes into dst the FP8 form of the HF safetensors folder src (any float dtype, one file or sharded with
    its index): the same files and shards, each quantized X.weight as F8_E4M3 with X.weight_scale_inv (F32 or
    BF16) beside it in the same file, the index's weight_map and total_size updated, config.json with
    quantization_config, every other file copied. Returns the names of the quantized tensors."""
    names = []

    def tensor(k, t):
        if not (t.is_floating_point() and quantized_key(k, t.shape, skip)):
            return None
        q, s = quantize(t.float().numpy(), block, scale_dtype)
        names.append(k)
        return {k: q, k + "_scale_inv": s}

    _rewrite_folder(src, dst, tensor)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block)}
    if skip:
        # given a list, HF adds none of its default skips (the LM head): name it too
        qc["modules_to_not_convert"] = ["lm_head"] + list(skip)
    cfg["quantization_config"] = qc
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return names


def _dequantize_modules(model, fq, skip, router, fused_experts):
    """Replaces, in place, the weights of `model` that an FP8 folder of its checkpoint stores quantized (the
    linear layers of the decoder layers but skip's, the experts, the routers where `router`) by fq(w, name), w a
    float32 array [n_out, n_in] or [E, n_out, n_in] of the module `name`: the experts' fused gate_up_proj
    [E, 2I, H] in two halves, as the checkpoint stores gate and up apart (one matrix where `fused_experts`).
    Returns the modules' names."""
    import torch

    names = []

    def put(p, name, halves=1):
        parts = np.split(p.detach().float().numpy(), halves, axis=-2)
        p.copy_(torch.from_numpy(np.concatenate([fq(x, name) for x in parts], -2)))

    with torch.no_grad():
        for name, mod in model.named_modules():
            kind = type(mod).__name__
            if not LAYER.search(name + ".") or any(name.endswith(s) for s in skip):
                continue
            is_router = name.rsplit(".", 1)[-1] in ROUTERS or kind.endswith("TopKRouter")
            if is_router:
                if router and getattr(mod, "weight", None) is not None:
                    put(mod.weight, name)
                    names.append(name)
            elif isinstance(mod, torch.nn.Linear):
                put(mod.weight, name)
                names.append(name)
            elif kind.endswith("Experts") and hasattr(mod, "gate_up_proj"):
                put(mod.gate_up_proj, name, 1 if fused_experts else 2)
                put(mod.down_proj, name)
                names.append(name)
    return names


def dequantize_model(model, block=BLOCK, scale_dtype="F32", skip=(), transposed=False, router=False,
                     fused_experts=False, **reader):
    """Replaces, in place, every weight of `model` (f32, loaded from the folder convert_checkpoint converts) that
    the FP8 folder stores quantized by its w' (the quantization of convert_checkpoint with the same block,
    scale_dtype and skip, applied to the model's modules rather than the file's tensors: the experts' fused
    gate_up_proj [E, 2I, H] in two halves, as the checkpoint stores gate and up apart). The other arguments make
    the wrong references the tests must tell apart: transposed=True uses blocks [bc, br], router=True quantizes
    the MoE routers too, fused_experts=True blocks gate_up_proj as one matrix, skip leaves modules unquantized,
    reader: dequant's wrong readers (grid, apply_scale). Returns the names of the modules quantized."""
    blk = tuple(block[::-1]) if transposed else tuple(block)
    return _dequantize_modules(model, lambda w, name: fake_quant(w, blk, scale_dtype, **reader), skip, router,
                               fused_experts)


def e4m3_round(x):
    """e4m3fn of a Python float with |x| <= 448, round to nearest even, by its definition (3 mantissa bits,
    exponents -6..8, subnormals k * 2^-9): a reference independent of torch's cast."""
    import math
    if x == 0 or math.isnan(x):
        return x
    e = max(math.frexp(abs(x))[1] - 1, -6)
    step = 2.0 ** (e - 3)
    return math.copysign(round(abs(x) / step) * step, x)   # round(): halves to even, exact on these floats


def selftest():
    """The formulas on an example worked by hand (block [2, 8] on a 3 x 12 matrix: a full block, partial ones in
    each dimension, an all-zero corner; e4m3's largest value 448, the subnormals 2^-9, ties to even, values that
    clamp), then against a plain per-element loop with e4m3_round on random matrices."""
    torch = _torch()
    w = np.zeros((3, 12), dtype=np.float32)
    # block (0, 0): amax 448, s = 1, so q = e4m3(w)
    w[0, :8] = [448, 432, 400, -1.0625, 1.1875, 2**-9, -5 * 2**-9, 17]
    w[1, :8] = [2**-10, 3 * 2**-10, 2**-6 + 2**-10, -2**-11, 0.3, 240, 1e-5, -448]
    # block (0, 1), 4 columns: amax 28, s = 1/16
    w[0, 8:] = [28, -3, 2**-13, 1]
    w[1, 8:] = [0.1, 27, 0, 0]
    # block (1, 0), 1 row: amax 3.5 from a negative value, s = 2^-7; block (1, 1) all zero
    w[2, :8] = [-3.5, 2, 1, 0.01, 2**-16, 2**-17, 0, 0]
    want = np.zeros_like(w)
    want[0, :8] = [448, 448, 384, -1, 1.25, 2**-9, -5 * 2**-9, 16]        # 432, 17, 1.0625, 1.1875: ties to even
    want[1, :8] = [0, 2**-8, 2**-6, -0.0, 0.3125, 240, 0, -448]           # 2^-10: a tie to 0, 3 * 2^-10 to 2^-8
    want[0, 8:] = [28, -3, 2**-13, 1]                                     # w / s = 448, -48, 2^-9, 16
    want[1, 8:] = [np.float32(1.625) * np.float32(1 / 16), 28, 0, 0]      # 1.6 -> 1.625, 432 -> 448
    want[2, :8] = [-3.5, 2, 1, np.float32(1.25) * np.float32(2**-7), 2**-16, 0, 0, 0]   # 1.28 -> 1.25, 2^-10 -> 0
    q, s = quantize(w, (2, 8))
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and tuple(s.shape) == (2, 2)
    assert np.array_equal(s.numpy(), np.array([[1, 1 / 16], [2**-7, 1]], dtype=np.float32)), s
    got = dequant(q, s, (2, 8))
    assert np.array_equal(got, want), (got, want)
    b = q.view(torch.uint8)
    assert [int(b[0, 0]), int(b[1, 7]), int(b[0, 5]), int(b[1, 3]), int(b[0, 6])] == [0x7E, 0xFE, 0x01, 0x80, 0x85]
    # BF16 scales: s = bf16(amax / 448), q from it (clamped where the rounded s is smaller)
    x = np.array([[1.0, -0.5, 0.001, 0.0]], dtype=np.float32)
    q2, s2 = quantize(x, (1, 4), "BF16")
    sb = float(torch.tensor(1 / 448, dtype=torch.float32).to(torch.bfloat16).float())
    assert s2.dtype == torch.bfloat16 and float(s2[0, 0].float()) == sb
    want2 = [np.float32(e4m3_round(min(448.0, float(np.float32(v) / np.float32(sb))))) * np.float32(sb) for v in x[0]]
    assert np.array_equal(dequant(q2, s2, (1, 4))[0], np.array(want2, dtype=np.float32))
    # the wrong readers really differ on a 3 x 2 grid (blocks [1, 2] on 3 x 3)
    y = np.arange(1, 10, dtype=np.float32).reshape(3, 3) * np.array([1, 10, 100], dtype=np.float32)[:, None]
    qy, sy = quantize(y, (1, 2))
    for how in (dict(grid="cols"), dict(grid="floor"), dict(apply_scale=False)):
        assert not np.array_equal(dequant(qy, sy, (1, 2), **how), dequant(qy, sy, (1, 2))), how

    # against a plain loop: random matrices with partial blocks, scales of several sizes, a zero block
    rng = np.random.default_rng(1)
    for shape, block, sd in [((5, 150), (2, 64), "F32"), ((7, 33), (4, 16), "BF16"), ((130, 9), (128, 8), "F32")]:
        x = (rng.standard_normal(shape) * rng.choice([1e-6, 1e-3, 1.0, 40.0, 3e4], size=(shape[0], 1)))
        x = x.astype(np.float32)
        x[:block[0], :block[1]] = 0
        loop = np.empty_like(x)
        for r0 in range(0, shape[0], block[0]):
            for c0 in range(0, shape[1], block[1]):
                blk = x[r0:r0 + block[0], c0:c0 + block[1]]
                amax = np.float32(np.max(np.abs(blk)))
                sc = amax / np.float32(448) if amax > 0 else np.float32(1)
                if sd == "BF16":
                    sc = np.float32(float(torch.tensor(float(sc)).to(torch.bfloat16).float()))
                for i in range(blk.shape[0]):
                    for j in range(blk.shape[1]):
                        v = float(np.clip(blk[i, j] / sc, np.float32(-448), np.float32(448)))
                        loop[r0 + i, c0 + j] = np.float32(e4m3_round(v)) * sc
        assert np.array_equal(fake_quant(x, block, sd), loop), (shape, block, sd)
        assert np.array_equal(fake_quant(np.stack([x * 2, x]), block, sd)[1], loop)   # experts [E, out, in]


# compressed-tensors ("float-quantized"), llm-compressor's FP8 checkpoints
CT_PRESETS = {"channel": "FP8_DYNAMIC", "tensor": "FP8", "block": "FP8_BLOCK"}


def bf16_round(x):
    """float32 array x rounded to bfloat16 (nearest, ties to even), as float32: by the bits, independent of
    torch (no NaN here)."""
    x = np.array(x, dtype=np.float32)
    u = x.reshape(-1).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).reshape(x.shape)


def ct_scheme(strategy, block=None):
    """compressed_tensors' QuantizationScheme of llm-compressor's preset for the weight strategy (targets
    ["Linear"]): "channel" FP8_DYNAMIC (a scale a row; activations dynamic per token), "tensor" FP8 (one scale;
    activations static per tensor: each module has an input_scale), "block" FP8_BLOCK (blocks [128, 128], or
    block; activations dynamic per group of 128)."""
    from compressed_tensors.quantization import preset_name_to_scheme

    s = preset_name_to_scheme(CT_PRESETS[strategy], ["Linear"])
    if block is not None:
        if strategy != "block":
            raise ValueError(f"a block for strategy {strategy}")
        s.weights.block_structure = list(block)
    return s


def ct_observe(w, args):
    """(min, max) of a torch matrix w [n_out, n_in] over each group of the weights' strategy, as llm-compressor's
    weight observer (its memoryless min-max; compressed_tensors has none): [] for the tensor, [n_out, 1] a row
    each, [ceil(n_out / br), ceil(n_in / bc)] a block each (the edge blocks padded with zeros, which change nothing:
    calculate_qparams takes min(min, 0) and max(max, 0))."""
    torch = _torch()
    st = str(getattr(args.strategy, "value", args.strategy))
    if st == "tensor":
        return torch.aminmax(w)
    if st == "channel":
        return w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    if st != "block":
        raise ValueError(st)
    (n_out, n_in), (br, bc) = w.shape, args.block_structure
    R, C = -(-n_out // br), -(-n_in // bc)
    b = torch.nn.functional.pad(w, (0, C * bc - n_in, 0, R * br - n_out)).reshape(R, br, C, bc)
    return b.amin(dim=(1, 3)), b.amax(dim=(1, 3))


def ct_quantize(w, scheme):
    """(q, s) of a torch matrix w [n_out, n_in] as llm-compressor quantizes an nn.Linear's weight and saves it,
    by compressed_tensors itself: initialize_module_for_quantization (the scale in w's dtype), the observer's
    min and max through calculate_qparams (s = amax / 448 computed in w's dtype, the dtype's eps for an all-zero
    group), compress_module (FloatQuantizationCompressor: q = e4m3(clamp(w / s, -448, 448)), w / s in w's
    dtype). q torch.float8_e4m3fn [n_out, n_in], s of w's dtype: [1], [n_out, 1] or the block grid."""
    torch = _torch()
    from compressed_tensors.compressors.base import compress_module
    from compressed_tensors.quantization import initialize_module_for_quantization
    from compressed_tensors.quantization.utils import calculate_qparams

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
    initialize_module_for_quantization(lin, scheme)
    with torch.no_grad():
        lin.weight_scale.copy_(calculate_qparams(*ct_observe(w, scheme.weights), scheme.weights)[0])
    compress_module(lin)
    assert lin.weight.dtype == torch.float8_e4m3fn, lin.weight.dtype
    return lin.weight.detach(), lin.weight_scale.detach()


def ct_dequant(q, s, strategy, block=None, scale_axis="rows", product="f32", **reader):
    """w' (float32 numpy) of a compressed-tensors pair (q [n_out, n_in], s [1], [n_out, 1] or the block grid),
    read by this file's own rule: w'[i, j] = f32(e4m3(q[i, j]) * s[the group of (i, j)]), the product rounded
    once to float32 (exact with BF16 or F16 scales). The other arguments make wrong readers: scale_axis "cols"
    applies a row's scale to the column of its index (s[j mod n_out]), "first" the first scale to the whole
    matrix; product "scale" rounds the product to the scale's dtype (HF's reader of a BF16 scale); grid "derived"
    takes a block's rows and columns as n // the grid's n (HF's fine-grained FP8 reader's rule, wrong for a
    partial block after full ones); reader: dequant's (grid, apply_scale)."""
    torch = _torch()
    q, s = torch.as_tensor(q), torch.as_tensor(s)
    n_out, n_in = q.shape
    if scale_axis == "cols":
        if strategy != "channel":
            raise ValueError(f"scale_axis cols for strategy {strategy}")
        s = s.reshape(-1)[torch.arange(n_in) % n_out].reshape(1, n_in)
        blk = (n_out, 1)
    elif scale_axis == "first":
        s, blk = s.reshape(-1)[:1].reshape(1, 1), (n_out, n_in)
    elif scale_axis != "rows":
        raise ValueError(scale_axis)
    elif strategy == "tensor":
        s, blk = s.reshape(1, 1), (n_out, n_in)
    elif strategy == "channel":
        s, blk = s.reshape(n_out, 1), (1, n_in)
    else:
        blk = tuple(block)
    if reader.get("grid") == "derived":
        R, C = s.shape
        ri = (torch.arange(n_out) // max(1, n_out // R)).clamp(max=R - 1)
        ci = (torch.arange(n_in) // max(1, n_in // C)).clamp(max=C - 1)
        full = s.float()[ri][:, ci]
        return (q.float() * full if reader.get("apply_scale", True) else q.float()).numpy()
    if product == "scale":
        full = s.repeat_interleave(blk[0], dim=-2).repeat_interleave(blk[1], dim=-1)[:n_out, :n_in]
        w = q.to(s.dtype) * full if reader.get("apply_scale", True) else q.to(s.dtype)
        return w.float().numpy()
    if product != "f32":
        raise ValueError(product)
    return dequant(q, s, blk, **reader)


def ct_ignore(names):
    """compressed-tensors' "ignore" for a checkpoint whose 2-D weights `names` (module names) are not quantized:
    the LM head and, as llm-compressor's MoE recipes write them, the routers; the other linear layers left
    unquantized (skip), by name."""
    out = ["lm_head"]
    for r in ROUTERS:
        if any(n.rsplit(".", 1)[-1] == r and LAYER.search(n + ".") for n in names):
            out.append(f"re:.*mlp.{r}$")
    return out + [n for n in names if LAYER.search(n + ".") and n.rsplit(".", 1)[-1] not in ROUTERS]


def ct_write_config(dst, scheme, ignore):
    """quantization_config of config.json in dst as compressed_tensors writes it (ModelCompressor.update_config:
    version, quant_method "compressed-tensors", format "float-quantized", quantization_status "compressed",
    config_groups {"group_0": scheme}, ignore, ...)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig

    qc = QuantizationConfig(config_groups={"group_0": scheme}, format="float-quantized",
                            quantization_status="compressed", ignore=list(ignore))
    ModelCompressor(quantization_config=qc).update_config(dst)


def ct_convert_checkpoint(src, dst, strategy="channel", block=None, skip=(), input_scales=None):
    """Writes into dst the compressed-tensors FP8 form of the HF safetensors folder src (as convert_checkpoint,
    the same tensors quantized): each quantized X.weight as F8_E4M3 with X.weight_scale (of the weight's dtype:
    [1], [n_out, 1] or the block grid) beside it, as ct_quantize makes them, and for the preset of static
    activations (strategy "tensor") X.input_scale, input_scales[X] (the calibration's: required there);
    config.json with compressed_tensors' quantization_config. Returns the names of the quantized tensors."""
    scheme = ct_scheme(strategy, block)
    static = scheme.input_activations is not None and not scheme.input_activations.dynamic
    if static and input_scales is None:
        raise ValueError(f"strategy {strategy}: static input scales needed")
    names, kept = [], []

    def tensor(k, t):
        if not (t.is_floating_point() and quantized_key(k, t.shape, skip)):
            if k.endswith(".weight") and len(t.shape) == 2:
                kept.append(k[:-len(".weight")])
            return None
        mod = k[:-len(".weight")]
        q, s = ct_quantize(t, scheme)
        names.append(k)
        out = {k: q, mod + ".weight_scale": s}
        if static:
            out[mod + ".input_scale"] = input_scales[mod].to(t.dtype).reshape(1)
        return out

    _rewrite_folder(src, dst, tensor)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    ct_write_config(dst, scheme, ct_ignore([n for n in kept if "embed" not in n and n != "lm_head"]))
    return names


def ct_save_pretrained(model, dst, strategy="channel", block=None, calibration=(), **save):
    """compressed_tensors' own way to an FP8 checkpoint (llm-compressor's oneshot without its modifiers), on the
    dense HF model `model` (its dtype kept, modified in place): apply_quantization_config ("Linear" targets but
    the LM head), the weight observer's scales (ct_observe, calculate_qparams), for the preset of static
    activations their scales from the inputs' min and max over the forward passes on the token-id lists
    `calibration` (llm-compressor's static min-max observer), ModelCompressor.compress_model, save_pretrained,
    ModelCompressor.update_config. Fused MoE experts (HF 5.x) are not nn.Linear: not for MoE models. Returns
    (the names of the quantized tensors, {module: input_scale} for static activations)."""
    torch = _torch()
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from compressed_tensors.quantization.utils import calculate_qparams

    scheme = ct_scheme(strategy, block)
    static = scheme.input_activations is not None and not scheme.input_activations.dynamic
    seen, hooks = {}, []
    if static:
        def hook(name):
            def f(mod, args):
                x = args[0].detach()
                lo, hi = seen.get(name, (x.min(), x.max()))
                seen[name] = (torch.minimum(lo, x.min()), torch.maximum(hi, x.max()))
            return f
        hooks = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head"]
        with torch.no_grad():
            for ids in calibration:
                model(torch.tensor([ids]))
        for h in hooks:
            h.remove()
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    names, inputs = [], {}
    with torch.no_grad():
        for n, m in model.named_modules():
            if getattr(m, "quantization_scheme", None) is None:
                continue
            m.weight_scale.copy_(calculate_qparams(*ct_observe(m.weight, scheme.weights), scheme.weights)[0])
            if static:
                m.input_scale.copy_(calculate_qparams(*seen[n], scheme.input_activations)[0])
                inputs[n] = m.input_scale.detach().clone()
            names.append(n + ".weight")
    comp = ModelCompressor.from_pretrained_model(model)
    comp.compress_model(model)
    model.save_pretrained(dst, **save)
    comp.update_config(dst)
    return names, inputs


def ct_dequantize_model(model, strategy="channel", block=None, dtype="float32", skip=(), router=False,
                        fused_experts=False, input_scales=None, **reader):
    """As dequantize_model for the compressed-tensors folder ct_convert_checkpoint or ct_save_pretrained wrote
    from the checkpoint `model` was loaded from (f32) with the same strategy, block and skip: each of those
    weights (each expert's matrix apart) cast back to the checkpoint's dtype (exact), quantized by ct_quantize
    and replaced by ct_dequant's w'. The other arguments make wrong references: router, fused_experts and skip
    as dequantize_model's; another strategy or block; input_scales {module: input_scale}: a module's
    input_scale taken as its weight's scale; reader: ct_dequant's (scale_axis, product, grid, apply_scale).
    Returns the names of the modules quantized."""
    torch = _torch()
    scheme = ct_scheme(strategy, block)
    dt = getattr(torch, dtype)

    def fq(w, name):
        t = torch.from_numpy(np.ascontiguousarray(w)).to(dt)
        out = []
        for m in t.reshape(-1, *t.shape[-2:]):
            q, s = ct_quantize(m, scheme)
            if input_scales is not None:
                s = input_scales[name].to(s.dtype).reshape(s.shape)
            out.append(ct_dequant(q, s, strategy, scheme.weights.block_structure, **reader))
        return np.stack(out).reshape(w.shape)

    return _dequantize_modules(model, fq, skip, router, fused_experts)


def ct_selftest():
    """compressed_tensors' quantization (ct_quantize) on an example worked by hand, then against this file's
    own definition on random matrices (f32 and bf16 weights, each strategy, partial blocks, an all-zero group):
        s = dt(f32(amax) / 448), dt's eps for an all-zero group      q = e4m3(clamp(dt(f32(w) / f32(s)), +-448))
    dt the weight's dtype (rounding to it, bf16_round for bf16), e4m3 by e4m3_round; and ct_dequant's readers."""
    torch = _torch()
    # channel, f32: row 0 amax 448 (s = 1: q = e4m3(w), 1.0625 a tie to 1); row 1 all zero (s = f32's eps);
    # row 2 amax 28 (s = 1/16: w / s = 448, -48, 1.6 -> 1.625, 16)
    w = np.array([[448, -3.5, 1.0625, 0], [0, 0, 0, 0], [28, -3, 0.1, 1]], dtype=np.float32)
    q, s = ct_quantize(torch.from_numpy(w), ct_scheme("channel"))
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and tuple(s.shape) == (3, 1), s
    assert s.reshape(-1).tolist() == [1, 2.0**-23, 1 / 16], s
    want = np.array([[448, -3.5, 1, 0], [0, 0, 0, 0], [28, -3, np.float32(1.625) / 16, 1]], dtype=np.float32)
    assert np.array_equal(ct_dequant(q, s, "channel"), want), ct_dequant(q, s, "channel")
    # tensor: one scale [1], 448 / 448
    q, s = ct_quantize(torch.from_numpy(w), ct_scheme("tensor"))
    assert tuple(s.shape) == (1,) and float(s[0]) == 1 and np.array_equal(ct_dequant(q, s, "tensor")[0], want[0])

    rng = np.random.default_rng(2)
    eps = {"float32": np.float32(2.0**-23), "bfloat16": np.float32(2.0**-7)}
    for dt in ("float32", "bfloat16"):
        rnd = bf16_round if dt == "bfloat16" else (lambda v: np.asarray(v, dtype=np.float32))
        for strategy, block, shape in [("channel", None, (6, 150)), ("tensor", None, (7, 33)),
                                       ("block", (4, 64), (9, 150)), ("block", (128, 64), (130, 20))]:
            x = rng.standard_normal(shape) * rng.choice([1e-6, 1e-3, 1.0, 40.0, 3e4], size=(shape[0], 1))
            x = rnd(x.astype(np.float32))
            x[:2, :64] = 0
            if strategy == "channel":   # an all-zero row, or block
                x[1] = 0
            elif strategy == "block":
                x[:block[0], :block[1]] = 0
            q, s = ct_quantize(torch.from_numpy(x).to(getattr(torch, dt)), ct_scheme(strategy, block))
            br, bc = {"tensor": shape, "channel": (1, shape[1])}.get(strategy, block)
            loop_q, loop_w = np.empty_like(x), np.empty_like(x)
            grid = []
            for r0 in range(0, shape[0], br):
                grid.append([])
                for c0 in range(0, shape[1], bc):
                    blk = x[r0:r0 + br, c0:c0 + bc]
                    amax = np.float32(np.max(np.abs(blk)))
                    sc = rnd(amax / np.float32(448)) if amax > 0 else eps[dt]
                    grid[-1].append(float(sc))
                    v = np.clip(rnd(blk / np.float32(sc)), -448, 448)
                    e = np.array([e4m3_round(float(t)) for t in v.reshape(-1)], dtype=np.float32).reshape(v.shape)
                    loop_q[r0:r0 + br, c0:c0 + bc] = e
                    loop_w[r0:r0 + br, c0:c0 + bc] = e * np.float32(sc)
            assert str(s.dtype) == "torch." + dt, (s.dtype, dt)
            assert np.array_equal(s.float().numpy().reshape(-1), np.array(grid, dtype=np.float32).reshape(-1)), \
                (dt, strategy, block)
            assert np.array_equal(q.float().numpy(), loop_q), (dt, strategy, block)
            assert np.array_equal(ct_dequant(q, s, strategy, block), loop_w), (dt, strategy, block)
            if strategy == "channel":
                for how in (dict(scale_axis="cols"), dict(scale_axis="first"), dict(apply_scale=False)):
                    assert not np.array_equal(ct_dequant(q, s, strategy, **how), loop_w), how
            if block == (4, 64):   # 9 x 150: blocks of 3 x 50 by the grid
                assert not np.array_equal(ct_dequant(q, s, strategy, block, grid="derived"), loop_w)
            if dt == "bfloat16":
                hf = ct_dequant(q, s, strategy, block, product="scale")
                assert np.array_equal(hf, bf16_round(loop_w)), strategy
                assert strategy == "block" or not np.array_equal(hf, loop_w), strategy

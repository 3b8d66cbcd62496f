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


def convert_checkpoint(src, dst, block=BLOCK, scale_dtype="F32", skip=()):
    """Writes into dst the FP8 form of the HF safetensors folder src (any float dtype, one file or sharded with
    its index): the same files and shards, each quantized X.weight as F8_E4M3 with X.weight_scale_inv (F32 or
    BF16) beside it in the same file, the index's weight_map and total_size updated, config.json with
    quantization_config, every other file copied. Returns the names of the quantized tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    os.makedirs(dst, exist_ok=True)
    files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {src}")
    where, names, total = {}, [], 0
    for fn in files:
        out = {}
        with safe_open(os.path.join(src, fn), "pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                t = f.get_tensor(k)
                if t.is_floating_point() and quantized_key(k, t.shape, skip):
                    q, s = quantize(t.float().numpy(), block, scale_dtype)
                    out[k], out[k + "_scale_inv"] = q, s
                    names.append(k)
                else:
                    out[k] = t
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


def dequantize_model(model, block=BLOCK, scale_dtype="F32", skip=(), transposed=False, router=False,
                     fused_experts=False, **reader):
    """Replaces, in place, every weight of `model` (f32, loaded from the folder convert_checkpoint converts) that
    the FP8 folder stores quantized by its w' (the quantization of convert_checkpoint with the same block,
    scale_dtype and skip, applied to the model's modules rather than the file's tensors: the experts' fused
    gate_up_proj [E, 2I, H] in two halves, as the checkpoint stores gate and up apart). The other arguments make
    the wrong references the tests must tell apart: transposed=True uses blocks [bc, br], router=True quantizes
    the MoE routers too, fused_experts=True blocks gate_up_proj as one matrix, skip leaves modules unquantized,
    reader: dequant's wrong readers (grid, apply_scale). Returns the names of the modules quantized."""
    import torch

    blk = tuple(block[::-1]) if transposed else tuple(block)
    names = []

    def put(p, halves=1):
        w = p.detach().float().numpy()
        parts = np.split(w, halves, axis=-2)
        p.copy_(torch.from_numpy(np.concatenate([fake_quant(x, blk, scale_dtype, **reader) for x in parts], -2)))

    with torch.no_grad():
        for name, mod in model.named_modules():
            kind = type(mod).__name__
            if not LAYER.search(name + ".") or any(name.endswith(s) for s in skip):
                continue
            is_router = name.rsplit(".", 1)[-1] in ROUTERS or kind.endswith("TopKRouter")
            if is_router:
                if router and getattr(mod, "weight", None) is not None:
                    put(mod.weight)
                    names.append(name)
            elif isinstance(mod, torch.nn.Linear):
                put(mod.weight)
                names.append(name)
            elif kind.endswith("Experts") and hasattr(mod, "gate_up_proj"):
                put(mod.gate_up_proj, 1 if fused_experts else 2)
                put(mod.down_proj)
                names.append(name)
    return names


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

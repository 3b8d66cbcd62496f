"""--weights-dtype int8 as a reference: the weights pippy-batch quantizes, rounded the same way in numpy, so HF
transformers in f32 with them in place computes what pippy-batch computes (tests/forward/int8-families.py,
tests/real/int8.py).

Each row of a matrix in nn.Linear layout [n_out, n_in] (GPT-2's Conv1D, stored [n_in, n_out], transposed first;
an embedding table [vocab, hidden] as it is), in groups of GROUP consecutive columns (the last group of a row
may be shorter), all in float32:
    d = amax(|w|) / 127          q = clip(rint(w / d), -127, 127), 0 where d is 0          w' = q * d
Quantized: linear layers (the LM head included), MoE experts, token and learned position embeddings; kept: the
MoE router, norms, biases.
"""
import numpy as np

GROUP = 64


def dequant(w, group=GROUP):
    """w' of a float32 array [n_out, n_in] (or [E, n_out, n_in]), groups along the last axis."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    n_in = w.shape[-1]
    pad = -n_in % group   # zeros do not change a group's amax
    wp = np.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, pad)]).reshape(w.shape[:-1] + (-1, group))
    d = np.abs(wp).max(axis=-1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.clip(np.rint(wp / d), -127, 127), np.float32(0)).astype(np.float32)
    out = (q * d).reshape(w.shape[:-1] + (-1,))[..., :n_in]
    assert out.dtype == np.float32
    return out


def quantize_model(model, router=False, transpose_conv1d=True, skip=(), group=GROUP):
    """Replaces, in place, every weight of `model` (f32) that --weights-dtype int8 quantizes by w'. A tensor
    shared by two modules (a tied LM head) is quantized once. The other arguments make the wrong references
    the tests must tell apart: router=True quantizes the MoE routers too, transpose_conv1d=False groups
    GPT-2's Conv1D weights along their stored rows, skip: endings of module names (as named_modules) left
    unquantized, group: another group size. Returns the names of the modules whose weights were quantized."""
    import torch
    import transformers

    conv1d = transformers.pytorch_utils.Conv1D
    done, names = set(), []

    def put(p, f):
        if p.data_ptr() in done:
            return False
        done.add(p.data_ptr())
        p.copy_(torch.from_numpy(f(p.detach().float().numpy())))
        return True

    def rows(w):
        return dequant(w, group)

    with torch.no_grad():
        for name, mod in model.named_modules():
            kind = type(mod).__name__
            if any(name.endswith(s) for s in skip):
                continue
            if isinstance(mod, conv1d):
                done_here = put(mod.weight, (lambda w: rows(w.T).T) if transpose_conv1d else rows)
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                done_here = put(mod.weight, rows)
            elif kind.endswith("TopKRouter"):
                done_here = router and put(mod.weight, rows)
            elif kind.endswith("Experts") and hasattr(mod, "gate_up_proj"):
                done_here = put(mod.gate_up_proj, rows) & put(mod.down_proj, rows)   # [E, out, in]
            else:
                done_here = False
            if done_here:
                names.append(name)
    return names


def selftest():
    """The formula on a small example worked by hand: groups of 64 and a partial last one, ties of rint,
    an all-zero group, a negative amax."""
    w = np.zeros((2, 70), dtype=np.float32)
    w[0, 0] = 127.0           # d = 1: the group's values round to integers, halves to even
    w[0, 1:5] = [2.5, 3.5, -2.5, 0.49]
    w[0, 64:70] = [0.5, -1.0, 0.25, 0.0, 0.0, 0.125]      # partial group of 6: d = 1/127
    w[1, 3] = -254.0          # d = 2, from a negative amax
    w[1, 4:7] = [5.0, 3.0, -1.0]                          # 2.5 -> 2, 1.5 -> 2, -0.5 -> -0
    got = dequant(w)
    want = np.zeros_like(w)
    want[0, 0] = 127.0
    want[0, 1:5] = [2.0, 4.0, -2.0, 0.0]
    d = np.float32(1.0) / np.float32(127)
    want[0, 64:70] = [np.float32(64) * d, np.float32(-127) * d, np.float32(32) * d, 0, 0, np.float32(16) * d]
    want[1, 3:7] = [-254.0, 4.0, 4.0, -0.0]
    assert np.array_equal(got, want), (got[:, :8], got[:, 64:], want[:, 64:])
    # against a plain per-element loop in float32
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 150)) * rng.choice([1e-3, 1.0, 40.0], size=(5, 1))).astype(np.float32)
    x[2, 64:128] = 0
    loop = np.empty_like(x)
    for r in range(x.shape[0]):
        for g in range(0, x.shape[1], GROUP):
            blk = x[r, g:g + GROUP]
            dd = np.float32(np.max(np.abs(blk))) / np.float32(127)
            for k in range(len(blk)):
                q = np.float32(min(127, max(-127, np.rint(blk[k] / dd)))) if dd > 0 else np.float32(0)
                loop[r, g + k] = np.float32(q * dd)
    assert np.array_equal(dequant(x), loop)
    assert np.array_equal(dequant(x[None].repeat(2, 0))[1], loop)   # experts [E, out, in]

#!/usr/bin/env python3
"""--kv-dtype f16 and bf16 against HF transformers: the goldens of golden.py
made with every key and value rounded to f16 (bf16) as HF's KV cache takes
them in (make_goldens.kv_rounded), and fwd-harness run with PB_KV_DTYPE=f16
(bf16). The same
checks as golden.py (logits within 1e-4 at every prompt position and decode
step, greedy choices and the free-running continuation equal to generate(),
1 and 3 stages bit-identical), on families with different attention paths:
GPT-2 (multi-head, learned positions), Llama (one KV head for three query
heads, head_dim 10), Mistral (sliding window), Bloom (ALiBi; bf16 .bin)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden  # noqa: E402


def main():
    import torch
    torch.set_num_threads(1)
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    harness = os.path.join(os.environ.get("PB_BUILDDIR", "."), "tests", "forward", "fwd-harness")
    ok = True
    for kv in ("f16", "bf16"):
        for name in sys.argv[1:] or ["gpt2-b", "llama-b", "mistral-win", "bloom-b"]:
            ok &= golden.check(name, tmp, harness, 2, kv=kv)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sliding and local attention windows against current HF transformers (5.x),
where a query at position i sees key j only when i - W < j <= i (W keys):
Mistral (every layer), Qwen2 (use_sliding_window with max_window_layers, explicit
layer_types, and use_sliding_window false) and GPT-Neo local layers.

Each model of make_goldens.WINDOW_SPECS has prompts 3-4x its window and decodes
24 tokens past them; fwd-harness prefills prompt 1 in chunks smaller than the
window while the others decode, with 1, 2 and 3 stages (see golden.py for the
checks: logits within 1e-4 of HF at every prompt position and decode step,
bit-identical across stage counts, greedy equal to generate()).

That the window matters is checked too: HF without the window gives other
logits past the first W positions, so a wrong window rule cannot pass."""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden  # noqa: E402
import make_goldens  # noqa: E402


def window_matters(name, root):
    """HF's prefill logits with the window switched off differ from the golden's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    mt = make_goldens.WINDOW_SPECS[name][0]
    d = os.path.join(root, name)
    cfg = AutoConfig.from_pretrained(os.path.join(d, "model"))
    if mt == "mistral":
        w = cfg.sliding_window
        cfg.sliding_window = None
    elif mt == "qwen2":
        if not cfg.use_sliding_window:
            return True   # the window-off case: nothing to switch off
        w = cfg.sliding_window
        cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
    else:
        w = cfg.window_size
        cfg.attention_layers = ["global"] * cfg.num_layers
    m = AutoModelForCausalLM.from_pretrained(os.path.join(d, "model"), config=cfg, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    gold = np.load(os.path.join(d, "golden.npz"))
    p = list(map(int, open(os.path.join(d, "prompts.txt")).readline().split()))
    with torch.no_grad():
        full = m(input_ids=torch.tensor([p])).logits[0].numpy()
    diff = np.abs(full - gold["prefill_0"]).max(axis=1)
    ok = diff[:w].max() < 1e-4 and diff[w:].max() > 1e-2
    print(f"{name}: window {w}: HF without it differs by {diff[:w].max():.2g} before position {w}, "
          f"{diff[w:].max():.2g} after" + ("" if ok else " FAIL"))
    return ok


def main():
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    build = os.environ.get("PB_BUILDDIR", ".")
    harness = os.path.join(build, "tests", "forward", "fwd-harness")
    names = sys.argv[1:] or list(make_goldens.WINDOW_SPECS)
    import torch
    torch.set_num_threads(1)
    ok = True
    for n in names:
        ok &= golden.check(n, tmp, harness, 2)
        ok &= window_matters(n, tmp)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

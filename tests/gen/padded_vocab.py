"""Padded vocabulary rows against HF transformers: a tiny Qwen2-shaped model whose
config vocab_size (3072) is larger than its tokenizer (3000 ids), as real Qwen2
checkpoints are (151936 vs 151669). Its lm_head row for a padding id copies the row
of a token greedy often picks, scaled up, so greedy picks the padding id at some
steps. The run never aborts: every generated id, padding ones included, is counted
in completion_tokens, and the text is what HF's generate() + tokenizer.decode()
give (decode skips ids the tokenizer does not know), with --batch-size 1 and 4. `pippy-batch detokenize` follows the same rule."""
import json
import math
import os
import subprocess
import sys
from collections import Counter

import torch
import transformers

PB = os.environ["PIPPY_BATCH"]
TMP = os.environ["PB_TEST_TMP"]
TESTDATA = os.environ["PB_TESTDATA"]
N_TOK = 3000         # ids of the small-qwen2-style tokenizer
V = 3072             # the model's rows: 72 padding rows past the tokenizer
EOS = 2              # <|im_end|>
MAX_NEW = 24
failures = 0

_supp = os.path.join(TMP, "lsan.supp")   # libpmix's own singleton leak (see e2e_ref.py)
with open(_supp, "w") as _f:
    _f.write("leak:libpmix.so\n")
os.environ["LSAN_OPTIONS"] = (os.environ.get("LSAN_OPTIONS", "") + ":suppressions=" + _supp).lstrip(":")


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, flush=True)


def greedy(model, tok, prompts):
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False,
                               eos_token_id=EOS, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        gen = g.sequences[0, ids.shape[1]:].tolist()
        margins = [float(torch.topk(s[0], 2).values.diff().abs()) for s in g.scores]
        out.append((ids.shape[1], gen, margins))
    return out


def main():
    d = os.path.join(TMP, "qwen2-padded")
    os.makedirs(d, exist_ok=True)
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(d, "tokenizer.json"),
                    os.path.join(TESTDATA, "tokenizers", "small-qwen2-style.json.zst")], check=True)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))
    check(len(tok) == N_TOK, f"tokenizer has {len(tok)} ids, expected {N_TOK}")

    torch.manual_seed(11)
    cfg = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=V, max_position_embeddings=128,
                                   tie_word_embeddings=False, eos_token_id=EOS, bos_token_id=None)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.3 / math.sqrt(p.shape[1])))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        # the padding rows never win on their own
        model.lm_head.weight[N_TOK:] *= 0.01
    prompts = ["Hello world, the quick brown fox", "In 1905, Einstein", "def main():", "1 2 3 4 5",
               "Once upon a time there was", "The end."]
    base = greedy(model, tok, prompts)
    # the token greedy picks most: padding row PAD becomes a scaled copy of its row
    common = Counter(t for _, gen, _ in base for t in gen if t != EOS).most_common(1)[0][0]
    PAD = N_TOK + 41
    with torch.no_grad():
        model.lm_head.weight[PAD] = model.lm_head.weight[common] * 1.25
    model.save_pretrained(d)
    ref = greedy(model, tok, prompts)
    n_pad = sum(t >= N_TOK for _, gen, _ in ref for t in gen)
    check(n_pad >= 3, f"the reference picks a padding id only {n_pad} times (test model too weak)")
    print(f"reference: {n_pad} padding ids among {sum(len(gen) for _, gen, _ in ref)} generated", flush=True)

    # special tokens' text left out by default (vLLM's skip_special_tokens), written with the field false
    for args, keep in ((["--batch-size", "1"], False), (["--batch-size", "4", "--chunks", "2"], False),
                       (["--batch-size", "4"], True)):
        inp = "".join(json.dumps(dict({"prompt": p, "id": f"r{i}"}, **({"skip_special_tokens": False} if keep else {})))
                      + "\n" for i, p in enumerate(prompts))
        p = subprocess.run([PB, "-q", "--model", d, "--max-tokens", str(MAX_NEW)] + args, input=inp.encode(),
                           capture_output=True)
        check(p.returncode == 0, f"{args}: exit {p.returncode}: {p.stderr.decode()}")
        if p.returncode != 0:
            continue
        recs = [json.loads(l) for l in p.stdout.decode().splitlines()]
        check(len(recs) == len(prompts), f"{args}: {len(recs)} records")
        for r, (n_prompt, gen, margins), pr in zip(recs, ref, prompts):
            if min(margins, default=1.0) < 1e-3:
                print(f"  near-tie in the reference for {pr!r}: not compared", flush=True)
                continue
            body = gen[:-1] if gen and gen[-1] == EOS else gen
            want = tok.decode(body, skip_special_tokens=not keep)
            check(r.get("completion_tokens") == len(gen),
                  f"{args} {pr!r}: completion_tokens {r.get('completion_tokens')}, HF generated {len(gen)}: {gen}")
            check(r.get("text") == want, f"{args} {pr!r}: text {r.get('text')!r}, HF {want!r} (ids {gen})")
            check(r.get("finish_reason") == ("stop" if gen[-1] == EOS else "length"),
                  f"{args} {pr!r}: finish_reason {r.get('finish_reason')}")

    # detokenize: ids past the tokenizer decode to nothing, with and without --skip-special
    lines = [gen for _, gen, _ in ref] + [[PAD, 1, PAD, 1280, V - 1, 2, 856, 5000]]
    inp = "".join(json.dumps({"ids": ids}) + "\n" for ids in lines)
    for skip in (False, True):
        p = subprocess.run([PB, "detokenize", "--model", d] + (["--skip-special"] if skip else []), input=inp.encode(),
                           capture_output=True)
        check(p.returncode == 0, f"detokenize skip={skip}: exit {p.returncode}: {p.stderr.decode()}")
        got = [json.loads(l)["text"] for l in p.stdout.decode().splitlines()] if p.returncode == 0 else []
        want = [tok.decode(ids, skip_special_tokens=skip) for ids in lines]
        check(got == want, f"detokenize skip={skip}: {got} vs HF {want}")

    print("ok" if not failures else f"{failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""--weights-dtype int8 against HF transformers 5.x in f32 with every weight pippy-batch quantizes replaced by
its rounded value (int8_ref.py), on tiny models made by from_config + save_pretrained:
  GPT-2    Conv1D weights (grouped along their input after transposing), learned position embeddings, the
           tied head, hidden 72 (a group of 64 and one of 8), f32;
  Llama    an untied LM head, hidden 80 and intermediate 136 (partial last groups of 16 and 8), f16;
  Phi-3    fused qkv_proj and gate_up_proj, hidden 80, bf16 (widened exactly before rounding);
  Mixtral  experts rounded, the router kept, hidden 96 (64 + 32), f32.
Prompts of token ids, greedy, --ignore-eos: every prompt and completion token's log probability and the 20 most
likely within TOL of log_softmax of the reference's logits (golden.py's 1e-4 on logits, twice it on log
probabilities as tests/real/smollm2.py), the completion equal to generate()'s up to the first near-tie (HF's
top-2 margin under TIE). Then each reference that is wrong in one way (unrounded; and per family: Conv1D grouped
along its stored rows, position embeddings or the untied head left unrounded, groups of 128, the router rounded
too, the experts unrounded) must be farther than MUTANT x TOL from pippy-batch's, or the comparison could not
catch that mistake. The figures are printed."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TOL = 2e-4
TIE = 1e-3
MUTANT = 10
N_NEW = 24
PROMPT_LENS = (5, 17, 11)
TOP = 20
FAMILIES = {  # name -> (model_type, config, saved dtype, {mutant: quantize_model's arguments})
    "gpt2": ("gpt2", dict(n_embd=72, n_layer=2, n_head=4, n_positions=64), "float32",
             {"Conv1D grouped as stored": dict(transpose_conv1d=False), "position embeddings kept": dict(skip=("wpe",)),
              "groups of 128": dict(group=128)}),
    "llama": ("llama", dict(hidden_size=80, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                            intermediate_size=136, max_position_embeddings=64, tie_word_embeddings=False), "float16",
              {"untied head kept": dict(skip=("lm_head",)), "groups of 128": dict(group=128)}),
    "phi3": ("phi3", dict(pad_token_id=0, hidden_size=80, num_attention_heads=4, num_key_value_heads=2,
                          num_hidden_layers=2, intermediate_size=72, max_position_embeddings=64), "bfloat16",
             {"fused qkv kept": dict(skip=("qkv_proj",)), "groups of 128": dict(group=128)}),
    "mixtral": ("mixtral", dict(hidden_size=96, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                intermediate_size=80, max_position_embeddings=64, num_local_experts=8,
                                num_experts_per_tok=2), "float32",
                {"router rounded too": dict(router=True), "experts kept": dict(skip=("experts",))}),
}


def main():
    import numpy as np
    import torch
    from make_goldens import rescale
    from transformers import AutoConfig, AutoModelForCausalLM

    import int8_ref
    import quant_check

    int8_ref.selftest()
    pb = os.environ.get("PIPPY_BATCH") or os.path.join(os.environ.get("PB_BUILDDIR", "."), "pippy-batch")
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    data = os.environ.get("PB_TESTDATA") or os.path.join(HERE, "..", "data")
    torch.set_num_threads(2)
    failures = []

    for fam, (mtype, over, dtype, mutants) in FAMILIES.items():
        d = os.path.join(tmp, "int8-" + fam)
        seed = sum(map(ord, fam))
        torch.manual_seed(seed)
        m = AutoModelForCausalLM.from_config(AutoConfig.for_model(mtype, vocab_size=32000, **over),
                                             attn_implementation="eager")
        rescale(m, seed)
        m.to(getattr(torch, dtype)).save_pretrained(d, max_shard_size="2MB")
        subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(d, "tokenizer.json"),
                        os.path.join(data, "tokenizers", "llama2.json.zst")], check=True)

        def load(how):
            """HF on the saved folder in f32, rounded as quantize_model(**how) rounds (None: not at all)."""
            m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
            names = [] if how is None else int8_ref.quantize_model(m, **how)
            return m, names

        ref, names = load({})
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(3, 32000, size=n).tolist() for n in PROMPT_LENS]
        paths, logits = [], []
        with torch.no_grad():
            for p in prompts:
                ids = torch.tensor([p])
                g = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=N_NEW,
                                 min_new_tokens=N_NEW, pad_token_id=0, eos_token_id=None)[0, len(p):].tolist()
                paths.append(g)
                logits.append(ref(torch.tensor([p + g])).logits[0].numpy())

        inp = os.path.join(d, "in.jsonl")
        with open(inp, "w") as f:
            f.writelines(json.dumps({"id": i, "prompt": p, "max_tokens": N_NEW, "logprobs": TOP,
                                     "prompt_logprobs": TOP}) + "\n" for i, p in enumerate(prompts))
        r = subprocess.run([pb, "-q", "--model", d, "--weights-dtype", "int8", "--no-weights-cache", "--temperature",
                            "0", "--ignore-eos", "--threads", "2", "--in", inp, "--out", "-"], capture_output=True,
                           timeout=300)
        if r.returncode:
            failures.append(f"{fam}: exit {r.returncode}: {r.stderr.decode()[-1500:]}")
            print(f"{fam}: FAIL")
            continue
        got = {o["id"]: o for o in map(json.loads, r.stdout.decode().splitlines())}
        compared, worst = quant_check.compare(fam, "int8", got, prompts, paths, logits, N_NEW, TIE, TOL, failures)
        # the references that are wrong in one way, along the tokens compared
        away = {}
        for what, how in [("unrounded", None)] + list(mutants.items()):
            mm, _ = load(how)
            with torch.no_grad():
                away[what] = max(quant_check.distance(got[i], p, mm(torch.tensor([p + paths[i]])).logits[0].numpy(),
                                          compared[i]) for i, p in enumerate(prompts) if i in got)
            if away[what] <= MUTANT * TOL:
                failures.append(f"{fam}: the wrong reference '{what}' is only {away[what]:.3g} from "
                                f"pippy-batch's: the comparison cannot catch that mistake")
        print(f"{fam} ({dtype}, {len(names)} modules rounded): largest difference {worst:.3g} from the int8 "
              f"reference; the wrong references: " + ", ".join(f"{w} {v:.3g}" for w, v in away.items()))
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


main()

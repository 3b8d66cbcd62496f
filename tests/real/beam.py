#!/usr/bin/env python3
"""Beam search on the real SmolLM2-135M-Instruct against HF transformers 5.x's
generate(num_beams=B, num_return_sequences=n, do_sample=False) in f32 on the
same bf16 weights: widths 1 to 6, length_penalty, early_stopping false, true
and "never", min_tokens (min_new_tokens), stop_token_ids (more EOS ids),
ignore_eos (no EOS), best_of > n, a chat record and an OpenAI line of two
prompts. Each returned hypothesis is HF's at its rank, or (a near-tie: the two
programs' logits differ by ~1e-4) one that HF's own model scores within
SCORE_TIE of HF's there. 1 and 2 ranks, and one run of every record with
sampled records among them at -b 6 --chunks 2, give the same bytes."""
import copy
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smol  # noqa: E402

SCORE_TIE = 2e-3
CASES = [  # prompt, record fields
    ("The capital of France is", {"n": 4, "max_tokens": 20}),
    ("Once upon a time, in a small village by the sea,", {"n": 3, "max_tokens": 24, "length_penalty": 0.5}),
    ("def fibonacci(n):\n", {"n": 2, "max_tokens": 32, "early_stopping": True}),
    ("1, 1, 2, 3, 5, 8,", {"n": 4, "max_tokens": 12, "length_penalty": 2.0, "early_stopping": "never"}),
    ("Hello", {"n": 1, "max_tokens": 10}),
    ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
     {"n": 4, "best_of": 5, "max_tokens": 16, "min_tokens": 10}),
    ("<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n", {"n": 4, "max_tokens": 20}),
    ("My favourite food is", {"n": 3, "max_tokens": 14, "stop_token_ids": [13, 30]}),
    ("Water boils at", {"n": 2, "max_tokens": 10, "ignore_eos": True}),
    ("<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
     {"n": 3, "max_tokens": 24, "length_penalty": 1.5}),
]


def main():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    d = smol.model_dir()
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    work = os.path.join(smol.tmpdir(), "real-beam")
    os.makedirs(work, exist_ok=True)
    failures = 0

    def check(cond, what):
        nonlocal failures
        if not cond:
            failures += 1
            print("FAIL:", what)

    recs = [dict(c, prompt=p, id=f"b{i}", use_beam_search=True, return_token_ids=True)
            for i, (p, c) in enumerate(CASES)]
    chat = {"messages": [{"role": "user", "content": "Name a fruit that is yellow."}], "id": "chat",
            "use_beam_search": True, "n": 2, "max_tokens": 16, "return_token_ids": True}
    lines = [json.dumps(r) for r in recs + [chat]]
    lpr = {"custom_id": "lp", "method": "POST", "url": "/v1/completions",
           "body": {"prompt": CASES[1][0], "use_beam_search": True, "n": 2, "max_tokens": 10, "logprobs": 3,
                    "echo": True, "return_token_ids": True}}
    lines.append(json.dumps(lpr))
    lines.append(json.dumps({"custom_id": "two", "method": "POST", "url": "/v1/completions",
                             "body": {"prompt": [CASES[0][0], CASES[4][0]], "use_beam_search": True, "n": 2,
                                      "max_tokens": 8, "return_token_ids": True}}))
    inp = os.path.join(work, "in.jsonl")
    with open(inp, "w") as f:
        f.write("".join(ln + "\n" for ln in lines))
    # the same records among sampled ones, with fewer slots and two micro-batches
    mixed = os.path.join(work, "mixed.jsonl")
    with open(mixed, "w") as f:
        for k, ln in enumerate(lines):
            f.write(json.dumps({"prompt": f"Sampled record {k} says", "temperature": 0.9, "max_tokens": 9,
                                "id": f"s{k}"}) + "\n" + ln + "\n")
    outs = []
    for n, p in zip((1, 2), smol.run_ranks(pb, lambda n: ["-q", "--model", d, "--in", inp, "--out",
                                                            os.path.join(work, f"out-{n}.jsonl"), "--force",
                                                            "--threads", "1"])):
        out = os.path.join(work, f"out-{n}.jsonl")
        check(p.returncode == 0, f"mpirun -np {n}: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
        outs.append(open(out, "rb").read() if os.path.exists(out) else b"")
    check(outs[0] == outs[1], "beam search: 1 and 2 ranks differ")
    p = subprocess.run([pb, "-q", "--model", d, "--in", mixed, "--out", "-", "-b", "6", "--chunks", "2"],
                       capture_output=True, timeout=1800)
    check(p.returncode == 0, f"-b 6 --chunks 2: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
    def answers(text):  # each line's answer, without the OpenAI shape's line numbers
        rs = [json.loads(ln) for ln in text.decode().splitlines()]
        return [r["response"]["body"]["choices"] if "response" in r else r for r in rs
                if not str(r.get("id", "")).startswith("s")]
    check(answers(p.stdout) == answers(outs[0]), "beam search among sampled records at -b 6 --chunks 2 differs "
          "from a run of its own")
    got = [json.loads(ln) for ln in outs[0].decode().splitlines()]
    # beam search by default: --beams 3 --n 2 on plain records; and a copy of the folder whose
    # generation_config.json asks num_beams 3 and length_penalty 0.8, as HF's generate() with no arguments
    plain = "".join(json.dumps({"prompt": p, "max_tokens": 12, "return_token_ids": True}) + "\n"
                    for p in (CASES[0][0], CASES[1][0]))
    p = subprocess.run([pb, "-q", "--model", d, "--in", "-", "--out", "-", "--beams", "3", "--n", "2"],
                       input=plain.encode(), capture_output=True, timeout=1800)
    check(p.returncode == 0, f"--beams 3: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
    by_cli = [json.loads(ln) for ln in p.stdout.decode().splitlines()]
    gdir = os.path.join(work, "gencfg")
    os.makedirs(gdir, exist_ok=True)
    for f in os.listdir(d):
        if f != "generation_config.json" and not os.path.exists(os.path.join(gdir, f)):
            os.symlink(os.path.join(d, f), os.path.join(gdir, f))
    with open(os.path.join(d, "generation_config.json")) as f:
        gcfg = json.load(f)
    gcfg.update(num_beams=3, length_penalty=0.8)
    with open(os.path.join(gdir, "generation_config.json"), "w") as f:
        json.dump(gcfg, f)
    off = json.dumps({"prompt": CASES[0][0], "max_tokens": 12, "use_beam_search": False}) + "\n"
    p = subprocess.run([pb, "-q", "--model", gdir, "--in", "-", "--out", "-"], input=(plain + off).encode(),
                       capture_output=True, timeout=1800)
    check(p.returncode == 0, f"num_beams in generation_config.json: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
    by_cfg = [json.loads(ln) for ln in p.stdout.decode().splitlines()]

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()

    def hf_beams(ids, c):
        gc = copy.deepcopy(m.generation_config)
        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
        gc.eos_token_id = None if c.get("ignore_eos") else eos + c.get("stop_token_ids", [])
        B, n = c.get("best_of", c["n"]), c["n"]
        gc.update(num_beams=B, num_return_sequences=n, do_sample=False, max_new_tokens=c["max_tokens"],
                  min_new_tokens=c.get("min_tokens", 0), length_penalty=c.get("length_penalty", 1.0),
                  early_stopping=c.get("early_stopping", False), return_dict_in_generate=True, output_scores=True,
                  pad_token_id=2)
        with torch.no_grad():
            o = m.generate(torch.tensor([ids]), generation_config=gc)
        stops = set(gc.eos_token_id or [])
        hyps = []
        for seq in o.sequences.tolist():
            g = seq[len(ids):]
            cut = next((k for k, t in enumerate(g) if t in stops), None)
            hyps.append(g if cut is None else g[:cut + 1])
        return hyps, o.sequences_scores.tolist() if n > 1 or B > 1 else [None] * n, stops

    def hf_score(ids, gen, c, stops):
        """HF's beam score of a hypothesis: its summed log probabilities over its length ** length_penalty."""
        with torch.no_grad():
            lp = torch.log_softmax(m(torch.tensor([ids + gen])).logits[0].float(), -1)
        s = 0.0
        for k, t in enumerate(gen):
            row = lp[len(ids) + k - 1].clone()
            if k < c.get("min_tokens", 0):
                row[list(stops)] = -float("inf")
            s += float(row[t])
        return s / (len(gen) ** c.get("length_penalty", 1.0))

    def compare(what, ids, c, choices):
        hyps, scores, stops = hf_beams(ids, c)
        ours = [ch.get("token_ids") for ch in choices]
        check(len(ours) == len(hyps), f"{what}: {len(ours)} hypotheses, HF {len(hyps)}")
        ties = 0
        for k, (a, b) in enumerate(zip(ours, hyps)):
            if a == b:
                continue
            sa = hf_score(ids, a, c, stops)
            near = scores[k] is not None and abs(sa - scores[k]) < SCORE_TIE
            ties += near
            check(near, f"{what}: hypothesis {k}: {tok.decode(a)!r} (HF's score {sa:.5f}) vs HF "
                  f"{tok.decode(b)!r} ({scores[k]})")
        head = tok.decode(ids, skip_special_tokens=True)
        for ch, h in zip(choices, ours):
            end = bool(h) and h[-1] in stops
            want = tok.decode(ids + (h[:-1] if end else h), skip_special_tokens=True)[len(head):]
            check((ch["text"], ch["finish_reason"]) == (want, "stop" if end else "length"),
                  f"{what}: text {ch['text']!r} ({ch['finish_reason']}) of {h}: {want!r}")
        print(f"{what}: {len(ours)} hypotheses as HF's" + (f" ({ties} at near-ties)" if ties else "") +
              f", best {tok.decode(ours[0])!r}")

    for i, (prompt, c) in enumerate(CASES):
        r = got[i]
        compare(f"case {i} ({c})", tok(prompt).input_ids, c, r["choices"] if "choices" in r else [r])
    text = tok.apply_chat_template(chat["messages"], tokenize=False, add_generation_prompt=True)
    compare("chat", tok(text, add_special_tokens=False).input_ids, chat, got[len(CASES)]["choices"])
    # logprobs (vLLM's with beam search): each hypothesis's tokens' log probabilities and their steps' most likely,
    # and with echo the prompt's first, against HF's log_softmax along the hypothesis
    lpc = got[len(CASES) + 1]["response"]["body"]["choices"]
    ids = tok(CASES[1][0]).input_ids
    compare("logprobs", ids, lpr["body"], lpc)
    worst = 0.0
    for ch in lpc:
        gen = ch["token_ids"]
        with torch.no_grad():
            ref = torch.log_softmax(m(torch.tensor([ids + gen])).logits[0].double(), -1)
        col = ch["logprobs"]
        check(len(col["tokens"]) == len(ids) + len(gen) and col["token_logprobs"][0] is None and
              col["tokens"][len(ids):] == [tok.decode([t]) for t in gen], f"logprobs: columns {col['tokens']}")
        for k in range(1, len(ids) + len(gen)):
            want = float(ref[k - 1][(ids + gen)[k]])
            worst = max(worst, abs(col["token_logprobs"][k] - want))
            top = sorted(col["top_logprobs"][k].values(), reverse=True)
            hf_top = torch.topk(ref[k - 1], len(top)).values.tolist()
            worst = max([worst] + [abs(a - b) for a, b in zip(top, hf_top)])
    check(worst < 2e-3, f"logprobs with beam search: {worst:.3g} from HF's log_softmax")
    print(f"logprobs with beam search: within {worst:.2g} of HF's log_softmax (prompt and hypotheses)")
    two = got[len(CASES) + 2]["response"]["body"]["choices"]
    check([ch["index"] for ch in two] == [0, 1, 2, 3], f"two prompts: {two}")
    for k, prompt in enumerate((CASES[0][0], CASES[4][0])):
        compare(f"two prompts, prompt {k}", tok(prompt).input_ids, {"n": 2, "max_tokens": 8}, two[2 * k:2 * k + 2])
    for k, prompt in enumerate((CASES[0][0], CASES[1][0])):
        ids = tok(prompt).input_ids
        compare(f"--beams 3 --n 2, prompt {k}", ids, {"n": 2, "best_of": 3, "max_tokens": 12},
                by_cli[k]["choices"] if k < len(by_cli) else [])
        with torch.no_grad():
            o = m.generate(torch.tensor([ids]), generation_config=GenerationConfig.from_pretrained(gdir),
                           max_new_tokens=12)
        want = tok.decode(o[0, len(ids):], skip_special_tokens=True)
        r = by_cfg[k] if k < len(by_cfg) else {}
        check(r.get("text") == want, f"num_beams 3 in generation_config.json, prompt {k}: {r.get('text')!r} vs HF's "
              f"generate() {want!r}")
    greedy = by_cfg[2] if len(by_cfg) > 2 else {}
    with torch.no_grad():
        o = m.generate(torch.tensor([tok(CASES[0][0]).input_ids]), do_sample=False, num_beams=1, max_new_tokens=12)
    want = tok.decode(o[0, len(tok(CASES[0][0]).input_ids):], skip_special_tokens=True)
    check(greedy.get("text") == want and want != by_cfg[0].get("text"),
          f"use_beam_search false in that folder: {greedy.get('text')!r} vs greedy {want!r}")
    print("beam search by default (--beams; generation_config.json's num_beams): as HF's generate()")
    if failures:
        print(f"{failures} failures")
        sys.exit(1)
    print("ok")


main()

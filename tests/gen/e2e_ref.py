"""pippy-batch end to end against HF transformers on a tiny GPT-2 with the
real GPT-2 tokenizer: greedy output equal to generate() and byte-identical
across --batch-size 1/4/16 and --chunks 1/2/4; seeded sampling reproducible
across batch sizes; stop strings, EOS, max_tokens, context length;
ignore_eos and min_tokens against generate() without EOS / min_new_tokens;
finish_reason and token counts; error records for a file of mixed good and
malformed lines; OpenAI shape; .zst output read by the zstd CLI; a jq
pipeline; metrics JSON; exit codes."""
import json
import os
import shutil
import subprocess
import sys

import torch
import transformers

PB = os.environ["PIPPY_BATCH"]
TMP = os.environ["PB_TEST_TMP"]
TESTDATA = os.environ["PB_TESTDATA"]
failures = 0

# Sanitizer builds: libpmix's singleton init keeps a 4-byte strdup
# (pmix_bfrops_base_value_load) to exit; that leak is the library's, not ours.
_supp = os.path.join(TMP, "lsan.supp")
with open(_supp, "w") as _f:
    _f.write("leak:libpmix.so\n")
os.environ["LSAN_OPTIONS"] = (os.environ.get("LSAN_OPTIONS", "") + ":suppressions=" + _supp).lstrip(":")


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def make_model(path, m=None, tokenizer="gpt2"):
    """A tiny random model saved with a real tokenizer (default: GPT-2 of 2 layers with GPT-2's)."""
    if m is None:
        torch.manual_seed(0)
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50257,
                                                                 n_positions=64))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)  # logits far from uniform: no near-ties in greedy choices
    m.save_pretrained(path)
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(path, "tokenizer.json"),
                    os.path.join(TESTDATA, "tokenizers", tokenizer + ".json.zst")], check=True)
    return m.eval()


def run(args, inp, rc_ok=(0,)):
    p = subprocess.run([PB, "-q"] + args, input=inp.encode(), capture_output=True)
    if p.returncode not in rc_ok:
        print("pippy-batch", args, "exit", p.returncode, p.stderr.decode())
    check(p.returncode in rc_ok, f"exit code {p.returncode} for {args}")
    return p


def lines(out):
    return [json.loads(l) for l in out.decode().splitlines()]


def main():
    model_dir = os.path.join(TMP, "gpt2-tiny")
    model = make_model(model_dir)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    prompts = ["Hello world", "The quick brown fox", "In 1905, Einstein", "A", "x" * 30,
               "Once upon a time there was", "def main():", "1 2 3 4 5", "Paris is the capital of",
               "¡Hola! ¿Qué tal?", "日本語のテキスト", "The end."]
    max_new = 12
    # reference: greedy generate() per prompt (no padding: one at a time)
    ref = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        n = min(max_new, 64 - ids.shape[1])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=50256,
                                 eos_token_id=None)
        gen = out[0, ids.shape[1]:].tolist()
        full = tok.decode(out[0].tolist())
        ref.append((ids.shape[1], gen, full[len(tok.decode(ids[0].tolist())):]))
    inp = "".join(json.dumps({"prompt": p, "id": f"r{i}"}) + "\n" for i, p in enumerate(prompts))
    outputs = {}
    for b, c in [(1, 1), (4, 1), (4, 2), (16, 1), (16, 4), (3, 2)]:
        p = run(["--model", model_dir, "--max-tokens", str(max_new), "--batch-size", str(b),
                 "--chunks", str(c)], inp)
        outputs[(b, c)] = p.stdout
    base = outputs[(1, 1)]
    for k, v in outputs.items():
        check(v == base, f"greedy output differs between batch/chunks (1,1) and {k}")
    recs = lines(base)
    check(len(recs) == len(prompts), "one output per prompt")
    for i, (r, (n_prompt, gen, text)) in enumerate(zip(recs, ref)):
        eos_cut = 50256 in gen  # GPT-2's EOS ends the completion
        check(r["id"] == f"r{i}", f"id echoed ({r['id']})")
        check(r["prompt_tokens"] == n_prompt, f"prompt_tokens {r['prompt_tokens']} vs {n_prompt}")
        if not eos_cut:
            check(r["text"] == text, f"prompt {i}: text {r['text']!r} vs HF {text!r}")
            check(r["completion_tokens"] == len(gen), f"prompt {i}: completion_tokens")
            check(r["finish_reason"] == "length", f"prompt {i}: finish_reason {r['finish_reason']}")

    # stop strings split across tokens: stop on a piece of the reference text
    # that spans a token boundary; the text ends right before it.
    i = 0
    n_prompt, gen, text = ref[i]
    pieces = [tok.decode([t]) for t in gen]
    first2 = pieces[2] + pieces[3]
    stop = first2[len(pieces[2]) - 1: len(pieces[2]) + 1] if len(pieces[2]) and len(pieces[3]) else first2
    prefix = "".join(pieces[:2])
    expect = (prefix + pieces[2])[: (prefix + pieces[2] + pieces[3]).find(stop)]
    p = run(["--model", model_dir, "--max-tokens", str(max_new), "--stop", stop], json.dumps({"prompt": prompts[i]}) + "\n")
    r = lines(p.stdout)[0]
    check(r["finish_reason"] == "stop" and r["text"] == expect,
          f"stop {stop!r}: got {r['text']!r} ({r['finish_reason']}), expected {expect!r}")
    upto = next(k for k in range(1, len(pieces) + 1) if stop in "".join(pieces[:k]))
    check(r["completion_tokens"] == upto,
          f"stop: completion_tokens {r['completion_tokens']}, expected {upto} (tokens up to the stop)")
    # per-record stop (list) overrides the CLI one
    p = run(["--model", model_dir, "--max-tokens", str(max_new), "--stop", "zzzz"],
            json.dumps({"prompt": prompts[i], "stop": ["qqq", stop]}) + "\n")
    check(lines(p.stdout)[0]["text"] == expect, "record stop list")

    # EOS: make the model's EOS the 3rd greedy token via config -> stops there
    eos_dir = os.path.join(TMP, "gpt2-eos")
    shutil.copytree(model_dir, eos_dir)
    cfgp = os.path.join(eos_dir, "config.json")
    c = json.load(open(cfgp))
    ke = next(k for k in range(1, len(gen)) if gen[k] not in gen[:k])
    c["eos_token_id"] = [9999999 % 50257, gen[ke]]
    json.dump(c, open(cfgp, "w"))
    gcp = os.path.join(eos_dir, "generation_config.json")
    g = json.load(open(gcp))
    g["eos_token_id"] = c["eos_token_id"]
    json.dump(g, open(gcp, "w"))
    p = run(["--model", eos_dir, "--max-tokens", str(max_new)], json.dumps({"prompt": prompts[i]}) + "\n")
    r = lines(p.stdout)[0]
    check(r["finish_reason"] == "stop" and r["text"] == "".join(pieces[:ke]) and r["completion_tokens"] == ke + 1,
          f"EOS: {r}")

    # ignore_eos (record field, --ignore-eos): the EOS is sampled like any
    # token and generation goes on: HF generate() without an EOS, exactly
    # max_tokens tokens.
    for args, rec in [([], {"prompt": prompts[i], "ignore_eos": True}),
                      (["--ignore-eos"], {"prompt": prompts[i]})]:
        p = run(["--model", eos_dir, "--max-tokens", str(max_new)] + args, json.dumps(rec) + "\n")
        r = lines(p.stdout)[0]
        check(r["finish_reason"] == "length" and r["text"] == text and r["completion_tokens"] == max_new,
              f"ignore_eos {args}: {r} vs HF {text!r}")
    # min_tokens (record field, --min-tokens): as HF min_new_tokens, EOS is
    # masked before it; compared with generate(min_new_tokens=...).
    eos_ids = c["eos_token_id"]
    ids = tok(prompts[i], return_tensors="pt").input_ids
    for m in (ke, ke + 1, ke + 3, max_new):
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new, min_new_tokens=m, do_sample=False,
                                 pad_token_id=50256, eos_token_id=eos_ids)
        hgen = out[0, ids.shape[1]:].tolist()
        hit = len(hgen) and hgen[-1] in eos_ids and len(hgen) <= max_new
        htext = tok.decode(hgen[:-1] if hit else hgen)
        for args, rec in [([], {"prompt": prompts[i], "min_tokens": m}),
                          (["--min-tokens", str(m)], {"prompt": prompts[i]})]:
            p = run(["--model", eos_dir, "--max-tokens", str(max_new)] + args, json.dumps(rec) + "\n")
            r = lines(p.stdout)[0]
            check(r["text"] == htext and r["completion_tokens"] == len(hgen) and
                  r["finish_reason"] == ("stop" if hit else "length"),
                  f"min_tokens {m} {args}: {r} vs HF {hgen} {htext!r}")
    # min_tokens == max_tokens: exactly that many tokens, batch-invariant
    inp_m = "".join(json.dumps({"prompt": q, "min_tokens": 9, "max_tokens": 9}) + "\n" for q in prompts)
    outs = [run(["--model", eos_dir, "--batch-size", str(b)], inp_m).stdout for b in (1, 5)]
    check(outs[0] == outs[1], "min_tokens: output differs between batch sizes")
    check(all(r["completion_tokens"] == 9 for r in lines(outs[0])), "min_tokens == max_tokens: not exactly 9")
    # bad values are error records
    p = run(["--model", model_dir], json.dumps({"prompt": "a", "min_tokens": 5, "max_tokens": 3}) + "\n"
            + json.dumps({"prompt": "b", "ignore_eos": "yes"}) + "\n", rc_ok=(3,))
    errs = [r.get("error", {}).get("message", "") for r in lines(p.stdout)]
    check("'min_tokens' (5) is more than 'max_tokens' (3)" in errs[0] and "'ignore_eos' must be true or false" in errs[1],
          f"bad min_tokens/ignore_eos: {errs}")
    p = run(["--model", model_dir, "--max-tokens", "3", "--min-tokens", "5"], "", rc_ok=(2,))
    check(b"--min-tokens 5 is more than max_tokens 3" in p.stderr, f"--min-tokens > --max-tokens: {p.stderr}")

    # context: a prompt near the 64-token context stops with "length" at 64 tokens in all
    longp = "word " * 60
    n_long = len(tok(longp).input_ids)
    p = run(["--model", model_dir, "--max-tokens", "50"], json.dumps({"prompt": longp}) + "\n")
    r = lines(p.stdout)[0]
    check(r["finish_reason"] == "length" and r["prompt_tokens"] + r["completion_tokens"] == 64,
          f"context limit: {r} (prompt {n_long})")
    # --max-seq-len lowers it
    p = run(["--model", model_dir, "--max-tokens", "50", "--max-seq-len", "20"],
            json.dumps({"prompt": "Hello world"}) + "\n")
    r = lines(p.stdout)[0]
    check(r["prompt_tokens"] + r["completion_tokens"] == 20, f"--max-seq-len: {r}")

    # seeded sampling: same output whatever the batch size; different seeds differ
    sinp = "".join(json.dumps({"prompt": p, "temperature": 1.0, "top_k": 50, "top_p": 0.95}) + "\n" for p in prompts)
    s1 = run(["--model", model_dir, "--max-tokens", "10", "--seed", "7", "-b", "1"], sinp).stdout
    s2 = run(["--model", model_dir, "--max-tokens", "10", "--seed", "7", "-b", "5", "-c", "2"], sinp).stdout
    s3 = run(["--model", model_dir, "--max-tokens", "10", "--seed", "8", "-b", "5"], sinp).stdout
    check(s1 == s2, "seeded sampling differs across batch sizes")
    check(s1 != s3, "different seeds give the same samples")
    check(s1 != base, "sampling equals greedy")
    # a record's own seed: same output at any line position
    own = json.dumps({"prompt": "Hello world", "temperature": 1.0, "seed": 3}) + "\n"
    a = lines(run(["--model", model_dir, "--max-tokens", "8"], own).stdout)[0]["text"]
    b = lines(run(["--model", model_dir, "--max-tokens", "8"], "\n".join([json.dumps({"prompt": "x"})] * 3) + "\n" + own).stdout)[-1]["text"]
    check(a == b, "own seed depends on position")

    # mixed good and malformed lines
    mixed = "\n".join([
        json.dumps({"prompt": "Hello world", "id": 17}),
        "{not json",
        json.dumps({"id": "np"}),
        json.dumps({"prompt": 3, "id": "num"}),
        "",
        json.dumps({"prompt": "Hi", "max_tokens": "5"}),
        json.dumps({"prompt": "word " * 70, "id": "long"}),
        json.dumps({"prompt": "Hi", "max_tokens": 0, "id": "zero"}),
        json.dumps({"prompt": "The end.", "max_tokens": 3}),
    ]) + "\n"
    p = run(["--model", model_dir, "--max-tokens", "4", "-b", "2"], mixed, rc_ok=(3,))
    out = lines(p.stdout)
    check(len(out) == 8, f"mixed: {len(out)} records")
    if len(out) == 8:
        check(out[0]["id"] == 17 and "text" in out[0], "mixed 0")
        check(out[1] == {"id": 2, "error": {"line": 2, "message": out[1]["error"]["message"]}}
              and "invalid JSON" in out[1]["error"]["message"], f"mixed 1 {out[1]}")
        check(out[2]["id"] == "np" and "missing field 'prompt'" in out[2]["error"]["message"], f"mixed 2 {out[2]}")
        check(out[3]["id"] == "num" and "must be a string" in out[3]["error"]["message"], f"mixed 3 {out[3]}")
        check(out[4]["id"] == 6 and out[4]["error"]["line"] == 6 and "max_tokens" in out[4]["error"]["message"], f"mixed 4 {out[4]}")
        check(out[5]["id"] == "long" and "context" in out[5]["error"]["message"], f"mixed 5 {out[5]}")
        check(out[6] == {"id": "zero", "text": "", "finish_reason": "length", "prompt_tokens": 1,
                         "completion_tokens": 0}, f"mixed 6 {out[6]}")
        check(out[7]["id"] == 9 and out[7]["completion_tokens"] == 3, f"mixed 7 {out[7]}")
    # --on-error=abort stops at the first bad line
    p = run(["--model", model_dir, "--max-tokens", "4", "--on-error", "abort", "--out", os.path.join(TMP, "ab.jsonl")],
            mixed, rc_ok=(1,))
    check(b"line 2" in p.stderr, "abort names the line")
    check(not os.path.exists(os.path.join(TMP, "ab.jsonl")), "aborted run renamed its output")

    # OpenAI batch shape round trip
    oa = json.dumps({"custom_id": "req-1", "method": "POST", "url": "/v1/completions",
                     "body": {"model": "gpt2-tiny", "prompt": prompts[0], "max_tokens": max_new}}) + "\n"
    oa += json.dumps({"custom_id": "req-2", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"messages": []}}) + "\n"
    p = run(["--model", model_dir], oa, rc_ok=(3,))
    o = lines(p.stdout)
    check(o[0]["custom_id"] == "req-1" and o[0]["error"] is None and o[0]["response"]["status_code"] == 200,
          f"openai shape {o[0]}")
    body = o[0]["response"]["body"]
    check(body["choices"][0]["text"] == ref[0][2] and body["usage"]["completion_tokens"] == max_new,
          f"openai body {body}")
    check(o[1]["custom_id"] == "req-2" and o[1]["response"] is None and "chat template" in o[1]["error"]["message"],
          f"openai error {o[1]}")

    # n completions a record (the record's "n", --n, OpenAI's body.n). Greedy: each choice is HF's greedy
    # text. Sampled: choice i draws from the RNG stream (seed, record i << 40, step), choice 0 being the
    # n = 1 record's: each choice's tokens are rebuilt here from HF's softmax at each step and that stream's
    # draw (sample_ref's independent Philox). The same bytes at every batch size and chunking, with and
    # without prefix sharing.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from sample_ref import uniform
    seed, sp = 11, prompts[2]
    sids = tok(sp, return_tensors="pt").input_ids
    stext = tok.decode(sids[0].tolist())
    want = []
    for i in range(4):
        seq, gen = sids, []
        for st in range(max_new):
            with torch.no_grad():
                probs = torch.softmax(model(seq).logits[0, -1].double(), -1).numpy()
            cdf = probs.cumsum()
            t = min(int(cdf.searchsorted(uniform(seed, i << 40, st) * cdf[-1], side="right")), len(probs) - 1)
            gen.append(t)
            if t == 50256:
                break
            seq = torch.cat([seq, torch.tensor([[t]])], 1)
        body_ids = [g for g in gen if g != 50256]
        want.append((tok.decode(sids[0].tolist() + body_ids)[len(stext):], len(gen),
                     "stop" if gen[-1] == 50256 else "length"))
    check(len({w[0] for w in want}) > 1, f"the reference's 4 sampled choices are all the same: {want}")
    nin = "".join(json.dumps(r) + "\n" for r in [
        {"id": "g", "prompt": prompts[0], "n": 3},
        {"id": "s", "prompt": sp, "n": 4, "temperature": 1.0, "seed": seed},
        {"id": "s1", "prompt": sp, "temperature": 1.0, "seed": seed},
        {"id": "z", "prompt": sp, "n": 2, "max_tokens": 0},
        {"id": "b0", "prompt": sp, "n": 0}, {"id": "b1", "prompt": sp, "n": 129},
        {"id": "b2", "prompt": sp, "n": 1.5}, {"id": "b3", "prompt": sp, "n": "2"}])
    nout = {}
    for args in (["-b", "1"], ["-b", "4", "-c", "2"], ["-b", "16"], ["-b", "3", "--no-prefix-sharing"]):
        nout[tuple(args)] = run(["--model", model_dir, "--max-tokens", str(max_new)] + args, nin, rc_ok=(3,)).stdout
    nbase = nout[("-b", "1")]
    for k, v in nout.items():
        check(v == nbase, f"n: output differs between -b 1 and {k}")
    o = {r["id"]: r for r in lines(nbase)}
    g = o["g"]
    check("text" not in g and [c["index"] for c in g["choices"]] == [0, 1, 2] and
          all(c["text"] == ref[0][2] and c["completion_tokens"] == max_new for c in g["choices"]) and
          g["completion_tokens"] == 3 * max_new and g["prompt_tokens"] == ref[0][0], f"n greedy: {g}")
    sr = o["s"]
    for i, (c, w) in enumerate(zip(sr["choices"], want)):
        check((c["index"], c["text"], c["completion_tokens"], c["finish_reason"]) == (i, w[0], w[1], w[2]),
              f"n sampled: choice {i} {c} vs the reference {w}")
    check(sr["completion_tokens"] == sum(w[1] for w in want), f"n sampled: completion_tokens {sr}")
    check(o["s1"]["text"] == sr["choices"][0]["text"], "n sampled: choice 0 is the n = 1 record's completion")
    check([c["text"] for c in o["z"]["choices"]] == ["", ""] and o["z"]["completion_tokens"] == 0, f"n, 0 tokens {o['z']}")
    for b in ("b0", "b1", "b2", "b3"):
        check("field 'n'" in o[b].get("error", {}).get("message", ""), f"n: bad value not refused: {o[b]}")
    p = run(["--model", model_dir, "--max-tokens", str(max_new), "--n", "2"],
            json.dumps({"prompt": prompts[1]}) + "\n" + json.dumps({"prompt": prompts[1], "n": 1}) + "\n")
    r = lines(p.stdout)
    check([c["text"] for c in r[0]["choices"]] == [ref[1][2]] * 2 and r[1]["text"] == ref[1][2],
          f"--n 2, and a record's n = 1: {r}")
    p = run(["--model", model_dir, "--n", "129"], "", rc_ok=(2,))
    check(b"--n" in p.stderr, "--n 129 refused")
    oa = json.dumps({"custom_id": "req-n", "method": "POST", "url": "/v1/completions",
                     "body": {"prompt": sp, "max_tokens": max_new, "n": 4, "temperature": 1.0, "seed": seed}})
    body = lines(run(["--model", model_dir], oa + "\n").stdout)[0]["response"]["body"]
    check([(c["index"], c["text"]) for c in body["choices"]] == [(i, w[0]) for i, w in enumerate(want)] and
          body["usage"]["completion_tokens"] == sum(w[1] for w in want), f"openai n = 4: {body}")

    # frequency and presence penalties (vLLM's: minus frequency x an id's count in the completion so far, minus
    # presence once for an id in it; after the repetition penalty, before the temperature): greedy and sampled
    # picks rebuilt here from HF's logits, on prompts whose plain greedy text repeats tokens
    def penalized(prompt, f, pr, temp, seed):
        pids = tok(prompt, return_tensors="pt").input_ids
        seq, gen = pids, []
        for st in range(max_new):
            with torch.no_grad():
                lg = model(seq).logits[0, -1].float()
            if gen:
                cnt = torch.bincount(torch.tensor(gen), minlength=lg.shape[0]).float()
                lg = lg - torch.tensor(f, dtype=torch.float32) * cnt
                lg = lg - torch.tensor(pr, dtype=torch.float32) * (cnt > 0).float()
            if temp == 0:
                t = int(torch.argmax(lg))
            else:
                cdf = torch.softmax((lg / torch.tensor(temp, dtype=torch.float32)).double(), -1).numpy().cumsum()
                t = min(int(cdf.searchsorted(uniform(seed, 0, st) * cdf[-1], side="right")), len(cdf) - 1)
            gen.append(t)
            if t == 50256:
                break
            seq = torch.cat([seq, torch.tensor([[t]])], 1)
        body_ids = [g for g in gen if g != 50256]
        return tok.decode(pids[0].tolist() + body_ids)[len(tok.decode(pids[0].tolist())):]
    rep_i = [i for i, (_, gen, _) in enumerate(ref) if len(set(gen)) < len(gen) and 50256 not in gen][:2]
    check(len(rep_i) == 2, f"two prompts whose greedy text repeats a token: {rep_i}")
    pen = [({"frequency_penalty": 1.5}, (1.5, 0.0, 0.0, 0)),
           ({"presence_penalty": 1.8, "frequency_penalty": -0.25}, (-0.25, 1.8, 0.0, 0)),
           ({"presence_penalty": 0.9, "temperature": 0.8, "seed": 4}, (0.0, 0.9, 0.8, 4)),
           ({"frequency_penalty": 2.0, "temperature": 1.0, "seed": 9}, (2.0, 0.0, 1.0, 9))]
    pin = "".join(json.dumps(dict(fields, id=f"p{k}", prompt=prompts[rep_i[k % 2]])) + "\n"
                  for k, (fields, _) in enumerate(pen))
    pouts = [run(["--model", model_dir, "--max-tokens", str(max_new), "-b", b], pin).stdout for b in ("1", "4")]
    check(pouts[0] == pouts[1], "penalties: output differs between -b 1 and -b 4")
    for k, (r, (fields, args)) in enumerate(zip(lines(pouts[0]), pen)):
        want_t = penalized(prompts[rep_i[k % 2]], *args)
        check(r["text"] == want_t, f"penalties {fields}: {r['text']!r} vs the reference {want_t!r}")
        if args[2] == 0:
            check(want_t != ref[rep_i[k % 2]][2], f"penalties {fields}: the reference equals the plain greedy text")

    # logprobs: each token's log probability under the model (log_softmax of HF's logits: before the penalties
    # and the temperature that chose it) and the most likely ids', with texts as tokenizers' decode([id])
    lp_in = [{"id": "l0", "prompt": prompts[0], "logprobs": 5},
             {"id": "l1", "prompt": prompts[2], "logprobs": 20, "temperature": 0.9, "seed": 3,
              "frequency_penalty": 1.0},
             {"id": "l2", "prompt": prompts[9], "logprobs": True, "n": 2, "temperature": 1.0, "seed": 5},
             {"id": "l3", "prompt": prompts[6]}]
    lp_text = "".join(json.dumps(r) + "\n" for r in lp_in)
    louts = [run(["--model", model_dir, "--max-tokens", str(max_new)] + a, lp_text).stdout
             for a in (["-b", "1"], ["-b", "4", "-c", "2"], ["-b", "16"])]
    check(louts[0] == louts[1] == louts[2], "logprobs: output differs between -b 1, -b 4 -c 2 and -b 16")
    lrec = {r["id"]: r for r in lines(louts[0])}
    check("logprobs" not in lrec["l3"], "logprobs: a record that asks none has none")
    worst = 0.0
    n_tok = 0
    for rid, top_n in (("l0", 5), ("l1", 20), ("l2", 0)):
        prompt = next(r["prompt"] for r in lp_in if r["id"] == rid)
        chs = lrec[rid]["choices"] if "choices" in lrec[rid] else [lrec[rid]]
        for ch in chs:
            seq = tok(prompt, return_tensors="pt").input_ids
            check(len(ch["logprobs"]) == ch["completion_tokens"], f"logprobs {rid}: one entry a token")
            for e in ch["logprobs"]:
                with torch.no_grad():
                    ref_lp = torch.log_softmax(model(seq).logits[0, -1].double(), -1)
                worst = max(worst, abs(e["logprob"] - float(ref_lp[e["id"]])))
                check(e["token"] == tok.decode([e["id"]]), f"logprobs {rid}: token {e['token']!r} of id {e['id']}")
                top = e["top_logprobs"]
                vals, _ = torch.topk(ref_lp, top_n) if top_n else (torch.tensor([]), None)
                check(len(top) == top_n, f"logprobs {rid}: {len(top)} most likely listed, {top_n} asked")
                for j, t in enumerate(top):
                    worst = max(worst, abs(t["logprob"] - float(ref_lp[t["id"]])), abs(t["logprob"] - float(vals[j])))
                    check(t["token"] == tok.decode([t["id"]]), f"logprobs {rid}: top token {t['token']!r}")
                check(all(top[j]["logprob"] >= top[j + 1]["logprob"] for j in range(len(top) - 1)),
                      f"logprobs {rid}: most likely first")
                seq = torch.cat([seq, torch.tensor([[e["id"]]])], 1)
                n_tok += 1
    check(worst < 2e-5, f"logprobs: {worst:.3g} from HF's log_softmax")
    print(f"logprobs: {n_tok} tokens, worst difference from HF's log_softmax {worst:.3g}")
    check(lrec["l2"]["choices"][0]["logprobs"] != lrec["l2"]["choices"][1]["logprobs"], "logprobs: n = 2 differ")
    # the completions API's columns and the native list agree (the same record, both shapes)
    oa = json.dumps({"custom_id": "lp", "method": "POST", "url": "/v1/completions",
                     "body": {"prompt": prompts[0], "max_tokens": max_new, "logprobs": 5}})
    olp = lines(run(["--model", model_dir], oa + "\n").stdout)[0]["response"]["body"]["choices"][0]["logprobs"]
    nat = lrec["l0"]["logprobs"]
    offs = [sum(len(e["token"]) for e in nat[:k]) for k in range(len(nat))]
    check(olp["tokens"] == [e["token"] for e in nat] and olp["token_logprobs"] == [e["logprob"] for e in nat] and
          olp["top_logprobs"] == [{t["token"]: t["logprob"] for t in reversed(e["top_logprobs"])} for e in nat] and
          olp["text_offset"] == offs, f"logprobs: completions shape {olp} vs native {nat}")
    p = run(["--model", model_dir, "--max-tokens", "3", "--logprobs", "2"], json.dumps({"prompt": prompts[0]}) + "\n")
    r = lines(p.stdout)[0]
    check([e["logprob"] for e in r["logprobs"]] == [e["logprob"] for e in nat[:3]] and
          all(len(e["top_logprobs"]) == 2 for e in r["logprobs"]), f"--logprobs 2: {r}")
    p = run(["--model", model_dir, "--logprobs", "21"], "", rc_ok=(2,))
    check(b"--logprobs" in p.stderr, "--logprobs 21 refused")

    # logprob_token_ids (vLLM's): at each generated position the log probabilities of the ids asked for (their
    # order, repeats once) in place of the most likely, against HF's log_softmax over the greedy sequence; the
    # same bytes at -b 1 and -b 3 beside other records; the completions shape's dict keyed by their texts
    want_ids = [13, 11, 262, 50256, 13]
    lt_in = [{"id": "t0", "prompt": prompts[2], "logprobs": 2, "logprob_token_ids": want_ids},
             {"id": "t1", "prompt": prompts[0], "logprobs": 3},
             {"id": "t2", "prompt": prompts[3], "logprobs": True, "logprob_token_ids": [0]}]
    lt_text = "".join(json.dumps(r) + "\n" for r in lt_in)
    louts = [run(["--model", model_dir, "--max-tokens", "6", "-b", b], lt_text).stdout for b in ("1", "3")]
    check(louts[0] == louts[1], "logprob_token_ids: output differs between -b 1 and -b 3")
    lt = lines(louts[0])
    seq = tok(prompts[2]).input_ids + [e["id"] for e in lt[0]["logprobs"]]
    with torch.no_grad():
        rows = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
    P0, worst = len(tok(prompts[2]).input_ids), 0.0
    for k, e in enumerate(lt[0]["logprobs"]):
        row = rows[P0 - 1 + k]
        ok = [t["id"] for t in e["top_logprobs"]] == [13, 11, 262, 50256]
        worst = max([worst] + [abs(t["logprob"] - float(row[t["id"]])) for t in e["top_logprobs"]])
        check(ok and e["id"] == int(row.argmax()), f"logprob_token_ids step {k}: {e}")
    check(worst < 2e-5 and len(lt[2]["logprobs"][0]["top_logprobs"]) == 1 and
          len(lt[1]["logprobs"][0]["top_logprobs"]) == 3, f"logprob_token_ids: {worst}, {lt[1]}, {lt[2]}")
    oa_lp = json.dumps({"custom_id": "l", "url": "/v1/completions", "body": {
        "prompt": prompts[2], "max_tokens": 2, "logprobs": 0, "logprob_token_ids": [11, 262]}})
    oc = lines(run(["--model", model_dir], oa_lp + "\n").stdout)
    tl = oc[0]["response"]["body"]["choices"][0]["logprobs"]["top_logprobs"]
    check([list(d) for d in tl] == [[tok.decode([11]), tok.decode([262])]] * 2, f"logprob_token_ids columns: {tl}")
    bad_lt = ({"logprob_token_ids": [1]}, {"logprobs": 1, "logprob_token_ids": [50257]},
              {"logprobs": 1, "logprob_token_ids": []}, {"logprobs": 1, "logprob_token_ids": [1], "echo": True,
                                                          "max_tokens": 0})
    p = run(["--model", model_dir], "".join(json.dumps(dict(prompt="x", **f)) + "\n" for f in bad_lt), rc_ok=(3,))
    errs = [r["error"]["message"] for r in lines(p.stdout)]
    check(len(errs) == 4 and "needs 'logprobs'" in errs[0] and "vocabulary" in errs[1] and "1 to 20" in errs[2] and
          "none is generated" in errs[3], f"logprob_token_ids refusals: {errs}")
    print(f"logprob_token_ids: within {worst:.3g} of HF's log_softmax")

    # prompt_logprobs: each prompt token's log probability (after the first) from the logits of the position before
    # it, its rank (1 + the ids more likely) and the most likely, against one HF forward over the prompt; the same
    # bytes when the prompt is cut into micro-batches of 3 tokens (--max-batch-tokens) and beside a record sharing
    # its first tokens (prefix sharing); max_tokens 0 scores without generating
    long_p = prompts[5] + " " + prompts[2]
    plp_in = [{"id": "q0", "prompt": long_p, "prompt_logprobs": 3, "max_tokens": 0},
              {"id": "q1", "prompt": long_p + " and more", "max_tokens": 4},
              {"id": "q2", "prompt": prompts[0], "prompt_logprobs": 0, "logprobs": 1, "n": 2, "temperature": 1.0,
               "seed": 2},
              {"id": "q3", "prompt": long_p + " too", "prompt_logprobs": 20, "max_tokens": 2}]
    plp_text = "".join(json.dumps(r) + "\n" for r in plp_in)
    pouts = [run(["--model", model_dir, "--max-tokens", str(max_new)] + a, plp_text).stdout
             for a in (["-b", "1"], ["-b", "4", "--max-batch-tokens", "4"], ["-b", "4", "--no-prefix-sharing"])]
    check(pouts[0] == pouts[1] == pouts[2],
          "prompt_logprobs: output differs between -b 1, -b 4 --max-batch-tokens 4 and --no-prefix-sharing")
    prec = {r["id"]: r for r in lines(pouts[0])}
    worst, ranks = 0.0, 0
    for rid, top_n in (("q0", 3), ("q2", 0), ("q3", 20)):
        r = prec[rid]
        prompt = next(x["prompt"] for x in plp_in if x["id"] == rid)
        pids = tok(prompt).input_ids
        with torch.no_grad():
            ref_lp = torch.log_softmax(model(torch.tensor([pids])).logits[0].double(), -1)
        pl = r.get("prompt_logprobs")
        check(pl is not None and len(pl) == len(pids) and pl[0] is None, f"prompt_logprobs {rid}: {len(pl or [])} "
              f"entries for {len(pids)} prompt tokens")
        for k, e in enumerate((pl or [None])[1:]):
            row = ref_lp[k]
            worst = max([worst, abs(e["logprob"] - float(row[pids[k + 1]]))] +
                        [abs(t["logprob"] - float(row[t["id"]])) for t in e["top_logprobs"]])
            check(e["id"] == pids[k + 1] and e["token"] == tok.decode([pids[k + 1]]), f"prompt_logprobs {rid}: {e}")
            x = row[pids[k + 1]]  # the rank: 1 + the ids more likely, within HF's rounding
            lo, hi = int((row > x + 1e-5).sum()) + 1, int((row > x - 1e-5).sum()) + 1
            ranks += lo == hi
            check(lo <= e["rank"] <= hi, f"prompt_logprobs {rid}: rank {e['rank']} vs HF's {lo}..{hi}")
            vals, _ = torch.topk(row, top_n) if top_n else (torch.tensor([]), None)
            check(len(e["top_logprobs"]) == top_n and
                  all(abs(t["logprob"] - float(v)) < 2e-5 for t, v in zip(e["top_logprobs"], vals)),
                  f"prompt_logprobs {rid}: top {e['top_logprobs']} vs {vals}")
    check(worst < 2e-5, f"prompt_logprobs: {worst:.3g} from HF's log_softmax")
    print(f"prompt_logprobs: worst difference from HF's log_softmax {worst:.3g}, {ranks} ranks without a near-tie")
    check(prec["q0"]["text"] == "" and prec["q0"]["completion_tokens"] == 0 and "prompt_logprobs" not in prec["q1"] and
          len(prec["q2"]["choices"]) == 2 and prec["q3"]["completion_tokens"] == 2,
          f"prompt_logprobs: the records' shapes {[prec[k].get('completion_tokens') for k in prec]}")
    # the completions API: vLLM's {id: {logprob, rank, decoded_token}} in each choice, the token's first
    oa = json.dumps({"custom_id": "pl", "method": "POST", "url": "/v1/completions",
                     "body": {"prompt": long_p, "max_tokens": 0, "prompt_logprobs": 3, "n": 2}})
    och = lines(run(["--model", model_dir], oa + "\n").stdout)[0]["response"]["body"]["choices"]
    want = [None] + [dict([(str(e["id"]), {"logprob": e["logprob"], "rank": e["rank"], "decoded_token": e["token"]})] +
                          [(str(t["id"]), {"logprob": t["logprob"], "rank": j + 1, "decoded_token": t["token"]})
                           for j, t in enumerate(e["top_logprobs"]) if t["id"] != e["id"]])
                     for e in prec["q0"]["prompt_logprobs"][1:]]
    check(len(och) == 2 and all(c["prompt_logprobs"] == want and c["text"] == "" for c in och),
          f"prompt_logprobs, completions shape: {och[0].get('prompt_logprobs', [])[:2]} vs {want[:2]}")
    p = run(["--model", model_dir, "--prompt-logprobs", "1", "--max-tokens", "0"],
            json.dumps({"prompt": long_p}) + "\n")
    r = lines(p.stdout)[0]
    lp_of = lambda pl: [e and e["logprob"] for e in pl]  # noqa: E731
    check(lp_of(r["prompt_logprobs"]) == lp_of(prec["q0"]["prompt_logprobs"]) and r["completion_tokens"] == 0, f"--prompt-logprobs 1 --max-tokens 0: {r}")

    # logit_bias (added before the repetition penalty, as vLLM and HF's sequence_bias) and stop_token_ids (the
    # completion ends with the id, its text left out as EOS's unless include_stop_str_in_output; min_tokens masks
    # them as EOS): against generate()
    def hf_gen(prompt, **kw):
        pids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(pids, max_new_tokens=max_new, do_sample=False, pad_token_id=50256, **kw)
        gen = out[0, pids.shape[1]:].tolist()
        return gen, tok.decode(out[0].tolist())[len(tok.decode(pids[0].tolist())):]
    g0, g3 = ref[0][1], ref[3][1]
    bias_cases = [  # (record fields, generate() arguments)
        ({"logit_bias": {str(g0[0]): -100}}, {"sequence_bias": [[[g0[0]], -100.0]], "eos_token_id": None}),
        ({"logit_bias": {str(g0[1]): -7.5, "11": 4.0}, "repetition_penalty": 1.3},
         {"sequence_bias": [[[g0[1]], -7.5], [[11], 4.0]], "repetition_penalty": 1.3, "eos_token_id": None}),
        ({"stop_token_ids": [g3[2], 99]}, {"eos_token_id": [g3[2], 99]}),
        ({"stop_token_ids": [g3[2]], "min_tokens": 3}, {"eos_token_id": [g3[2]], "min_new_tokens": 3}),
        ({"stop_token_ids": [g3[2]], "include_stop_str_in_output": True}, {"eos_token_id": [g3[2]]}),
    ]
    bin_ = "".join(json.dumps(dict(f, id=f"x{k}", prompt=prompts[0 if k < 2 else 3])) + "\n"
                   for k, (f, _) in enumerate(bias_cases))
    bouts = [run(["--model", model_dir, "--max-tokens", str(max_new), "-b", b], bin_).stdout for b in ("1", "4")]
    check(bouts[0] == bouts[1], "logit_bias, stop_token_ids: output differs between -b 1 and -b 4")
    for k, (r, (fields, kw)) in enumerate(zip(lines(bouts[0]), bias_cases)):
        gen, text = hf_gen(prompts[0 if k < 2 else 3], **kw)
        stopped = "stop_token_ids" in fields and gen[-1] in fields["stop_token_ids"]
        if stopped and not fields.get("include_stop_str_in_output"):
            text = text[:len(text) - len(tok.decode([gen[-1]]))]  # the stop id's text left out
        want = (text, len(gen), "stop" if stopped else "length")
        got = (r.get("text"), r.get("completion_tokens"), r.get("finish_reason"))
        check(got == want, f"{fields}: {got} vs generate() {want}")
    # allowed_token_ids: each step HF's argmax among them (greedy), every sampled id one of them
    allowed = sorted({g0[0], g0[2], 13, 11, 262, 50256})
    al_in = [{"prompt": prompts[0], "allowed_token_ids": allowed, "ignore_eos": True},
             {"prompt": prompts[0], "allowed_token_ids": allowed, "temperature": 1.0, "seed": 4, "logprobs": 0}]
    ao = lines(run(["--model", model_dir, "--max-tokens", str(max_new)],
                   "".join(json.dumps(r) + "\n" for r in al_in)).stdout)
    seq, agen = tok(prompts[0], return_tensors="pt").input_ids, []
    for _ in range(max_new):
        with torch.no_grad():
            lg = model(seq).logits[0, -1]
        t = allowed[int(torch.argmax(lg[allowed]))]
        agen.append(t)
        seq = torch.cat([seq, torch.tensor([[t]])], 1)
    check(ao[0]["text"] == tok.decode(agen, skip_special_tokens=True) and ao[0]["completion_tokens"] == max_new,
          f"allowed_token_ids: {ao[0]} vs {agen}")
    check(all(e["id"] in allowed for e in ao[1]["logprobs"]), f"allowed_token_ids sampled: {ao[1]}")
    bl = lines(bouts[0])
    check(bl[0]["text"] != ref[0][2] and bl[2]["finish_reason"] == "stop" and bl[3]["completion_tokens"] > 3 and
          bl[4]["text"] == bl[2]["text"] + tok.decode([g3[2]]),
          "logit_bias, stop_token_ids: the cases change the output")

    # bad_words: tokenized as vLLM does (each word without its leading spaces, alone and after a space, the second
    # kept where as long and starting with another token) and banned as HF's bad_words_ids: a one-token word, a
    # two-token word of the greedy output and two words together, against generate(bad_words_ids=...)
    def vllm_bad(words):
        out = []
        for w in words:
            for sp in ("", " "):
                ids = tok((sp + w.lstrip()), add_special_tokens=False).input_ids
                if not sp or (ids[0] != out[-1][0] and len(ids) == len(out[-1])):
                    out.append(ids)
        return out
    # words of the greedy output that vLLM's rule bans in the form the output has (after a space)
    pieces0 = [tok.decode([t]) for t in g0]
    bans = [(k, n) for n in (1, 2) for k in range(len(g0) - n + 1)
            if pieces0[k].startswith(" ") and vllm_bad(["".join(pieces0[k:k + n])])[-1] == g0[k:k + n]]
    one = next(k for k, n in bans if n == 1)
    two = next(k for k, n in bans if n == 2)
    w1, w2 = pieces0[one].strip(), (pieces0[two] + pieces0[two + 1]).strip()
    bad_cases = [[w1], [w2], ["zzqx", w1, w2]]
    bw_in = "".join(json.dumps({"prompt": prompts[0], "bad_words": w, "id": f"w{k}"}) + "\n"
                    for k, w in enumerate(bad_cases))
    bwo = [run(["--model", model_dir, "--max-tokens", str(max_new), "-b", b], bw_in).stdout for b in ("1", "3")]
    check(bwo[0] == bwo[1], "bad_words: output differs between -b 1 and -b 3")
    for r, words in zip(lines(bwo[0]), bad_cases):
        gen, text = hf_gen(prompts[0], bad_words_ids=vllm_bad(words), eos_token_id=None)
        check((r.get("text"), r.get("completion_tokens")) == (text, len(gen)) and text != ref[0][2],
              f"bad_words {words}: {r.get('text')!r} vs generate() {text!r}")
    p = run(["--model", model_dir], json.dumps({"prompt": "x", "bad_words": ["  "]}) + "\n", rc_ok=(3,))
    check("field 'bad_words'" in p.stdout.decode(), f"bad_words of spaces: {p.stdout!r}")

    # prompts as token ids (OpenAI's and vLLM's completions): used as given, no BOS added and no round trip through
    # the text: the ids of the string prompt give its output; "Hello world" spelled one byte-level token a
    # character (ids the tokenizer would never make) gives generate() on exactly those ids; OpenAI's list of one
    # prompt (a string, or a list of ids) as the prompt itself
    pid0 = tok(prompts[0]).input_ids
    odd = [tok.convert_tokens_to_ids(c) for c in "HelloĠworld"]
    with torch.no_grad():
        o = model.generate(torch.tensor([odd]), max_new_tokens=max_new, do_sample=False, pad_token_id=50256,
                           eos_token_id=None)
    odd_text = tok.decode(o[0].tolist())[len(tok.decode(odd)):]
    ids_in = [{"id": "i0", "prompt": pid0}, {"id": "i1", "prompt": odd}, {"id": "i2", "prompt": [prompts[0]]},
              {"id": "i3", "prompt": [pid0]}]
    iouts = [run(["--model", model_dir, "--max-tokens", str(max_new), "-b", b],
                 "".join(json.dumps(r) + "\n" for r in ids_in)).stdout for b in ("1", "3")]
    check(iouts[0] == iouts[1], "token-id prompts: output differs between -b 1 and -b 3")
    ir = lines(iouts[0])
    check(all((r["text"], r["prompt_tokens"]) == (ref[0][2], len(pid0)) for r in (ir[0], ir[2], ir[3])),
          f"token-id prompt: {[r.get('text') for r in ir]} vs {ref[0][2]!r}")
    check((ir[1]["text"], ir[1]["prompt_tokens"]) == (odd_text, len(odd)) and odd_text != ref[0][2],
          f"token-id prompt {odd}: {ir[1]} vs generate() {odd_text!r}")
    bad_ids = [[[1], [2]], ["a", "b"], [], [1.5], [-1], [50257], [1, "2"], {"ids": [1]}]
    p = run(["--model", model_dir], "".join(json.dumps({"prompt": b}) + "\n" for b in bad_ids), rc_ok=(3,))
    errs = [r.get("error", {}).get("message", "") for r in lines(p.stdout)]
    check(len(errs) == len(bad_ids) and all("'prompt'" in m for m in errs) and "2 prompts" in errs[0] and
          "vocabulary" in errs[5], f"bad token-id prompts: {errs}")

    # OpenAI's list of several prompts in one completions line (its API's and vLLM's): each prompt answered with
    # its n choices in the line's one response, choice index = prompt * n + j, usage summed; as generate() on
    # each prompt alone, at -b 1 (one at a time) and -b 3 (together); text or ids; per choice its own prompt's
    # ids, echo and logprobs; with a seed each prompt draws as a line of its own with it (vLLM: the same seed
    # each), without one each prompt its own stream; a prompt that cannot be generated fails the line, named
    def oa_line(body, cid="m"):
        return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/completions", "body": body}) + "\n"
    body_of = lambda r: r["response"]["body"]  # noqa: E731
    greedy3 = [k for k in range(len(prompts)) if 50256 not in ref[k][1]][:3]
    multi_in = (oa_line({"prompt": [prompts[k] for k in greedy3], "max_tokens": max_new,
                         "return_token_ids": True}, "t") +
                oa_line({"prompt": [pid0, odd], "max_tokens": max_new, "echo": True, "logprobs": 1}, "i") +
                oa_line({"prompt": [prompts[0], prompts[1]], "max_tokens": max_new, "n": 2, "temperature": 1.0,
                         "seed": 11}, "s") +
                oa_line({"prompt": [prompts[1], prompts[1]], "max_tokens": max_new, "n": 2,
                         "temperature": 1.0}, "u") +
                oa_line({"prompt": [pid0, [50257], [1]], "max_tokens": max_new}, "e") +
                oa_line({"prompt": prompts[2], "max_tokens": max_new}, "after"))
    mouts = [run(["--model", model_dir, "-b", b], multi_in, rc_ok=(3,)).stdout for b in ("1", "3")]
    check(mouts[0] == mouts[1], "a list of prompts: output differs between -b 1 and -b 3")
    mo = lines(mouts[0])
    check([r["custom_id"] for r in mo] == ["t", "i", "s", "u", "e", "after"], f"a list of prompts: lines {mo}")
    t = body_of(mo[0])
    check([(c["index"], c["text"]) for c in t["choices"]] == [(i, ref[k][2]) for i, k in enumerate(greedy3)] and
          t["usage"]["prompt_tokens"] == sum(ref[k][0] for k in greedy3) and
          t["usage"]["completion_tokens"] == sum(len(ref[k][1]) for k in greedy3) and
          [(c["prompt_token_ids"], c["token_ids"]) for c in t["choices"]] ==
          [(tok(prompts[k]).input_ids, ref[k][1]) for k in greedy3],
          f"a list of prompts: {t} vs generate() {[ref[k][2] for k in greedy3]}")
    i_ch = body_of(mo[1])["choices"]
    check([c["text"] for c in i_ch] == [prompts[0] + ref[0][2], tok.decode(odd) + odd_text] and
          [len(c["logprobs"]["tokens"]) for c in i_ch] == [len(pid0) + max_new, len(odd) + max_new] and
          i_ch[1]["logprobs"]["tokens"][:len(odd)] == [tok.decode([x]) for x in odd],
          f"a list of prompts of ids, echo, logprobs, ids: {i_ch}")
    one_in = (oa_line({"prompt": prompts[0], "max_tokens": max_new, "n": 2, "temperature": 1.0, "seed": 11}) +
              oa_line({"prompt": prompts[1], "max_tokens": max_new, "n": 2, "temperature": 1.0, "seed": 11}) +
              oa_line({"prompt": prompts[1], "max_tokens": max_new, "n": 2, "temperature": 1.0}) +
              oa_line({"prompt": prompts[1], "max_tokens": max_new, "n": 2, "temperature": 1.0}))
    oo = lines(run(["--model", model_dir], one_in).stdout)
    texts = lambda r: [c["text"] for c in body_of(r)["choices"]]  # noqa: E731
    check(texts(mo[2]) == texts(oo[0]) + texts(oo[1]) and [c["index"] for c in body_of(mo[2])["choices"]] ==
          [0, 1, 2, 3], f"a list of prompts with a seed: {texts(mo[2])} vs lines of their own {oo[:2]}")
    # line 4 without a seed: its prompt 0 draws as line 4's single prompt (oo's line 4), prompt 1 otherwise
    u = texts(mo[3])
    check(u[:2] == texts(oo[3]) and u[2:] != u[:2] and texts(oo[2]) != texts(oo[3]),
          f"a list of prompts without a seed: {u} vs {texts(oo[3])}")
    check(mo[4]["response"] is None and "prompt 1: " in mo[4]["error"]["message"] and
          "vocabulary" in mo[4]["error"]["message"] and body_of(mo[5])["choices"][0]["text"] == ref[2][2],
          f"a list of prompts, one not in the vocabulary: {mo[4]}")
    print(f"a list of prompts: {len(greedy3)} prompts as generate() alone, seeds as lines of their own")

    # beam search's limits, known when a record is admitted: its beams run at once (-b 2 holds 2), and a step's
    # candidates are at most 20 a beam (8 beams keep 4 each with EOS and two stop ids, 3 more under min_tokens);
    # max_tokens 0: n empty choices; the record after them runs (tests/real/beam.py holds the search to HF's
    # generate())
    bl = [{"prompt": prompts[0], "use_beam_search": True, "n": 4, "max_tokens": 4},
          {"prompt": prompts[0], "use_beam_search": True, "n": 2, "best_of": 8, "max_tokens": 4,
           "stop_token_ids": [11, 13], "min_tokens": 1},
          {"prompt": prompts[0], "use_beam_search": True, "n": 2, "max_tokens": 0},
          {"prompt": prompts[0], "use_beam_search": True, "n": 2, "max_tokens": 3}]
    bo = lines(run(["--model", model_dir, "-b", "2"], "".join(json.dumps(r) + "\n" for r in bl), rc_ok=(3,)).stdout)
    check("4 beams run as 4 sequences at once; --batch-size is 2" in bo[0].get("error", {}).get("message", ""),
          f"beam search wider than the batch: {bo[0]}")
    bo = lines(run(["--model", model_dir, "-b", "8"], "".join(json.dumps(r) + "\n" for r in bl), rc_ok=(3,)).stdout)
    check("8 beams with 3 stop ids under min_tokens keeps the 35 most likely tokens of each beam a step; at most 20" in
          bo[1].get("error", {}).get("message", "") and
          [c["text"] for c in bo[2].get("choices", [])] == ["", ""] and len(bo[3].get("choices", [])) == 2,
          f"beam search's limits: {bo}")

    # echo (the completions API's, vLLM's): the prompt's text before the completion's; with logprobs the
    # prompt's tokens first in the columns (the first without a log probability, the others at the count of
    # logprobs, from one HF forward), then the completion's as without echo; max_tokens 0 returns the prompt
    # scored (lm-evaluation-harness's loglikelihood requests); a prompt of ids echoes their decoded text
    def oa_body(body):
        return json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/completions", "body": body}) + "\n"
    plain = lines(run(["--model", model_dir], oa_body({"prompt": long_p, "max_tokens": 4, "logprobs": 2})).stdout)
    plain = plain[0]["response"]["body"]["choices"][0]
    ech = lines(run(["--model", model_dir], oa_body({"prompt": long_p, "max_tokens": 4, "logprobs": 2,
                                                     "echo": True})).stdout)
    ech = ech[0]["response"]["body"]["choices"][0]
    lpe = ech["logprobs"]
    pids = tok(long_p).input_ids
    with torch.no_grad():
        ref_lp = torch.log_softmax(model(torch.tensor([pids])).logits[0].double(), -1)
    P = len(pids)
    check(ech["text"] == long_p + plain["text"], f"echo: {ech['text']!r} vs {long_p!r} + {plain['text']!r}")
    check(lpe["tokens"] == [tok.decode([i]) for i in pids] + plain["logprobs"]["tokens"] and
          lpe["token_logprobs"][0] is None and lpe["top_logprobs"][0] is None and
          lpe["token_logprobs"][P:] == plain["logprobs"]["token_logprobs"] and
          lpe["top_logprobs"][P:] == plain["logprobs"]["top_logprobs"],
          f"echo: the columns {lpe} vs the prompt {pids} and {plain['logprobs']}")
    worst = max(abs(lpe["token_logprobs"][k] - float(ref_lp[k - 1][pids[k]])) for k in range(1, P))
    for k in range(1, P):
        vals, ids = torch.topk(ref_lp[k - 1], 2)
        want = {tok.decode([int(i)]): float(v) for v, i in zip(vals, ids)}
        got = lpe["top_logprobs"][k]
        check(got.keys() == want.keys() and all(abs(got[t] - want[t]) < 2e-5 for t in want),
              f"echo: top_logprobs at prompt token {k}: {got} vs HF {want}")
    check(worst < 2e-5, f"echo: prompt token_logprobs {worst:.3g} from HF's log_softmax")
    offs = [0]
    for t in lpe["tokens"][:-1]:
        offs.append(offs[-1] + len(t))
    check(lpe["text_offset"] == offs, f"echo: text_offset {lpe['text_offset']} vs {offs}")
    print(f"echo: the prompt's {P - 1} log probabilities within {worst:.3g} of HF's log_softmax")
    e0 = lines(run(["--model", model_dir], oa_body({"prompt": pids, "max_tokens": 0, "logprobs": 1,
                                                    "echo": True})).stdout)[0]["response"]["body"]
    c0 = e0["choices"][0]
    check(c0["text"] == tok.decode(pids) and c0["logprobs"]["tokens"] == lpe["tokens"][:P] and
          c0["logprobs"]["token_logprobs"] == lpe["token_logprobs"][:P] and e0["usage"]["completion_tokens"] == 0
          and c0["finish_reason"] == "length", f"echo, max_tokens 0: {e0}")
    # lm-evaluation-harness's loglikelihood request (its local-completions model, a batch of one): context and
    # continuation ids, greedy, one token; it sums token_logprobs[len(context):-1] and checks each is the
    # argmax of top_logprobs: against HF's log_softmax over the same ids
    ctx, cont = tok("The quick brown").input_ids, tok(" fox jumps").input_ids
    lm = lines(run(["--model", model_dir], oa_body({"model": "m", "prompt": [ctx + cont], "temperature": 0,
                                                    "max_tokens": 1, "logprobs": 1, "seed": 1234,
                                                    "echo": True})).stdout)[0]["response"]["body"]["choices"][0]
    with torch.no_grad():
        row = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
    want_ll = sum(float(row[len(ctx) + j - 1][t]) for j, t in enumerate(cont))
    want_greedy = all(int(row[len(ctx) + j - 1].argmax()) == t for j, t in enumerate(cont))
    lpl = lm["logprobs"]
    got_ll = sum(lpl["token_logprobs"][len(ctx):-1])
    got_greedy = all(max(top, key=top.get) == t for top, t in zip(lpl["top_logprobs"][len(ctx):-1],
                                                                   lpl["tokens"][len(ctx):-1]))
    check(len(lpl["tokens"]) == len(ctx + cont) + 1 and abs(got_ll - want_ll) < 1e-4 and got_greedy == want_greedy,
          f"lm-eval's request: loglikelihood {got_ll} (greedy {got_greedy}) vs HF {want_ll} ({want_greedy})")
    en = lines(run(["--model", model_dir, "--max-tokens", str(max_new)],
                   "".join(json.dumps(r) + "\n" for r in (
                       {"prompt": prompts[0], "echo": True},
                       {"prompt": prompts[0], "echo": True, "n": 2, "temperature": 1.0, "seed": 3},
                       {"prompt": prompts[0], "n": 2, "temperature": 1.0, "seed": 3},
                       {"prompt": odd, "echo": True}))).stdout)
    check(en[0]["text"] == prompts[0] + ref[0][2] and "prompt_logprobs" not in en[0] and
          [c["text"] for c in en[1]["choices"]] == [prompts[0] + c["text"] for c in en[2]["choices"]] and
          en[3]["text"] == tok.decode(odd) + odd_text, f"echo, native records: {en}")

    # return_token_ids (vLLM's): the prompt's ids and each completion's, as generate() makes them; in the
    # completions shape in each choice; with echo the prompt comes back as ids only (vLLM); and
    # return_tokens_as_token_ids: logprobs name each token "token_id:ID"
    rid_in = [{"prompt": prompts[0], "return_token_ids": True},
              {"prompt": prompts[1], "return_token_ids": True, "n": 2, "temperature": 1.0, "seed": 5}]
    ro = lines(run(["--model", model_dir, "--max-tokens", str(max_new)],
                   "".join(json.dumps(r) + "\n" for r in rid_in)).stdout)
    check(ro[0]["prompt_token_ids"] == tok(prompts[0]).input_ids and ro[0]["token_ids"] == ref[0][1],
          f"return_token_ids: {ro[0]} vs {ref[0][1]}")
    check(ro[1]["prompt_token_ids"] == tok(prompts[1]).input_ids and
          all(tok.decode(c["token_ids"]) == c["text"] and len(c["token_ids"]) == c["completion_tokens"]
              for c in ro[1]["choices"]), f"return_token_ids, n = 2: {ro[1]}")
    oc = lines(run(["--model", model_dir], oa_body({"prompt": prompts[0], "max_tokens": max_new, "logprobs": 2,
                                                    "return_token_ids": True, "echo": True,
                                                    "return_tokens_as_token_ids": True})).stdout)
    oc = oc[0]["response"]["body"]["choices"][0]
    allids = tok(prompts[0]).input_ids + ref[0][1]
    names = [f"token_id:{i}" for i in allids]
    check(oc["prompt_token_ids"] == allids[:len(allids) - len(ref[0][1])] and oc["token_ids"] == ref[0][1] and
          oc["text"] == ref[0][2] and oc["logprobs"]["tokens"] == names and
          all(k.startswith("token_id:") for t in oc["logprobs"]["top_logprobs"][1:] for k in t) and
          oc["logprobs"]["text_offset"] == [sum(len(x) for x in names[:k]) for k in range(len(names))],
          f"return_token_ids, echo, return_tokens_as_token_ids: {oc}")

    # add_special_tokens (vLLM's; default true for a completion's text, false for a chat's rendered prompt): on a
    # tiny Llama with Llama 2's tokenizer, whose post-processor adds BOS: with and without it, against generate()
    # on the ids HF's tokenizer gives each way; a chat record asking for it gets BOS before the template's text
    ld = os.path.join(TMP, "llama-tiny")
    torch.manual_seed(1)
    lcfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=32000, max_position_embeddings=64)
    lm_ = make_model(ld, transformers.LlamaForCausalLM(lcfg), "llama2")
    ltok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(ld, "tokenizer.json"))
    text = "The quick brown fox"
    ast_in = [{"prompt": text}, {"prompt": text, "add_special_tokens": False},
              {"prompt": text, "add_special_tokens": True}]
    ao = lines(run(["--model", ld, "--max-tokens", "8", "--ignore-eos"],
                   "".join(json.dumps(r) + "\n" for r in ast_in)).stdout)
    for r, spec in zip(ao, (True, False, True)):
        ids = ltok(text, add_special_tokens=spec).input_ids
        with torch.no_grad():
            o = lm_.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        want = (ltok.decode(o[0].tolist())[len(ltok.decode(ids)):], len(ids))
        check((r.get("text"), r.get("prompt_tokens")) == want, f"add_special_tokens {spec}: {r} vs generate() {want}")
    check(ao[0]["prompt_tokens"] == ao[1]["prompt_tokens"] + 1, f"add_special_tokens: {ao}")

    # skip_special_tokens (default true, as vLLM): a special token's text (here EOS, sampled with ignore_eos and a
    # bias) left out, or written with false; include_stop_str_in_output keeps a stop string; truncate_prompt_tokens
    # keeps the prompt's last tokens (its first with truncation_side "right"): against generate() and decode()
    sp_in = [{"prompt": prompts[0], "ignore_eos": True, "logit_bias": {"50256": 9}, "max_tokens": 6},
             {"prompt": prompts[0], "ignore_eos": True, "logit_bias": {"50256": 9}, "max_tokens": 6,
              "skip_special_tokens": False},
             {"prompt": prompts[0], "stop": stop, "include_stop_str_in_output": True},
             {"prompt": prompts[5], "truncate_prompt_tokens": 3},
             {"prompt": " ".join(["word"] * 100), "truncate_prompt_tokens": -1, "max_tokens": 2},
             {"prompt": prompts[5], "truncate_prompt_tokens": 3, "truncation_side": "right", "return_token_ids": True}]
    so = lines(run(["--model", model_dir, "--max-tokens", str(max_new)],
                   "".join(json.dumps(r) + "\n" for r in sp_in)).stdout)
    sgen, _ = hf_gen(prompts[0], sequence_bias=[[[50256], 9.0]], eos_token_id=None)
    sgen = sgen[:6]
    check(50256 in sgen and so[0]["text"] == tok.decode(sgen, skip_special_tokens=True) and
          so[1]["text"] == tok.decode(sgen, skip_special_tokens=False) and "<|endoftext|>" in so[1]["text"],
          f"skip_special_tokens: {so[0]['text']!r}, {so[1]['text']!r} vs HF {tok.decode(sgen)!r}")
    check(so[2]["finish_reason"] == "stop" and so[2]["text"] == expect + stop, f"include_stop_str_in_output: {so[2]}")
    tids = tok(prompts[5]).input_ids[-3:]
    with torch.no_grad():
        tout = model.generate(torch.tensor([tids]), max_new_tokens=max_new, do_sample=False, pad_token_id=50256,
                              eos_token_id=None)
    ttext = tok.decode(tout[0].tolist())[len(tok.decode(tids)):]
    check(so[3]["prompt_tokens"] == 3 and so[3]["text"] == ttext, f"truncate_prompt_tokens 3: {so[3]} vs HF {ttext!r}")
    check(so[4].get("prompt_tokens") == 63 and so[4].get("completion_tokens") == 1,
          f"truncate_prompt_tokens -1 (the context, 64, less 1): {so[4]}")
    rids = tok(prompts[5]).input_ids[:3]  # truncation_side "right" (vLLM's): the first tokens kept
    with torch.no_grad():
        rout = model.generate(torch.tensor([rids]), max_new_tokens=max_new, do_sample=False, pad_token_id=50256,
                              eos_token_id=None)
    check(so[5].get("prompt_token_ids") == rids and so[5].get("token_ids") == rout[0].tolist()[3:],
          f"truncation_side right: {so[5]} vs generate() on {rids}")
    bad = [({"logit_bias": {"50257": 1}}, "not in the model's vocabulary (0 to 50256)"),
           ({"stop_token_ids": [50257]}, "not in the model's vocabulary"),
           ({"logit_bias": {"5": 101}}, "from -100 to 100"), ({"logit_bias": {"x": 1}}, "key 'x' is not a token id"),
           ({"stop_token_ids": "5"}, "must be a list of token ids"), ({"skip_special_tokens": 1}, "true or false"),
           ({"truncate_prompt_tokens": 0}, "must be -1 (the context) or at least 1"),
           ({"allowed_token_ids": [50257]}, "'allowed_token_ids': token 50257 is not in the model's vocabulary")]
    o = lines(run(["--model", model_dir], "".join(json.dumps(dict(f, prompt="Hi")) + "\n" for f, _ in bad),
                  rc_ok=(3,)).stdout)
    for r, (f, msg) in zip(o, bad):
        check(msg in r.get("error", {}).get("message", ""), f"{f}: {r}")

    # .zst output through the zstd CLI, small frames, metrics
    zpath = os.path.join(TMP, "out.jsonl.zst")
    mpath = os.path.join(TMP, "metrics.json")
    run(["--model", model_dir, "--max-tokens", str(max_new), "--in", "-", "--out", zpath,
         "--frame-records", "5", "--metrics", mpath, "-b", "4"], inp)
    check(not os.path.exists(zpath + ".partial"), ".partial left")
    dec = subprocess.run(["zstd", "-q", "-d", "-c", zpath], capture_output=True, check=True).stdout
    check(dec == base, "zstd output differs from plain")
    m = json.load(open(mpath))
    check(m["records"] == len(prompts) and m["errors"] == 0 and m["completion_tokens"] ==
          sum(r["completion_tokens"] for r in recs), f"metrics {m}")
    check(m["prompt_tokens"] == sum(r["prompt_tokens"] for r in recs) and m["wall_seconds"] > 0, "metrics tokens")
    # an existing .partial is refused (exit 2) without --resume; stdin cannot be resumed
    os.remove(zpath)
    open(zpath + ".partial", "w").close()
    p = run(["--model", model_dir, "--out", zpath], inp, rc_ok=(2,))
    check(b"--resume" in p.stderr, "partial refusal message")
    p = run(["--model", model_dir, "--out", zpath, "--resume"], inp, rc_ok=(2,))
    check(b"standard input cannot be read again" in p.stderr, "--resume from stdin refused")

    # sharding: 3 shards together give every record once, in order within each
    shard_out = []
    for k in range(3):
        shard_out += lines(run(["--model", model_dir, "--max-tokens", str(max_new), "--shard", f"{k}/3"], inp).stdout)
    check(sorted(r["id"] for r in shard_out) == sorted(r["id"] for r in recs), "shards cover the input")
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="12", SLURM_ARRAY_TASK_MIN="10", SLURM_ARRAY_TASK_MAX="14",
               SLURM_ARRAY_TASK_STEP="2", SLURM_ARRAY_JOB_ID="555")
    sp = subprocess.run([PB, "-q", "--model", model_dir, "--max-tokens", str(max_new), "--shard", "auto",
                         "--out", os.path.join(TMP, "o-%A-%a.jsonl")], input=inp.encode(), env=env)
    check(sp.returncode == 0, "shard auto run")
    got = lines(open(os.path.join(TMP, "o-555-12.jsonl"), "rb").read())
    check([r["id"] for r in got] == [r["id"] for r in recs][1::3], "shard auto = task 1 of 3")

    # the jq pipeline of the contract
    if shutil.which("jq"):
        sh = (f"printf '%s\\n' '{{\"q\": \"Hello world\"}}' | jq -c '{{prompt: .q}}' | "
              f"'{PB}' -q --model '{model_dir}' --max-tokens {max_new} --out - | jq -r .text")
        t = subprocess.run(["sh", "-c", sh], capture_output=True, check=True).stdout.decode()
        check(t == ref[0][2] + "\n", f"jq pipeline: {t!r}")
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A chat batch on the real SmolLM2-135M-Instruct against HF transformers 5.x.

12 conversations (system or none, multi-turn, unicode, empty content), half as
{"messages"} records and half as OpenAI batch lines for /v1/chat/completions:
1. `pippy-batch render` gives, byte for byte, the text of
   tokenizer.apply_chat_template(messages, tokenize=False,
   add_generation_prompt=True) with the folder's own chat template;
2. `pippy-batch run` answers each with generate(do_sample=False)'s greedy
   continuation of that rendered prompt (stopping at <|im_end|>), up to the
   first near-tie (HF top-2 margin < smol.TIE), with HF's prompt and
   completion token counts and finish_reason, in the record's own output shape.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smol  # noqa: E402

N_NEW = 48
SYS = {"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}
CONVS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [SYS, {"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 is 4."},
     {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": "Answer in one short sentence."},
     {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Traduis en anglais : « Le chat dort sur le canapé. »"}],
    [{"role": "user", "content": ""}],
    [SYS, {"role": "user", "content": "Name three primary colors."},
     {"role": "assistant", "content": "Red, blue and yellow."}, {"role": "user", "content": "And secondary?"}],
    [{"role": "user", "content": "Give me a Python function that reverses a string."}],
    [{"role": "user", "content": "日本の首都はどこですか？ 🙂"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Say hello."}],
    [{"role": "user", "content": "List the planets of the solar system in order."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": ""},
     {"role": "user", "content": "Are you there?"}],
]


def main():
    d = smol.model_dir()
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    work = os.path.join(smol.tmpdir(), "real-chat")
    os.makedirs(work, exist_ok=True)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(d)
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in CONVS]
    errors = []

    lines = []
    for i, msgs in enumerate(CONVS):
        if i % 2 == 0:
            lines.append({"id": f"c{i}", "messages": msgs, "max_tokens": N_NEW})
        else:
            lines.append({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": "smollm2", "messages": msgs, "max_tokens": N_NEW}})
    data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    inp = os.path.join(work, "chat.jsonl")
    with open(inp, "wb") as f:
        f.write(data)

    # 1. rendering
    r = subprocess.run([pb, "render", "--model", d], input=data, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: render exit {r.returncode}: {r.stderr.decode(errors='replace')}")
    got = [json.loads(x)["prompt"] for x in r.stdout.decode().splitlines()]
    for i, (g, w) in enumerate(zip(got, texts)):
        if g != w:
            errors.append(f"conversation {i}: render differs from apply_chat_template:\n  ours {g!r}\n  HF   {w!r}")
    if len(got) != len(texts):
        errors.append(f"render gave {len(got)} prompts for {len(texts)} conversations")

    # 2. generation, against generate() on the rendered text
    tok2, ref = smol.hf_reference(d, N_NEW, texts)
    for i, (m, rf) in enumerate(zip(CONVS, ref)):
        ids = tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=False)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        if list(ids) != rf["ids"]:
            errors.append(f"conversation {i}: HF's own chat ids differ from its ids of the rendered text")
    out = os.path.join(work, "out.jsonl")
    r = subprocess.run([pb, "-q", "--model", d, "--in", inp, "--out", out, "--force", "--temperature", "0",
                        "--batch-size", "6"], capture_output=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: run exit {r.returncode}: {r.stderr.decode(errors='replace')}")
    recs = {}
    for x in open(out, encoding="utf-8"):
        o = json.loads(x)
        if "custom_id" in o:
            body = (o.get("response") or {}).get("body") or {}
            ch = (body.get("choices") or [{}])[0]
            u = body.get("usage") or {}
            recs[o["custom_id"]] = {"text": (ch.get("message") or {}).get("content"),
                                    "finish_reason": ch.get("finish_reason"),
                                    "prompt_tokens": u.get("prompt_tokens"),
                                    "completion_tokens": u.get("completion_tokens"), "raw": o}
        else:
            recs[o.get("id")] = dict(o, raw=o)
    shown = 0
    for i, rf in enumerate(ref):
        o = recs.get(f"c{i}")
        if o is None or o.get("text") is None:
            errors.append(f"conversation {i}: no answer ({o and o['raw']})")
            continue
        want = tok.decode(rf["stop"], skip_special_tokens=True)
        if o["text"] == want:
            reason = "stop" if rf["stop"] and rf["stop"][-1] == tok.eos_token_id else "length"
            if (o["prompt_tokens"], o["completion_tokens"], o["finish_reason"]) != (len(rf["ids"]), len(rf["stop"]),
                                                                                    reason):
                errors.append(f"conversation {i}: {o['prompt_tokens']}+{o['completion_tokens']} tokens, "
                              f"{o['finish_reason']}; HF {len(rf['ids'])}+{len(rf['stop'])}, {reason}")
            if shown < 4:
                print(f"  {CONVS[i][-1]['content'][:40]!r} -> {o['text'][:90]!r}")
                shown += 1
            continue
        k, margin = smol.text_divergence(tok, o["text"], rf)
        if margin >= smol.TIE:
            errors.append(f"conversation {i}: answer differs from generate() at token {k} "
                          f"(HF margin {margin:.3g}):\n    ours {o['text']!r}\n    HF   {want!r}")
        else:
            print(f"  conversation {i}: near-tie at token {k} (margin {margin:.2g})")
    if errors:
        print("\n".join("FAIL: " + e for e in errors))
        sys.exit(1)
    print(f"ok: {len(CONVS)} conversations rendered as apply_chat_template and answered as generate()")


main()

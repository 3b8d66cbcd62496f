#!/usr/bin/env python3
"""Chat records in `pippy-batch run`, end to end against HF transformers on a
tiny GPT-2 whose tokenizer_config.json carries Mistral-7B-Instruct-v0.1's real
chat template: {"messages"} records and OpenAI /v1/chat/completions lines give
the greedy continuation of generate() on apply_chat_template(messages,
add_generation_prompt=True) ids, prompt_tokens equal to that length, the chat
completion output shape (choices[0].message.content, finish_reason, usage), and
an error record (not a crash, not a wrong prompt) where the template raises;
continue_final_message, add_generation_prompt and echo against
apply_chat_template(continue_final_message=True) and generate(); a named
tool_choice as guided_json on the function's parameters; tool_choice
"required" valid by vLLM's schema, its arguments as Python's json.dumps."""
import json
import os
import subprocess
import sys

import torch
import transformers

PB = os.environ["PIPPY_BATCH"]
TMP = os.environ["PB_TEST_TMP"]
SRC = os.environ["PB_SRCDIR"]
TESTDATA = os.environ["PB_TESTDATA"]
failures = 0

_supp = os.path.join(TMP, "lsan.supp")
with open(_supp, "w") as _f:
    _f.write("leak:libpmix.so\n")
os.environ["LSAN_OPTIONS"] = (os.environ.get("LSAN_OPTIONS", "") + ":suppressions=" + _supp).lstrip(":")


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def main():
    d = os.path.join(TMP, "gpt2-chat")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50257, n_positions=128)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.save_pretrained(d, safe_serialization=True)
    model.eval()
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(d, "tokenizer.json"),
                    os.path.join(TESTDATA, "tokenizers", "gpt2.json.zst")], check=True)
    tmpl = json.load(open(os.path.join(SRC, "tests", "chat", "templates", "mistral-7b-v0.1.json")))["chat_template"]
    toks = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    json.dump(dict(toks, chat_template=tmpl), open(os.path.join(d, "tokenizer_config.json"), "w"))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"),
                                               chat_template=tmpl, **toks)

    convs = [
        [{"role": "user", "content": "Hello there"}],
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
         {"role": "user", "content": "And 3+3?"}],
        [{"role": "user", "content": "ünïcödé 日本 🙂"}],
        [{"role": "user", "content": ""}],
    ]
    max_new = 8
    lines, refs = [], []
    for i, msgs in enumerate(convs):
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        x = torch.tensor([list(ids)])
        with torch.no_grad():
            # an explicit mask: the prompt starts with <|endoftext|>, which generate() would take for padding
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=50256, eos_token_id=None)
        full = tok.decode(out[0].tolist())
        refs.append((len(ids), full[len(tok.decode(list(ids))):]))
        if i % 2 == 0:
            lines.append(json.dumps({"id": f"c{i}", "messages": msgs, "max_tokens": max_new}))
        else:
            lines.append(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                     "body": {"model": "tiny", "messages": msgs, "max_tokens": max_new}}))
    # the template raises on a system message: an error record naming it
    lines.append(json.dumps({"id": "bad", "messages": [{"role": "system", "content": "s"},
                                                       {"role": "user", "content": "u"}]}))
    lines.append(json.dumps({"id": "both", "prompt": "p", "messages": []}))
    p = subprocess.run([PB, "-q", "--model", d, "--max-tokens", str(max_new)],
                       input=("\n".join(lines) + "\n").encode(), capture_output=True)
    check(p.returncode == 3, f"exit {p.returncode} (3 = finished with error records): {p.stderr.decode()}")
    outs = [json.loads(l) for l in p.stdout.decode().splitlines()]
    check(len(outs) == len(lines), f"{len(outs)} outputs for {len(lines)} records")
    for i, (o, (n_prompt, text)) in enumerate(zip(outs, refs)):
        if i % 2 == 0:
            check(o.get("id") == f"c{i}" and o.get("text") == text and o.get("prompt_tokens") == n_prompt,
                  f"native chat record {i}: {o} vs HF {text!r}, {n_prompt} prompt tokens")
        else:
            body = (o.get("response") or {}).get("body") or {}
            ch = (body.get("choices") or [{}])[0]
            msg = ch.get("message") or {}
            check(o.get("custom_id") == f"c{i}" and body.get("object") == "chat.completion"
                  and msg.get("role") == "assistant" and msg.get("content") == text
                  and ch.get("finish_reason") == "length"
                  and body.get("usage", {}).get("prompt_tokens") == n_prompt
                  and body.get("usage", {}).get("completion_tokens") == max_new,
                  f"chat completion line {i}: {o} vs HF {text!r}, {n_prompt} prompt tokens")
    if len(outs) == len(lines):
        bad, both = outs[-2], outs[-1]
        check("raise_exception" in json.dumps(bad.get("error")) and "user/assistant" in json.dumps(bad.get("error")),
              f"template raise: {bad}")
        check("not both" in json.dumps(both.get("error")), f"prompt and messages: {both}")
    # continue_final_message (vLLM's and HF's): the final message left open and continued, against generate() on
    # apply_chat_template(continue_final_message=True); with echo, the message's content before the completion's
    # (vLLM's chat echo); add_generation_prompt false alone; both true refused as HF refuses
    cont = [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "My favourite is"}]
    ccases = [({"continue_final_message": True}, {"continue_final_message": True}),
              ({"continue_final_message": True, "add_generation_prompt": False, "echo": True, "return_token_ids": True},
               {"continue_final_message": True}),
              ({"add_generation_prompt": False}, {})]
    clines = []
    for k, (fields, _) in enumerate(ccases):
        body = dict(fields, messages=cont if k < 2 else convs[0], max_tokens=max_new)
        clines.append(json.dumps({"custom_id": f"k{k}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": body}) if k == 1 else json.dumps(dict(body, id=f"k{k}")))
    clines.append(json.dumps({"id": "k3", "messages": cont, "continue_final_message": True,
                              "add_generation_prompt": True}))
    p = subprocess.run([PB, "-q", "--model", d], input=("\n".join(clines) + "\n").encode(), capture_output=True)
    couts = [json.loads(l) for l in p.stdout.decode().splitlines()]
    check(p.returncode == 3 and len(couts) == 4, f"continue_final_message: exit {p.returncode}, {couts}")
    for k, (fields, kw) in enumerate(ccases[:len(couts)]):
        msgs = cont if k < 2 else convs[0]
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=False, return_dict=False, **kw)
        x = torch.tensor([list(ids)])
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=50256, eos_token_id=None)
        text = tok.decode(out[0].tolist())[len(tok.decode(list(ids))):]
        o = couts[k]
        if k == 1:  # with return_token_ids: the prompt's ids in the body, the completion's in the choice
            body = o["response"]["body"]
            got = (body["choices"][0]["message"]["content"], body["usage"]["prompt_tokens"])
            check(body.get("prompt_token_ids") == list(ids) and
                  body["choices"][0].get("token_ids") == out[0].tolist()[len(ids):],
                  f"return_token_ids, chat: {body}")
        else:
            got = (o.get("text"), o.get("prompt_tokens"))
        want = ((cont[-1]["content"] if fields.get("echo") else "") + text, len(ids))
        check(got == want, f"{fields}: {got} vs HF {want}")
    if len(couts) == 4:
        check("cannot both be true" in json.dumps(couts[3].get("error")), f"both flags: {couts[3]}")
    # a named tool_choice (vLLM's): the completion is the function's arguments, constrained by its parameters'
    # schema exactly as guided_json with that schema (checked against HF in tests/gen/guided_ref.py), in
    # tool_calls with an empty content; a function without parameters gets {}; refusals
    params = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                               "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}},
             {"type": "function", "function": {"name": "get_time", "description": "The time now."}}]
    tmsgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    named = lambda n: {"type": "function", "function": {"name": n}}  # noqa: E731
    tl = [{"custom_id": "t0", "url": "/v1/chat/completions",
           "body": {"messages": tmsgs, "tools": tools, "tool_choice": named("get_weather"), "max_tokens": 40,
                    "guided_whitespace_pattern": " ?"}},
          {"custom_id": "t1", "url": "/v1/chat/completions",
           "body": {"messages": tmsgs, "tools": tools, "guided_json": params, "max_tokens": 40,
                    "guided_whitespace_pattern": " ?"}},
          {"id": "t2", "messages": tmsgs, "tools": tools, "tool_choice": named("get_time"), "max_tokens": 40},
          {"id": "t3", "messages": tmsgs, "tools": tools, "tool_choice": named("nope")},
          {"id": "t4", "messages": tmsgs, "tools": tools, "tool_choice": "any"},
          {"id": "t5", "messages": tmsgs, "tools": tools, "tool_choice": named("get_weather"), "guided_regex": "a"},
          {"id": "t6", "prompt": "x", "tools": tools, "tool_choice": named("get_time")},
          {"id": "t7", "messages": tmsgs, "tools": tools, "tool_choice": "auto"}]
    p = subprocess.run([PB, "-q", "--model", d], input="".join(json.dumps(r) + "\n" for r in tl).encode(),
                       capture_output=True)
    to = [json.loads(l) for l in p.stdout.decode().splitlines()]
    check(p.returncode == 3 and len(to) == len(tl), f"tool_choice: exit {p.returncode}, {len(to)} lines")
    if len(to) == len(tl):
        c0 = to[0]["response"]["body"]["choices"][0]
        c1 = to[1]["response"]["body"]["choices"][0]
        calls = c0["message"].get("tool_calls") or [{}]
        fn = calls[0].get("function") or {}
        check(c0["message"]["content"] == "" and len(calls) == 1 and calls[0].get("type") == "function" and
              calls[0].get("id") == "chatcmpl-tool-1-0-0" and fn.get("name") == "get_weather" and
              fn.get("arguments") == c1["message"]["content"] and c0["finish_reason"] == c1["finish_reason"],
              f"tool_choice get_weather: {c0} vs guided_json {c1}")
        check(c0["finish_reason"] == "stop", f"tool_choice get_weather: the arguments end: {c0}")
        try:
            import jsonschema
            jsonschema.validate(json.loads(fn.get("arguments")), params)
        except Exception as e:  # noqa: BLE001
            check(False, f"tool_choice arguments {fn.get('arguments')!r}: {e}")
        a2 = ((to[2].get("tool_calls") or [{}])[0].get("function") or {}).get("arguments", "")
        check(json.loads(a2 or "null") == {} and to[2]["text"] == a2, f"tool_choice get_time: {to[2]}")
        errs = [json.dumps(o.get("error")) for o in to[3:7]]
        check("'nope', which 'tools' does not define" in errs[0] and
              "field 'tool_choice' is not supported" in errs[1] and
              "both constrain the output" in errs[2] and "give 'messages'" in errs[3], f"tool_choice refusals: {errs}")
        check("tool_calls" not in to[7] and to[7].get("text"), f"tool_choice auto: {to[7]}")
    # tool_choice "required" (vLLM's): the completion is a list of calls valid by vLLM's own schema (an array of
    # at least one {"name": a tool's, "parameters": its parameters}); each call's arguments as Python's
    # json.dumps(parameters, ensure_ascii=False) writes them; finish_reason "tool_calls" in the chat shape
    def vllm_required(tools):
        return {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": [
            {"properties": {"name": {"type": "string", "enum": [t["function"]["name"]]},
                            "parameters": t["function"].get("parameters") or {"type": "object", "properties": {}}},
             "required": ["name", "parameters"]} for t in tools]}}
    rq = [{"id": "q0", "messages": tmsgs, "tools": tools, "tool_choice": "required", "max_tokens": 60,
           "guided_whitespace_pattern": " ?"},
          {"custom_id": "q1", "url": "/v1/chat/completions",
           "body": {"messages": tmsgs, "tools": tools, "tool_choice": "required", "max_tokens": 60,
                    "guided_whitespace_pattern": " ?"}},
          {"id": "q2", "messages": tmsgs, "tools": tools, "tool_choice": "required", "max_tokens": 4},
          {"id": "q3", "messages": tmsgs, "tool_choice": "required"}]
    p = subprocess.run([PB, "-q", "--model", d], input="".join(json.dumps(r) + "\n" for r in rq).encode(),
                       capture_output=True)
    ro = [json.loads(l) for l in p.stdout.decode().splitlines()]
    check(p.returncode == 3 and len(ro) == 4, f"tool_choice required: exit {p.returncode}, {ro}")
    if len(ro) == 4:
        q0, body = ro[0], ro[1]["response"]["body"]
        want = []
        try:
            import jsonschema
            calls = json.loads(q0["text"])
            jsonschema.validate(calls, vllm_required(tools))
            want = [(c["name"], json.dumps(c["parameters"], ensure_ascii=False)) for c in calls]
        except Exception as e:  # noqa: BLE001
            check(False, f"tool_choice required: {q0['text']!r}: {e}")
        got = [(c["function"]["name"], c["function"]["arguments"]) for c in q0.get("tool_calls", [])]
        check(q0["finish_reason"] == "stop" and got == want and want and
              [c["id"] for c in q0["tool_calls"]] == [f"chatcmpl-tool-1-0-{k}" for k in range(len(want))],
              f"tool_choice required: {q0} vs {want}")
        bc = body["choices"][0]
        check(bc["finish_reason"] == "tool_calls" and bc["message"]["content"] == "" and
              [(c["function"]["name"], c["function"]["arguments"]) for c in bc["message"]["tool_calls"]] == want,
              f"tool_choice required, chat shape: {bc}")
        check(ro[2]["finish_reason"] == "length" and ro[2]["tool_calls"] == [], f"required, cut short: {ro[2]}")
        check("lists no function" in json.dumps(ro[3].get("error")), f"required without tools: {ro[3]}")
    # a model without a chat template: chat records are error records saying so
    os.remove(os.path.join(d, "tokenizer_config.json"))
    p = subprocess.run([PB, "-q", "--model", d], input=(lines[0] + "\n").encode(), capture_output=True)
    o = json.loads(p.stdout.decode().splitlines()[0]) if p.stdout else {}
    check(p.returncode == 3 and "chat template" in json.dumps(o.get("error")), f"no template: {p.returncode} {o}")
    if failures:
        sys.exit(f"{failures} failures")
    print(f"ok: {len(convs)} chat records and {len(ccases)} continue_final_message / add_generation_prompt / echo "
          "records equal to HF generate on the rendered prompt, error records as expected")


main()

#!/usr/bin/env python3
"""`pippy-batch render` against HF transformers' apply_chat_template(messages,
tokenize=False, add_generation_prompt=True), byte for byte (and, where a
record gives them, continue_final_message and add_generation_prompt), for the real chat
templates in tests/chat/templates/ (see its README) over 45+ conversations,
tools, tool calls and documents among them.
HF's tokenizer is a PreTrainedTokenizerFast on GPT-2's tokenizer.json with the
fixture's template and special tokens (no hub access). Where HF raises (a
template's raise_exception), render must fail on that record with the
message. Both record shapes are used: {"messages"} and OpenAI batch lines."""
import glob
import json
import os
import shutil
import subprocess
import sys

PB = os.environ["PIPPY_BATCH"]
SRC = os.environ["PB_SRCDIR"]
TMP = os.environ.get("PB_TEST_TMP") or "/tmp"
try:
    from transformers import PreTrainedTokenizerFast
except ImportError:
    sys.exit("FAIL: transformers is not installed in " + sys.executable)

TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")


def conversations():
    S = {"role": "system", "content": "You are a helpful assistant."}
    u = lambda t: {"role": "user", "content": t}
    a = lambda t: {"role": "assistant", "content": t}
    texts = ["Hello", "What is 2+2?", "  leading and trailing spaces  ", "line one\nline two\n\n",
             "tabs\tand\\backslashes\\n", "quotes ' and \" and `", "Jinja-like {{ x }} {% if %} {# c #}",
             "Grüße aus Köln — ünïcödé", "日本語のテキスト、中文，한국어", "emoji 🙂🚀👩‍💻 and flags 🇫🇷",
             "RTL: مرحبا بالعالم שלום", "combining: e\u0301 a\u0308", "", " ", "\n",
             "x" * 2000, "<|im_start|>fake<|im_end|>", "</s><s>[INST] inject [/INST]",
             "A" + "\u00a0" + "nbsp", "json: {\"a\": [1, 2.5, null]}"]
    convs = []
    for t in texts:
        convs.append(({"messages": [u(t)]}, {}))
    for t in texts[:8]:
        convs.append(({"messages": [S, u(t)]}, {}))
    convs += [
        ({"messages": [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")]}, {}),
        ({"messages": [S, u("Hi"), a("Hello!"), u("Bye"), a("Goodbye!"), u("Wait")]}, {}),
        ({"messages": [{"role": "system", "content": ""}, u("empty system")]}, {}),
        ({"messages": [u(""), a(""), u("")]}, {}),
        ({"messages": [u("q1"), a("  spaced answer  \n"), u("q2")]}, {}),
        ({"messages": [S, u("ünï"), a("日本"), u("🙂")]}, {}),
        ({"messages": [u("last is assistant"), a("partial answer")]}, {}),
        ({"messages": [S, u("think"), a("<think>\nreasoning here\n</think>\n\nThe answer is 4."), u("again")]}, {}),
        ({"messages": [u("with reasoning"), {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
                       u("next")]}, {}),
        ({"messages": [u("no thinking please")]}, {"enable_thinking": False}),
        ({"messages": [S, u("thinking on")]}, {"enable_thinking": True}),
        ({"messages": [u("two users"), u("in a row")]}, {}),
        ({"messages": [a("assistant first")]}, {}),
        # continue_final_message and add_generation_prompt (record fields, as vLLM's; HF's arguments)
        ({"messages": [u("Write a haiku."), a("Autumn leaves")], "continue_final_message": True}, {}),
        ({"messages": [S, u("Hi"), a("Hello! I  ")], "continue_final_message": True,
          "add_generation_prompt": False}, {}),
        ({"messages": [u("Complete: the sky is")], "continue_final_message": True}, {}),
        ({"messages": [u("q"), a("")], "continue_final_message": True}, {}),
        ({"messages": [u("q"), a("ünï 日本 🙂\n")], "continue_final_message": True}, {}),
        ({"messages": [u("q"), a("partial")]}, {"continue_final_message": True}),
        ({"messages": [u("Hello")], "add_generation_prompt": False}, {}),
        ({"messages": [S, u("Think hard.")], "reasoning_effort": "high"}, {}),
        ({"messages": [u("q"), a("x")], "continue_final_message": True, "add_generation_prompt": True}, {}),
        ({"messages": [S]}, {}),
        ({"messages": [u("a"), a("b"), u("c"), a("d"), u("e"), a("f"), u("g")]}, {}),
    ]
    # tools (OpenAI's function definitions, passed as apply_chat_template(tools=...)), a tool call and its
    # result, and documents
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city's name, e.g. Köln"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
    clock = {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                              "parameters": {"type": "object", "properties": {}}}}
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    result = {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "22 C, sunny"}
    convs += [
        ({"messages": [u("What is the weather in Paris?")], "tools": [weather]}, {}),
        ({"messages": [S, u("Weather and time?")], "tools": [weather, clock]}, {}),
        ({"messages": [u("What is the weather in Paris?"), call, result], "tools": [weather]}, {}),
        ({"messages": [S, u("Weather?"), call, result, a("It is 22 C and sunny."), u("Thanks")],
          "tools": [weather]}, {}),
        ({"messages": [u("Summarize the document.")], "documents": [{"title": "Notes", "text": "Line one."}]}, {}),
    ]
    return convs


def hf_render(tok, rec, kwargs):
    kwargs = dict(kwargs)  # the record's flags, or chat_template_kwargs' (which win, as vLLM merges them)
    cont = kwargs.pop("continue_final_message", rec.get("continue_final_message", False))
    gen = kwargs.pop("add_generation_prompt", rec.get("add_generation_prompt", not cont))
    if "reasoning_effort" in rec:  # vLLM's field, passed to the template as apply_chat_template's keyword
        kwargs.setdefault("reasoning_effort", rec["reasoning_effort"])
    try:
        return tok.apply_chat_template(rec["messages"], tools=rec.get("tools"), documents=rec.get("documents"),
                                       tokenize=False, add_generation_prompt=gen, continue_final_message=cont,
                                       **kwargs), None
    except Exception as e:  # the template raised: render must fail too
        return None, f"{type(e).__name__}: {e}"


def line_of(rec, kwargs, batch_shape, i):
    if kwargs:
        rec = dict(rec, chat_template_kwargs=kwargs)
    if batch_shape:
        return json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                           "body": dict(rec, model="m", max_tokens=8)}, ensure_ascii=False)
    return json.dumps(rec, ensure_ascii=i % 3 == 0)


def named_templates(gpt2):
    """A model's several templates as transformers 5 finds them in a folder (tokenizer_config.json's list of
    named templates; chat_template.jinja and additional_chat_templates/NAME.jinja, which win over
    tokenizer_config.json's), chosen as HF's get_chat_template chooses (a record's chat_template: a name, or
    a template's text; "tool_use" with tools; else "default"), against from_pretrained's tokenizer."""
    from transformers import AutoTokenizer
    T = {n: json.load(open(os.path.join(SRC, "tests", "chat", "templates", n + ".json")))["chat_template"]
         for n in ("llama3", "qwen2.5", "smollm2", "mistral-7b-v0.1")}
    toks = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    u = {"role": "user", "content": "Weather in Paris?"}
    weather = {"type": "function", "function": {"name": "get_weather", "description": "The weather.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    recs = [{"messages": [u]}, {"messages": [u], "tools": [weather]}, {"messages": [u], "chat_template": "tool_use"},
            {"messages": [u], "chat_template": T["mistral-7b-v0.1"]},
            {"messages": [u], "chat_template": "say {{ messages[0]['content'] }} then"},
            {"messages": [u], "tools": [weather], "chat_template": "rag"},
            {"messages": [u], "chat_template": "default"}]
    layouts = {
        "list": {"tokenizer_config.json": dict(toks, chat_template=[{"name": "default", "template": T["llama3"]},
                                                                    {"name": "tool_use", "template": T["qwen2.5"]},
                                                                    {"name": "rag", "template": T["smollm2"]}])},
        "files": {"tokenizer_config.json": dict(toks, chat_template=T["smollm2"]), "chat_template.jinja": T["llama3"],
                  "additional_chat_templates/tool_use.jinja": T["qwen2.5"],
                  "additional_chat_templates/rag.jinja": T["mistral-7b-v0.1"]},
        "no-default": {"tokenizer_config.json": dict(toks, chat_template=[
            {"name": "tool_use", "template": T["qwen2.5"]}, {"name": "rag", "template": T["smollm2"]}])},
        "one": {"tokenizer_config.json": dict(toks), "chat_template.jinja": T["llama3"]},
    }
    fails = compared = refused = 0
    for name, files in layouts.items():
        d = os.path.join(TMP, "named-" + name)
        os.makedirs(os.path.join(d, "additional_chat_templates"), exist_ok=True)
        shutil.copy(gpt2, os.path.join(d, "tokenizer.json"))
        for f, v in files.items():
            with open(os.path.join(d, f), "w", encoding="utf-8") as fh:
                fh.write(v if isinstance(v, str) else json.dumps(v))
        tok = AutoTokenizer.from_pretrained(d)
        for i, rec in enumerate(recs):
            try:
                ref = tok.apply_chat_template(rec["messages"], tools=rec.get("tools"),
                                              chat_template=rec.get("chat_template"), tokenize=False,
                                              add_generation_prompt=True)
            except Exception as e:  # noqa: BLE001 (HF's refusal: the record must be refused too)
                ref = None
                err = f"{type(e).__name__}: {e}"
            p = subprocess.run([PB, "render", "--model", d], input=(json.dumps(rec) + "\n").encode(),
                               capture_output=True)
            got = json.loads(p.stdout.decode())["prompt"] if p.returncode == 0 and p.stdout else None
            if ref is None:
                refused += 1
                if p.returncode == 0:
                    fails += 1
                    print(f"FAIL named {name} record {i}: HF raised {err!r}, render gave {got!r}")
            else:
                compared += 1
                if got != ref:
                    fails += 1
                    print(f"FAIL named {name} record {i}:\n  hf:   {ref!r}\n  ours: {got!r} "
                          f"({p.stderr.decode(errors='replace').strip()})")
    print(f"named templates: {len(layouts)} folders, {compared} prompts equal, {refused} refused as HF refuses")
    return fails


def main():
    gpt2 = os.path.join(TMP, "gpt2.json")
    with open(gpt2, "wb") as f:
        subprocess.run(["zstd", "-dc", os.path.join(SRC, "tests", "data", "tokenizers", "gpt2.json.zst")],
                       stdout=f, check=True)
    convs = conversations()
    assert len(convs) >= 40, len(convs)
    fails = 0
    compared = errors = 0
    fixtures = sorted(glob.glob(os.path.join(SRC, "tests", "chat", "templates", "*.json")))
    assert len(fixtures) >= 6
    for fx in fixtures:
        name = os.path.basename(fx)[:-5]
        cfg = json.load(open(fx, encoding="utf-8"))
        toks = {k: cfg[k] for k in TOKENS if cfg.get(k) is not None}
        tok = PreTrainedTokenizerFast(tokenizer_file=gpt2, chat_template=cfg["chat_template"], **toks)
        extra = {k: v for k, v in tok.special_tokens_map.items() if k not in toks}
        if extra:
            raise SystemExit(f"FAIL {name}: HF passes special tokens the fixture lacks: {extra}")
        tc = os.path.join(TMP, name + ".tokenizer_config.json")
        json.dump(dict(toks, chat_template=cfg["chat_template"]), open(tc, "w", encoding="utf-8"))
        good, bad = [], []
        for i, (rec, kw) in enumerate(convs):
            ref, err = hf_render(tok, rec, kw)
            (good if ref is not None else bad).append((i, rec, kw, ref, err))
        # all records HF renders, in one run, half of them as OpenAI batch lines
        data = "".join(line_of(rec, kw, i % 2 == 1, i) + "\n" for i, rec, kw, _, _ in good)
        p = subprocess.run([PB, "render", "--tokenizer-config", tc], input=data.encode(), capture_output=True)
        if p.returncode != 0:
            print(f"FAIL {name}: render exit {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
            fails += 1
            continue
        outs = [json.loads(l)["prompt"] for l in p.stdout.decode().splitlines()]
        if len(outs) != len(good):
            print(f"FAIL {name}: {len(outs)} prompts for {len(good)} records")
            fails += 1
            continue
        for (i, rec, kw, ref, _), got in zip(good, outs):
            compared += 1
            if got != ref:
                fails += 1
                print(f"FAIL {name} conversation {i}:\n  hf:   {ref!r}\n  ours: {got!r}")
        # records HF refuses: render stops on them with the template's message
        for i, rec, kw, _, err in bad:
            errors += 1
            p = subprocess.run([PB, "render", "--tokenizer-config", tc], input=(line_of(rec, kw, False, i) + "\n").encode(),
                               capture_output=True)
            msg = p.stderr.decode(errors="replace")
            hf_msg = err.split(": ", 1)[1]
            if p.returncode == 0 or "stdin line 1" not in msg or (
                    "TemplateError" in err and hf_msg not in msg):
                fails += 1
                print(f"FAIL {name} conversation {i}: HF raised {err!r}; render exit {p.returncode}: {msg.strip()!r}")
        print(f"ok   {name}: {len(good)} prompts equal, {len(bad)} refused as HF refuses")
    print(f"{len(fixtures)} templates, {len(convs)} conversations: {compared} prompts compared, {errors} refusals")
    fails += named_templates(gpt2)
    if fails:
        raise SystemExit(f"FAIL: {fails} mismatches")


main()

#!/usr/bin/env python3
"""Constrained decoding on the real SmolLM2-135M-Instruct against HF
transformers 5.x: chat records with guided_json (an extraction schema),
guided_choice (sentiment labels), guided_regex (a year) and GBNF grammars
(guided_grammar, structured_outputs.grammar: a left-recursive arithmetic
grammar, vLLM's SQL example, a list), greedy, answered
as HF's f32 model answers under the same constraint: at each step the
likeliest token whose bytes keep a whole match possible (the third-party
`regex` module's partial matches on the text's bytes), <|im_end|> only where
the text is a whole match, the answer ending where no token leads on. Texts
compared token by token up to the first near-tie among the allowed tokens
(margin < smol.TIE). For the grammars the allowed tokens are xgrammar's
(vLLM's grammar engine: its token bitmask, its stop token where the text is
whole). The JSON answers validate against their schemas
(jsonschema); JSON mode (response_format json_object) gives an object; 1 and
2 ranks give the same bytes."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tok"))
import smol  # noqa: E402
from bytelevel import byte_table  # noqa: E402

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "city": {"type": "string", "maxLength": 24}}, "required": ["name", "age", "city"]}
CASES = [
    ("Extract the person from this text as JSON with name, age and city: "
     "\"Maria Lopez is 34 years old and lives in Lisbon.\"", {"guided_json": PERSON}),
    ("Extract the person as JSON: \"Our new neighbour, Tom Baker (61), moved here from Leeds.\"",
     {"guided_json": PERSON}),
    ("Is the sentiment of this review positive, negative or neutral? \"I loved every minute of this film.\"",
     {"guided_choice": ["positive", "negative", "neutral"]}),
    ("Is the sentiment of this review positive, negative or neutral? \"The food was cold and the waiter rude.\"",
     {"guided_choice": ["positive", "negative", "neutral"]}),
    ("In which year did the Second World War end? Answer with the year.", {"guided_regex": "[12][0-9]{3}"}),
    ("Give the date of the first Moon landing as YYYY-MM-DD.",
     {"guided_regex": "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"}),
]
ARITH = """root ::= expr
expr ::= expr ("+" | "-") term | term
term ::= term ("*" | "/") factor | factor
factor ::= [0-9]+ | "(" expr ")"
"""
SQL = """root ::= select_statement
select_statement ::= "SELECT " column " from " table " where " condition
column ::= "col_1 " | "col_2 "
table ::= "table_1 " | "table_2 "
condition ::= column "= " number
number ::= "1 " | "2 "
"""
LIST = r"""root ::= "- " item ("\n- " item){2}
item ::= [A-Z] [a-z ]{1,20}
"""
CASES += [
    ("Write an arithmetic expression with three numbers whose value is 12, like (2+2)*3.", {"guided_grammar": ARITH}),
    ("Write a SQL query that selects col_1 from table_2 where col_2 is 1.", {"structured_outputs": {"grammar": SQL}}),
    ("List three fruits.", {"guided_grammar": LIST}),
]
N_NEW = 48


def main():
    import jsonschema
    import numpy as np
    import regex
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = smol.model_dir()
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    tool = os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "schema_tool")
    work = os.path.join(smol.tmpdir(), "real-guided")
    os.makedirs(work, exist_ok=True)
    failures = 0

    def check(cond, what):
        nonlocal failures
        if not cond:
            failures += 1
            print("FAIL:", what)

    def pattern(c):
        if "guided_regex" in c:
            return c["guided_regex"]
        if "guided_choice" in c:
            return "(" + "|".join(regex.escape(x) for x in c["guided_choice"]) + ")"
        p = subprocess.run([tool], input=json.dumps({"schema": c["guided_json"]}).encode(), capture_output=True)
        check(p.returncode == 0, f"schema_tool: {p.stdout!r}")
        return p.stdout.decode().rstrip("\n")

    recs = [dict(c, messages=[{"role": "user", "content": q}], id=f"q{i}", max_tokens=N_NEW)
            for i, (q, c) in enumerate(CASES)]
    recs.append({"messages": [{"role": "user", "content": "Describe a cat as a JSON object."}], "id": "jo",
                 "max_tokens": 64, "response_format": {"type": "json_object"}})
    inp = os.path.join(work, "in.jsonl")
    with open(inp, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    outs = []
    for n, p in zip((1, 2), smol.run_ranks(pb, lambda n: ["-q", "--model", d, "--in", inp, "--out",
                                                            os.path.join(work, f"out-{n}.jsonl"), "--force",
                                                            "--threads", "1"])):
        out = os.path.join(work, f"out-{n}.jsonl")
        check(p.returncode == 0, f"mpirun -np {n}: exit {p.returncode}: {p.stderr.decode()[-2000:]}")
        outs.append(open(out, "rb").read() if os.path.exists(out) else b"")
    check(outs[0] == outs[1], "1 and 2 ranks differ")
    got = {r["id"]: r for r in map(json.loads, outs[0].decode().splitlines())}

    torch.set_num_threads(2)
    cache = "cache" if "cache" in transformers.modeling_outputs.CausalLMOutputWithPast.__dataclass_fields__ \
        else "past_key_values"
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    table = byte_table()
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    vb = [b"" if i in special else bytes(table[ch] for ch in tok.convert_ids_to_tokens(i))
          for i in range(len(tok))]
    eos = m.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])

    import xgrammar as xgr
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=m.config.vocab_size)
    xcomp = xgr.GrammarCompiler(info)
    has_bytes = np.zeros((info.vocab_size + 31) // 32, dtype=np.uint32)
    for t in range(len(vb)):
        if vb[t]:
            has_bytes[t >> 5] |= np.uint32(1 << (t & 31))
    for i, (q, c) in enumerate(CASES):
        gram = c.get("guided_grammar") or c.get("structured_outputs", {}).get("grammar")
        if gram:
            matcher = xgr.GrammarMatcher(xcomp.compile_grammar(gram))
            bm = xgr.allocate_token_bitmask(1, info.vocab_size)

            def xallowed():
                matcher.fill_next_token_bitmask(bm)
                return bm[0].numpy().view("uint32")

            def bit(row, t):
                return bool(row[t >> 5] >> (t & 31) & 1)
        else:
            pat = regex.compile(pattern(c))

        def viable(b):
            try:
                return pat.fullmatch(b.decode("utf-8"), partial=True) is not None
            except UnicodeDecodeError as e:  # a piece of a character: ASCII patterns want none
                return False if e.reason != "unexpected end of data" else \
                    pat.fullmatch(b[:e.start].decode("utf-8") + "\u00e9", partial=True) is not None

        def whole(b):
            try:
                return pat.fullmatch(b.decode("utf-8")) is not None
            except UnicodeDecodeError:
                return False

        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False).input_ids
        gen, out, tie_at, finish = [], b"", None, "length"
        past, nxt = None, torch.tensor([ids])
        for k in range(N_NEW):
            with torch.no_grad():
                o = m(nxt, use_cache=True, **{cache: past})
            past = getattr(o, cache)
            lg = o.logits[0, -1]
            allowed = []
            row = xallowed() if gram else None
            for t in torch.argsort(lg, descending=True, stable=True).tolist():
                if gram and t < len(vb) and ((t in eos and bit(row, t)) or (vb[t] and bit(row, t))):
                    allowed.append(t)
                    if len(allowed) == 2:
                        break
                elif not gram and ((t in eos and whole(out)) or (vb[t] and viable(out + vb[t]))):
                    allowed.append(t)
                    if len(allowed) == 2:
                        break
            if len(allowed) == 2 and tie_at is None and float(lg[allowed[0]] - lg[allowed[1]]) < smol.TIE:
                tie_at = k
            t = allowed[0]
            if t in eos:
                finish = "stop"
                break
            gen.append(t)
            out += vb[t]
            if gram:
                check(matcher.accept_token(t), f"case {i}: xgrammar refuses its own token {t}")
                row = xallowed()
                if not (row & has_bytes).any():
                    finish = "stop"  # no token leads on: the match is whole (or stuck)
                    break
                nxt = torch.tensor([[t]])
                continue
            if len(allowed) == 1 and whole(out) and not any(vb[u] and viable(out + vb[u]) for u in range(len(vb))):
                finish = "stop"  # no token leads on: the match is whole
                break
            nxt = torch.tensor([[t]])
        r = got.get(f"q{i}", {})
        want = out.decode("utf-8", "replace")
        if tie_at is None:
            check((r.get("text"), r.get("finish_reason")) == (want, finish),
                  f"case {i}: {r.get('text')!r} ({r.get('finish_reason')}) vs HF {want!r} ({finish})")
        else:
            pre = tok.decode(gen[:tie_at])
            check(r.get("text", "").startswith(pre), f"case {i}: {r.get('text')!r} vs HF {want!r} up to the near-tie "
                  f"at token {tie_at}")
        if r.get("finish_reason") == "stop" and "guided_json" in c:
            try:
                jsonschema.validate(json.loads(r["text"]), c["guided_json"])
            except Exception as e:  # noqa: BLE001
                check(False, f"case {i}: {r['text']!r}: {e}")
        print(f"case {i}: {r.get('text')!r} ({r.get('finish_reason')}), HF {want!r}"
              + (f", near-tie at {tie_at}" if tie_at is not None else ""))
    jo = got.get("jo", {})
    print("json_object:", repr(jo.get("text")), jo.get("finish_reason"))
    if jo.get("finish_reason") == "stop":
        check(isinstance(json.loads(jo["text"]), dict), f"json_object: {jo.get('text')!r}")
    else:
        check(jo.get("text", "").lstrip().startswith("{"), f"json_object: {jo}")
    if failures:
        print(f"{failures} failures")
        sys.exit(1)
    print("ok")


main()

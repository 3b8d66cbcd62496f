"""Constrained decoding (guided_regex / guided_choice / guided_json /
guided_grammar / response_format / structured_outputs) end to end on a tiny GPT-2 with the
real GPT-2 tokenizer, against an independent reference: HF transformers'
logits with the constraint applied by the third-party `regex` module
(partial full matches on the text's bytes), greedy: the likeliest token
whose bytes keep a match possible, EOS only where the text is a whole match,
and the completion ends where no token leads on. The same bytes at batch
sizes and chunks; sampled completions match their patterns and validate
against their schemas (jsonschema), sampled GBNF and Lark grammars' answers
parse (the lark package); n = 2, logprobs, the OpenAI shape; bad
constraints are error records naming the field."""
import json
import os
import subprocess
import sys

import jsonschema
import regex
import torch
import transformers

sys.path.insert(0, os.path.join(os.environ["PB_SRCDIR"], "tests", "tok"))
from bytelevel import byte_table  # noqa: E402

PB = os.environ["PIPPY_BATCH"]
TMP = os.environ["PB_TEST_TMP"]
TESTDATA = os.environ["PB_TESTDATA"]
SCHEMA_TOOL = os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "schema_tool")
EOS = 50256
# a finite language as GBNF, and the same as Lark for the lark package to parse the answers
SUM_GBNF = 'root ::= "(" [0-9] (" + " [0-9]){0,3} ")" "."?'
SUM_LARK = 'start: "(" DIGIT (" + " DIGIT)~0..3 ")" ["."]\n%import common.DIGIT\n'
CALL_LARK = r'''start: NAME "(" [arg ("," arg)~0..2] ")"
arg: /[0-9]{1,3}/ | "x" | "y"
NAME: "f" | "g" | "sum"
%ignore " "
'''
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


def run(args, inp, rc_ok=(0,)):
    p = subprocess.run([PB, "-q"] + args, input=inp.encode(), capture_output=True)
    if p.returncode not in rc_ok:
        print("pippy-batch", args, "exit", p.returncode, p.stderr.decode())
    check(p.returncode in rc_ok, f"exit code {p.returncode} for {args}")
    return p


def lines(out):
    return [json.loads(l) for l in out.decode().splitlines()]


def schema_regex(schema):
    p = subprocess.run([SCHEMA_TOOL], input=json.dumps({"schema": schema}).encode(), capture_output=True)
    if p.returncode:
        sys.exit(f"schema_tool: {p.stdout.decode()} {p.stderr.decode()}")
    return p.stdout.decode().rstrip("\n")


_chars = {}


def chars_from(tail):
    """Every character whose UTF-8 begins with the bytes tail (an incomplete character)."""
    if tail not in _chars:
        need = {0xC: 2, 0xD: 2, 0xE: 3, 0xF: 4}.get(tail[0] >> 4, 0)
        lo, hi = {2: (0x80, 0x800), 3: (0x800, 0x10000), 4: (0x10000, 0x110000)}.get(need, (0, 0))
        _chars[tail] = [chr(c) for c in range(lo, hi) if not 0xD800 <= c < 0xE000
                        and chr(c).encode("utf-8").startswith(tail)]
    return _chars[tail]


class Ref:
    """The constraint on a text's bytes, by the `regex` module."""

    def __init__(self, pattern):
        self.p = regex.compile(pattern, regex.ASCII)
        self.lits = {ch for ch in pattern if ord(ch) >= 0x80}

    def texts(self, b):
        """b as the texts to match: itself when valid UTF-8; with an incomplete last character, b with the
        characters that can complete it (the patterns here treat the non-ASCII characters they do not name
        alike); none when b is not valid UTF-8 as far as it goes."""
        try:
            return [b.decode("utf-8")]
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data":
                return []
            head = b[:e.start].decode("utf-8")
            chars = chars_from(bytes(b[e.start:]))
            if len(chars) > 64:  # the pattern's own non-ASCII characters and a spread of the others
                chars = [ch for ch in chars if ch in self.lits] + chars[::max(1, len(chars) // 64)]
            return [head + ch for ch in chars]

    def viable(self, b):
        return any(self.p.fullmatch(t, partial=True) is not None for t in self.texts(b))

    def whole(self, b):
        try:
            return self.p.fullmatch(b.decode("utf-8")) is not None
        except UnicodeDecodeError:
            return False


def ref_greedy(model, ids, pattern, max_new, vb):
    """(text, completion_tokens, finish_reason) of constrained greedy decoding."""
    c = Ref(pattern)
    text, gen = b"", []
    for _ in range(max_new):
        with torch.no_grad():
            logits = model(torch.tensor([ids + gen])).logits[0, -1]
        order = torch.argsort(logits, descending=True, stable=True).tolist()
        pick = None
        for t in order:
            if t == EOS:
                if c.whole(text):
                    pick = t
                    break
                continue
            if vb[t] and c.viable(text + vb[t]):
                pick = t
                break
        if pick is None or pick == EOS:
            return text.decode("utf-8", "replace"), len(gen) + (pick == EOS), "stop"
        gen.append(pick)
        text += vb[pick]
        if c.whole(text) and not any(vb[t] and c.viable(text + vb[t]) for t in range(len(vb)) if t != EOS):
            return text.decode("utf-8", "replace"), len(gen), "stop"  # no token leads on: the match is whole
    return text.decode("utf-8", "replace"), len(gen), "length"


def main():
    model_dir = os.path.join(TMP, "gpt2-guided")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50257, n_positions=256)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.save_pretrained(model_dir)
    model.eval()
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(model_dir, "tokenizer.json"),
                    os.path.join(TESTDATA, "tokenizers", "gpt2.json.zst")], check=True)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    table = byte_table()
    vb = [bytes(table[ch] for ch in tok.convert_ids_to_tokens(i)) for i in range(50256)] + [b""]

    person = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"enum": ["Paris", "Tokyo", "Lima"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2}},
        "required": ["name", "age"]}
    cases = [  # (record, pattern for the reference)
        ({"prompt": "Phone:", "guided_regex": r"\(\d{3}\) \d{3}-\d{4}"}, r"\(\d{3}\) \d{3}-\d{4}"),
        ({"prompt": "The answer is", "guided_choice": ["yes", "no", "maybe", "yes, surely"]},
         r"(yes|no|maybe|yes, surely)"),
        ({"prompt": "Date:", "guided_regex": "20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"},
         "20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"),
        ({"prompt": "Hex", "guided_regex": "0x[0-9a-f]+"}, "0x[0-9a-f]+"),
        ({"prompt": "A person:", "guided_json": person}, schema_regex(person)),
        ({"prompt": "Name:", "structured_outputs": {"regex": "[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8})?"}},
         "[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8})?"),
        ({"prompt": "Unicode", "guided_regex": "\u00ab[^\u00bb\\n]{0,6}\u00bb"}, "\u00ab[^\u00bb\\n]{0,6}\u00bb"),
    ]
    max_new = 40
    recs = []
    for i, (r, _) in enumerate(cases):
        recs.append(dict(r, id=f"g{i}", max_tokens=max_new))
    inp = "".join(json.dumps(r) + "\n" for r in recs)
    base = None
    for b, c in [(1, 1), (8, 2), (3, 3)]:
        out = run(["--model", model_dir, "--batch-size", str(b), "--chunks", str(c)], inp).stdout
        if base is None:
            base = out
        check(out == base, f"guided output differs at -b {b} -c {c}")
    got = {r["id"]: r for r in lines(base)}
    for i, (r, pattern) in enumerate(cases):
        ids = tok(r["prompt"]).input_ids
        text, n, finish = ref_greedy(model, ids, pattern, max_new, vb)
        o = got.get(f"g{i}", {})
        check((o.get("text"), o.get("completion_tokens"), o.get("finish_reason")) == (text, n, finish),
              f"case {i}: {(o.get('text'), o.get('completion_tokens'), o.get('finish_reason'))} vs reference "
              f"{(text, n, finish)}")
        if finish == "stop":
            check(regex.fullmatch(pattern, o.get("text", ""), regex.ASCII) is not None, f"case {i}: whole match")
    print("greedy:", [(got[f"g{i}"]["text"], got[f"g{i}"]["finish_reason"]) for i in range(len(cases))])

    # sampled (seeded) completions: each matches, each JSON validates; reproducible across batch sizes
    samp = []
    for k in range(6):
        samp.append({"prompt": f"Record {k}:", "id": f"s{k}", "guided_json": person, "temperature": 1.0,
                     "seed": 100 + k, "max_tokens": 120})
        samp.append({"prompt": f"Pick {k}:", "id": f"c{k}", "guided_choice": ["red", "green", "blue"],
                     "temperature": 1.5, "seed": k})
    samp.append({"prompt": "Two:", "id": "n2", "n": 2, "guided_regex": "[a-z]{3}", "temperature": 1.0,
                 "logprobs": 2, "seed": 7})
    samp.append({"prompt": "Obj:", "id": "jo", "response_format": {"type": "json_object"}, "max_tokens": 60})
    # grammars, GBNF and Lark: finite languages, so each sampled completion ends whole ("stop")
    for k in range(4):
        samp.append({"prompt": f"Sum {k}:", "id": f"gb{k}", "guided_grammar": SUM_GBNF, "temperature": 1.0,
                     "seed": 200 + k, "max_tokens": 40})
        samp.append({"prompt": f"Call {k}:", "id": f"lk{k}", "structured_outputs": {"grammar": CALL_LARK},
                     "temperature": 1.0, "seed": 300 + k, "max_tokens": 40})
    sinp = "".join(json.dumps(r) + "\n" for r in samp)
    a = run(["--model", model_dir, "--batch-size", "16", "--chunks", "2"], sinp).stdout
    b = run(["--model", model_dir, "--batch-size", "3"], sinp).stdout
    check(a == b, "sampled guided output differs between -b 16 -c 2 and -b 3")
    out = {r["id"]: r for r in lines(a)}
    pat = schema_regex(person)
    for k in range(6):
        s = out[f"s{k}"]
        if s["finish_reason"] == "stop":
            try:
                jsonschema.validate(json.loads(s["text"]), person)
            except Exception as e:  # noqa: BLE001
                check(False, f"sampled JSON {s['text']!r}: {e}")
        else:
            check(regex.fullmatch(pat, s["text"], regex.ASCII, partial=True) is not None,
                  f"sampled JSON cut by max_tokens is a prefix: {s['text']!r}")
        check(out[f"c{k}"]["text"] in ("red", "green", "blue") and out[f"c{k}"]["finish_reason"] == "stop",
              f"choice: {out[f'c{k}']}")
    n2 = out["n2"]["choices"]
    check(len(n2) == 2 and all(regex.fullmatch("[a-z]{3}", c["text"]) and c["finish_reason"] == "stop" for c in n2),
          f"n = 2: {n2}")
    for c in n2:
        check(len(c["logprobs"]) == c["completion_tokens"] and
              all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in c["logprobs"]), f"n = 2 logprobs: {c}")
    jo = out["jo"]
    if jo["finish_reason"] == "stop":
        check(isinstance(json.loads(jo["text"]), dict), f"json_object: {jo['text']!r}")
    else:
        check(jo["text"].startswith("{"), f"json_object: {jo['text']!r}")
    import lark
    sum_ref = lark.Lark(SUM_LARK, parser="earley", lexer="dynamic_complete")
    call_ref = lark.Lark(CALL_LARK, parser="earley", lexer="dynamic_complete")
    for k in range(4):
        for key, ref in ((f"gb{k}", sum_ref), (f"lk{k}", call_ref)):
            o = out[key]
            try:
                ref.parse(o["text"])
                whole = True
            except lark.exceptions.LarkError:
                whole = False
            check(o["finish_reason"] == "stop" and whole, f"sampled grammar {key}: {o}")
    print("sampled:", [out[f"s{k}"]["text"] for k in range(2)], [out[f"c{k}"]["text"] for k in range(6)],
          [out[f"gb{k}"]["text"] for k in range(4)], [out[f"lk{k}"]["text"] for k in range(4)])

    # the OpenAI batch shape: response_format json_schema in a completions body
    body = {"model": "m", "prompt": "A person:", "max_tokens": max_new,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": person, "strict": True}}}
    line = json.dumps({"custom_id": "oa", "method": "POST", "url": "/v1/completions", "body": body})
    o = lines(run(["--model", model_dir], line + "\n").stdout)[0]
    check(o["response"]["body"]["choices"][0]["text"] == got["g4"]["text"],
          f"OpenAI shape: {o['response']['body']['choices'][0]['text']!r} vs {got['g4']['text']!r}")

    # bad constraints: error records naming the field; the run goes on
    bad = [({"guided_regex": "a(b"}, "field 'guided_regex': at offset"),
           ({"guided_regex": "(a)\\1"}, "field 'guided_regex'"),
           ({"guided_json": {"type": "number", "multipleOf": 3}}, "keyword 'multipleOf' is not supported"),
           ({"guided_json": "{not json"}, "field 'guided_json': the schema is not valid JSON"),
           ({"guided_regex": "a", "guided_choice": ["b"]}, "both constrain the output"),
           ({"guided_choice": ["a"], "allowed_token_ids": [1, 2]}, "cannot be combined"),
           ({"guided_choice": []}, "field 'guided_choice' must be a list of non-empty strings"),
           ({"guided_regex": "[^\\x00-\\U0010FFFF]"}, "the pattern matches no text"),
           ({"guided_grammar": "root ::= a"}, "field 'guided_grammar': grammar line 1, column 10: rule 'a' is not "
            "defined"),
           ({"guided_grammar": "start: /a*/"}, "field 'guided_grammar': grammar line 1, column 8: the regex matches "
            "the empty string"),
           ({"response_format": {"type": "xml"}}, "type 'xml' is not one of"),
           ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag' is not supported"),
           ({"structured_outputs": {"grammar": "root ::= [b-a]"}}, "field 'structured_outputs.grammar': grammar "
            "line 1, column 12: the range's end"),
           ({"structured_outputs": {"json": {}, "regex": "a"}}, "both constrain the output")]
    binp = "".join(json.dumps(dict(r, prompt="x", id=f"e{i}")) + "\n" for i, (r, _) in enumerate(bad))
    binp += json.dumps({"prompt": "ok", "id": "ok", "guided_choice": ["fine"]}) + "\n"
    p = run(["--model", model_dir], binp, rc_ok=(3,))
    out = {r["id"]: r for r in lines(p.stdout)}
    for i, (_, want) in enumerate(bad):
        msg = out.get(f"e{i}", {}).get("error", {}).get("message", "")
        check(want in msg, f"bad constraint {i}: {msg!r} lacks {want!r}")
    check(out.get("ok", {}).get("text") == "fine", f"a good record beside them: {out.get('ok')}")

    if failures:
        print(f"{failures} failures")
        sys.exit(1)
    print("ok")


main()

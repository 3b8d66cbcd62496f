#!/usr/bin/env python3
"""GBNF grammars (src/gen/grammar.c, through tests/gen/grammar_tool) against xgrammar, the grammar engine
vLLM uses for guided_grammar:
- membership: for each grammar and many candidate strings (examples, all their prefixes, mutations, random
  strings over the grammar's alphabet), xgrammar's matcher says whether the string can still be completed
  (accept_string) and whether it is whole (the stop token accepted after it); ours must say the same;
- token masks: along random walks over SmolLM2's real vocabulary (tokenizer.json, byte-level BPE, tokens that
  end inside a UTF-8 character included), the ids allowed at each step must equal xgrammar's bitmask on
  every id that is not a special token, and EOS must be allowed exactly where xgrammar allows its stop token;
- bad grammars: each refused by both, ours naming the line and column;
- JSON mode's grammar: the same masks as the any-object regex it replaced, objects nested past its 5 levels;
- Lark grammars (vLLM converts them; we read them): whole matches equal to the lark package's Earley parse with
  lexer='dynamic_complete', and Lark's own errors refused by line and column.
Grammars that only pippy-batch reads (llama.cpp's `.`) are checked against expected answers."""
import os
import random
import subprocess
import sys
import json

import numpy as np

try:
    import xgrammar as xgr
except ImportError:
    sys.exit("FAIL: xgrammar is not installed in " + sys.executable)

TOOL = os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "grammar_tool")
SRCDIR = os.environ.get("PB_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

ARITH = r'''root ::= expr
expr ::= expr ("+" | "-") term | term   # left recursion, rewritten
term ::= term ("*" | "/") factor | factor
factor ::= [0-9]+ | "(" expr ")" | "-" factor
'''
JSON = r'''root ::= ws value ws
value ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws ::= [ \t\n]{0,4}
'''
SQL = r'''root ::= select_statement
select_statement ::= "SELECT " column " from " table " where " condition
column ::= "col_1 " | "col_2 "
table ::= "table_1 " | "table_2 "
condition ::= column "= " number
number ::= "1 " | "2 "
'''
CSV = r'''root ::= header ("\n" row){1,3} "\n"?
header ::= "name,age,city"
row ::= name "," age "," city
name ::= [A-Z] [a-z]{1,8} (" " [A-Z] [a-z]{1,8})?
age ::= [1-9] [0-9]? | "100"
city ::= [A-Za-zÀ-ÿ]+
'''
NEST = r'''root ::= item
item ::= "(" list ")" | atom
list ::= item (" " item)* | ""
atom ::= [a-z]+ | "'" [^'\n]* "'"
'''
UNI = r'''root ::= greeting "!"? ("\n" line)*
greeting ::= ("héllo" | "日本" [語人]? | "\u00e9t\u00E9" | "😀"+) [ \t]*
line ::= [^\n!]{1,6}
'''
OPT = r'''root ::= a? b* c+ d{2} e{1,} f{0,2} g{0,1} "end"
a ::= "a"
b ::= "b" | ""
c ::= "c" | "C"
d ::= "d"
e ::= "e"
f ::= "f"
g ::= "g"
'''
TAIL = r'''root ::= ("x" | "y")? more
more ::= opt more | "z"
opt ::= "q"?
'''
GRAMMARS = [
    ("arith", ARITH, ["1+2", "(1+2)*3", "12/(3-4)", "-(1)", "1+", "((1)", "1++2", "", "a", "(((((((9)))))))",
                      "1*2*3-4/5+6", "9-", "-", "--1"]),
    ("json", JSON, ['{"a": 1}', '[1, 2.5e-3, "x\\u00e9", true, null, {"k": []}]', '"abc', '{"a" 1}', ' 0 ',
                    '{"a": {"b": {"c": [false]}}}', '-0.0E+12', '01', '"\\q"', '[', '{}', '{"x": "\u00e9\U0001F600"}']),
    ("sql", SQL, ["SELECT col_1  from table_2  where col_2 = 1 ", "SELECT col_3", "SELECT ", ""]),
    ("csv", CSV, ["name,age,city\nAnna,34,Lisbon", "name,age,city\nAnna Lee,100,Zürich\nBo,9,X\n", "name,age",
                  "name,age,city\n", "name,age,city\nanna,3,X", "name,age,city\nAnna,101,X"]),
    ("nest", NEST, ["(a (b c) 'd e')", "()", "(()", "abc", "'x'", "(a  b)", "((((a))))", "'a\nb'"]),
    ("uni", UNI, ["héllo!", "日本語 \nabc", "été", "😀😀😀\t!", "hello", "日本人!\n!", "日本\nabcdefg"]),
    ("opt", OPT, ["ccddeend", "abbcCddeeffgend", "cddeend", "ddeend", "cddend", "cddeefffend"]),
    ("tail", TAIL, ["z", "qqz", "xz", "yqz", "xyz", "q"]),
]
BAD = [
    'root ::= foo\n',                    # undefined
    'root ::= "a"\nroot ::= "b"\n',      # twice
    'start ::= "a"\n',                   # no root
    'root ::= "abc\n',                   # unterminated
    'root ::= "\\q"\n',                  # bad escape
    'root ::= [a\n',                     # class not closed
    'root ::= "a"{3,2}\n',               # bound below minimum
    'root ::= ("a" | "b"\n',             # group not closed
    'root ::= "a" )\n',                  # stray
]
# Lark grammars (vLLM takes them too), against the lark package's Earley parser with lexer='dynamic_complete'
# (terminals matched at every length they can take, as ours are: no lexer's longest match)
LARK_JSON = r'''
?start: value
?value: object
      | array
      | string
      | SIGNED_NUMBER      -> number
      | "true"             -> true
      | "false"            -> false
      | "null"             -> null
array  : "[" [value ("," value)*] "]"
object : "{" [pair ("," pair)*] "}"
pair   : string ":" value
string : ESCAPED_STRING
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
'''
LARK_CALC = r'''// a calculator, left-recursive
start: sum
?sum: product | sum "+" product | sum "-" product
?product: atom | product "*" atom | product "/" atom
?atom: NUMBER | "-" atom | "(" sum ")" | NAME
NAME: /[a-z_][a-z_0-9]*/
%import common.NUMBER
%import common.WS_INLINE
%ignore WS_INLINE
'''
LARK_MISC = r'''start: greeting " " NAME ("," NAME) ~ 1..2 [EXCL]
greeting: "hello" | "hi" | "h".."j"
NAME: /[a-z]+/ | UPPER_NAME
UPPER_NAME.2: ("A".."Z")+
EXCL: "!"~2
%import common (DIGIT, LETTER)
'''
LARKS = [
    ("lark-json", LARK_JSON, ['{"a": 1}', ' [1, 2 ,3 ] ', '{"a" : [true,false,null, -1.5e3]}', '[] []', '"x\\"y"',
                              '[1 2]', '  {}  ', '{"k": {"n": [{}, []]}}', '[-0.5, 1e9, "\u00e9"]']),
    ("lark-calc", LARK_CALC, ["1+2*3", "x * (y - 2)", "--1", "a+", " 1 ", "(1))", "foo_1/2.5", "1 2", "2e3*x"]),
    ("lark-misc", LARK_MISC, ["hello bob", "hi al,bo", "hi al,BO!!", "i x", "hello AB,cd,EF", "hi x!",
                              "j A,B,C!!", "hixy"]),
]
BAD_LARK = [
    ('start: "a"i\n', "case-insensitive"), ('start: /a+/i\n', "regex flags"), ('start: /a*/\n', "empty string"),
    ('start: x\n%import common.FOO\n', "not one of Lark's common terminals"), ('%declare X\nstart: "a"\n', "%declare"),
    ('start: "a"{2,1}\n', "below its minimum"), ('start: "a" ~ 3..2\n', "below its minimum"), ('start: foo\n', "not defined"),
    ('start: /a(/\n', "the regex:"), ('start: "a"\nstart: "b"\n', "defined twice"),
]
# only pippy-batch's (xgrammar has no `.`): (grammar, {candidate: expected M/P/N})
OWN = [
    ('root ::= . . "!"', {"ab!": "M", "\n\t!": "M", "é😀!": "M", "a": "P", "ab": "P", "abc": "N", "!!!": "M"}),
    ('root ::= "x"{,2} "y"', {"y": "M", "xy": "M", "xxy": "M", "xxxy": "N"}),
    ('root ::= [\\ud800]', None), ('root ::= "\\U00110000"', None), ('root ::= "a" <[12]>', None),
    ('root ::= "a" (= "b")', None), ('root ::= b\nb ::= c "y" | "x"\nc ::= b "z"', None),
    ('root ::= [^a]+', {"b\nc": "M", "a": "N", "": "P", "é": "M"}),
    ('r-1 ::= "x"\nroot ::= r-1 | r_2\nr_2 ::= "y" r-1*', {"x": "M", "yxx": "M", "xy": "N"}),
]


def hexs(b):
    return b.hex()


class Tool:
    def __init__(self):
        self.p = subprocess.Popen([TOOL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        if not out:
            sys.exit("FAIL: grammar_tool died on: " + line[:200])
        return out.rstrip("\n")

    def close(self):
        self.p.stdin.close()
        if self.p.wait() != 0:
            sys.exit("FAIL: grammar_tool exit status %d" % self.p.returncode)


def mutations(s, rng, alphabet):
    out = []
    for _ in range(6):
        if not s:
            break
        i = rng.randrange(len(s))
        k = rng.randrange(3)
        c = rng.choice(alphabet)
        out.append(s[:i] + c + s[i + 1:] if k == 0 else s[:i] + s[i + 1:] if k == 1 else s[:i] + c + s[i:])
    return out


def candidates(examples, rng, n_random):
    """The examples, all their prefixes, mutations, and random strings over their characters."""
    alphabet = sorted(set("".join(examples))) or ["a"]
    cands = set()
    for e in examples:
        for i in range(len(e) + 1):
            cands.add(e[:i])
        cands.update(mutations(e, rng, alphabet))
    for _ in range(n_random):
        cands.add("".join(rng.choice(alphabet) for _ in range(rng.randrange(8))))
    return cands


def main():
    from transformers import AutoTokenizer
    model = os.path.join(SRCDIR, "models", "SmolLM2-135M-Instruct")
    tok_path = os.path.join(model, "tokenizer.json")
    if not os.path.exists(tok_path):
        sys.exit("FAIL: %s is missing (contrib/pb-get-smollm2 makes it)" % tok_path)
    hf = AutoTokenizer.from_pretrained(model)
    info = xgr.TokenizerInfo.from_huggingface(hf)
    vocab = info.vocab_size
    eos = info.stop_token_ids[0]
    tj = json.load(open(tok_path, encoding="utf-8"))
    special = {t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
    compiler = xgr.GrammarCompiler(info)
    comparable = np.zeros((vocab + 31) // 32, dtype=np.uint32)
    for i in range(vocab):
        if i not in special and i != eos:
            comparable[i >> 5] |= np.uint32(1 << (i & 31))
    short = [len(t) <= 2 for t in hf.convert_ids_to_tokens(list(range(vocab)))]
    rng = random.Random(1234)
    tool = Tool()
    assert tool.ask("t %s %d %d" % (tok_path, vocab, eos)) == "ok"
    failures = 0
    checked = masks = 0
    for name, g, examples in GRAMMARS:
        r = tool.ask("g " + hexs(g.encode()))
        if not r.startswith("ok"):
            print("FAIL %s: ours refuses it: %s" % (name, r))
            failures += 1
            continue
        cg = compiler.compile_grammar(g)
        cands = candidates(examples, rng, 150)
        for c in sorted(cands):
            m = xgr.GrammarMatcher(cg)
            ok = m.accept_string(c)
            want = "N" if not ok else ("M" if m.accept_token(eos) else "P")
            got = tool.ask("c " + hexs(c.encode()))
            checked += 1
            if got != want:
                print("FAIL %s: %r: ours %s, xgrammar %s" % (name, c, got, want))
                failures += 1
        # token masks along random walks
        for walk in range(6):
            m = xgr.GrammarMatcher(cg)
            bm = xgr.allocate_token_bitmask(1, vocab)
            ids = []
            for step in range(40):
                got = tool.ask("m " + " ".join(map(str, ids)))
                if not got.startswith("mask"):
                    print("FAIL %s walk %d: %s after %s" % (name, walk, got, ids))
                    failures += 1
                    break
                f = got.split()
                acc, n = int(f[1]), int(f[2])
                ours = np.array([int(w, 16) for w in f[3:]], dtype=np.uint32)
                m.fill_next_token_bitmask(bm)
                row = bm[0].numpy().view(np.uint32)
                x_eos = bool(row[eos >> 5] >> (eos & 31) & 1)
                masks += 1
                ours_ids = np.flatnonzero(np.unpackbits(ours.view(np.uint8), bitorder="little")[:vocab])
                if (ours & ~comparable).any() or not np.array_equal(ours, row & comparable) or \
                        bool(acc) != x_eos or n != len(ours_ids):
                    bits = np.unpackbits((row & comparable).view(np.uint8), bitorder="little")[:vocab]
                    t_ids = set(np.flatnonzero(bits).tolist())
                    o_ids = set(ours_ids.tolist())
                    extra, missing = sorted(o_ids - t_ids)[:8], sorted(t_ids - o_ids)[:8]
                    print("FAIL %s walk %d step %d: ours %d ids (accepts %d), xgrammar %d (eos %s); only ours %s "
                          "%r, only xgrammar %s %r" % (name, walk, step, len(o_ids), acc, len(t_ids), x_eos, extra,
                                                      [hf.convert_ids_to_tokens(i) for i in extra], missing,
                                                      [hf.convert_ids_to_tokens(i) for i in missing]))
                    failures += 1
                    break
                if not len(ours_ids):
                    break
                # prefer short tokens now and then, so walks reach the grammar's ends
                pool = ours_ids.tolist()
                if rng.random() < 0.5:
                    pool = [i for i in pool if short[i]] or pool
                t = rng.choice(pool)
                if not m.accept_token(t):
                    print("FAIL %s: xgrammar refuses id %d that both allowed" % (name, t))
                    failures += 1
                    break
                ids.append(t)
    for g in BAD:
        r = tool.ask("g " + hexs(g.encode()))
        try:
            compiler.compile_grammar(g)
            theirs = "ok"
        except Exception:  # noqa: BLE001 (xgrammar raises RuntimeError and others)
            theirs = "err"
        where = "err grammar line " if "root" in g else "err the grammar has no rule 'root'"
        if not r.startswith(where) or theirs != "err":
            print("FAIL bad grammar %r: ours %r, xgrammar %s" % (g, r, theirs))
            failures += 1
        else:
            print("  refused %-28r %s" % (g, r[4:]))
    # JSON mode (response_format json_object) runs as a grammar: the same masks as the any-object regex it
    # replaced (schema_tool's {"type": "object"}, objects nested 5 deep), and any depth beyond
    for ws in ["[ \t\n]*", "", "[ ]?", "(?: |\n  )*"]:
        p = subprocess.run([os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "schema_tool")],
                           input=json.dumps({"schema": {"type": "object"}, "ws": ws}).encode(), capture_output=True)
        rx = p.stdout.decode().rstrip("\n")
        r = tool.ask("j " + hexs(ws.encode()))
        if not r.startswith("ok") or p.returncode:
            print("FAIL JSON mode ws %r: %s / %s" % (ws, r, rx[:200]))
            failures += 1
            continue
        deep = '{"a":' * 9 + '[1, {"b": null}]' + '}' * 9
        deep = deep.replace(" ", "") if ws == "" else deep
        for c, w in ((deep, "M"), (deep[:-1], "P"), ('{"a": 1} ', "N"), ("[]", "N")):
            got = tool.ask("c " + hexs(c.encode()))
            checked += 1
            if got != w:
                print("FAIL JSON mode ws %r: %r: ours %s, expected %s" % (ws, c, got, w))
                failures += 1
        paths = []
        for walk in range(4):
            ids, seen = [], []
            for step in range(30):
                got = tool.ask("m " + " ".join(map(str, ids)))
                seen.append(got)
                f = got.split()
                words = np.array([int(w, 16) for w in f[3:]], dtype=np.uint32)
                pool = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab]).tolist()
                if not pool:
                    break
                if rng.random() < 0.7:
                    pool = [i for i in pool if short[i]] or pool
                ids.append(rng.choice(pool))
            paths.append((list(ids), seen))
        r = tool.ask("r " + hexs(rx.encode()))
        for ids, seen in paths:
            for k, want in enumerate(seen):
                got = tool.ask("m " + " ".join(map(str, ids[:k])))
                masks += 1
                if got != want:
                    print("FAIL JSON mode ws %r: after %r the grammar's mask differs from the regex's" %
                          (ws, hf.decode(ids[:k])))
                    failures += 1
                    break
        print("  JSON mode, ws %r: %d walks, the regex's masks at each of %d steps" %
              (ws, len(paths), sum(len(x[1]) for x in paths)))
    r = tool.ask("j " + hexs(b"[ \t"))
    if not r.startswith("err the whitespace pattern: "):
        print("FAIL JSON mode with a bad whitespace pattern: %s" % r)
        failures += 1

    import lark
    for name, g, examples in LARKS:
        r = tool.ask("g " + hexs(g.encode()))
        if not r.startswith("ok"):
            print("FAIL %s: ours refuses it: %s" % (name, r))
            failures += 1
            continue
        ref = lark.Lark(g, parser="earley", lexer="dynamic_complete")
        cands = candidates(examples, rng, 100)
        whole = 0
        for c in sorted(cands):
            try:
                ref.parse(c)
                want = True
            except lark.exceptions.LarkError:
                want = False
            got = tool.ask("c " + hexs(c.encode()))
            checked += 1
            whole += want
            if (got == "M") != want:
                print("FAIL %s: %r: ours %s, lark %s" % (name, c, got, "parses" if want else "does not parse"))
                failures += 1
        print("  %s: %d candidates, %d of them whole" % (name, len(cands), whole))
    for g, want in BAD_LARK:
        r = tool.ask("g " + hexs(g.encode()))
        if not r.startswith("err grammar line ") or want not in r:
            print("FAIL bad Lark grammar %r: %r lacks %r" % (g, r, want))
            failures += 1
        else:
            print("  refused %-28r %s" % (g, r[4:]))
    for g, want in OWN:
        r = tool.ask("g " + hexs(g.encode()))
        if want is None:  # ours refuses (xgrammar takes some of these)
            if not r.startswith("err grammar line "):
                print("FAIL %r: %s" % (g, r))
                failures += 1
            else:
                print("  refused %-28r %s" % (g, r[4:]))
            continue
        if not r.startswith("ok"):
            print("FAIL %r: %s" % (g, r))
            failures += 1
            continue
        for c, w in want.items():
            got = tool.ask("c " + hexs(c.encode()))
            checked += 1
            if got != w:
                print("FAIL %r: %r: ours %s, expected %s" % (g, c, got, w))
                failures += 1
    tool.close()
    print("%d candidates, %d masks compared with xgrammar" % (checked, masks))
    if failures:
        sys.exit("FAIL: %d differences" % failures)
    print("PASS")


if __name__ == "__main__":
    main()

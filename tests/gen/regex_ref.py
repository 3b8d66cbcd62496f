"""pb_dfa (src/gen/regex.c, through tests/gen/regex_tool) against Python: for each pattern and many
candidate strings, re.fullmatch(p, s, re.ASCII) says whether s is a whole match ("M"); otherwise the
third-party `regex` module's fullmatch(..., partial=True) says whether s can still be completed to a
match ("P") or not ("N"). The DFA must agree on every candidate.

Candidates: strings generated to match (from the pattern's tree as Python's own parser reads it), all
their prefixes, mutations of them, random strings over an alphabet taken from the pattern and its
matches, and non-ASCII text (two-, three- and four-byte UTF-8)."""
import os
import random
import re
import re._constants as C
import re._parser as sre_parse
import subprocess
import sys
import time

try:
    import regex
except ImportError:
    sys.exit("FAIL: the regex module is not installed in " + sys.executable)

TOOL = os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "regex_tool")

JSON_STR = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
WS = r'[ \t\n]{0,32}'
NUM = r'-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?'
INT = r'-?(0|[1-9][0-9]*)'


def obj(props):
    """A JSON object with the given (name, value pattern) properties in order, the last optional, as
    JSON-schema-to-regex converters write them."""
    parts = []
    for i, (name, val) in enumerate(props):
        item = WS + '"' + name + '"' + WS + ':' + WS + val
        parts.append(('' if i == 0 else ',') + item)
    *req, last = parts
    return r'\{' + ''.join(req) + '(' + last + ')?' + WS + r'\}'


PATTERNS = [
    r'ab|ac', r'a*b', r'(ab|a)*c', NUM, JSON_STR, INT,
    r'\d{4}-\d{2}-\d{2}', r'[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])',
    r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)',
    r'[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
    r'(foo|foobar|fob|f|bar|barn)', r'"(red|green|greenish|blue)"', r'(true|false|null)',
    r'[à-ÿ]+', r'[^"]*', r'.{2,5}', r'(a{2,3}){2,3}', r'((ab){1,2}c){0,3}', r'x{,3}y{2,}', r'(a|b){0,2}?c',
    r'[^\x00-\x7f]{1,3}', r'[\u0100-\uffff]+', r'[\U00010000-\U0010ffff]?z', r'[^é]*', r'\D\W\S', r'[\D]x',
    r'[^\d\s]+', r'[\w.-]+@[\w-]+\.[a-z]{2,4}', r'^abc$', r'a\x00b', 'a\x00?b', r'[\x00-\x08]*', r'(|a|bc)*d',
    r'a??b+?c*?', r'a{2}?b??', r'(?P<x>a|b)(?:c|d)', r'\[\]\{\}\(\)\.\*\+\?\|\^\$\\', r'a{', r'a{x}',
    r'a{,}b', r'\s*\{\s*"name"\s*:\s*"[^"]*"\s*\}\s*', r'[a-z]+(,[a-z]+){0,4}', r'\u00e9|e\u0301',
    r'日本(語|人)?', r'😀+|😁', r'[😀-😂a]{2}', r'[^\n]{0,3}\n', r'(a|b)*a(a|b){3}', r'.*abc.*', r'[-a]',
    r'[a-]', r'[]a]+', r'[^]a]', r'\.', r'(((a)))', r'(a|)+', r'()*x', r'(?:)', r'', r'a|', r'|', r'\t\n\r\f\v\0',
    r'[\x80-\u07ff]+', r'[\u0800-\uffff]', r'[\ud7ff\ue000]', r'[\u0000-\ud7ff]', r'[^\u0080-\U0010ffff]+',
    r'\x41\u0042\U00000043', r'[\b]', r'\%\-\ \é', r'[\]\-\\]+', r'(a|ab)(c|bcd)(d*)', r'((a|bc)*d)*',
    r'[ \t\n]{0,32}x[ \t\n]{0,32}', r'(([a-c]{1,3}){2}-){2,3}', r'.', r'.+', r'\W+',
    WS + JSON_STR + WS,
    obj([("name", JSON_STR), ("age", INT), ("score", NUM), ("tag", r'"(alpha|beta|gamma)"'),
         ("ok", r'(true|false)'), ("when", r'"\d{4}-\d{2}-\d{2}"')]),
    r'\[' + WS + '(' + JSON_STR + '(' + WS + ',' + WS + JSON_STR + '){0,9})?' + WS + r'\]',
]

# patterns that Python's re refuses too: the DFA must refuse them
BAD = [r'(a', r'a)', r'[a', r'a**', r'*a', r'x{2,1}', r'\1', 'a\\', r'[z-a]', r'+', r'a{2}*', r'[\d-z]', r'(?P=x)',
       r'\q']
# and patterns Python takes that the DFA refuses (look-around, anchors, flags, octal, counts over 1000,
# possessive quantifiers)
UNSUPPORTED = [r'a*+a', r'a{2}+b', r'a?+', r'(?=a)', r'(?!a)b', r'(?<=a)b', r'\ba', r'a\B', r'\Aa', r'a\Z', r'(?i)a',
               r'a^b', r'a$b', r'(a$)', r'(^a)', r'\01', r'a{1001}', r'a{0,1001}', r'(?#x)a', r'(?>a)']

EXTRA = ['a', 'b', '0', '9', ' ', '"', '\\', '\n', '\t', '\x00', '\x1f', '\x7f', 'é', 'ÿ', 'à', '\u0080',
         '\u07ff', '\u0800', '€', '日', '\ud7ff', '\ue000', '\uffff', '😀', '😂', '\U00010000', '\U0010ffff']
POOL = [chr(c) for c in range(0x20, 0x7f)] + EXTRA
CATS = {
    C.CATEGORY_DIGIT: lambda ch: '0' <= ch <= '9',
    C.CATEGORY_NOT_DIGIT: lambda ch: not '0' <= ch <= '9',
    C.CATEGORY_SPACE: lambda ch: ch in ' \t\n\r\f\v',
    C.CATEGORY_NOT_SPACE: lambda ch: ch not in ' \t\n\r\f\v',
    C.CATEGORY_WORD: lambda ch: ch.isascii() and (ch.isalnum() or ch == '_'),
    C.CATEGORY_NOT_WORD: lambda ch: not (ch.isascii() and (ch.isalnum() or ch == '_')),
}
REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT} | ({C.POSSESSIVE_REPEAT} if hasattr(C, 'POSSESSIVE_REPEAT') else set())


def rand_char(rng):
    r = rng.random()
    if r < 0.7:
        return rng.choice(POOL)
    while True:
        c = rng.choice([rng.randrange(0x80, 0x800), rng.randrange(0x800, 0x10000), rng.randrange(0x10000, 0x110000)])
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def in_set(items, ch):
    neg, hit = False, False
    for op, av in items:
        if op is C.NEGATE:
            neg = True
        elif op is C.LITERAL:
            hit |= ord(ch) == av
        elif op is C.RANGE:
            hit |= av[0] <= ord(ch) <= av[1]
        elif op is C.CATEGORY:
            hit |= CATS[av](ch)
    return hit != neg


def set_char(items, rng):
    """A random member of a class: one of its own literals and ranges, else from the pool."""
    own = [av for op, av in items if op is C.LITERAL] + \
          [rng.randint(*av) for op, av in items if op is C.RANGE]
    own = [c for c in own if not 0xD800 <= c <= 0xDFFF]
    for _ in range(200):
        ch = chr(rng.choice(own)) if own and rng.random() < 0.7 else rand_char(rng)
        if in_set(items, ch):
            return ch
    return None


def gen(seq, rng, out):
    """Appends a random string of seq's language to out (False when it gave up on an empty class)."""
    for op, av in seq:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op is C.NOT_LITERAL:
            ch = set_char([(C.NEGATE, None), (C.LITERAL, av)], rng)
            out.append(ch)
        elif op is C.ANY:
            ch = set_char([(C.NEGATE, None), (C.LITERAL, 10)], rng)
            out.append(ch)
        elif op is C.IN:
            ch = set_char(av, rng)
            if ch is None:
                return False
            out.append(ch)
        elif op is C.BRANCH:
            if not gen(rng.choice(av[1]), rng, out):
                return False
        elif op is C.SUBPATTERN:
            if not gen(av[3], rng, out):
                return False
        elif op in REPEATS:
            lo, hi, sub = av
            top = lo + 6 if hi == C.MAXREPEAT else min(hi, lo + 6)
            r = rng.random()
            n = hi if (r < 0.15 and hi != C.MAXREPEAT) else lo if r < 0.3 else rng.randint(lo, top)
            for _ in range(n):
                if not gen(sub, rng, out):
                    return False
        elif op is C.AT:
            pass
        else:
            raise AssertionError("generator: unexpected %r" % (op,))
    return True


def candidates(pat, rng):
    tree = sre_parse.parse(pat, re.ASCII)
    matches = []
    for _ in range(60):
        out = []
        if gen(tree, rng, out):
            matches.append(''.join(out))
    alphabet = sorted(set(''.join(matches)) | set(pat) | set(EXTRA[:12]) | {'é', '😀', '€'})
    alphabet = [ch for ch in alphabet if not 0xD800 <= ord(ch) <= 0xDFFF]
    cands = set(matches)
    for m in matches:
        cands.update(m[:i] for i in range(len(m)))
        for _ in range(3):
            i = rng.randint(0, len(m))
            ch = rng.choice(alphabet) if rng.random() < 0.8 else rand_char(rng)
            kind = rng.randrange(4)
            if kind == 0:
                cands.add(m[:i] + ch + m[i:])
            elif kind == 1 and m:
                cands.add(m[:i] + m[i + 1:])
            elif kind == 2 and i < len(m):
                cands.add(m[:i] + ch + m[i + 1:])
            else:
                cands.add(m + ch)
    for _ in range(250):
        n = rng.randint(0, 12)
        cands.add(''.join(rng.choice(alphabet) if rng.random() < 0.9 else rand_char(rng) for _ in range(n)))
    for _ in range(30):
        cands.add(''.join(rand_char(rng) for _ in range(rng.randint(1, 4))))
    return sorted(cands)


def main():
    rng = random.Random(20240917)
    lines, expect = [], []
    for pat in PATTERNS:
        cre = re.compile(pat, re.ASCII)
        creg = regex.compile(pat, regex.ASCII | regex.V0)
        lines.append("p 100000 " + pat.encode().hex())
        expect.append((pat, None, "ok"))
        for s in candidates(pat, rng):
            if cre.fullmatch(s):
                want = "M"
            else:
                want = "P" if creg.fullmatch(s, partial=True) else "N"
            lines.append("c " + s.encode().hex())
            expect.append((pat, s, want))
    for pat in BAD + UNSUPPORTED:
        try:
            re.compile(pat, re.ASCII)
            if pat in BAD:
                raise AssertionError("Python accepts %r" % pat)
        except re.error:
            if pat in UNSUPPORTED:
                raise AssertionError("Python refuses %r" % pat)
        lines.append("p 100000 " + pat.encode().hex())
        expect.append((pat, None, "err"))
    t0 = time.time()
    res = subprocess.run([TOOL], input="\n".join(lines) + "\n", capture_output=True, text=True)
    wall = time.time() - t0
    if res.returncode != 0:
        sys.exit("FAIL: regex_tool exited %d: %s" % (res.returncode, res.stderr))
    got = res.stdout.split("\n")
    fails, n_cand, counts, stats = 0, 0, {"M": 0, "P": 0, "N": 0}, []
    for (pat, s, want), g in zip(expect, got):
        if s is None:
            if not g.startswith(want):
                fails += 1
                print("FAIL: pattern %r: want %s, got %r" % (pat, want, g))
            elif want == "ok":
                _, n_states, nbytes, ms = g.split()
                stats.append((float(ms), int(n_states), int(nbytes), pat))
            continue
        n_cand += 1
        counts[want] += 1
        if g != want:
            fails += 1
            if fails <= 40:
                print("FAIL: pattern %r candidate %r (%s): want %s, got %s" % (pat, s, s.encode().hex(), want, g))
    if len(got) < len(expect):
        fails += 1
        print("FAIL: the tool answered %d of %d lines" % (len(got), len(expect)))
    stats.sort(reverse=True)
    for ms, n_states, nbytes, pat in stats[:4]:
        print("compile %.2f ms, %d states, %d bytes: %.70s%s"
              % (ms, n_states, nbytes, pat, "..." if len(pat) > 70 else ""))
    print("%d patterns, %d refused patterns, %d candidates (%d M, %d P, %d N), tool %.2f s: %d failures"
          % (len(PATTERNS), len(BAD) + len(UNSUPPORTED), n_cand, counts["M"], counts["P"], counts["N"], wall, fails))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()

"""pb_schema_regex and pb_choice_regex (through tests/gen/schema_tool) against
the `jsonschema` package as the judge, with Python's re as the matcher.

For each schema: every instance jsonschema calls valid, written by json.dumps
compact, with the default separators and with indent=2 (keys in the schema's
order), fully matches the regex (re.fullmatch, re.ASCII) with the default
whitespace; the compact text matches the regex made with ws "" and the spaced
one does not; every instance jsonschema calls invalid matches none of them.
Then: integer ranges over random bounds (every integer in a window around
them matches iff in range), the documented places where the regex is stricter
than JSON Schema, refusals (with the place named) and choice lists."""
import json
import os
import random
import re
import subprocess
import sys

import jsonschema

TOOL = os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "schema_tool")
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg)


def run_tool(docs):
    """One schema_tool call for a list of documents: [(regex or None, error or None)]."""
    out = subprocess.run([TOOL], input=json.dumps(docs).encode(), capture_output=True, check=True).stdout
    res = [json.loads(line) for line in out.decode().splitlines()]
    assert len(res) == len(docs), (len(res), len(docs))
    return [(r.get("regex"), r.get("error")) for r in res]


def regexes(schemas, ws=None):
    docs = [{"schema": s} if ws is None else {"schema": s, "ws": ws} for s in schemas]
    res = run_tool(docs)
    for s, (rx, err) in zip(schemas, res):
        if err is not None:
            fail("schema %s refused: %s" % (json.dumps(s), err))
        elif re.search(r"\\[dwsDWS]", rx.replace("\\\\", "")):
            fail("schema %s: the regex uses a \\d \\w \\s class: %s" % (json.dumps(s), rx[:200]))
    return [rx for rx, _ in res]


def forms(inst):
    return [json.dumps(inst, ensure_ascii=False, separators=(",", ":")),
            json.dumps(inst, ensure_ascii=False),
            json.dumps(inst, ensure_ascii=False, indent=2)]


def matches(rx, text):
    return re.fullmatch(rx, text, re.ASCII) is not None


# (schema, valid instances, invalid instances); the judge checks each list.
DEFS = {"$defs": {
    "Color": {"enum": ["red", "green", "blue"], "title": "Color", "type": "string"},
    "Point": {"properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
              "required": ["x", "y"], "title": "Point", "type": "object"}}}
CASES = [
    ({"type": "integer"}, [0, -1, 7, 12345678901234], ["1", None, 1.5, True]),
    ({"type": "number"}, [0, -1.5, 3.25e-7, 1e30, 42], ["1", None, True, [1]]),
    ({"type": "boolean"}, [True, False], [0, "true", None]),
    ({"type": "null"}, [None], [0, "null", False]),
    ({"type": "string"}, ["", "abc", "quote \" back \\ slash", "tab\tnl\n", "\u00e9\u4e2d\U0001F600", "\x01\x7f"],
     [1, None, ["a"]]),
    ({"type": "string", "minLength": 2, "maxLength": 4}, ["ab", "abcd", "a\nb", "\u00e9\u00e9\u00e9"],
     ["a", "", "abcde", "\u00e9\u00e9\u00e9\u00e9\u00e9", 12]),
    ({"type": "string", "minLength": 3}, ["abc", "abcdefghijklmnop"], ["ab", ""]),
    ({"type": "string", "maxLength": 0}, [""], ["a"]),
    ({"type": "string", "pattern": "^[a-z]+-[0-9]{2}$"}, ["abc-12", "z-00"], ["abc-1", "ABC-12", "abc-123", 5]),
    ({"type": "string", "pattern": "(cat|dog)s?"}, ["cat", "dogs"], ["cow"]),
    ({"type": "string", "format": "date"}, ["2024-02-29", "1999-12-31"], ["2024-13-01", "24-01-01", "2024-1-1"]),
    ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"],
     ["123e4567-e89b-12d3-a456-42661417400", "123e4567e89b12d3a456426614174000"]),
    ({"type": "integer", "minimum": 0, "maximum": 100}, [0, 1, 9, 10, 99, 100], [-1, 101, 1000, 5.5, "5"]),
    ({"type": "integer", "minimum": -40, "maximum": -3}, [-40, -39, -10, -3], [-41, -2, 0, 3, 40]),
    ({"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5}, [-4, 0, 4], [-5, 5, 6, -6]),
    ({"type": "integer", "minimum": 18}, [18, 19, 99, 100, 123456789], [17, 0, -18]),
    ({"type": "integer", "maximum": -7}, [-7, -8, -1000], [-6, 0, 7]),
    ({"type": "integer", "exclusiveMaximum": 0}, [-1, -99999], [0, 1]),
    ({"enum": ["red", "green", "a.b*c", "say \"hi\""]}, ["red", "green", "a.b*c", "say \"hi\""],
     ["blue", "Red", "axb*c", "re"]),
    ({"enum": [1, 2.5, None, True, "x", [1, "a"], {"k": [False]}]}, [1, 2.5, None, True, "x", [1, "a"], {"k": [False]}],
     [2, 25, False, "y", [1], {"k": [True]}]),
    ({"const": "fixed"}, ["fixed"], ["fixe", "fixedd", None]),
    ({"const": {"a": 1, "b": [1, 2]}}, [{"a": 1, "b": [1, 2]}], [{"a": 1, "b": [1]}, {"a": 1}]),
    ({"type": "string", "enum": ["a", "b", 3]}, ["a", "b"], [3, "c"]),
    ({"type": "array", "items": {"type": "integer"}}, [[], [1], [1, -2, 3]], [[1.5], ["a"], {}, [None]]),
    ({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}, [["a"], ["a", "b", "c"]],
     [[], ["a", "b", "c", "d"], [1]]),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 2}, [[True, False], [True] * 5], [[], [True]]),
    ({"type": "array", "maxItems": 2}, [[], [1, "a"], [[{"x": None}]]], [[1, 2, 3]]),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
     [[1, "a"]], [[1], [1, "a", 2], ["a", 1]]),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
     [[], [1], [1, "a"], [1, "a", None, {"z": 1}]], [["a"], [1, 2]]),
    ({"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "null"}, "minItems": 2},
     [[1, None], [1, None, None]], [[1], [1, 2], [None, None]]),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}, {"type": "boolean"}], "minItems": 1,
      "maxItems": 4}, [[1], [1, "a"], [1, "a", True], [1, "a", True, None]], [[], ["a"], [1, "a", True, None, 5]]),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": False},
     [[], [1], [1, 2]], [[1, 2, 3], ["a"]]),
    ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
      "required": ["name", "age"], "additionalProperties": False},
     [{"name": "Ann", "age": 31}, {"name": "", "age": 0}],
     [{"name": "Ann"}, {"age": 3}, {"name": "Ann", "age": -1}, {"name": "Ann", "age": 3, "x": 1},
      {"name": 1, "age": 3}, {}, []]),
    # pydantic: optional fields with defaults, nullable through anyOf, nested model and enum by $ref
    ({"$defs": DEFS["$defs"], "properties": {
        "id": {"title": "Id", "type": "integer"},
        "nick": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Nick"},
        "color": {"$ref": "#/$defs/Color", "default": "red"},
        "where": {"$ref": "#/$defs/Point"},
        "tags": {"items": {"type": "string"}, "title": "Tags", "type": "array", "maxItems": 2},
        "score": {"default": 0.5, "title": "Score", "type": "number"}},
      "required": ["id", "where"], "title": "Thing", "type": "object", "additionalProperties": False},
     [{"id": 1, "where": {"x": 1, "y": -2}},
      {"id": 1, "nick": None, "color": "blue", "where": {"x": 0, "y": 0}, "tags": ["a", "b"], "score": 2},
      {"id": 1, "nick": "n", "where": {"x": 0, "y": 0}, "score": -1e-3},
      {"id": 1, "color": "green", "where": {"x": 0, "y": 0}, "tags": []}],
     [{"id": 1}, {"where": {"x": 1, "y": 2}}, {"id": 1, "where": {"x": 1}},
      {"id": 1, "color": "pink", "where": {"x": 0, "y": 0}},
      {"id": 1, "where": {"x": 0, "y": 0}, "tags": ["a", "b", "c"]},
      {"id": 1, "where": {"x": 0, "y": 0}, "nick": 3}]),
    # all optional
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "null"}},
      "additionalProperties": False},
     [{}, {"a": 1}, {"b": "x"}, {"c": None}, {"a": 1, "c": None}, {"b": "", "c": None}, {"a": 1, "b": "x", "c": None}],
     [{"a": "x"}, {"d": 1}, {"a": 1, "d": 1}, []]),
    # required in the middle, optional around it
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"},
                                       "d": {"type": "integer"}},
      "required": ["b", "d"], "additionalProperties": False},
     [{"b": 1, "d": 2}, {"a": 0, "b": 1, "d": 2}, {"a": 0, "b": 1, "c": 5, "d": 2}, {"b": 1, "c": 5, "d": 2}],
     [{"b": 1}, {"d": 1}, {"a": 0, "c": 1, "d": 2}, {}]),
    ({"type": "object", "properties": {"we\"ird": {"const": 1}, "a.b": {"type": "boolean"}, "\u00fc": {"type": "null"}},
      "required": ["we\"ird", "a.b", "\u00fc"], "additionalProperties": False},
     [{"we\"ird": 1, "a.b": True, "\u00fc": None}], [{"we\"ird": 1, "axb": True, "\u00fc": None}]),
    ({"type": "object"}, [{}, {"a": 1}, {"a": {"b": [1, {"c": None}]}, "d": "e"}], [[], 1, "x"]),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, [{}, {"a": 1, "b": -2}],
     [{"a": "x"}, {"a": None}]),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 2},
     [{"a": 1}, {"a": 1, "b": 2}], [{}, {"a": 1, "b": 2, "c": 3}]),
    ({"type": "object", "properties": {}, "additionalProperties": False}, [{}], [{"a": 1}]),
    ({"anyOf": [{"type": "integer", "minimum": 5}, {"type": "string", "maxLength": 1}, {"type": "null"}]},
     [5, 6000, "a", "", None], [4, "ab", True]),
    ({"oneOf": [{"type": "boolean"}, {"const": 0}]}, [True, 0], [1, None]),
    ({"allOf": [{"$ref": "#/$defs/Point"}], "$defs": DEFS["$defs"]}, [{"x": 1, "y": 2}], [{"x": 1}]),
    ({"type": ["string", "null"], "maxLength": 2}, ["ab", None], ["abc", 1]),
    ({"type": ["integer", "boolean"], "minimum": 1}, [1, 2, True, False], [0, "1"]),
    ({"definitions": {"a/b~c": {"type": "integer"}}, "$ref": "#/definitions/a~1b~0c"}, [3], ["3"]),
    ({}, [None, True, 1, -2.5e3, "s", [], {}, [1, [2, [3, [4, [5]]]]],
          {"a": {"b": {"c": {"d": {"e": 1}}}}}, [{"a": [{"b": []}]}]], []),
    (True, [1, "x", {"k": []}], []),
    ({"title": "Anything", "description": "no type"}, [1, [], "x"], []),
]


def check_cases():
    schemas = [c[0] for c in CASES]
    dflt = regexes(schemas)
    compact = regexes(schemas, "")
    fc = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for (schema, good, bad), rx, rxc in zip(CASES, dflt, compact):
        if rx is None or rxc is None:
            continue
        v = jsonschema.Draft202012Validator(schema, format_checker=fc)
        name = json.dumps(schema)[:120]
        for inst in good:
            if not v.is_valid(inst):
                fail("%s: the judge says %r is invalid (test bug)" % (name, inst))
                continue
            for text in forms(inst):
                if not matches(rx, text):
                    fail("%s: valid %r does not match" % (name, text))
            c, spaced = forms(inst)[0], forms(inst)[1]
            if not matches(rxc, c):
                fail("%s: valid %r does not match the compact regex" % (name, c))
            if spaced != c and matches(rxc, spaced):
                fail("%s: %r matches the compact regex" % (name, spaced))
        for inst in bad:
            if v.is_valid(inst):
                fail("%s: the judge says %r is valid (test bug)" % (name, inst))
                continue
            for text in forms(inst):
                if matches(rx, text):
                    fail("%s: invalid %r matches" % (name, text))
    print("schemas: %d checked" % len(CASES))


def depth(x):
    if isinstance(x, dict):
        return 1 + max([depth(v) for v in x.values()], default=0)
    if isinstance(x, list):
        return 1 + max([depth(v) for v in x], default=0)
    return 0


def check_any_depth():
    """{}: objects and arrays nest at most PB_SCHEMA_ANY_DEPTH (5) deep."""
    rx = regexes([{}])[0]
    v = 1
    for d in range(1, 8):
        v = [v] if d % 2 else {"k": v}
        assert depth(v) == d
        for text in forms(v):
            if matches(rx, text) != (d <= 5):
                fail("{}: depth %d value %r %s" % (d, text, "does not match" if d <= 5 else "matches"))


def check_formats():
    """Formats the judge does not check here (date-time, time) and those it does, by hand."""
    cases = {
        "date-time": (["2024-01-31T23:59:59Z", "2024-01-31T00:00:00.123+05:30", "2024-01-31T12:00:00",
                       "0001-12-01T10:20:30.5-08:00"],
                      ["2024-01-31 23:59:59Z", "2024-01-31T24:00:00Z", "2024-01-31T12:60:00Z", "2024-01-31",
                       "2024-01-31T12:00Z", "2024-01-31T12:00:00+5:30"]),
        "time": (["00:00:00", "23:59:59.999999Z", "12:30:00+01:00"], ["24:00:00", "12:30", "1:02:03", "12:30:00 Z"]),
        "date": (["2000-01-01"], ["2000-00-10", "2000-01-32", "2000-1-01"]),
        "uuid": (["00000000-0000-0000-0000-000000000000", "ABCDEF01-2345-6789-abcd-ef0123456789"],
                 ["00000000-0000-0000-0000-00000000000g", "{00000000-0000-0000-0000-000000000000}"]),
    }
    fmts = list(cases)
    rxs = regexes([{"type": "string", "format": f} for f in fmts])
    for f, rx in zip(fmts, rxs):
        good, bad = cases[f]
        for s in good:
            if not matches(rx, json.dumps(s)):
                fail("format %s: %r does not match" % (f, s))
        for s in bad:
            if matches(rx, json.dumps(s)):
                fail("format %s: %r matches" % (f, s))


def check_int_ranges():
    rng = random.Random(1234)
    bounds = [(0, 0), (-1, -1), (0, 9), (1, 10), (-10, -1), (-9, 9), (-100, 1000), (99, 101), (-101, -99),
              (None, 0), (None, -1), (0, None), (1, None), (None, 9), (10, None), (-10, None), (None, -10),
              (123, 4567), (-4567, -123), (999, 1000), (-1000, -999), (10**15 - 5, 10**15), (-(10**15), 3)]
    for _ in range(120):
        scale = 10 ** rng.randint(0, 6)
        a = rng.randint(-scale, scale)
        b = a + rng.randint(0, 3 * scale)
        kind = rng.randint(0, 3)
        bounds.append((a if kind != 1 else None, b if kind != 2 else None))
    schemas, windows = [], []
    for lo, hi in bounds:
        s = {"type": "integer"}
        mode = rng.randint(0, 1) if max(abs(lo or 0), abs(hi or 0)) < 10**15 else 1
        if lo is not None:
            s["minimum" if mode else "exclusiveMinimum"] = lo if mode else lo - 1
        if hi is not None:
            s["maximum" if mode else "exclusiveMaximum"] = hi if mode else hi + 1
        schemas.append(s)
        pts = [p for p in (lo, hi) if p is not None] or [0]
        win = set()
        for p in pts + [0]:
            win.update(range(p - 130, p + 131))
            for k in range(1, 17):  # other digit counts
                win.update((p * 10**k, -p * 10**k, 10**k, -10**k, 10**k - 1, 1 - 10**k))
        windows.append(sorted(win))
    rxs = regexes(schemas)
    for (lo, hi), s, rx, win in zip(bounds, schemas, rxs, windows):
        if rx is None:
            continue
        r = re.compile(rx, re.ASCII)
        for n in win:
            want = (lo is None or n >= lo) and (hi is None or n <= hi)
            if (r.fullmatch(str(n)) is not None) != want:
                fail("integer %s: %d %s" % (json.dumps(s), n, "does not match" if want else "matches"))
                break
        for t in ("-0", "01", "-01", "+1", "1.0", ""):
            if r.fullmatch(t):
                fail("integer %s: %r matches" % (json.dumps(s), t))
    print("integer ranges: %d checked" % len(bounds))


def check_stricter():
    """Documented: JSON Schema allows these, the regex does not."""
    cases = [
        # additionalProperties absent beside properties: no other keys
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": 1, "b": 2}),
        # keys in the schema's order only
        ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}, {"b": 1, "a": 2}),
        # the pattern matches the whole string
        ({"type": "string", "pattern": "ab"}, "xaby"),
        # integers in their plain form only
        ({"type": "integer"}, 2.0),
    ]
    rxs = regexes([c[0] for c in cases])
    for (schema, inst), rx in zip(cases, rxs):
        if not jsonschema.Draft202012Validator(schema).is_valid(inst):
            fail("stricter: the judge says %r is invalid for %s (test bug)" % (inst, schema))
        if rx is not None and any(matches(rx, t) for t in forms(inst)):
            fail("stricter: %r matches %s" % (inst, json.dumps(schema)))


def check_refusals():
    point = {"type": "object", "properties": {"x": {"type": "integer"}}}
    cases = [
        ({"type": "string", "multipleOf": 3}, "at /: keyword 'multipleOf' is not supported"),
        ({"type": "object", "properties": {"age": {"type": "integer", "multipleOf": 2}}},
         "at /properties/age: keyword 'multipleOf' is not supported"),
        ({"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
          "$ref": "#/$defs/Node"}, "recursive $ref '#/$defs/Node' is not supported"),
        ({"$ref": "#"}, "recursive"),
        ({"$ref": "#/$defs/Missing"}, "at /$ref: '#/$defs/Missing' points nowhere"),
        ({"$ref": "http://example.com/s.json"}, "at /$ref:"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": 3}, "at /required: must be a list"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]},
         "at /required: 'b' is not among the properties"),
        ({"type": "string", "minLength": -1}, "at /minLength: must be a non-negative integer"),
        ({"type": "string", "maxLength": 1.5}, "at /maxLength: must be a non-negative integer"),
        ({"type": "object", "properties": []}, "at /properties: must be an object"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True},
         "at /additionalProperties: additionalProperties other than false"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
         "at /additionalProperties:"),
        ({"type": "number", "minimum": 0}, "at /minimum: minimum is not supported for numbers"),
        ({"type": "integer", "minimum": 0.5}, "at /minimum: bounds of integers must be integers"),
        ({"type": "integer", "maximum": 1e16}, "at /maximum: bounds of integers must be integers"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "at /: no integer"),
        ({"type": "string", "format": "email"}, "at /format: format 'email' is not supported"),
        ({"type": "strin"}, "at /type: 'strin' is not a type name"),
        ({"type": "array", "items": [{"type": "integer"}]}, "at /items:"),
        ({"allOf": [{"type": "integer"}, {"minimum": 1}]}, "at /allOf: allOf with more than one"),
        ({"anyOf": []}, "at /anyOf: must be a non-empty list"),
        ({"anyOf": [{"type": "integer"}, {"type": "string", "foo": 1}]}, "at /anyOf/1: keyword 'foo'"),
        ({"enum": []}, "at /enum: must be a non-empty list"),
        ({"type": "integer", "enum": ["a"]}, "no enum value has the schema's type"),
        ({"$ref": "#/$defs/A", "type": "object", "$defs": {"A": {}}}, "keyword 'type' beside '$ref'"),
        (False, "at /: the schema false matches nothing"),
        ({"type": "object", "properties": {"p": point, "q": {"type": "array", "items": {"not": {}}}}},
         "at /properties/q/items: keyword 'not' is not supported"),
        ({"$defs": {"A": {"type": "object", "properties": {"x~y/z": {"type": "foo"}}}}, "$ref": "#/$defs/A"},
         "at /$defs/A/properties/x~0y~1z/type: 'foo' is not a type name"),
        ({"type": "string", "pattern": "a", "maxLength": 3}, "at /maxLength: maxLength beside pattern"),
        ({"type": "object", "required": ["a"]}, "at /required: required without properties"),
        ({"type": "object", "properties": {str(i): {} for i in range(12)}}, "too large"),
        (3, "a schema must be an object or a boolean"),
    ]
    res = run_tool([{"schema": s} for s, _ in cases])
    for (s, want), (rx, err) in zip(cases, res):
        if err is None:
            fail("refusal: %s was accepted" % json.dumps(s)[:200])
        elif want not in err:
            fail("refusal: %s: %r lacks %r" % (json.dumps(s)[:200], err, want))
    # the single-document form: "ERROR: ..." and exit status 1
    p = subprocess.run([TOOL], input=b'{"schema": {"type": "integer", "foo": 1}}', capture_output=True)
    if p.returncode != 1 or not p.stdout.startswith(b"ERROR: at /: keyword 'foo'"):
        fail("tool error form: %r %r" % (p.returncode, p.stdout))
    p = subprocess.run([TOOL], input=b'{"schema": {"type": "boolean"}, "ws": ""}', capture_output=True)
    if p.returncode != 0 or p.stdout != b"(?:true|false)\n":
        fail("tool form: %r %r" % (p.returncode, p.stdout))


def check_choices():
    sets = [["yes", "no"], ["a", "ab", "abc"], ["abc", "a"], ["1+1=2", "(x)", "[y]", "{z}", "a|b", "^$", ".*?", "\\"],
            ["caf\u00e9", "\u4e2d\u6587", "\U0001F600 ok"], ["tab\there", "nl\nx", "esc\x1bz", "del\x7f"], ["only"]]
    rxs = run_tool([{"choices": s} for s in sets])
    for s, (rx, err) in zip(sets, rxs):
        if err is not None:
            fail("choices %r refused: %s" % (s, err))
            continue
        r = re.compile(rx, re.ASCII)
        for c in s:
            if not r.fullmatch(c):
                fail("choices %r: %r does not match %r" % (s, c, rx))
        for c in ["", "x", s[0] + "x", s[0][:-1], "".join(s), s[0].upper() if s[0].upper() != s[0] else "Q"]:
            if c not in s and r.fullmatch(c):
                fail("choices %r: %r matches" % (s, c))
    # invalid UTF-8 cannot travel through JSON; an empty list is refused
    (rx, err), = run_tool([{"choices": []}])
    if err is None:
        fail("choices []: accepted")


check_cases()
check_any_depth()
check_formats()
check_int_ranges()
check_stricter()
check_refusals()
check_choices()
print("schema_ref: %s" % ("%d failures" % failures if failures else "ok"))
sys.exit(1 if failures else 0)

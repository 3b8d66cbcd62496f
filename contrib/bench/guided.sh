#!/bin/sh
# What constrained decoding costs, in one run on SmolLM2-135M: decode of 32
# records x 64 tokens (ignore_eos) plain, with a guided_regex, with a
# guided_json array of strings and in JSON mode (response_format json_object:
# the any-object pattern, compiled once in the run), and with GBNF grammars
# (guided_grammar): the array of strings, and JSON of any depth. The runs alternate; each
# prints its wall time and the --metrics decode rate. Figures only, never
# pass/fail.
#   PIPPY_BATCH (default build/pippy-batch), PB_SRCDIR (default .), PB_PYTHON;
#   GUIDED_BENCH_MODEL (default models/SmolLM2-135M-Instruct), GUIDED_BENCH_RUNS (default 3),
#   GUIDED_BENCH_THREADS (default 2), GUIDED_BENCH_BATCH (default 16).
set -eu
NAME=guided.sh PREFIX=GUIDED_BENCH
. "$(dirname "$0")/smol-runs.sh"
write_records <<'PY'
dec = [{"prompt": f"Record {i}: a list of words:", "max_tokens": 64, "ignore_eos": True} for i in range(32)]
write("plain", dec)
write("regex", [dict(r, guided_regex="( [a-z]+,)*") for r in dec])
write("array", [dict(r, guided_json={"type": "array", "items": {"type": "string"}}) for r in dec])
write("json_object", [dict(r, response_format={"type": "json_object"}) for r in dec])
ARRAY = r'''root ::= "[" ws ( string ( "," ws string )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
ws ::= [ \t\n]*
'''
JSON = r'''root ::= ws value ws
value ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws ::= [ \t\n]*
'''
write("grammar_array", [dict(r, guided_grammar=ARRAY) for r in dec])
write("grammar_json", [dict(r, guided_grammar=JSON) for r in dec])
PY
r=1
while [ "$r" -le "$runs" ]; do
    for v in plain regex array json_object grammar_array grammar_json; do
        run_records "$v"
        echo "run $r $v: wall $wall s, decode $(metric "$tmp/m.json" decode_tokens_per_second) tok/s," \
             "$(metric "$tmp/m.json" completion_tokens) tokens"
    done
    r=$((r + 1))
done

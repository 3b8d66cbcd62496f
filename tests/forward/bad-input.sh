#!/bin/sh
# A checkpoint whose tensor shapes contradict its config, or a variant that is
# not handled, is a clear error naming the tensor/field, exit 2.
set -u
H="$PB_BUILDDIR/tests/forward/fwd-harness"
T="$PB_TEST_TMP"
"$PB_PYTHON" "$PB_SRCDIR/tests/forward/make_goldens.py" "$T" llama-a gpt2-a >/dev/null 2>&1 || exit 1
fail=0
expect() { # name, expected exit, pattern, model dir
    "$H" load "$4" >"$T/out" 2>&1
    rc=$?
    if [ $rc -ne "$2" ] || ! grep -q -- "$3" "$T/out"; then
        echo "FAIL $1: exit $rc (want $2), output:"; cat "$T/out"; fail=1
    else
        echo "ok $1: $(cat "$T/out")"
    fi
}
edit() { # src model, dst, python expression on dict c
    rm -rf "$2"; cp -r "$1" "$2"
    "$PB_PYTHON" -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); $3; json.dump(c, open(p,'w'))" "$2/config.json"
}
expect "good model loads" 0 loaded "$T/llama-a/model"
edit "$T/llama-a/model" "$T/m1" 'c["intermediate_size"]=72'
expect "intermediate_size contradicts mlp weights" 2 "mlp.gate_proj.weight.*config" "$T/m1"
edit "$T/llama-a/model" "$T/m2" 'c["num_key_value_heads"]=4'
expect "kv heads contradict k_proj" 2 "k_proj.weight.*config" "$T/m2"
edit "$T/llama-a/model" "$T/m3" 'c["rope_scaling"]={"type":"yarn","factor":2.0}'
expect "unknown rope_scaling type" 2 "rope_scaling" "$T/m3"
edit "$T/gpt2-a/model" "$T/m4" 'c["n_embd"]=48'
expect "gpt2 n_embd contradicts wte" 2 "wte.weight.*config" "$T/m4"
edit "$T/llama-a/model" "$T/m5" 'c["vocab_size"]=100'
expect "vocab_size contradicts embed_tokens" 2 "embed_tokens.weight.*config" "$T/m5"
exit $fail

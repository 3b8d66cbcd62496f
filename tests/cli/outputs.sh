#!/bin/sh
# Output safety and early checks (issue 12 items 1, 4, 5, 6, 7): an existing
# --out is refused unless --force, the input is never overwritten, a directory
# is refused, every check needing no model runs before the model loads (the
# -v log shows no weights file opened), model-folder errors are one line with
# exit 2, an empty result set is still a valid .zst, and the build-tree
# binary finds the demo model.
set -u
PB=${PIPPY_BATCH:?}
M=${PB_DEMO_MODEL:?}
T=${PB_TEST_TMP:?}
unset PIPPY_BATCH_MODEL
fail=0
ok() { printf 'ok   %s\n' "$1"; }
bad() { printf 'FAIL %s\n' "$1"; fail=1; }
cd "$T" || exit 1

i=1
while [ $i -le 8 ]; do
    echo "{\"prompt\": \"Record $i\", \"max_tokens\": 3}"
    i=$((i + 1))
done >in.jsonl
cp in.jsonl in.orig

# A positive control: a real run's -v log names each weights file it opens.
"$PB" -v --model "$M" --in in.jsonl --out ref.jsonl 2>err
rc=$?
if [ $rc -eq 0 ] && grep -q 'opened .*\.safetensors' err && [ "$(wc -l <ref.jsonl)" -eq 8 ]; then
    ok "a run opens the weights (-v log) and writes 8 records"
else
    bad "reference run (rc=$rc): $(tail -3 err)"
fi

# refused DESC PATTERN ARGS...: exit 2, one error line matching PATTERN
# naming the file, the input unchanged, and (in a second run with -v) no
# weights file opened: the refusal came before the model loaded.
refused() {
    desc=$1 pat=$2; shift 2
    "$PB" "$@" -q >out 2>err </dev/null
    rc=$?
    lines=$(wc -l <err)
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$pat" err; then
        ok "$desc: exit 2, '$(cat err)'"
    else
        bad "$desc (rc=$rc, $lines lines): $(cat err)"
    fi
    "$PB" "$@" -v >out 2>err </dev/null
    if grep -q 'opened ' err; then
        bad "$desc: the weights were opened before the refusal: $(grep 'opened ' err | head -1)"
    fi
    cmp -s in.jsonl in.orig || bad "$desc: the input changed"
}

# ---- item 1: output never destroys data ----
cp ref.jsonl keep.jsonl
refused "existing --out" "--out keep.jsonl exists; pass --force" --model "$M" --in in.jsonl --out keep.jsonl
cmp -s keep.jsonl ref.jsonl && ok "existing --out left unchanged" || bad "existing --out was changed"
printf 'old\n' >keep.jsonl
"$PB" -q --model "$M" --in in.jsonl --out keep.jsonl --force 2>err
rc=$?
[ $rc -eq 0 ] && cmp -s keep.jsonl ref.jsonl && ok "--force replaces an existing --out" \
    || bad "--force (rc=$rc): $(cat err)"
"$PB" -q --model "$M" --in in.jsonl --out keep.jsonl -f 2>err && cmp -s keep.jsonl ref.jsonl \
    && ok "-f is --force" || bad "-f: $(cat err)"

refused "--out is --in" "--out in.jsonl is the input file in.jsonl" --model "$M" --in in.jsonl --out in.jsonl
refused "--out is --in with --force" "is the input file" --model "$M" --in in.jsonl --out in.jsonl --force
refused "--out is --in by another path" "--out ./../$(basename "$T")/in.jsonl is the input file" \
    --model "$M" --in in.jsonl --out "./../$(basename "$T")/in.jsonl" --force
ln -s in.jsonl link.jsonl
refused "--out is a link to --in" "--out link.jsonl is the input file" --model "$M" --in in.jsonl --out link.jsonl --force
ln in.jsonl hard.jsonl
refused "--out is a hard link to --in" "--out hard.jsonl is the input file" --model "$M" --in in.jsonl --out hard.jsonl --force
"$PB" -q --model "$M" --out in.jsonl --force <in.jsonl >out 2>err
rc=$?
[ $rc -eq 2 ] && grep -q -- "--out in.jsonl is the input file (standard input)" err \
    && ok "--out is the file standard input reads" || bad "stdin redirected from --out (rc=$rc): $(cat err)"
cmp -s in.jsonl in.orig || bad "stdin case: the input changed"

mkdir -p adir
refused "--out a directory" "--out adir is a directory" --model "$M" --in in.jsonl --out adir
refused "--out a directory with --force" "--out adir is a directory" --model "$M" --in in.jsonl --out adir --force
[ -z "$(ls adir)" ] || bad "--out a directory: something was written in it"

# ---- item 5: every check needing no model runs before it loads ----
refused "--in missing" "--in nosuch.jsonl: No such file or directory" --model "$M" --in nosuch.jsonl --out o1.jsonl
refused "--in a directory" "--in adir is a directory" --model "$M" --in adir --out o1.jsonl
if [ "$(id -u)" -ne 0 ]; then
    cp in.jsonl noread.jsonl && chmod 000 noread.jsonl
    refused "--in unreadable" "--in noread.jsonl: Permission denied" --model "$M" --in noread.jsonl --out o1.jsonl
fi
refused "--out in a missing directory" "--out nodir/o.jsonl: directory nodir: No such file or directory" \
    --model "$M" --in in.jsonl --out nodir/o.jsonl
refused "--metrics in a missing directory" "--metrics nodir/m.json: directory nodir" \
    --model "$M" --in in.jsonl --out o1.jsonl --metrics nodir/m.json
printf 'x' >o2.jsonl.partial
refused "leftover .partial without --resume" "o2.jsonl.partial exists: an interrupted run left it" \
    --model "$M" --in in.jsonl --out o2.jsonl
refused "leftover .partial without a state, --resume" "--resume: o2.jsonl.partial has no state file" \
    --model "$M" --in in.jsonl --out o2.jsonl --resume
"$PB" -q --model "$M" --in in.jsonl --out o2.jsonl --force 2>err && cmp -s o2.jsonl ref.jsonl \
    && [ ! -e o2.jsonl.partial ] && [ ! -e o2.jsonl.partial.state ] \
    && ok "--force replaces a leftover .partial" || bad "--force over a .partial: $(cat err)"
# a state written by another model: refused by its fingerprints, before the weights
printf 'x' >o3.jsonl.partial
printf '{"version": 1, "records": 0, "bytes": 0, "input_line": 0, "compressed": false, "model": "another", "input": "x", "settings": "y"}\n' >o3.jsonl.partial.state
refused "--resume with another model" "--resume: different model than the interrupted run" \
    --model "$M" --in in.jsonl --out o3.jsonl --resume
# --kv-dtype: a run with an f16 (bf16) KV cache is resumed only with it (the
# model fingerprint names it), one with the backend's own type (f32 here)
# also without the flag
fp=$(sed -n 's/.*, now "\(.*\)"); rerun.*/\1/p' err) # this model's fingerprint, from that refusal
[ -n "$fp" ] || bad "no model fingerprint in the refusal above"
refused "--resume of a plain run with --kv-dtype bf16" "different model than the interrupted run.*$fp kv=bf16" \
    --model "$M" --in in.jsonl --out o3.jsonl --resume --kv-dtype bf16
printf '{"version": 1, "records": 0, "bytes": 0, "input_line": 0, "compressed": false, "model": "%s kv=f16", "input": "x", "settings": "y"}\n' \
    "$fp" >o3.jsonl.partial.state
refused "--resume of an f16-KV run without --kv-dtype" "different model than the interrupted run.*kv=f16" \
    --model "$M" --in in.jsonl --out o3.jsonl --resume
refused "--resume of an f16-KV run with --kv-dtype f16: the model matches" "--resume: different input than" \
    --model "$M" --in in.jsonl --out o3.jsonl --resume --kv-dtype f16
printf '{"version": 1, "records": 0, "bytes": 0, "input_line": 0, "compressed": false, "model": "%s", "input": "x", "settings": "y"}\n' \
    "$fp" >o3.jsonl.partial.state
refused "--resume with --kv-dtype f32 (the cpu's own): the model matches" "--resume: different input than" \
    --model "$M" --in in.jsonl --out o3.jsonl --resume --kv-dtype f32
# --matmul-precision bf16 (inexact bf16 products, the same bits on every CPU;
# also PB_CPU_ISA=avx512bf16 where the CPU has AVX512-BF16) is named by the
# model fingerprint: such a run resumes only with it, an exact run only
# without it.
state_dots() {
    printf '{"version": 1, "records": 0, "bytes": 0, "input_line": 0, "compressed": false, "model": "%s dots=bf16 attn=bf16", "input": "x", "settings": "y"}\n' \
        "$fp" >o3.jsonl.partial.state
}
refused "--resume of an exact run with --matmul-precision bf16" \
    "different model than the interrupted run.*$fp dots=bf16" --model "$M" --in in.jsonl --out o3.jsonl --resume \
    --matmul-precision bf16
state_dots
refused "--resume of a bf16-dots run with --matmul-precision bf16: the model matches" \
    "--resume: different input than" --model "$M" --in in.jsonl --out o3.jsonl --resume --matmul-precision bf16
refused "--resume of a bf16-dots run without --matmul-precision" \
    "different model than the interrupted run.*dots=bf16" --model "$M" --in in.jsonl --out o3.jsonl --resume
isas=portable
"$PB" --version | grep -q "best on this CPU: avx" && isas="portable avx2"
for isa in $isas; do
    export PB_CPU_ISA=$isa
    refused "--resume of a bf16-dots run with --matmul-precision bf16 on the $isa path" \
        "--resume: different input than" --model "$M" --in in.jsonl --out o3.jsonl --resume --matmul-precision bf16
    unset PB_CPU_ISA
done
if "$PB" --version 2>/dev/null | grep -q "AVX512-BF16: yes"; then
    export PB_CPU_ISA=avx512bf16
    refused "--resume of a bf16-dots run with PB_CPU_ISA=avx512bf16: the model matches" \
        "--resume: different input than" --model "$M" --in in.jsonl --out o3.jsonl --resume
    refused "--matmul-precision f32 overrides PB_CPU_ISA=avx512bf16" \
        "different model than the interrupted run.*dots=bf16" --model "$M" --in in.jsonl --out o3.jsonl --resume \
        --matmul-precision f32
    unset PB_CPU_ISA
fi
# --matmul-precision bf16-amx (the bf16 products on the AMX tile unit, bits
# of their own): where the CPU has AMX-BF16 a run writes every record and is
# named by its own fingerprint, not the bf16 products'; with the kernels held
# below AVX-512, or elsewhere, it is refused before the model loads.
if "$PB" --version | grep -q "AMX-BF16: yes"; then
    "$PB" -q --model "$M" --in in.jsonl --out amx.jsonl --matmul-precision bf16-amx 2>err \
        && [ "$(wc -l <amx.jsonl)" -eq 8 ] && ok "--matmul-precision bf16-amx writes 8 records" \
        || bad "--matmul-precision bf16-amx: $(cat err)"
    printf '{"version": 1, "records": 0, "bytes": 0, "input_line": 0, "compressed": false, "model": "%s dots=bf16-amx attn=bf16-amx", "input": "x", "settings": "y"}\n' \
        "$fp" >o3.jsonl.partial.state
    refused "--resume of a bf16-amx run with --matmul-precision bf16-amx: the model matches" \
        "--resume: different input than" --model "$M" --in in.jsonl --out o3.jsonl --resume --matmul-precision bf16-amx
    refused "--resume of a bf16-amx run with --matmul-precision bf16" \
        "different model than the interrupted run.*dots=bf16-amx" --model "$M" --in in.jsonl --out o3.jsonl --resume \
        --matmul-precision bf16
    PB_CPU_ISA=avx2 refused "--matmul-precision bf16-amx with PB_CPU_ISA=avx2" \
        "bf16-amx takes the AVX-512 kernels, and PB_CPU_ISA holds them to avx2" --model "$M" --in in.jsonl \
        --out o4.jsonl --matmul-precision bf16-amx
else
    refused "--matmul-precision bf16-amx without AMX-BF16" "no AMX-BF16 tile unit" --model "$M" --in in.jsonl \
        --out o4.jsonl --matmul-precision bf16-amx
fi
refused "--matmul-precision f64" "--matmul-precision: 'f64' is not f32, bf16 or bf16-amx" --model "$M" --in in.jsonl \
    --out o3.jsonl --matmul-precision f64
# a complete output with --resume: nothing to do, and no model loaded
"$PB" -v --model "$M" --in in.jsonl --out ref.jsonl --resume 2>err
rc=$?
[ $rc -eq 0 ] && grep -q "is complete; nothing to do" err && ! grep -q 'opened ' err \
    && ok "--resume on a complete output loads no weights" || bad "--resume complete (rc=$rc): $(cat err)"

# ---- item 6: model-folder errors, one line, exit 2 ----
refused "missing model folder" "model folder $T/nomodel does not exist" --model "$T/nomodel" --in in.jsonl
refused "a file as --model" "--model $M/config.json is a file, not a model folder" --model "$M/config.json" --in in.jsonl
printf 'GGUF\003\000\000\000' >model.gguf
refused "a GGUF file as --model" "--model model.gguf is a GGUF file (llama.cpp's format), which pippy-batch does not read" \
    --model model.gguf --in in.jsonl
mkdir -p notok && cp "$M/config.json" notok/
refused "model folder without tokenizer.json" "model folder notok has no tokenizer.json" --model notok --in in.jsonl
mkdir -p nocfg
refused "model folder without config.json" "model folder nocfg has no config.json" --model nocfg --in in.jsonl
refused "plan: missing model folder" "model folder $T/nomodel does not exist" plan --model "$T/nomodel"
refused "tokenize: a file as --model" "is a file, not a model folder" tokenize --model "$M/config.json"

# ---- item 4: an empty result set is still a valid .zst ----
: >empty.jsonl
"$PB" -q --model "$M" --in empty.jsonl --out empty.jsonl.zst 2>err
rc=$?
if [ $rc -eq 0 ] && [ -s empty.jsonl.zst ] && zstd -q -t empty.jsonl.zst && [ -z "$(zstdcat empty.jsonl.zst)" ]; then
    ok "empty input gives a valid empty .zst"
else
    bad "empty input (rc=$rc): $(cat err)"
fi
s=0
while [ $s -lt 10 ]; do
    "$PB" -q --model "$M" --in in.jsonl --shard $s/10 --out "out-$s.jsonl.zst" 2>err || bad "shard $s/10: $(cat err)"
    s=$((s + 1))
done
[ -s out-9.jsonl.zst ] && zstd -q -t out-9.jsonl.zst && ok "--shard 9/10 of 8 records: a valid .zst" \
    || bad "--shard 9/10 of 8 records"
n=$(zstdcat out-*.jsonl.zst | jq -s length)
[ "$n" = 8 ] && ok "zstdcat out-*.jsonl.zst | jq over a job array: 8 records" || bad "job array gives '$n' records"

# ---- item 7: the build-tree binary finds the demo model ----
"$PB" -q --in in.jsonl --out bt.jsonl 2>err
rc=$?
[ $rc -eq 0 ] && [ "$(wc -l <bt.jsonl)" -eq 8 ] && ok "build-tree binary: the demo model without --model" \
    || bad "build-tree default model (rc=$rc): $(cat err)"
# the same binary outside its build tree: the installed demo model, else a hint to pass --model
cp "$PB" ./pb-copy
./pb-copy -q --in in.jsonl --out copy.jsonl 2>err
rc=$?
if [ $rc -eq 0 ] || { [ $rc -eq 2 ] && [ "$(wc -l <err)" -eq 1 ] && grep -q "pass --model DIR" err; }; then
    ok "outside the build tree: installed demo or 'pass --model' (rc=$rc)"
else
    bad "outside the build tree (rc=$rc): $(cat err)"
fi
exit $fail

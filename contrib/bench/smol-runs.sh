# Sourced by contrib/bench/logprobs.sh, guided.sh, beam.sh and embed.sh (sh; set -eu): what both
# need to time whole runs of pippy-batch on SmolLM2-135M. The script sets
# NAME (its file name, for messages) and PREFIX (its variables' prefix) first;
# then PREFIX_MODEL (default models/SmolLM2-135M-Instruct), PREFIX_RUNS
# (default 3), PREFIX_THREADS (default 2), PREFIX_BATCH (default 16), and
# PIPPY_BATCH (default build/pippy-batch), PB_SRCDIR (default .), PB_PYTHON.
# A missing model skips the benchmark (exit 0). Gives $tmp (removed at exit),
# $py, $runs, write_records (python3 code on stdin, its records under $tmp),
# run_records NAME [OPTIONS] (one run of $tmp/NAME.jsonl: $wall seconds,
# --metrics in $tmp/m.json) and metric FILE KEY.
src=${PB_SRCDIR:-.}
pb=${PIPPY_BATCH:-$src/build/pippy-batch}
py=${PB_PYTHON:-python3}
eval "model=\${${PREFIX}_MODEL:-\$src/models/SmolLM2-135M-Instruct}"
eval "runs=\${${PREFIX}_RUNS:-3}"
eval "threads=\${${PREFIX}_THREADS:-2}"
eval "batch=\${${PREFIX}_BATCH:-16}"
if [ ! -f "$model/config.json" ]; then
    echo "$NAME: no model at $model (contrib/pb-get-smollm2 fetches SmolLM2): skipped"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# python3 code on stdin with write(name, records) defined: $tmp/name.jsonl
write_records() {
    { printf '%s\n' 'import json, os, sys' 'd = sys.argv[1]' 'def write(name, recs):' \
          '    with open(os.path.join(d, name + ".jsonl"), "w") as f:' \
          '        f.writelines(json.dumps(r) + "\n" for r in recs)'
      cat; } | "$py" - "$tmp"
}

run_records() {
    n=$1
    shift
    t0=$(date +%s.%N)
    "$pb" -q --model "$model" --in "$tmp/$n.jsonl" --out "$tmp/out.jsonl" --force -b "$batch" \
        --threads "$threads" --metrics "$tmp/m.json" "$@"
    t1=$(date +%s.%N)
    wall=$(echo "$t1 - $t0" | bc)
}

metric() { "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

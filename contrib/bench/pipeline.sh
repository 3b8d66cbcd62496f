#!/bin/sh
# Pipeline benchmark (make bench): the same job three ways in one run:
# 1 rank x 2 threads, 2 ranks x 1 thread under mpirun, 2 ranks under a test
# Slurm; --chunks 1, 2, 4, 8; the 2-rank runs with both --split-policy
# equal_size and balanced (the last stage carries the 32000 x 256 LM head).
# Prints tokens/s, each stage's busy fraction and the measured bubble beside
# (p-1)/(m+p-1). Figures only, never pass/fail.
set -u
P="${PIPPY_BATCH:?}"; PY="${PB_PYTHON:-python3}"
D=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
. "$PB_SRCDIR/tests/net/lock.sh"
. "$PB_SRCDIR/tests/net/slurm-env.sh"
trap 'pb_slurm_stop; rm -rf "$D"' EXIT
trap 'exit 1' INT TERM HUP
$PY "$PB_SRCDIR/contrib/pb-make-checkpoint" --family llama --out "$D/m" --layers 8 --hidden 256 \
    --heads 8 --kv-heads 4 --vocab 32000 --max-pos 256 --scale 0.2 >/dev/null || exit 1
zstd -q -d -f -o "$D/m/tokenizer.json" "$PB_SRCDIR/tests/data/tokenizers/llama2.json.zst" || exit 1
i=1; while [ $i -le 64 ]; do echo "{\"prompt\": \"Benchmark prompt number $i:\", \"max_tokens\": 48}"; i=$((i+1)); done >"$D/in.jsonl"
"$P" plan --model "$D/m" --ranks 2 --split-policy balanced --max-seq-len 256 | sed -n '/^stage/,$p'
show() { # label metrics.json
    $PY - "$1" "$2" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[2]))
p = m.get("pipeline")
busy = " ".join("%.0f%%" % (100 * s["busy_fraction"]) for s in (p["stages"] if p else m.get("stages", [])))
bub = "measured %.1f%% vs FillDrain %.1f%%" % (100 * p["bubble_measured"], 100 * p["bubble_filldrain"]) if p else "-"
print("%-38s %8.1f tok/s  busy [%s]  bubble %s" % (sys.argv[1], m["tokens_per_second"], busy, bub))
PYEOF
}
pb_launcher_lock
run="--model $D/m --in $D/in.jsonl --out $D/out.jsonl --force --batch-size 16 -q"
for c in 1 2 4 8; do
    "$P" $run --chunks $c --threads 2 --metrics "$D/a.json" && show "1 rank x 2 threads, c=$c" "$D/a.json"
    for pol in equal_size balanced; do
        $MPIRUN -np 2 "$P" $run --chunks $c --threads 1 --split-policy $pol --metrics "$D/b.json" &&
            show "2 ranks mpirun $pol, c=$c" "$D/b.json"
    done
done
if pb_slurm_start "$D/slurm"; then
    for c in 1 2 4 8; do
        srun --mpi=pmix -n 2 "$P" $run --chunks $c --threads 1 --metrics "$D/c.json" && show "2 ranks srun, c=$c" "$D/c.json"
    done
fi

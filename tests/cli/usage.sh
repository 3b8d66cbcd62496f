#!/bin/sh
# The option surface: --help, --version, usage errors (one line naming the
# option, exit 2), options that do not apply to a command, features not built.
set -u
PB=${PIPPY_BATCH:?}
T=${PB_TEST_TMP:-$(mktemp -d)}
fail=0
ok() { printf 'ok   %s\n' "$1"; }
bad() { printf 'FAIL %s\n' "$1"; fail=1; }

# expect_usage DESC PATTERN ARGS...: exit 2, exactly one stderr line matching PATTERN, nothing on stdout
expect_usage() {
    desc=$1 pat=$2; shift 2
    "$PB" "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    lines=$(wc -l <"$T/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$pat" "$T/err" && [ ! -s "$T/out" ]; then
        ok "$desc"
    else
        bad "$desc (rc=$rc, stderr lines=$lines): $(cat "$T/err")"
    fi
}

"$PB" --help >"$T/help" 2>&1 && ok "--help exits 0" || bad "--help"
grep -q '^Usage: pippy-batch' "$T/help" && ok "--help has usage" || bad "--help usage line"
grep -q '^Examples:' "$T/help" && ok "--help has examples" || bad "--help examples"
"$PB" -h >"$T/help2" 2>&1 && cmp -s "$T/help" "$T/help2" && ok "-h same as --help" || bad "-h"
"$PB" help >"$T/help3" 2>&1 && cmp -s "$T/help" "$T/help3" && ok "help command" || bad "help command"

"$PB" --version >"$T/ver" 2>&1 && ok "--version exits 0" || bad "--version"
for feat in 'pippy-batch [0-9]' '^cuda: ' '^nccl: ' '^pmix: ' '^zstd: ' '^cpu kernels: '; do
    grep -q "$feat" "$T/ver" && ok "--version shows $feat" || bad "--version lacks $feat"
done

expect_usage "unknown long option" "unknown option '--bogus'" --bogus
expect_usage "unknown short option" "unknown option '-Z'" -Z
expect_usage "missing value" "needs a value" --in
expect_usage "non-integer batch size" "--batch-size: 'x' is not an integer" --batch-size x
expect_usage "zero batch size" "--batch-size: 0 is out of range" --batch-size 0
expect_usage "top-p out of range" "--top-p: 2 is out of range" --top-p 2
expect_usage "top-p zero" "--top-p" --top-p 0
expect_usage "negative temperature" "--temperature" --temperature -1
expect_usage "bad temperature" "--temperature: 'hot' is not a number" --temperature hot
expect_usage "bad split policy" "--split-policy: 'fancy'" --split-policy fancy
expect_usage "bad threshold" "bad size in .threshold:lots." --split-policy threshold:lots
expect_usage "decreasing split points" "--split-points: layer numbers must increase" --split-points 8,4
expect_usage "bad split points" "--split-points" --split-points 3,a
expect_usage "bad shard" "--shard: '3'" --shard 3
expect_usage "shard index out of range" "--shard: need 0 <= I < N" --shard 4/4
expect_usage "bad on-error" "--on-error: 'ignore'" --on-error ignore
expect_usage "bad device" "--device: 'tpu'" --device tpu
expect_usage "chunks above batch size" "--chunks 8 is more than --batch-size 4" --batch-size 4 --chunks 8
expect_usage "micro-batch tokens below its sequences" "--max-batch-tokens 3 is less than a micro-batch's 4 sequences" \
    --batch-size 8 --chunks 2 --max-batch-tokens 3
expect_usage "zero micro-batch tokens" "--max-batch-tokens: 0 is out of range" --max-batch-tokens 0
expect_usage "resume to stdout" "--resume needs --out FILE" --resume
expect_usage "force with resume" "--force and --resume are exclusive" --resume --force --out x.jsonl
expect_usage "option of another command" "option --ranks does not apply to the 'run' command" --ranks 2
expect_usage "run option to plan" "option --temperature does not apply to the 'plan' command" plan --temperature 1
expect_usage "unknown command" "unknown command 'frobnicate'" frobnicate
expect_usage "stray argument" "unexpected argument 'extra'" plan extra
expect_usage "model and tokenizer" "--model and --tokenizer are exclusive" tokenize --model a --tokenizer b
expect_usage "model and template" "--model and --template/--tokenizer-config are exclusive" render --model a --template b
expect_usage "template option to run" "option --template does not apply to the 'run' command" --template t
expect_usage "empty stop" "--stop: empty stop string" --stop ""

# --device cuda without a GPU (or without CUDA in the build, or before the
# backend exists): a clear message naming the rank and the reason, exit 2.
"$PB" --device cuda --in /dev/null --out - >"$T/out" 2>"$T/err"
rc=$?
if "${PB_BUILDDIR:?}/tests/cli/cuda_probe" >/dev/null 2>&1 && "$PB" --version | grep -q "cuda: yes (backend built)"; then
    # a GPU is visible: the empty run succeeds on it
    [ $rc -eq 0 ] && ok "--device cuda runs on the visible GPU" || bad "--device cuda on a GPU (rc=$rc): $(cat "$T/err")"
elif [ $rc -eq 2 ] && grep -q -- "--device cuda" "$T/err" &&
     grep -qi "not yet available\|no CUDA support\|no usable GPU" "$T/err"; then
    ok "--device cuda refused clearly"
else
    bad "--device cuda (rc=$rc): $(cat "$T/err")"
fi

# Every long option in --help is documented in the man page, and vice versa.
man1="${PB_SRCDIR:?}/man/pippy-batch.1"
grep -o -- '--[a-z][a-z-]*' "$T/help" | sort -u >"$T/help-opts"
sed -n 's/.*Fl -\([a-z][a-z-]*\).*/--\1/p' "$man1" | sort -u >"$T/man-opts"
for o in $(cat "$T/help-opts"); do
    case $o in --mpi|--wrap|--array|--ntasks-per-node) continue ;; esac
    grep -qx -- "$o" "$T/man-opts" || bad "man page lacks $o"
done
for o in $(cat "$T/man-opts"); do
    case $o in --mpi|--signal) continue ;; esac  # Slurm options named in the text
    grep -qx -- "$o" "$T/help-opts" || bad "--help lacks $o (in man page)"
done
[ $fail -eq 0 ] && ok "help and man page list the same options"
exit $fail

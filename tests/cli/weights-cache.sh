#!/bin/sh
# --weights-cache DIR: the first run writes each stage's packed matrices to a
# file in DIR (made if missing), later runs with the same checkpoint, stage and
# settings map them from there; the output is the same bytes every way. A
# damaged, cut short, foreign or stale file is refused with a warning that says
# why, and rewritten; another --weights-dtype, a changed checkpoint file, or
# another stage gets a file of its own (a stale one is replaced). A DIR that is not a directory is a
# usage error (exit 2). PB_WEIGHTS_CACHE is the default DIR (--no-weights-cache:
# none). Two ranks under mpirun each keep their own stage's.
set -u
PB=${PIPPY_BATCH:?}
T=${PB_TEST_TMP:?}
. "$PB_SRCDIR/tests/net/lock.sh"
fail=0
ok() { printf 'ok   %s\n' "$1"; }
bad() { printf 'FAIL %s\n' "$1"; fail=1; }
cd "$T" || exit 1
cp -r "${PB_DEMO_MODEL:?}" m
C=$T/cache
i=1
while [ $i -le 6 ]; do
    echo "{\"prompt\": \"Cache record $i\", \"max_tokens\": 6}"
    i=$((i + 1))
done >in.jsonl
run() { # OUT ARGS...: a run with -v, its log in err
    out=$1
    shift
    rm -f "$out"
    "$PB" -v --model m --in in.jsonl --out "$out" --batch-size 4 "$@" 2>err
}
files() { ls "$C" 2>/dev/null | grep -c '\.pbw$'; }

run ref.jsonl || bad "reference run: $(tail -3 err)"
# 1. a miss writes the file; the output is the reference's
if run a.jsonl --weights-cache "$C" && grep -q "weights cache .*not there yet" err &&
    grep -q "weights cache .*stage0-[0-9a-f]*\.pbw: wrote [0-9]* matrices" err && cmp -s a.jsonl ref.jsonl &&
    [ "$(files)" -eq 1 ]; then
    ok "first run: DIR made, $(grep -o 'wrote [0-9]* matrices, [0-9.]* MiB' err), output as without it"
else
    bad "first run with --weights-cache: $(grep -i cache err | head -3) $(tail -2 err)"
fi
f=$(ls "$C"/*.pbw | head -1)
[ -z "$(ls -A "$C" | grep -v '\.pbw$')" ] || bad "files left beside the cache: $(ls -A "$C")"
# 2. a hit maps it: nothing written, same output
hit() { # DESC REF ARGS...: REF the output expected
    desc=$1 want=$2
    shift 2
    if run b.jsonl --weights-cache "$C" "$@" && grep -q "weights cache .*: [0-9]* matrices, .* checked" err &&
        ! grep -q "wrote\|warning" err && cmp -s b.jsonl "$want"; then
        ok "$desc: mapped and checked, nothing written, output as without it"
    else
        bad "$desc: $(grep -i 'cache\|warn' err | head -3)"
    fi
}
hit "second run" ref.jsonl
# 3. damaged, cut short, foreign: a warning naming why, rewritten, same output
data_off=$(od -An -tu8 -j24 -N8 "$f" | tr -d ' ')
damaged() { # DESC PATTERN
    if run c.jsonl --weights-cache "$C" && grep -q "warning: weights cache .*$2.*writing the cache again" err &&
        grep -q "wrote" err && cmp -s c.jsonl ref.jsonl; then
        ok "$1: '$(grep -o "weights cache .*" err | head -1 | cut -c1-150)', rewritten"
    else
        bad "$1: $(grep -i 'cache' err | head -3)"
    fi
    hit "after the rewrite ($1)" ref.jsonl
}
printf '\377' | dd of="$f" bs=1 seek=$((data_off + 100)) conv=notrunc 2>/dev/null
damaged "a byte of matrix 0 changed" "matrix 0 of [0-9]* fails its checksum"
size=$(wc -c <"$f")
truncate -s $((size - 4096)) "$f"
damaged "cut short by 4096 bytes" "cut short or grown"
printf 'not a cache at all, just some bytes written where the cache was expected; long enough.....' >"$f"
damaged "another file in its place" "no PBWCACHE header"
printf 'x' | dd of="$f" bs=1 seek=70 conv=notrunc 2>/dev/null
damaged "its key changed" "its key differs"
# a writer killed mid-write left its temporary file: removed by the next
# writer once it is 10 minutes old and its pid is gone; a fresh one is kept
nm=$(basename "$f")
dead=$(cat /proc/sys/kernel/pid_max)
dead=$((dead - 1))
while kill -0 $dead 2>/dev/null; do dead=$((dead - 1)); done
printf 'partial' >"$C/.tmp.$dead.$nm"
touch -d '1 hour ago' "$C/.tmp.$dead.$nm"
printf 'partial' >"$C/.tmp.$((dead - 1)).$nm"
: >"$f" # a miss, so that this run writes
if run c.jsonl --weights-cache "$C" && grep -q "warning: weights cache: removed .*\.tmp\.$dead\.$nm, left by a writer that died" err &&
    [ ! -e "$C/.tmp.$dead.$nm" ] && [ -e "$C/.tmp.$((dead - 1)).$nm" ] && cmp -s c.jsonl ref.jsonl; then
    ok "a dead writer's hour-old temporary file removed, a fresh one kept"
else
    bad "dead writer's temporary file: $(grep -i 'cache' err | head -3); left: $(ls -A "$C")"
fi
rm -f "$C/.tmp.$((dead - 1)).$nm"
# 4. other settings and a changed checkpoint get files of their own
n=$(files)
if run d.jsonl --weights-cache "$C" --weights-dtype bf16 && grep -q wrote err && [ "$(files)" -eq $((n + 1)) ] &&
    run e.jsonl --weights-dtype bf16 && cmp -s d.jsonl e.jsonl; then
    ok "--weights-dtype bf16: a second file; output as without the cache"
else
    bad "--weights-dtype bf16 with a cache: $(grep -i 'cache' err | head -3)"
fi
hit "--weights-dtype bf16, second run" e.jsonl --weights-dtype bf16
touch m/model-00002-of-00002.safetensors
if run g.jsonl --weights-cache "$C" && grep -q "warning: weights cache .*its key differs" err && grep -q wrote err &&
    cmp -s g.jsonl ref.jsonl && [ "$(files)" -eq $((n + 1)) ]; then
    ok "a checkpoint file touched: the stale file is replaced, not used"
else
    bad "after touching a shard: $(grep -i 'cache' err | head -3)"
fi
# 5. the file cannot be written (a directory where it goes): a warning, the
# temporary file removed, the run goes on with the same output
C3=$T/cache3
mkdir -p "$C3/$(basename "$f")"
if run k.jsonl --weights-cache "$C3" && grep -q "warning: weights cache .*not a regular file" err &&
    grep -q "warning: weights cache .*cannot write it: .*(the run goes on without it)" err &&
    cmp -s k.jsonl ref.jsonl && [ "$(ls -A "$C3")" = "$(basename "$f")" ]; then
    ok "unwritable: '$(grep -o 'cannot write it: .*' err)', nothing left behind, output as without it"
else
    bad "a directory in the cache file's place: $(grep -i 'cache' err | head -3); left: $(ls -A "$C3")"
fi
# 6. DIR not a directory: exit 2 before the weights are opened
: >notadir
"$PB" -q --model m --in in.jsonl --out h.jsonl --weights-cache notadir 2>err
rc=$?
msg=$(cat err)
"$PB" -v --model m --in in.jsonl --out h.jsonl --weights-cache notadir 2>err
if [ $rc -eq 2 ] && [ "$(echo "$msg" | wc -l)" -eq 1 ] && echo "$msg" | grep -q -- "--weights-cache notadir: " &&
    [ ! -e h.jsonl ] && ! grep -q "opened " err; then
    ok "a file as DIR: exit 2 before the weights are opened, '$msg'"
else
    bad "a file as DIR: rc=$rc $(cat err)"
fi
# 6b. PB_WEIGHTS_CACHE: the default DIR; --weights-cache overrides it, --no-weights-cache turns it off,
# and a file there is exit 2 naming the variable
E=$T/envcache
rm -f e.jsonl
if PB_WEIGHTS_CACHE=$E run e.jsonl && grep -q "stage0-[0-9a-f]*\.pbw: wrote" err && cmp -s e.jsonl ref.jsonl &&
    [ "$(ls "$E" | grep -c '\.pbw$')" -eq 1 ] &&
    PB_WEIGHTS_CACHE=$E run e.jsonl && grep -q "matrices, .* checked" err && cmp -s e.jsonl ref.jsonl; then
    ok "PB_WEIGHTS_CACHE=DIR: written, then mapped; output as without it"
else
    bad "PB_WEIGHTS_CACHE=DIR: $(grep -i 'cache\|error' err | head -3)"
fi
E2=$T/envcache2
if PB_WEIGHTS_CACHE=$E2 run e.jsonl --no-weights-cache && [ ! -e "$E2" ] && ! grep -qi "weights cache" err &&
    cmp -s e.jsonl ref.jsonl &&
    PB_WEIGHTS_CACHE=$E2 run e.jsonl --weights-cache "$T/optcache" && [ ! -e "$E2" ] &&
    [ "$(ls "$T/optcache" | grep -c '\.pbw$')" -eq 1 ] && cmp -s e.jsonl ref.jsonl &&
    PB_WEIGHTS_CACHE= run e.jsonl && ! grep -qi "weights cache" err; then
    ok "--no-weights-cache and an empty PB_WEIGHTS_CACHE use none; --weights-cache DIR wins over the variable"
else
    bad "--no-weights-cache / --weights-cache beside PB_WEIGHTS_CACHE: $(ls -A "$T" | tr '\n' ' ') $(head -3 err)"
fi
rm -f h.jsonl
PB_WEIGHTS_CACHE=notadir "$PB" -q --model m --in in.jsonl --out h.jsonl 2>err
rc=$?
if [ $rc -eq 2 ] && grep -q "PB_WEIGHTS_CACHE=notadir: not a directory" err && [ ! -e h.jsonl ]; then
    ok "PB_WEIGHTS_CACHE naming a file: exit 2, '$(cat err)'"
else
    bad "PB_WEIGHTS_CACHE naming a file: rc=$rc $(cat err)"
fi
# 7. two ranks: one file per stage, a hit on each the second time, output as world size 1
pb_launcher_lock
C2=$T/cache2
for round in 1 2; do
    rm -f r.jsonl
    timeout 120 $MPIRUN -np 2 "$PB" -v --model m --in in.jsonl --out r.jsonl --batch-size 4 --weights-cache "$C2" \
        2>err
    rc=$?
    w=$(grep -c "wrote" err)
    h=$(grep -c "matrices, .* checked" err)
    if [ $round -eq 1 ]; then want_w=2 want_h=0; else want_w=0 want_h=2; fi
    if [ $rc -eq 0 ] && cmp -s r.jsonl ref.jsonl && [ "$(ls "$C2" | grep -c 'stage[01]-.*\.pbw')" -eq 2 ] &&
        [ "$w" -eq $want_w ] && [ "$h" -eq $want_h ]; then
        ok "mpirun -np 2, round $round: $w written, $h mapped; output as -np 1"
    else
        bad "mpirun -np 2, round $round (rc=$rc, $w written, $h mapped): $(grep -i 'cache\|error' err | head -4)"
    fi
done
exit $fail

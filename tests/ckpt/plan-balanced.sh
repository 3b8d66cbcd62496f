#!/bin/sh
# plan --split-policy balanced: on models whose LM head outweighs layers, the
# split minimises the largest stage's compute per token, recomputed here
# independently from config.json and the safetensors header (every layer
# weight one multiply-add, attention 2 * heads * head_dim * min(256, context),
# the LM head vocab x hidden, the embedding lookup hidden) over every
# contiguous split; the head's stage gets fewer layers than with equal_size
# (unless both give it one); plan shows the other policy's split.
set -u
T=$PB_TEST_TMP
fail=0
err() { echo "FAIL: $*"; fail=1; }

check() { # model ranks max_seq_len
    "$PIPPY_BATCH" plan --model "$1" --ranks "$2" --max-seq-len "$3" --split-policy balanced --json > "$T/b.json" \
        || { err "plan balanced $1 --ranks $2"; return; }
    "$PIPPY_BATCH" plan --model "$1" --ranks "$2" --max-seq-len "$3" --json > "$T/e.json" \
        || { err "plan equal_size $1 --ranks $2"; return; }
    "$PB_PYTHON" - "$1" "$2" "$3" "$T/b.json" "$T/e.json" <<'EOF' || fail=1
import itertools, json, struct, sys
model, n, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bal, eq = json.load(open(sys.argv[4])), json.load(open(sys.argv[5]))
cfg = json.load(open(model + "/config.json"))
with open(model + "/model.safetensors", "rb") as f:
    hdr = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
L, H, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
heads = cfg["num_attention_heads"]
hd = cfg.get("head_dim") or H // heads
numel = {k: eval("*".join(map(str, v["shape"])) or "1") for k, v in hdr.items() if k != "__metadata__"}
layer = [2 * heads * hd * min(256, seq)] * L
for k, c in numel.items():
    if k.startswith("model.layers."):
        layer[int(k.split(".")[2])] += c
first = H                                            # embedding lookup
last = numel["model.norm.weight"] + numel.get("lm_head.weight", V * H)

def cost(b, e):
    return sum(layer[b:e]) + (first if b == 0 else 0) + (last if e == L else 0)

best = min(max(cost(b, e) for b, e in zip((0,) + c, c + (L,)))
           for c in itertools.combinations(range(1, L), n - 1))
ok = True
def bad(msg):
    global ok
    print("FAIL:", msg); ok = False
for p in (bal, eq):
    for s in p["stages"]:
        if s["compute_per_token"] != cost(*s["layers"]):
            bad(f"{model} n={n}: stage {s['layers']} compute {s['compute_per_token']} != {cost(*s['layers'])}")
bmax = max(s["compute_per_token"] for s in bal["stages"])
if bmax != best:
    bad(f"{model} n={n}: balanced max stage {bmax}, best possible {best}")
if bal["policy"] != "balanced" or bal["other_policy"]["policy"] != "equal_size" \
        or eq["other_policy"]["policy"] != "balanced":
    bad("policy names")
if [s["layers"] for s in bal["other_policy"]["stages"]] != [s["layers"] for s in eq["stages"]]:
    bad("balanced plan's other_policy is not the equal_size plan")
bl, el = bal["stages"][-1]["layers"], eq["stages"][-1]["layers"]
if not (bl[1] - bl[0] < el[1] - el[0] or bl[1] - bl[0] == el[1] - el[0] == 1):
    bad(f"{model} n={n}: head stage {bl} not smaller than equal_size's {el}")
sys.exit(0 if ok else 1)
EOF
}

GEN="$PB_PYTHON $PB_SRCDIR/contrib/pb-make-checkpoint"
# untied llama, head = 50 x a layer's weights
$GEN --family llama --out "$T/llama" --layers 8 --hidden 64 --heads 4 --kv-heads 2 --vocab 8000 --max-pos 512 \
    >/dev/null || exit 1
# tied (the head is the embedding), bf16: the cost counts elements, not bytes
$GEN --family llama --out "$T/tied" --layers 10 --hidden 64 --heads 4 --vocab 3000 --tie 1 --dtype bf16 \
    --max-pos 128 >/dev/null || exit 1
check "$T/llama" 2 512
check "$T/llama" 3 512
check "$T/llama" 3 32
check "$T/tied" 2 128
check "$T/tied" 4 128

# the table: a compute column, the chosen split and the other policy's
"$PIPPY_BATCH" plan --model "$T/llama" --ranks 2 > "$T/t1" || err "table"
grep -q "^stage .* compute " "$T/t1" && grep -q "^balanced would split: 0-" "$T/t1" \
    || err "equal_size table: $(cat "$T/t1")"
"$PIPPY_BATCH" plan --model "$T/llama" --ranks 2 --split-policy balanced > "$T/t2" || err "table balanced"
grep -q "^split *balanced into 2 stages" "$T/t2" && grep -q "^equal_size would split: 0-" "$T/t2" \
    || err "balanced table: $(cat "$T/t2")"
"$PIPPY_BATCH" plan --model "$T/llama" --ranks 2 --split-policy balance 2> "$T/e"; rc=$?
[ $rc -eq 2 ] && grep -q "equal_size, balanced or threshold" "$T/e" || err "bad policy: rc $rc $(cat "$T/e")"
"$PIPPY_BATCH" plan --model "$T/llama" --ranks 9 --split-policy balanced 2> "$T/e"; rc=$?
[ $rc -eq 2 ] && grep -q "at most 8" "$T/e" || err "balanced ranks > layers: rc $rc $(cat "$T/e")"
exit $fail

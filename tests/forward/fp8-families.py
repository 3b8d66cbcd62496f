#!/usr/bin/env python3
"""FP8 block-quantized checkpoints (fp8_ref.py) against HF transformers 5.x in f32 with every weight the folder
stores quantized replaced by its dequantized value (fp8_ref.dequantize_model), on tiny models made by from_config
+ save_pretrained and converted by fp8_ref.convert_checkpoint:
  Llama      hidden 192 (a block of 128 and a partial one of 64), intermediate 320 (128 + 128 + 64), an untied
             head, f32 in one model.safetensors (the others sharded), blocks [128, 128], F32 scales;
  Phi-3      fused qkv_proj and gate_up_proj, hidden 256, intermediate 384, bf16, blocks [128, 128], BF16 scales;
  Mixtral    8 experts (per-expert w1/w2/w3 in the file), the router kept, hidden 128, f32, blocks [128, 128];
  Qwen3-MoE  8 experts (gate/up/down), q/k norms, hidden 128, expert intermediate 96, f32, blocks [64, 128]
             (a partial block of 32 rows in gate and up).
pippy-batch reads the folders as they are (--weights-dtype stored, the default). Prompts of token ids, greedy,
--ignore-eos: every prompt and completion token's log probability and the 20 most likely within TOL of log_softmax
of the reference's logits (as int8-families.py), the completion equal to generate()'s up to the first near-tie
(HF's top-2 margin under TIE). Each reference that is wrong in one way (the unquantized weights; the scale not
applied; the scale grid read by columns, or with a row stride of floor(n_in / bc) blocks; other blocks; blocks
transposed; the router quantized too; the experts kept; gate and up blocked as one matrix; the BF16 scales
unrounded) must be farther than MUTANT x TOL from pippy-batch's, or the comparison could not catch that mistake.
--weights-dtype f32 (dequantized at load) must give the default run's log probabilities within SAME_F32 (both
use the exact dequantized values). Where every dimension of a quantized matrix is a multiple of the block or
within one block (Phi-3, Mixtral), HF transformers' own FP8 reader (from_pretrained on the FP8 folder with
FineGrainedFP8Config(dequantize=True): on the CPU it dequantizes at load, in the model's dtype, f32 here) must load
weights bit-identical to dequantize_model's and be within TOL of pippy-batch (it derives the block from the scale
grid, n // grid's n, which is wrong for a partial block after full ones: not used on Llama and Qwen3-MoE).
Then compressed-tensors FP8 folders (llm-compressor's "float-quantized" format: X.weight in e4m3 with
X.weight_scale, the quantization done by the compressed_tensors package itself, fp8_ref.ct_*) against HF f32 with
the weights dequantized as the folder stores them (fp8_ref.ct_dequantize_model), the same checks:
  ct-llama      the FP8_DYNAMIC recipe (a scale a row, BF16 as the model's dtype: the hub's common case) on a
                bf16 Llama as Llama above, the folder written by compressed_tensors end to end
                (apply_quantization_config, ModelCompressor.compress_model, save_pretrained, update_config);
  ct-qwen2      the FP8 recipe (one scale a matrix, static activations: X.input_scale beside, calibrated on
                token ids), q/k/v biases, f32, also written by compressed_tensors end to end;
  ct-qwen3_moe  the FP8_BLOCK recipe (blocks [128, 128]), the experts quantized (each expert's matrices, the
                routers kept), head_dim 48 (q [192, 128] and o [128, 192]: partial blocks of 64 rows and of 64
                columns), expert intermediate 96 (partial blocks of 96 rows and of 96 columns), f32, written by
                fp8_ref.ct_convert_checkpoint (compressed_tensors' quantization tensor by tensor: its model-level
                path quantizes nn.Linear modules, which HF 5.x's fused experts are not).
The end-to-end folders must hold the tensors ct_convert_checkpoint writes from the same checkpoint, bit for bit,
and the same quantization_config. HF transformers' own reader (from_pretrained with
CompressedTensorsConfig(dequantize=True)) must load weights bit-identical to ct_dequantize_model's where the
scales are F32; with BF16 scales it rounds each product q * s to BF16 (compressed_tensors' dequantize computes in
the scale's dtype): its weights must be those, bit for bit, and that reading is one of the wrong references. With
F32 scales its log probabilities must be within TOL of pippy-batch's. (HF's expert path multiplies an expert's
matrix by its scale tensor by broadcasting, right for a block grid of 1 x 1 only, a RuntimeError for more blocks:
ct-qwen3_moe's experts are within one block.) The compressed-tensors wrong references, each farther than
MUTANT x TOL: the unquantized weights; the scale not applied; a row's scale applied to the column of its index;
the first row's scale for the whole matrix; the products rounded to BF16 (HF's reading); a module's input_scale
taken for its weight's; scales per channel instead of per tensor; blocks of n // the scale grid's n (HF's
fine-grained reader's rule); gate and up blocked as one; the router quantized too; the experts kept; blocks
[64, 128].
The figures are printed. PB_FP8_FAMILIES=llama,phi3 runs only those families."""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TOL = 2e-4
SAME_F32 = 1e-5
TIE = 1e-3
MUTANT = 10
N_NEW = 24
PROMPT_LENS = (5, 17, 11)
TOP = 20
WRONG_READERS = {"scale not applied": dict(apply_scale=False)}
FAMILIES = {  # name -> (model_type, config, saved dtype, convert_checkpoint's arguments, {mutant: its arguments})
    "llama": ("llama", dict(hidden_size=192, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                            intermediate_size=320, max_position_embeddings=64, tie_word_embeddings=False), "float32",
              dict(block=(128, 128)),
              {"scale grid read by columns": dict(grid="cols"), "scale grid stride floor(n_in / 128)":
               dict(grid="floor"), "blocks [64, 128]": dict(block=(64, 128))}),
    "phi3": ("phi3", dict(pad_token_id=0, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                          num_hidden_layers=2, intermediate_size=384, max_position_embeddings=64), "bfloat16",
             dict(block=(128, 128), scale_dtype="BF16"),
             {"BF16 scales unrounded": dict(scale_dtype="F32"), "scale grid read by columns": dict(grid="cols"),
              "fused qkv kept": dict(skip=("qkv_proj",))}),
    "mixtral": ("mixtral", dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                intermediate_size=256, max_position_embeddings=64, num_local_experts=8,
                                num_experts_per_tok=2), "float32",
                dict(block=(128, 128)),
                {"router quantized too": dict(router=True), "experts kept": dict(skip=("experts",)),
                 "blocks [64, 128]": dict(block=(64, 128))}),
    "qwen3_moe": ("qwen3_moe", dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                    num_hidden_layers=2, intermediate_size=160, moe_intermediate_size=96,
                                    num_experts=8, num_experts_per_tok=2, max_position_embeddings=64), "float32",
                  dict(block=(64, 128)),
                  {"blocks transposed [128, 64]": dict(transposed=True), "gate and up blocked as one":
                   dict(fused_experts=True), "router quantized too": dict(router=True),
                   "blocks [128, 128]": dict(block=(128, 128))}),
}
# compressed-tensors: name -> (model_type, config, saved dtype, ct arguments (strategy, block), "library" (written
# by compressed_tensors end to end) or "converter" (fp8_ref.ct_convert_checkpoint), {mutant: its arguments});
# input_scales=True stands for the folder's input scales
CT_FAMILIES = {
    "ct-llama": ("llama", dict(hidden_size=192, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                               intermediate_size=320, max_position_embeddings=64, tie_word_embeddings=False),
                 "bfloat16", dict(strategy="channel"), "library",
                 {"channel scales applied by column": dict(scale_axis="cols"),
                  "one scale a matrix (the first row's)": dict(scale_axis="first"),
                  "products rounded to BF16 (HF's reader)": dict(product="scale")}),
    "ct-qwen2": ("qwen2", dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                               intermediate_size=320, max_position_embeddings=64, tie_word_embeddings=False),
                 "float32", dict(strategy="tensor"), "library",
                 {"input_scale taken for the weight's": dict(input_scales=True),
                  "scales per channel": dict(strategy="channel")}),
    "ct-qwen3_moe": ("qwen3_moe", dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=48,
                                       num_hidden_layers=2, intermediate_size=160, moe_intermediate_size=96,
                                       num_experts=8, num_experts_per_tok=2, max_position_embeddings=64),
                     "float32", dict(strategy="block"), "converter",
                     {"blocks n // the scale grid's n (HF's fine-grained reader)": dict(grid="derived"),
                      "gate and up blocked as one": dict(fused_experts=True),
                      "router quantized too": dict(router=True), "experts kept": dict(skip=("experts",)),
                      "blocks [64, 128]": dict(block=(64, 128))}),
}


def hf_fp8_reader(d):
    """HF transformers' own reader of the FP8 folder d, dequantizing at load into f32. Its quantizer asks for the
    `accelerate` package, which the CPU's dequantizing path does not use: without it the check is bypassed (and
    said)."""
    import torch
    from transformers import AutoModelForCausalLM, FineGrainedFP8Config

    try:
        import accelerate  # noqa: F401
    except ImportError:
        import transformers.quantizers.quantizer_finegrained_fp8 as q
        q.is_accelerate_available = lambda: True
        print("  (accelerate is not installed: HF's check for it bypassed; its dequantizing path does not use it)")
    return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                quantization_config=FineGrainedFP8Config(dequantize=True)).eval()


def check_folder(src, dst, block, scale_dtype, names):
    """The FP8 folder's quantized tensors: F8_E4M3 with a scale of scale_dtype and shape ceil(shape / block)
    beside each, the index naming every tensor in its file, quantization_config in config.json."""
    from safetensors import safe_open

    errors, where = [], {}
    for fn in sorted(f for f in os.listdir(dst) if f.endswith(".safetensors")):
        with safe_open(os.path.join(dst, fn), "pt") as f:
            for k in f.keys():
                where[k] = fn
                sl = f.get_slice(k)
                if k in names:
                    sc = f.get_slice(k + "_scale_inv")
                    want = [-(-n // b) for n, b in zip(sl.get_shape(), block)]
                    if sl.get_dtype() != "F8_E4M3" or sc.get_dtype() != scale_dtype or sc.get_shape() != want:
                        errors.append(f"{k}: {sl.get_dtype()} {sl.get_shape()}, scale {sc.get_dtype()} "
                                      f"{sc.get_shape()} (want F8_E4M3, {scale_dtype} {want})")
                elif sl.get_dtype() == "F8_E4M3":
                    errors.append(f"{k}: F8_E4M3 but not quantized")
    index = os.path.join(dst, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            if json.load(f)["weight_map"] != where:
                errors.append("the index's weight_map is not where the tensors are")
    elif set(where.values()) != {"model.safetensors"} or os.path.isfile(os.path.join(src, os.path.basename(index))):
        errors.append(f"no index, but the tensors in {sorted(set(where.values()))}")
    with open(os.path.join(dst, "config.json")) as f:
        qc = json.load(f).get("quantization_config", {})
    if qc.get("quant_method") != "fp8" or qc.get("weight_block_size") != list(block):
        errors.append(f"quantization_config {qc}")
    return errors


def hf_ct_reader(d):
    """HF transformers' own reader of the compressed-tensors folder d, dequantizing at load into f32."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    with warnings.catch_warnings():   # that the folder's quantization_config is used, with dequantize=True
        warnings.simplefilter("ignore", UserWarning)
        return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                    quantization_config=CompressedTensorsConfig(dequantize=True)).eval()


def tensors(d):
    """{name: (file, dtype, shape)} of the folder d's safetensors files."""
    from safetensors import safe_open

    out = {}
    for fn in sorted(f for f in os.listdir(d) if f.endswith(".safetensors")):
        with safe_open(os.path.join(d, fn), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                out[k] = (fn, sl.get_dtype(), sl.get_shape())
    return out


def check_ct_folder(d, strategy, block, scale_dtype, names, static):
    """The compressed-tensors folder d: each quantized tensor (names) F8_E4M3 with X.weight_scale of scale_dtype
    and the strategy's shape ([1], [n_out, 1], the block grid) beside it, X.input_scale [1] where static, no other
    F8_E4M3 tensor nor scale, the index naming every tensor in its file, compressed_tensors' quantization_config
    in config.json."""
    errors, have = [], tensors(d)
    for k, (fn, dt, shape) in have.items():
        mod = k.rsplit(".", 1)[0]
        if k in names:
            want = {"tensor": [1], "channel": [shape[0], 1]}.get(strategy) or \
                [-(-n // b) for n, b in zip(shape, block)]
            sc = have.get(mod + ".weight_scale", (None, None, None))
            if dt != "F8_E4M3" or sc[0] != fn or sc[1:] != (scale_dtype, want):
                errors.append(f"{k}: {dt} {shape}, scale {sc} (want F8_E4M3, {scale_dtype} {want} in {fn})")
            isc = have.get(mod + ".input_scale")
            if bool(isc) != static or (isc and isc[2] != [1]):
                errors.append(f"{k}: input_scale {isc} ({'static' if static else 'dynamic'} activations)")
        elif dt == "F8_E4M3" or (k.endswith("_scale") and mod + ".weight" not in names):
            errors.append(f"{k}: {dt} but not a quantized weight's")
    index = os.path.join(d, "model.safetensors.index.json")
    files = {v[0] for v in have.values()}
    if os.path.isfile(index):
        with open(index) as f:
            if json.load(f)["weight_map"] != {k: v[0] for k, v in have.items()}:
                errors.append("the index's weight_map is not where the tensors are")
    elif files != {"model.safetensors"}:
        errors.append(f"no index, but the tensors in {sorted(files)}")
    with open(os.path.join(d, "config.json")) as f:
        qc = json.load(f).get("quantization_config", {})
    w = qc.get("config_groups", {}).get("group_0", {}).get("weights", {})
    if qc.get("quant_method") != "compressed-tensors" or qc.get("format") != "float-quantized" or \
            qc.get("quantization_status") != "compressed" or w.get("strategy") != strategy or \
            w.get("block_structure") != (list(block) if strategy == "block" else None) or "lm_head" not in \
            qc.get("ignore", []):
        errors.append(f"quantization_config {qc}")
    return errors


def same_folder(a, b):
    """How the folders a and b differ: their tensors (names, dtypes, shapes, bytes) and quantization_config but
    its version (empty: none)."""
    import torch
    from safetensors.torch import load_file

    errors, ta, tb = [], {}, {}
    for d, t in ((a, ta), (b, tb)):
        for fn in (f for f in os.listdir(d) if f.endswith(".safetensors")):
            t.update(load_file(os.path.join(d, fn)))
    if ta.keys() != tb.keys():
        errors.append(f"tensors only in one: {sorted(ta.keys() ^ tb.keys())[:6]}")
    diff = [k for k in ta.keys() & tb.keys() if ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape or
            not torch.equal(ta[k].view(-1).view(torch.uint8), tb[k].view(-1).view(torch.uint8))]
    if diff:
        errors.append(f"{len(diff)} tensors differ: {sorted(diff)[:6]}")
    qc = []
    for d in (a, b):
        with open(os.path.join(d, "config.json")) as f:
            qc.append({k: v for k, v in json.load(f).get("quantization_config", {}).items() if k != "version"})
    if qc[0] != qc[1]:
        errors.append(f"quantization_config {qc[0]} and {qc[1]}")
    return errors


def main():
    # compressed_tensors warns for each matrix whose columns are not a multiple of the block
    os.environ.setdefault("COMPRESSED_TENSORS_LOG_DISABLED", "1")
    import numpy as np
    import torch
    from make_goldens import rescale
    from transformers import AutoConfig, AutoModelForCausalLM

    import fp8_ref
    import quant_check

    fp8_ref.selftest()
    fp8_ref.ct_selftest()
    pb = os.environ.get("PIPPY_BATCH") or os.path.join(os.environ.get("PB_BUILDDIR", "."), "pippy-batch")
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    data = os.environ.get("PB_TESTDATA") or os.path.join(HERE, "..", "data")
    only = [f for f in os.environ.get("PB_FP8_FAMILIES", "").split(",") if f]
    torch.set_num_threads(2)
    failures = []

    def ref_distance(a, b):
        """As distance, between two logits arrays [P + N_NEW, V]: at each position, a's TOP + 1 most likely."""
        worst = 0.0
        for k in range(len(a) - 1):
            la, lb = quant_check.log_softmax(a[k]), quant_check.log_softmax(b[k])
            top = np.argsort(la)[::-1][:TOP + 1]
            worst = max(worst, float(np.max(np.abs(la[top] - lb[top]))))
        return worst

    def same_run(a, b, n):
        """Largest difference of two records' log probabilities along the same tokens (the first n completion
        tokens); inf where their tokens differ or their top lists by more than one entry (a near-tie's order)."""
        worst = 0.0
        for ea, eb in list(zip(a["logprobs"][:n], b["logprobs"][:n])) + \
                list(zip(a["prompt_logprobs"][1:], b["prompt_logprobs"][1:])):
            ta, tb = ea["top_logprobs"], eb["top_logprobs"]
            if ea.get("id") != eb.get("id") or [t["id"] for t in ta] != [t["id"] for t in tb]:
                # equal log probabilities within SAME_F32 may order a near-tie differently
                da = {t["id"]: t["logprob"] for t in ta}
                db = {t["id"]: t["logprob"] for t in tb}
                common = set(da) & set(db)
                if len(common) < len(da) - 1 or ea.get("id") != eb.get("id"):
                    return float("inf")
                worst = max([worst] + [abs(da[k] - db[k]) for k in common])
            else:
                worst = max([worst] + [abs(x["logprob"] - y["logprob"]) for x, y in zip(ta, tb)])
            worst = max(worst, abs(ea["logprob"] - eb["logprob"]))
        return worst

    def run_pb(d, inp, extra):
        r = subprocess.run([pb, "-q", "--model", d, "--no-weights-cache", "--temperature", "0", "--ignore-eos",
                            "--threads", "2", "--in", inp, "--out", "-"] + extra, capture_output=True, timeout=300)
        if r.returncode:
            return None, f"exit {r.returncode}: {r.stderr.decode()[-1500:]}"
        return {o["id"]: o for o in map(json.loads, r.stdout.decode().splitlines())}, None

    todo = [(fam, spec[:4], None, spec[4]) for fam, spec in FAMILIES.items()] + \
        [(fam, spec[:4], spec[4], spec[5]) for fam, spec in CT_FAMILIES.items()]
    for fam, (mtype, over, dtype, conv), maker, mutants in todo:
        if only and fam not in only:
            continue
        ct = maker is not None
        src = os.path.join(tmp, "fp8-src-" + fam)
        d = os.path.join(tmp, "fp8-" + fam)
        seed = sum(map(ord, fam))
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        m = AutoModelForCausalLM.from_config(AutoConfig.for_model(mtype, vocab_size=32000, **over),
                                             attn_implementation="eager")
        rescale(m, seed)
        shard = "1GB" if fam.endswith("llama") else "2MB"
        m.to(getattr(torch, dtype)).save_pretrained(src, max_shard_size=shard)
        subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(src, "tokenizer.json"),
                        os.path.join(data, "tokenizers", "llama2.json.zst")], check=True)
        inputs, how_made = None, ""
        if not ct:
            block, sdt = conv.get("block", fp8_ref.BLOCK), conv.get("scale_dtype", "F32")
            qnames = fp8_ref.convert_checkpoint(src, d, **conv)
            failures += [f"{fam}: the FP8 folder: {e}" for e in check_folder(src, d, block, sdt, set(qnames))]
            kind = f"blocks {list(block)}"
            dequantize = fp8_ref.dequantize_model
        else:
            strategy = conv["strategy"]
            scheme = fp8_ref.ct_scheme(strategy, conv.get("block"))
            block, sdt = scheme.weights.block_structure, {"float32": "F32", "bfloat16": "BF16"}[dtype]
            static = not scheme.input_activations.dynamic
            kind = f"strategy {strategy}" + (f" {list(block)}" if block else "") + \
                (", static input scales" if static else "")
            if maker == "library":
                calibration = [rng.integers(3, 32000, size=16).tolist() for _ in range(2)]
                qnames, inputs = fp8_ref.ct_save_pretrained(m, d, calibration=calibration, max_shard_size=shard,
                                                            **conv)
                shutil.copy(os.path.join(src, "tokenizer.json"), d)
                # the same checkpoint through ct_convert_checkpoint, with the calibration's input scales
                fp8_ref.ct_convert_checkpoint(src, d + "-converter", input_scales=inputs, **conv)
                errs = same_folder(d, d + "-converter")
                failures += [f"{fam}: compressed_tensors' folder and ct_convert_checkpoint's: {e}" for e in errs]
                how_made = "written by compressed_tensors end to end, " + \
                    ("the same as ct_convert_checkpoint's" if not errs else "NOT ct_convert_checkpoint's")
            else:
                qnames = fp8_ref.ct_convert_checkpoint(src, d, **conv)
                how_made = "written by ct_convert_checkpoint"
            errs = check_ct_folder(d, strategy, block, sdt, set(qnames), static)
            failures += [f"{fam}: the compressed-tensors folder: {e}" for e in errs]

            def dequantize(m, **how):
                if how.get("input_scales") is True:
                    how["input_scales"] = inputs
                return fp8_ref.ct_dequantize_model(m, dtype=dtype, **how)
        del m
        # HF's own fine-grained FP8 reader takes the block as n // (scale grid's n): right where every dimension
        # of a quantized matrix is a multiple of the block or within one block
        from safetensors import safe_open
        partial = False
        for fn in (f for f in os.listdir(d) if f.endswith(".safetensors") and not ct):
            with safe_open(os.path.join(d, fn), "pt") as f:
                partial |= any(n % b and n > b for k in qnames if k in f.keys()
                               for n, b in zip(f.get_slice(k).get_shape(), block))

        def load(how):
            """HF on the saved folder in f32, dequantized as dequantize_model(**how) (None: not at all)."""
            m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
            names = [] if how is None else dequantize(m, **dict(conv, **how))
            return m, names

        ref, names = load({})
        prompts = [rng.integers(3, 32000, size=n).tolist() for n in PROMPT_LENS]
        paths, logits = [], []
        with torch.no_grad():
            for p in prompts:
                ids = torch.tensor([p])
                g = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=N_NEW,
                                 min_new_tokens=N_NEW, pad_token_id=0, eos_token_id=None)[0, len(p):].tolist()
                paths.append(g)
                logits.append(ref(torch.tensor([p + g])).logits[0].numpy())

        # HF's own reader of the FP8 folder: the same weights as dequantize_model's (compressed-tensors with BF16
        # scales: its products rounded to BF16, so not then compared with pippy-batch's within TOL)
        hm, hf_note, hf_exact = None, "HF's reader not used (partial blocks)", True
        if ct or not partial:
            hm = hf_ct_reader(d) if ct else hf_fp8_reader(d)
            hf_exact = not ct or sdt == "F32"
            sd_ref = (ref if hf_exact else load(dict(product="scale"))[0]).state_dict()
            sd_hf = hm.state_dict()
            diff = [k for k in sd_ref if k not in sd_hf or not torch.equal(sd_ref[k], sd_hf[k])]
            what = ("compressed-tensors" if ct else "FP8") + " reader"
            hf_note = (f"HF's own {what}: {len(sd_ref) - len(diff)} of {len(sd_ref)} tensors bit-identical to "
                       f"{'ct_' if ct else ''}dequantize_model's" + ("" if hf_exact else " with its products "
                                                                   "rounded to BF16"))
            if diff:
                failures.append(f"{fam}: HF's {what}'s weights differ from {'ct_' if ct else ''}dequantize_model's"
                                f"{'' if hf_exact else ' (products rounded to BF16)'}: {diff[:6]}")

        inp = os.path.join(d, "in.jsonl")
        with open(inp, "w") as f:
            f.writelines(json.dumps({"id": i, "prompt": p, "max_tokens": N_NEW, "logprobs": TOP,
                                     "prompt_logprobs": TOP}) + "\n" for i, p in enumerate(prompts))
        got, err = run_pb(d, inp, [])
        if err:
            failures.append(f"{fam}: {err}")
            # the reference's own figures: how far each wrong reference is from it
            away = {}
            for what, how in [("unquantized", None)] + list(WRONG_READERS.items()) + list(mutants.items()):
                mm, _ = load(how)
                with torch.no_grad():
                    away[what] = max(ref_distance(logits[i], mm(torch.tensor([p + paths[i]])).logits[0].numpy())
                                     for i, p in enumerate(prompts))
            print(f"{fam}: FAIL ({len(qnames)} tensors quantized, {kind}, {sdt} scales, {len(names)} modules "
                  f"dequantized; {how_made + '; ' if how_made else ''}{hf_note}); pippy-batch did not run; the "
                  "wrong references' distance from the FP8 reference itself: " +
                  ", ".join(f"{w} {v:.3g}" for w, v in away.items()))
            continue
        compared, worst = quant_check.compare(fam, "FP8", got, prompts, paths, logits, N_NEW, TIE, TOL, failures)
        ok = [i for i in range(len(prompts)) if i in got and compared[i] > 0]
        # --weights-dtype f32: the same dequantized values, converted at load
        f32, err = run_pb(d, inp, ["--weights-dtype", "f32"])
        if err:
            failures.append(f"{fam}: --weights-dtype f32: {err}")
            same = float("inf")
        else:
            same = max(same_run(got[i], f32[i], compared[i]) if i in f32 else float("inf") for i in ok)
            if same > SAME_F32:
                failures.append(f"{fam}: --weights-dtype f32's log probabilities {same:.3g} from the default's "
                                f"(tolerance {SAME_F32})")
        if hm is not None:
            with torch.no_grad():
                hd = max(quant_check.distance(got[i], p, hm(torch.tensor([p + paths[i]])).logits[0].numpy(),
                                              compared[i]) for i, p in enumerate(prompts) if i in ok)
            hf_note += f", {hd:.3g} from pippy-batch" + ("" if hf_exact else " (not compared: BF16 products)")
            if hd > TOL and hf_exact:
                failures.append(f"{fam}: pippy-batch's log probabilities {hd:.3g} from HF's FP8 reader's")
        # the references that are wrong in one way, along the tokens compared
        away = {}
        for what, how in [("unquantized", None)] + list(WRONG_READERS.items()) + list(mutants.items()):
            mm, _ = load(how)
            with torch.no_grad():
                away[what] = max(quant_check.distance(got[i], p, mm(torch.tensor([p + paths[i]])).logits[0].numpy(),
                                          compared[i]) for i, p in enumerate(prompts) if i in ok)
            if away[what] <= MUTANT * TOL:
                failures.append(f"{fam}: the wrong reference '{what}' is only {away[what]:.3g} from "
                                f"pippy-batch's: the comparison cannot catch that mistake")
        print(f"{fam} ({dtype}, {len(qnames)} tensors quantized, {kind}, {sdt} scales, {len(names)} "
              f"modules dequantized{'; ' + how_made if how_made else ''}): largest difference {worst:.3g} from the "
              f"FP8 reference; --weights-dtype f32 {same:.3g} from the default; {hf_note}; the wrong references: " +
              ", ".join(f"{w} {v:.3g}" for w, v in away.items()))
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


main()

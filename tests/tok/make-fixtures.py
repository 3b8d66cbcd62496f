#!/usr/bin/env python3
"""Regenerate the tokenizer fixtures in tests/data/tokenizers/ with HF `tokenizers`.

  tests/tok/make-fixtures.py [SRCDIR]          (SRCDIR defaults to the repository root)
  tests/tok/make-fixtures.py --expected-only [SRCDIR]
      keep the committed corpus and tokenizer files; only recompute expected-*
      and invalid.jsonl.zst with the installed `tokenizers` (after an upgrade)

Inputs: the real tokenizer files (gpt2/llama2/llama3.json.zst, copies of
../shared/tokenizers), and the corpus written by make-corpus.py. Outputs:
  corpus.jsonl.zst               the corpus
  small-*.json.zst               small tokenizers trained here, covering the
                                 components the real files do not use
  expected-NAME.jsonl.zst        per corpus line: {"ids": encode(text, add_special_tokens=False),
                                 "sp": encode(text), "dec": decode(sp), "skip": decode(sp, True)}
  invalid.jsonl.zst              invalid UTF-8 inputs (hex) and the ids of their
                                 U+FFFD-repaired text, per tokenizer
Needs the `zstd` program.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers, AddedToken)

REAL = ["gpt2", "llama2", "llama3"]
# the order small_tokenizers() makes them in (invalid.jsonl.zst lists them so)
SMALL_ORDER = ["small-nfkc-digits", "small-metaspace-fallback", "small-bert", "small-strip-split",
               "small-ws-fallback", "small-split-bytelevel", "small-bloom-split", "small-qwen2-style"]


def zread(path):
    return subprocess.run(["zstd", "-dqc", path], check=True, capture_output=True).stdout


def zwrite(path, data):
    subprocess.run(["zstd", "-q", "-19", "-f", "-o", path], input=data, check=True)


def add_byte_tokens(tok):
    """Put <0x00>..<0xFF> into the model vocabulary (as Llama's has them)."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    nxt = max(max(vocab.values()), max([a["id"] for a in j["added_tokens"]] or [0])) + 1
    for b in range(256):
        name = "<0x%02X>" % b
        if name not in vocab:
            vocab[name] = nxt
            nxt += 1
    return Tokenizer.from_str(json.dumps(j))


def small_tokenizers(train_file):
    """Small BPE tokenizers exercising other normalizers, pre-tokenizers,
    post-processors, decoders and added-token options."""
    out = {}

    # 1. byte-level BPE with NFKC + Lowercase, Digits, a Split regex, template BOS/EOS
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split(Regex(r" ?\p{L}+|\p{P}+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<bos>", "<eos>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train([train_file], tr)
    t.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", t.token_to_id("<bos>")),
                                                  ("<eos>", t.token_to_id("<eos>"))])
    t.add_tokens([AddedToken("[MARK]", lstrip=True, rstrip=True, normalized=False),
                  AddedToken("hello world", normalized=True),
                  AddedToken("cat", single_word=True, normalized=False)])
    out["small-nfkc-digits"] = t

    # 2. SentencePiece-like: NFC, Metaspace (prepend first), byte fallback, unk, fused
    t = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    t.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                prepend_scheme="first")])
    tr = trainers.BpeTrainer(vocab_size=2500, special_tokens=["<unk>", "<s>", "</s>"],
                             limit_alphabet=150, show_progress=False)
    t.train([train_file], tr)
    t = add_byte_tokens(t)
    t.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", t.token_to_id("<s>")), ("</s>", t.token_to_id("</s>"))])
    out["small-metaspace-fallback"] = t

    # 3. Bert-style normalizer and pre-tokenizer, prefix/suffix BPE, BPEDecoder, BertProcessing
    t = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    t.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.decoder = decoders.BPEDecoder(suffix="</w>")
    tr = trainers.BpeTrainer(vocab_size=2500, special_tokens=["[UNK]", "[CLS]", "[SEP]"],
                             continuing_subword_prefix="##", end_of_word_suffix="</w>",
                             limit_alphabet=200, show_progress=False)
    t.train([train_file], tr)
    t.post_processor = processors.BertProcessing(("[SEP]", t.token_to_id("[SEP]")),
                                                 ("[CLS]", t.token_to_id("[CLS]")))
    out["small-bert"] = t

    # 4. NFD + StripAccents + Strip + Replace(regex) + Prepend, WhitespaceSplit, Punctuation,
    #    Split behaviors, WordPiece decoder, Roberta post-processor
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Sequence([
        normalizers.NFD(), normalizers.StripAccents(), normalizers.Strip(left=True, right=False),
        normalizers.Replace(Regex(r"\d{4,}"), "#"), normalizers.NFKD()])
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.Split("-", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"[0-9]+"), behavior="merged_with_next"),
        pre_tokenizers.Split("'", behavior="removed", invert=False),
        pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="isolated", invert=True)])
    t.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tr = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<cls>", "<sep>"],
                             limit_alphabet=200, show_progress=False)
    t.train([train_file], tr)
    t.post_processor = processors.RobertaProcessing(("<sep>", t.token_to_id("<sep>")),
                                                    ("<cls>", t.token_to_id("<cls>")))
    out["small-strip-split"] = t

    # 5. Whitespace pre-tokenizer, Digits contiguous, Prepend + Replace(String) normalizers,
    #    Replace/Strip/Fuse decoders, added tokens with single_word and special rstrip
    t = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("_"), normalizers.Replace("  ", " ")])
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                               pre_tokenizers.Digits(individual_digits=False)])
    t.decoder = decoders.Sequence([decoders.Replace("_", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(content=" ", left=1, right=0)])
    tr = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<eot>"], limit_alphabet=200,
                             show_progress=False)
    t.train([train_file], tr)
    t = add_byte_tokens(t)
    t.add_special_tokens([AddedToken("<eot>", rstrip=True, lstrip=True)])
    t.add_tokens([AddedToken("dog", single_word=True), AddedToken("New York", normalized=True)])
    out["small-ws-fallback"] = t

    # 6. Split with Contiguous and MergedWithNext behaviors in front of ByteLevel, ignore_merges
    t = Tokenizer(models.BPE(ignore_merges=True))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[.,;:!?]"), behavior="merged_with_next"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train([train_file], tr)
    t.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                            processors.TemplateProcessing(
                                                single="$A <|end|>",
                                                special_tokens=[("<|end|>", t.token_to_id("<|end|>"))])])
    out["small-split-bytelevel"] = t

    # 7. Bloom's pre-tokenizer: a Split regex with a class nested in a class, ByteLevel
    #    without its regex; added token matched with normalized=True
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(" ?[^(\\s|[.,!?…。，、।۔،])]+"),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<pad>", "</s>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train([train_file], tr)
    out["small-bloom-split"] = t

    # 8. Qwen2's: NFC, the Llama-3-like split regex with single digits, ByteLevel
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t.train([train_file], tr)
    out["small-qwen2-style"] = t
    return out


def expected(tok, texts):
    lines = []
    for s in texts:
        ids = tok.encode(s, add_special_tokens=False).ids
        sp = tok.encode(s).ids
        lines.append(json.dumps({"ids": ids, "sp": sp, "dec": tok.decode(sp, skip_special_tokens=False),
                                 "skip": tok.decode(sp, skip_special_tokens=True)}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


INVALID = ["ff", "c0af", "e282", "e282ac", "f09f98", "f09f9880", "ed a0 80", "f4 90 80 80",
           "61 80 62", "c3", "e0 80 af", "f0 80 80 80 41", "41 ff fe 42", "e2 82 20 e2 82 ac",
           "fe ff", "80 80 80", "3c 73 ff 3e", "48 65 6c 6c 6f 20 f0 9f 98 80 ff"]


def write_expected(data, toks, texts):
    inv = []
    for name, t in toks.items():
        zwrite(os.path.join(data, "expected-" + name + ".jsonl.zst"), expected(t, texts))
        for h in INVALID:
            b = bytes.fromhex(h.replace(" ", ""))
            fixed = b.decode("utf-8", "replace")
            inv.append(json.dumps({"tok": name, "hex": b.hex(), "ids": t.encode(fixed).ids}))
    zwrite(os.path.join(data, "invalid.jsonl.zst"), ("\n".join(inv) + "\n").encode())


def main():
    args = sys.argv[1:]
    only = "--expected-only" in args
    args = [a for a in args if a != "--expected-only"]
    src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "..")
    data = os.path.join(src, "tests", "data", "tokenizers")
    if only:
        texts = [json.loads(l)["text"] for l in zread(os.path.join(data, "corpus.jsonl.zst")).decode().split("\n") if l]
        names = REAL + sorted(f[:-len(".json.zst")] for f in os.listdir(data)
                              if f.startswith("small-") and f.endswith(".json.zst"))
        # the order invalid.jsonl.zst was written in: real files first, then the small ones as made
        order = [n for n in REAL] + [n for n in SMALL_ORDER if n in names]
        order += [n for n in names if n not in order]
        toks = {n: Tokenizer.from_str(zread(os.path.join(data, n + ".json.zst")).decode()) for n in order}
        write_expected(data, toks, texts)
        print("expected files for:", " ".join(toks), "corpus lines:", len(texts))
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.jsonl")
        subprocess.run([sys.executable, os.path.join(src, "tests", "tok", "make-corpus.py"), corpus],
                       check=True)
        train = os.path.join(tmp, "train.txt")
        subprocess.run([sys.executable, os.path.join(src, "tests", "tok", "make-corpus.py"), train,
                        "--train", "2000000"], check=True)
        with open(corpus, "rb") as f:
            raw = f.read()
        zwrite(os.path.join(data, "corpus.jsonl.zst"), raw)
        texts = [json.loads(l)["text"] for l in raw.decode().split("\n") if l]

        toks = {name: Tokenizer.from_str(zread(os.path.join(data, name + ".json.zst")).decode())
                for name in REAL}
        for name, t in small_tokenizers(train).items():
            zwrite(os.path.join(data, name + ".json.zst"), t.to_str().encode())
            # reload from the written file so the fixture matches what the C side reads
            toks[name] = Tokenizer.from_str(zread(os.path.join(data, name + ".json.zst")).decode())

        write_expected(data, toks, texts)
        print("tokenizers:", " ".join(sorted(toks)), "corpus lines:", len(texts))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Deterministic tokenizer test corpus.

Writes one JSON object {"text": ...} per line (the order and content depend
only on the seed below). Used by make-fixtures.py, which records HF's ids for
it, and by the C parity test. Usage: make-corpus.py OUT.jsonl [--train N]
(--train N writes N bytes of training text instead, for the small tokenizers).
"""
import json
import random
import sys

SEED = 20240607

WORDS = {
    "latin": "naïve café résumé über straße Größe façade jalapeño smörgåsbord Ærøskøbing "
             "Łódź źdźbło żółć Việt Nam tiếng Việt İstanbul ılık ağaç şeker çay déjà vu "
             "crème brûlée Ångström coöperate fiancée piñata São Paulo Kraków Dvořák".split(),
    "english": "the quick brown fox jumps over lazy dog I'm you're we've they'll she'd it's "
               "don't can't WON'T Hello World tokenizer parity exactly one wrong id changes "
               "every generated token after it so must be equal The THE tHe".split(),
    "cyrillic": "Привет мир съешь же ещё этих мягких французских булок да выпей чаю "
                "Ёжик Щука ЪЫЬ українська мова їжак ґанок беларуская ў".split(),
    "greek": "Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο ΑΒΓΔ ἀρετή ῥυθμός σοφίας".split(),
    "arabic": "الخط العربي مرحبا بالعالم كيف حالك اللغة العربيّة ٠١٢٣٤٥٦٧٨٩ مُحَمَّد".split(),
    "hebrew": "שלום עולם עברית כתב מרובע בְּרֵאשִׁית בָּרָא אֱלֹהִים".split(),
    "cjk": "你好世界 中文分词 測試繁體字 日本語のテキスト ひらがな カタカナ 한국어 텍스트 안녕하세요 "
           "東京タワー 漢字 㐀㐁 𠀀𠀁 龘".split(),
    "devanagari": "नमस्ते दुनिया हिन्दी भाषा संस्कृतम् क्षत्रिय ज्ञान ०१२३४५६७८९".split(),
    "thai": "สวัสดีชาวโลก ภาษาไทย กรุงเทพมหานคร ๐๑๒๓".split(),
    "emoji": ["😀", "👍", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "1️⃣", "❤️", "🤷🏿‍♀️",
              "🧑🏻‍🤝‍🧑🏾", "✨", "🎉🎉🎉", "☕", "🫠", "🐈‍⬛", "👁️‍🗨️"],
}

SPECIALS = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>",
            "<|eot_id|>", "<|start_header_id|>", "<|reserved_special_token_3|>", "<pad>",
            "<|endoftext", "endoftext|>", "< s>", "<S>", "[CLS]", "[SEP]", "<mask>"]

WS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", " \n ", "\t\t", "   \t", "\u00a0", "\u0085",
      "\u2028", "\u3000", "\u200b", "\u2009", "\f", "\v"]

CODE = [
    'def main(argv):\n    """Run."""\n    for i in range(10):\n        print(f"{i:>4}")\n    return 0\n',
    '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 42);\n\treturn 0;\n}\n',
    'const x = async () => { await fetch("https://example.com/api?q=1&r=2"); };',
    '{"key": [1, 2.5e-3, null, true], "nested": {"a": "b"}}',
    'SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;',
    '    if (a != b && c <= d || e >>= 2) { x++; y--; z **= 3; }',
    '<div class="main"><a href="/x">link</a></div>',
    'fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0xFF; 16]; Ok(()) }',
    '$ ls -la /usr/local/bin | grep -E "^d" > out.txt 2>&1',
    'x = [i**2 for i in range(100) if i % 3 == 0]  # comment',
]

URLS = ["https://huggingface.co/meta-llama/Llama-2-7b-hf/resolve/main/tokenizer.json",
        "http://example.com:8080/path/to/page.html?query=value&other=1#fragment",
        "ftp://files.example.org/pub/README.txt", "mailto:someone@example.com",
        "user.name+tag@sub.domain.co.uk", "www.example.com/~user/index.php?id=123",
        "https://ja.wikipedia.org/wiki/東京", "file:///C:/Users/Name/Documents/file%20name.txt"]

COMBINING = ["\u0301", "\u0300", "\u0308", "\u0327", "\u0303", "\u030a", "\u0323", "\u0336",
             "\u20dd", "\u0489", "\u05b7", "\u0651", "\u093c", "\u0e31"]


def word(r, cat=None):
    cat = cat or r.choice(list(WORDS))
    return r.choice(WORDS[cat])


def sentence(r, cat=None, n=None):
    n = n or r.randint(3, 14)
    sep = " "
    if cat in ("cjk", "thai") and r.random() < 0.5:
        sep = ""
    return sep.join(word(r, cat) for _ in range(n))


def number(r):
    k = r.random()
    if k < 0.3:
        return str(r.randint(0, 10 ** r.randint(1, 30)))
    if k < 0.5:
        return f"{r.uniform(-1e6, 1e6):.{r.randint(0, 8)}f}"
    if k < 0.6:
        return f"{r.randint(1, 12)}/{r.randint(1, 28)}/{r.randint(1900, 2100)}"
    if k < 0.7:
        return f"+1 ({r.randint(100, 999)}) {r.randint(100, 999)}-{r.randint(1000, 9999)}"
    if k < 0.8:
        return "{:,}".format(r.randint(0, 10 ** 12))
    if k < 0.9:
        return "".join(r.choice("0123456789") for _ in range(r.randint(40, 300)))
    return f"{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(0, 255)}"


def mixed(r):
    parts = []
    for _ in range(r.randint(2, 12)):
        k = r.random()
        if k < 0.35:
            parts.append(sentence(r, None, r.randint(1, 5)))
        elif k < 0.45:
            parts.append(number(r))
        elif k < 0.55:
            parts.append(r.choice(WORDS["emoji"]))
        elif k < 0.65:
            parts.append(r.choice(SPECIALS))
        elif k < 0.8:
            parts.append(r.choice(WS))
        elif k < 0.9:
            parts.append(r.choice("!?.,;:'\"()[]{}<>-_=+*&^%$#@~`|\\/"))
        else:
            parts.append(r.choice(URLS))
    sep = r.choice(["", " ", " ", " "])
    return sep.join(parts)


POOL = (list("abcXYZ019 '\t\n\r.,!?<>|/_-") + ["s", "'s", "'ll", "'RE", "\u017f", "é", "e\u0301",
        "ß", "İ", "ı", "ﬁ", "①", "²", "½", "Ⅻ", "٣", "߀", "𝟘", "Ａ", "ｶ", "㍿", "\u00a0",
        "\u2003", "\u0085", "\u200d", "\ufeff", "\ufffd", "\U0001F600", "\U0001F3FD", "中", "あ",
        "한", "ф", "λ", "ש", "ع", "ह", "ก", "<s>", "</s>", "<|endoftext|>", "<|eot_id|>", "▁",
        "Ġ", "Ċ", "\x01", "\x7f", "\u0301", "\U000E0001", "\U0010FFFD", "\ue000"])


def soup(r):
    return "".join(r.choice(POOL) for _ in range(r.randint(1, 60)))


def corpus():
    r = random.Random(SEED)
    out = ["", " ", "  ", "\n", "\t", "a", "Hello world!", "Hello world", " Hello world!",
           "<|endoftext|>", "<s>", "</s>", "<|begin_of_text|>", "<s><s></s>", "a<|endoftext|>b",
           "Hello <s> world </s>", "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi",
           "\u00e9", "e\u0301", "\ufb01", "Ⅻ", "İ", "x" * 5000, "ab" * 1500,
           "🙂" * 300, "1" * 1000, " " * 200, "\n" * 50, "\t \t \n" * 20,
           "supercalifragilisticexpialidocious" * 20, "Ünïcödé" * 100, "中" * 800]
    for cat in WORDS:
        for _ in range(90):
            out.append(sentence(r, cat))
    for _ in range(120):
        out.append(number(r))
    for _ in range(80):
        c = r.choice(CODE)
        out.append(c if r.random() < 0.5 else c.replace("    ", "\t"))
    for _ in range(60):
        out.append(r.choice(URLS) + r.choice(["", " ", "/", ". ", "\n"]) + sentence(r, "english", 3))
    for _ in range(80):
        s = sentence(r, r.choice(["latin", "english", "cyrillic", "greek"]))
        out.append("".join(ch + (r.choice(COMBINING) * r.randint(1, 3) if r.random() < 0.3 else "")
                           for ch in s))
    for _ in range(120):
        out.append("".join(r.choice(WS) + sentence(r, None, r.randint(1, 3)) for _ in range(r.randint(1, 5)))
                   + r.choice(WS) * r.randint(0, 3))
    for _ in range(100):
        sp = r.choice(SPECIALS)
        s1, s2 = sentence(r, None, r.randint(1, 4)), sentence(r, None, r.randint(1, 4))
        out.append(r.choice([f"{s1}{sp}{s2}", f"{s1} {sp} {s2}", f"{sp}{s1}", f"{s1}{sp}",
                             f"{sp}{sp}{s1}", f" {sp}\n{s2}", f"{s1}  {sp}  "]))
    for _ in range(100):
        out.append(" ".join(r.choice(WORDS["emoji"]) * r.randint(1, 3) for _ in range(r.randint(1, 6))))
    for _ in range(40):
        n = r.randint(200, 3000)
        alpha = r.choice(["abcdefghijklmnopqrstuvwxyz", "абвгдежз", "αβγδε", "日本語中文", "0123456789",
                          "ab", "éèêë", "!@#$%^&*", "-_=", "😀🙂😍"])
        out.append("".join(r.choice(alpha) for _ in range(n)))
    for _ in range(700):
        out.append(mixed(r))
    for _ in range(400):
        out.append(soup(r))
    return out


def training_text(nbytes):
    r = random.Random(SEED + 1)
    parts, total = [], 0
    while total < nbytes:
        k = r.random()
        s = (sentence(r) if k < 0.6 else number(r) if k < 0.7 else r.choice(CODE) if k < 0.8
             else mixed(r))
        parts.append(s)
        total += len(s.encode()) + 1
    return "\n".join(parts)


def prose_text(nbytes):
    """English-like prose: 20,000 pseudo-words from syllables, Zipf-distributed,
    with capitals, punctuation, numbers and paragraphs (for benchmarks)."""
    r = random.Random(SEED + 2)
    syl = ["th", "e", "an", "in", "er", "on", "re", "at", "st", "en", "nd", "ti", "es", "or", "te",
           "of", "ed", "is", "it", "al", "ar", "ou", "ing", "ion", "pro", "con", "ment", "ly", "ver", "str"]
    words = sorted({"".join(r.choice(syl) for _ in range(r.choice([1, 1, 2, 2, 2, 3, 3, 4])))
                    for _ in range(30000)})[:20000]
    r.shuffle(words)
    weights = [1.0 / (k + 1) for k in range(len(words))]
    out, total = [], 0
    while total < nbytes:
        n = r.randint(5, 25)
        ws = r.choices(words, weights, k=n)
        ws[0] = ws[0].capitalize()
        for i in range(1, n - 1):
            x = r.random()
            if x < 0.08:
                ws[i] += ","
            elif x < 0.1:
                ws[i] = str(r.randint(1, 2030))
            elif x < 0.13:
                ws[i] = ws[i].capitalize()
        s = " ".join(ws) + r.choice([".", ".", ".", "?", "!"]) + r.choice([" ", " ", " ", "\n\n"])
        out.append(s)
        total += len(s)
    return "".join(out)


def main():
    if len(sys.argv) == 4 and sys.argv[2] == "--prose":
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(prose_text(int(sys.argv[3])))
        return
    if len(sys.argv) == 4 and sys.argv[2] == "--train":
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(training_text(int(sys.argv[3])))
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        for s in corpus():
            assert "\x00" not in s
            f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

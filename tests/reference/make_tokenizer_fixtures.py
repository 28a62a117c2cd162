#!/usr/bin/env python3
"""Writes the tokenizer fixtures that tests/unit/engine/test_tokenizer.c checks pwb against.

Reference: Hugging Face `tokenizers` (pip install tokenizers), used here only; pwb never runs
Python. Usage:

    python3 tests/reference/make_tokenizer_fixtures.py SHARED_DIR [OUT_DIR]

SHARED_DIR is the folder with models/ and datasets/ (../shared beside the repository); OUT_DIR
defaults to tests/fixtures/tokenizer. Files written, for each tokenizer NAME (smollm2,
tinystories):

  NAME-sst2.jsonl    line 1: header {"tokenizer", "source", "sha256", "count", ...};
  NAME-gsm8k.jsonl   then one line per dataset record, in file order: [ids] or
                     [ids, "decoded"] when decoding the ids does not give the text back.
                     The texts themselves are read from the dataset by the test.
  NAME-edge.jsonl    one object per line: {"text"|"hex", "ids", "add_special", "parse_special",
                     "decoded"|"decoded_hex"}. "hex" holds raw bytes (invalid UTF-8, NUL); HF takes a Python str,
                     so those bytes go through bytes.decode("utf-8", "replace") first, which is
                     what pwb does too.

ids are what Tokenizer.encode(text, add_special_tokens=...) gives (encode_special_tokens set when
parse_special is 0). "decoded" is tokenizer.decode(ids without special ids).
"""
import hashlib
import json
import os
import random
import sys

from tokenizers import Tokenizer, __version__ as TOKENIZERS_VERSION

TOKENIZERS = {
    "smollm2": "models/smollm2-tokenizer/tokenizer.json",
    "tinystories": "models/tinystories-656k/tokenizer.json",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def sst2_texts(shared):
    rel = "datasets/sst2/dev.tsv"
    with open(os.path.join(shared, rel), encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    assert lines[0].split("\t")[0] == "sentence"
    texts = [l.split("\t")[0] for l in lines[1:] if l]
    return rel, texts, {"format": "tsv", "field": "sentence", "skip_header": 1}


def gsm8k_texts(shared):
    rel = "datasets/gsm8k/test.jsonl"
    with open(os.path.join(shared, rel), encoding="utf-8") as f:
        texts = [json.loads(l)["question"] for l in f if l.strip()]
    return rel, texts, {"format": "jsonl", "field": "question"}


def edge_texts():
    """(text or bytes, add_special, parse_special) triples."""
    t = []
    plain = [
        "", " ", "  ", "   leading", "trailing   ", " both ", "\t", "\n", "\n\n\n", "a\n\nb", "a \n b",
        "tabs\t\there", "\r\n", "line1\r\nline2\r\n", "  \t\n  x", " " * 40, "\n" * 20, "\t" * 10,
        "a" + " " * 17 + "b", "x \n\n  \t y", "end with newline\n", " \u00a0 ",
        # digits
        "1234567890", "3.14159", "1,000,000", "x12y34", "year 2024!", " 7", "  42", "a1b2c3",
        "\u0663\u0664\u0665", "\u2460\u2461", "\u00bd and \u00b2\u00b3", "\u216b", "\uff11\uff12",
        # contractions
        "it's", "don't", "we're", "I've", "I'm", "we'll", "he'd", "IT'S DON'T WE'RE", "it\u2019s",
        "'s 't 're 've 'm 'll 'd", "rock 'n' roll", "''quoted''",
        # emoji
        "\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
        "\U0001F3F3\uFE0F\u200D\U0001F308", "\u2764\uFE0F", "\U0001F1FA\U0001F1F8", "I love \U0001F355 and \U0001F363!",
        "\U0001F9D1\U0001F3FF\u200D\U0001F4BB works", "a\U0001F600b",
        # scripts
        "\u4f60\u597d\uff0c\u4e16\u754c", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\uc548\ub155\ud558\uc138\uc694",
        "\u1100\u1161\u11a8", "e\u0301", "n\u0303 vs \u00f1", "Z\u0351\u0358a\u0322l\u0335g\u0336o",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd",
        "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5",
        "na\u00efve caf\u00e9 r\u00e9sum\u00e9", "\u00df\u1e9e",
        # unusual whitespace and controls
        "a\u00a0b", "a\u2003b", "a\u3000b", "a\u200bb", "a\u0085b", "a\u2028b", "\ufeffbom", "nul\x00byte",
        "\x1b[31mred\x1b[0m", "a\u180eb", " \u180e\u180e 1\u180e", "a\u202fb", "\u000b\u000c", "x\x04y\x7f",
        # digits that Unicode 15/16 added (PCRE2 10.42 has Unicode 14 tables)
        "x\U0001E4F0y 1\U0001E4F1\U0001E4F2 \U0001D2C0",
        # code and markup
        "def f(x):\n    return x**2  # square\n", '{"a": [1, 2.5, null], "b": "c"}',
        "https://example.com/path?q=1&r=two#frag", "foo.bar@example.com", "<html><body>hi</body></html>",
        "if (a != b && c >= d) { x++; }", "SELECT * FROM t WHERE id=42;", "$HOME/.config ~user",
        # words and punctuation
        "Supercalifragilisticexpialidocious", "ALLCAPS SHOUTING", "a" * 200, "!!!???...", "---", "....",
        "\u00abquotes\u00bb \u201csmart\u201d \u2018single\u2019", "\u2014em\u2013en\u2014", "\u2026",
        "Hello, World! How are you?", "Once upon a time, there was a little girl named Lily.",
        # the special tokens of both tokenizers
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "<|im_start|",
        "<|im_start|><|im_end|>", "x<|im_end|>y", " <|im_end|> ", "<|start_story|>Once upon",
        "hi <|end_story|> x", "hi<|end_story|>", "<unk>", "<|start_story|>", " <|start_story|>",
        "<repo_name>name<file_sep>", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    ]
    for s in plain:
        t.append((s, 1, 1))
    for s in ["<|im_start|>user\nHello<|im_end|>\n", "hi <|end_story|> x", "<|endoftext|>", "Once upon a time"]:
        t.append((s, 1, 0))
        t.append((s, 0, 1))
    for b in [b"\xff", b"abc\x80def", b"\xc3\x28", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf0\x9f\x98 x",
              b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xfe\xfe\xff", b"ok\xe2\x82\xacok\xe2\x82",
              b"\x80\x80\x80 spaces \xc2"]:
        t.append((b, 1, 1))
    # A long paragraph (one BPE word for TinyStories: it has no pre-tokenizer).
    t.append((" ".join(["The quick brown fox jumps over the lazy dog."] * 40), 1, 1))
    # Random strings drawn from many Unicode blocks, fixed seed.
    rng = random.Random(20240611)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2070, 0x218F),
              (0x2190, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAD00), (0xFF00, 0xFFEF),
              (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x9, 0xD)]
    for _ in range(150):
        n = rng.randint(1, 24)
        s = []
        for _ in range(n):
            r = rng.random()
            if r < 0.25:
                s.append(" " * rng.randint(1, 3))
            elif r < 0.35:
                s.append(str(rng.randint(0, 99999)))
            else:
                lo, hi = rng.choice(blocks)
                s.append(chr(rng.randint(lo, hi)))
        t.append(("".join(s), 1, 1))
    return t


def special_ids(tok):
    return {i for i, a in tok.get_added_tokens_decoder().items() if a.special}


def encode(tok, text, add_special, parse_special):
    tok.encode_special_tokens = not parse_special
    try:
        return tok.encode(text, add_special_tokens=bool(add_special)).ids
    finally:
        tok.encode_special_tokens = False


def decoded(tok, ids, specials):
    return tok.decode([i for i in ids if i not in specials], skip_special_tokens=False)


def write_dataset(out_dir, name, tok, tok_rel, shared, loader, tok_info=None):
    """tok_info: the header's tokenizer, tokenizer_sha256 and reference when tok is not a
    tokenizer.json under shared (make_gemma_tokenizer_fixtures.py)."""
    rel, texts, fmt = loader(shared)
    specials = special_ids(tok)
    path = os.path.join(out_dir, f"{name}-{os.path.basename(os.path.dirname(rel))}.jsonl")
    header = tok_info or {"tokenizer": tok_rel, "tokenizer_sha256": sha256(os.path.join(shared, tok_rel)),
                          "reference": f"tokenizers {TOKENIZERS_VERSION}"}
    header = dict(header, source=rel, sha256=sha256(os.path.join(shared, rel)), count=len(texts),
                  add_special=1, parse_special=1)
    header.update(fmt)
    n_ids = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for text in texts:
            ids = encode(tok, text, 1, 1)
            n_ids += len(ids)
            row = [ids]
            d = decoded(tok, ids, specials)
            if d != text:
                row.append(d)
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path, len(texts), n_ids


def edge_row(tok, specials, text, add_special, parse_special):
    row = {}
    if isinstance(text, str) and "\x00" in text:
        text = text.encode("utf-8")  # C strings stop at NUL: carry these as bytes
    if isinstance(text, bytes):
        row["hex"] = text.hex()
        text = text.decode("utf-8", "replace")
    else:
        row["text"] = text
    ids = encode(tok, text, add_special, parse_special)
    row["ids"] = ids
    row["add_special"] = add_special
    row["parse_special"] = parse_special
    d = decoded(tok, ids, specials)
    if "\x00" in d:
        row["decoded_hex"] = d.encode("utf-8").hex()
    else:
        row["decoded"] = d
    return row


def write_edge(out_dir, name, tok):
    specials = special_ids(tok)
    path = os.path.join(out_dir, f"{name}-edge.jsonl")
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for text, add_special, parse_special in edge_texts():
            f.write(json.dumps(edge_row(tok, specials, text, add_special, parse_special), ensure_ascii=True,
                               separators=(",", ":")) + "\n")
            n += 1
    return path, n


LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
             "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
            "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
BYTELEVEL_NO_RE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}

# Other pre-tokenizer set-ups on the same vocabularies, so that the Llama 3 / Qwen2 regexes,
# ignore_merges, ByteLevel's prefix space and Metaspace are checked against HF too. The C test
# applies the same patch: top-level keys of "patch" replace the tokenizer.json's, "model" keys the
# model's.
VARIANTS = {
    "llama3": ("smollm2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
        BYTELEVEL_NO_RE]}}, {"ignore_merges": True}),
    "qwen2": ("smollm2", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_RE}, "behavior": "Isolated", "invert": False},
        BYTELEVEL_NO_RE]}}, {}),
    "gpt2prefix": ("smollm2", {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                                                  "trim_offsets": True, "use_regex": True}}, {}),
    # transformers' LlamaConverter with legacy=False: Metaspace instead of the normalizer
    "metaspace": ("tinystories", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}}, {}),
    # T5-style: pieces split at U+2581, Metaspace decoder
    "metaspace-split": ("tinystories", {"normalizer": None, "pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}}, {}),
}


def write_variant(out_dir, shared, name, base, patch, model_patch):
    rel = TOKENIZERS[base]
    with open(os.path.join(shared, rel), encoding="utf-8") as f:
        j = json.load(f)
    j.update(patch)
    j["model"].update(model_patch)
    tok = Tokenizer.from_str(json.dumps(j))
    specials = special_ids(tok)
    path = os.path.join(out_dir, f"variant-{name}.jsonl")
    _, sst2, _ = sst2_texts(shared)
    cases = edge_texts() + [(t, 1, 1) for t in sst2[:100]]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps({"tokenizer": rel, "tokenizer_sha256": sha256(os.path.join(shared, rel)),
                            "patch": patch, "model": model_patch,
                            "reference": f"tokenizers {TOKENIZERS_VERSION}"}, ensure_ascii=True) + "\n")
        for text, add_special, parse_special in cases:
            f.write(json.dumps(edge_row(tok, specials, text, add_special, parse_special), ensure_ascii=True,
                               separators=(",", ":")) + "\n")
    return path, len(cases)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    shared = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "fixtures", "tokenizer")
    os.makedirs(out_dir, exist_ok=True)
    for name, rel in TOKENIZERS.items():
        tok = Tokenizer.from_file(os.path.join(shared, rel))
        for loader in (sst2_texts, gsm8k_texts):
            path, n, n_ids = write_dataset(out_dir, name, tok, rel, shared, loader)
            print(f"{os.path.basename(path)}: {n} texts, {n_ids} ids")
        path, n = write_edge(out_dir, name, tok)
        print(f"{os.path.basename(path)}: {n} texts")
    for name, (base, patch, model_patch) in VARIANTS.items():
        path, n = write_variant(out_dir, shared, name, base, patch, model_patch)
        print(f"{os.path.basename(path)}: {n} texts")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference logits of SmolLM2-135M-Instruct from llama.cpp (llama-cpp-python), over real prompts.

Writes two files into OUT_DIR (format: docs/reference-tests.md):
  smollm2_logits.txt      token ids of every prompt; per position the top-k ids with their logits
                          and the log-sum-exp of the full row
  smollm2_logits_full.bin full-vocabulary logits (float16) at a few positions

With --exact F32.gguf the reference is llama.cpp computing in F32 throughout: the model's weights
dequantized to an F32 GGUF (made by dequant_gguf.py if the file is missing) and an F32 KV cache;
the files are then smollm2_exact_logits.txt / smollm2_exact_logits_full.bin.

With --format raw --name gemma3 (a base model): raw completion prompts (pwbref.RAW_*) and the
files gemma3_logits.txt / gemma3_exact_logits.txt (no full rows with --n-full 0).

Usage: make_logit_fixtures.py MODEL.gguf SST2_DEV.tsv GSM8K_TEST.jsonl OUT_DIR
       [--n-sst2 150] [--n-gsm8k 60] [--topk 5] [--n-full 2] [--exact F32.gguf]
       [--format chatml|raw] [--name smollm2]
"""

import argparse
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pwbref  # noqa: E402

FULL_MAGIC = b"PWBLOGF1"


def topk_rows(logits, k):
    """Per row: top-k ids by (logit desc, id asc), their logits, and logsumexp of the row."""
    out = []
    for row in logits:
        cand = np.argpartition(-row, k)[: k + 8]  # a few extra so ties at the boundary sort by id
        order = sorted(cand.tolist(), key=lambda i: (-float(row[i]), i))[:k]
        m = float(row.max())
        lse = m + float(np.log(np.exp((row - m).astype(np.float64)).sum()))
        out.append((order, [float(row[i]) for i in order], lse))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("sst2_dev")
    ap.add_argument("gsm8k_test")
    ap.add_argument("out_dir")
    ap.add_argument("--n-sst2", type=int, default=150)
    ap.add_argument("--sst2-from", type=int, default=0, help="first SST-2 row (to extend a set)")
    ap.add_argument("--n-gsm8k", type=int, default=60)
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--n-full", type=int, default=2, help="prompts of each kind with full-vocab rows")
    ap.add_argument("--exact", metavar="F32_GGUF", help="reference in F32: this dequantized copy, F32 KV")
    ap.add_argument("--format", choices=["chatml", "raw"], default="chatml")
    ap.add_argument("--name", default="smollm2", help="file name stem")
    a = ap.parse_args()

    prompts = []  # (source, row, text)
    for i, (s, _) in enumerate(pwbref.read_sst2(a.sst2_dev)[a.sst2_from: a.n_sst2], start=a.sst2_from):
        prompts.append(("sst2-dev", i, pwbref.sst2_prompt(s, a.format)))
    for i, (q, ans) in enumerate(pwbref.read_gsm8k(a.gsm8k_test, a.n_gsm8k)):
        prompts.append(("gsm8k-test", i, pwbref.gsm8k_prompt(q, ans, a.format)))

    if a.exact:
        llm = pwbref.load_llama(pwbref.exact_model(a.model, a.exact), n_ctx=2048, logits_all=True,
                                n_batch=2048, f32_kv=True)
    else:
        llm = pwbref.load_llama(a.model, n_ctx=2048, logits_all=True, n_batch=2048)
    n_vocab = llm.n_vocab()
    ver = pwbref.versions()

    os.makedirs(a.out_dir, exist_ok=True)
    stem = a.name + ("_exact_logits" if a.exact else "_logits")
    txt_path = os.path.join(a.out_dir, stem + ".txt")
    bin_path = os.path.join(a.out_dir, stem + "_full.bin")
    full = []  # (prompt index, position, float16 row)
    n_pos = 0
    with open(txt_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("# pwb reference logits, format 1: see docs/reference-tests.md\n")
        f.write(f"model {pwbref.model_name(a.model)}\n")
        f.write(f"model_sha256 {pwbref.sha256_file(a.model)}\n")
        f.write(f"reference llama-cpp-python {ver['llama_cpp_python']}\n")
        f.write("arithmetic " + ("f32 (weights dequantized to F32, F32 KV cache)" if a.exact else
                                 "llama.cpp default (Q8 activations for quantized matmuls, F16 KV cache)") + "\n")
        f.write(f"n_vocab {n_vocab}\n")
        f.write(f"topk {a.topk}\n")
        f.write(f"n_prompts {len(prompts)}\n")
        for key, tpl in pwbref.template_header(a.format, "logits"):
            f.write(f"{key} {pwbref.jstr(tpl)}\n")
        f.write("end_header\n")
        kinds_seen = {}
        for pi, (src, row, text) in enumerate(prompts):
            ids = pwbref.tokenize(llm, text)
            if len(ids) > 2000:
                sys.exit(f"prompt {pi} too long: {len(ids)} tokens")
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
            rows = topk_rows(logits, a.topk)
            f.write(f"prompt {pi} {src} {row} {len(ids)}\n")
            f.write(f"text {pwbref.jstr(text)}\n")
            f.write("ids " + " ".join(str(t) for t in ids) + "\n")
            for order, vals, lse in rows:
                f.write("t " + " ".join(f"{t} {v:.4f}" for t, v in zip(order, vals)) + f" {lse:.4f}\n")
            n_pos += len(ids)
            k = kinds_seen.get(src, 0)
            if k < a.n_full:
                kinds_seen[src] = k + 1
                for p in sorted({len(ids) // 2, len(ids) - 1}):
                    full.append((pi, p, logits[p].astype("<f2")))
            if pi % 20 == 0:
                print(f"prompt {pi}/{len(prompts)}: {len(ids)} tokens", file=sys.stderr)
        f.write("end\n")

    with open(bin_path, "wb") as b:
        b.write(FULL_MAGIC + struct.pack("<II", n_vocab, len(full)))
        for pi, p, row in full:
            b.write(struct.pack("<II", pi, p))
            b.write(row.tobytes())

    print(f"{len(prompts)} prompts, {n_pos} positions -> {txt_path} ({os.path.getsize(txt_path)} bytes)")
    print(f"{len(full)} full rows -> {bin_path} ({os.path.getsize(bin_path)} bytes)")


if __name__ == "__main__":
    main()

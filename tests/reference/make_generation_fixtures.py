#!/usr/bin/env python3
"""Greedy generations from llama.cpp (llama-cpp-python) on raw prompts, as reference token ids.

Prompts: the first --n-sst2 SST-2 dev sentences as pwbref.RAW_SST2, the first --n-gsm8k GSM8K test
questions as "Question: {question}\\nAnswer:", and a few plain sentence openings. Each is decoded
greedily (argmax of the last row, ties to the lowest id) for --max-tokens tokens or until EOS.
Writes OUT_DIR/NAME_greedy[_exact].txt:

  header lines ... end_header
  prompt <i> <n> <prompt ids>
  out <m> <generated ids>
  end

Usage: make_generation_fixtures.py MODEL.gguf SST2_DEV.tsv GSM8K_TEST.jsonl OUT_DIR
       [--name gemma3] [--exact F32.gguf] [--max-tokens 24]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pwbref  # noqa: E402

OPENINGS = ["The capital of France is", "Once upon a time, there was a little girl named",
            "The three primary colors are", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("sst2_dev")
    ap.add_argument("gsm8k_test")
    ap.add_argument("out_dir")
    ap.add_argument("--name", default="gemma3")
    ap.add_argument("--exact", metavar="F32_GGUF")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--n-sst2", type=int, default=4)
    ap.add_argument("--n-gsm8k", type=int, default=4)
    a = ap.parse_args()

    texts = [pwbref.sst2_prompt(s, "raw") for s, _ in pwbref.read_sst2(a.sst2_dev)[: a.n_sst2]]
    texts += ["Question: " + q + "\nAnswer:" for q, _ in pwbref.read_gsm8k(a.gsm8k_test, a.n_gsm8k)]
    texts += OPENINGS
    path = pwbref.exact_model(a.model, a.exact) if a.exact else a.model
    llm = pwbref.load_llama(path, n_ctx=1024, logits_all=False, n_batch=1024, f32_kv=bool(a.exact))
    n_vocab, eos = llm.n_vocab(), llm.token_eos()
    ver = pwbref.versions()
    out = []
    for i, text in enumerate(texts):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        gen = []
        for _ in range(a.max_tokens):
            row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
            t = int(np.argmax(row))
            if t == eos:
                break
            gen.append(t)
            llm.eval([t])
        out.append((ids, gen))
        print(f"{i}: {text[:40]!r} -> {llm.detokenize(gen).decode('utf-8', 'replace')!r}", file=sys.stderr)
    os.makedirs(a.out_dir, exist_ok=True)
    fn = os.path.join(a.out_dir, a.name + ("_greedy_exact.txt" if a.exact else "_greedy.txt"))
    with open(fn, "w", encoding="utf-8", newline="\n") as f:
        f.write("# pwb reference greedy generation, format 1: see docs/reference-tests.md\n")
        f.write(f"model {pwbref.model_name(a.model)}\n")
        f.write(f"model_sha256 {pwbref.sha256_file(a.model)}\n")
        f.write(f"reference llama-cpp-python {ver['llama_cpp_python']}\n")
        f.write("arithmetic " + ("f32 (weights dequantized to F32, F32 KV cache)" if a.exact else
                                 "llama.cpp default") + "\n")
        f.write(f"max_tokens {a.max_tokens}\n")
        f.write(f"n_prompts {len(out)}\n")
        f.write("end_header\n")
        for i, (ids, gen) in enumerate(out):
            f.write(f"prompt {i} {len(ids)} " + " ".join(map(str, ids)) + "\n")
            f.write(f"out {len(gen)} " + " ".join(map(str, gen)) + "\n")
        f.write("end\n")
    print(f"-> {fn}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Baseline: llama.cpp (llama-cpp-python) decoding at batch 1, greedy, the prompt engine_bench uses.

The prompt (SmolLM2's ChatML, the robot story request) is decoded as one batch, then N tokens are
generated one at a time through Llama.generate (greedy: top_k 1, temperature 0) with llama.cpp's
default settings otherwise (OMP_WAIT_POLICY as the environment says; unset means llama.cpp's
spinning OpenMP waits). Decode tokens/s = (N - 1) / (time of the last token - time of the first),
so the prompt is not counted. Best of --repeat passes.

Usage: llamacpp_decode_bench.py MODEL.gguf [--tokens N] [--repeat N]   (2 threads, as pwbref.load_llama)
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import pwbref  # noqa: E402

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPT = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n"
          "Write a short story about a robot who learns to paint. Describe the colours, the "
          "studio, the first painting and what the other robots say about it.<|im_end|>\n"
          "<|im_start|>assistant\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    llm = pwbref.load_llama(a.model, n_ctx=512, logits_all=False, n_batch=512)
    ids = pwbref.tokenize(llm, PROMPT)
    best = 0.0
    for r in range(a.repeat):
        llm.reset()
        stamps = []
        for _ in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == a.tokens:
                break
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        print(f"pass {r + 1}: decode {rate:.1f} tok/s", file=sys.stderr)
        best = max(best, rate)
    load = os.getloadavg()
    print(f"llama.cpp decode batch 1: {len(ids)} prompt + {a.tokens} tokens, decode {best:.1f} tok/s "
          f"(best of {a.repeat}; n_threads=2, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(default)')}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    main()

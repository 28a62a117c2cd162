#!/usr/bin/env python3
"""Baseline: llama.cpp (llama-cpp-python) doing rank classification of SST-2 dev, 2 threads.

The same scoring as tests/reference/make_rank_fixtures.py: prompt = ChatML zero-shot SST-2 prompt
(tests/reference/pwbref.py), labels "negative"/"positive" (single tokens, checked), decision by the
larger log-softmax at the last prompt position.

What llama.cpp does per example (mode "fresh", the default):
  llm.reset() sets the context's token count to 0; llm.eval(ids) then removes every KV-cache cell
  (llama_kv_self_seq_rm from position 0) and decodes the whole prompt as one batch
  (n_batch = n_ubatch = 512 >= every prompt) with logits computed for the last position only
  (logits_all=False). Nothing is reused between examples.
Mode "prefix": keep the KV cells of the longest common token prefix with the previous example
  (what llama-cpp-python's generate() does on its own) and decode only the rest. Every SST-2 prompt
  shares the system turn and "Review:" header, so this measures prefix-KV reuse.

Threads: this llama.cpp build uses OpenMP, so its barriers are "#pragma omp barrier" and
OMP_WAIT_POLICY decides how threads wait. The default (spinning) is fastest on an idle machine but
collapses when the 2 cores are shared with other work (measured: 0.12 examples/s at load ~9);
OMP_WAIT_POLICY=PASSIVE sleeps instead. The policy in effect is printed; compare like with like.

Timed: tokenization + decode + log-softmax over the vocabulary + decision, per example, after the
model is loaded and one warm-up example. Prints examples/s, prompt tokens/s, CPU use and peak RSS.

Usage: llamacpp_rank_bench.py MODEL.gguf SST2_DEV.tsv [--mode fresh|prefix] [--repeat N] [--limit N]
"""

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import pwbref  # noqa: E402


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def run_once(llm, rows, label_ids, mode, progress=False):
    n_vocab = llm.n_vocab()
    correct = 0
    n_tok = 0
    n_decoded = 0
    prev = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    for i, (sentence, gold) in enumerate(rows):
        if progress and i and i % 100 == 0:
            el = time.perf_counter() - t0
            print(f"  {i}/{len(rows)}: {i / el:.2f} examples/s so far", file=sys.stderr, flush=True)
        ids = pwbref.tokenize(llm, pwbref.sst2_prompt(sentence))
        n_tok += len(ids)
        if mode == "prefix":
            k = 0
            m = min(len(prev), len(ids)) - 1  # always decode at least the last token
            while k < m and prev[k] == ids[k]:
                k += 1
            llm.n_tokens = k  # eval() drops KV cells from position k on
            llm.eval(ids[k:])
            n_decoded += len(ids) - k
            prev = ids
        else:
            llm.reset()
            llm.eval(ids)
            n_decoded += len(ids)
        # logits_all=False: llama.cpp computed the output row of the last position only.
        row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).astype(np.float64)
        mx = row.max()
        ls = row - (mx + np.log(np.exp(row - mx).sum()))
        pred = 1 if ls[label_ids[1]] > ls[label_ids[0]] else 0
        correct += pred == gold
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return wall, cpu, n_tok, n_decoded, correct


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("sst2_dev")
    ap.add_argument("--mode", choices=["fresh", "prefix"], default="fresh")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes; the best is reported")
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()

    rows = pwbref.read_sst2(a.sst2_dev)
    if a.limit:
        rows = rows[: a.limit]
    t0 = time.perf_counter()
    llm = pwbref.load_llama(a.model, n_ctx=512, logits_all=False, n_batch=512)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_kib()

    # Verbalizers must be single tokens that do not change the prompt's tokenization.
    p = pwbref.sst2_prompt(rows[0][0])
    pid = pwbref.tokenize(llm, p)
    label_ids = {}
    for k, v in pwbref.LABELS.items():
        full = pwbref.tokenize(llm, p + v)
        if full[: len(pid)] != pid or len(full) != len(pid) + 1:
            sys.exit(f"label {v!r} is not a single continuation token")
        label_ids[k] = full[-1]
    if max(len(pwbref.tokenize(llm, pwbref.sst2_prompt(s))) for s, _ in rows) > 512:
        sys.exit("a prompt exceeds n_batch/n_ctx 512")

    run_once(llm, rows[:1], label_ids, a.mode)  # warm-up (page in the weights)
    best = None
    for r in range(a.repeat):
        res = run_once(llm, rows, label_ids, a.mode, progress=True)
        wall = res[0]
        print(f"pass {r + 1}: {len(rows) / wall:.2f} examples/s ({wall:.2f} s)", file=sys.stderr)
        if best is None or wall < best[0]:
            best = res
    wall, cpu, n_tok, n_decoded, correct = best
    n = len(rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    ver = pwbref.versions()
    print(f"llama.cpp rank classification, SST-2 dev: {pwbref.model_name(a.model)}")
    print(f"  llama-cpp-python {ver['llama_cpp_python']}, n_threads=2, n_batch=512, mode={a.mode}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    print(f"  load average    {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (at the end)")
    print(f"  examples        {n}")
    print(f"  accuracy        {correct / n:.4f}")
    print(f"  wall            {wall:.2f} s (best of {a.repeat}; model load {load_s:.2f} s not counted)")
    print(f"  examples/s      {n / wall:.2f}")
    print(f"  prompt tokens/s {n_tok / wall:.1f} ({n_tok} prompt tokens, {n_decoded} decoded)")
    print(f"  cpu/wall        {cpu / wall:.2f}")
    print(f"  peak RSS        {peak / 1024:.1f} MiB (after load {rss_loaded / 1024:.1f} MiB; Python process)")


if __name__ == "__main__":
    main()

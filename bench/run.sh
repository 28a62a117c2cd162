#!/bin/sh
# `make bench`: the harness's own overhead, the engine's speed, the trainer's step time, and,
# when llama-cpp-python is installed, llama.cpp doing the same rank classification for comparison.
# Results are printed and kept in bench/out/bench-<date>.txt.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${PWB_SHARED:-$root/../shared}
bin=${BENCH_DIR:-$root/build/bench}
model=${PWB_BENCH_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p bench/out
log=bench/out/bench-$(date +%Y%m%d-%H%M%S).txt
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=passive
{
  echo "# pwb bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "## harness (loopback server answering at once, concurrency 16)"
  sh bench/harness.sh
  echo "## engine: SmolLM2-135M-Instruct Q4_1, 2 threads"
  "$bin/engine_bench" "$model" "$shared/datasets/sst2/dev.tsv" --threads 2
  echo "## sha256 (a 250 MB file)"
  "$bin/sha256_bench"
  echo "## kernels"
  "$bin/kernels_bench" Q4_1 Q8_0 F32
  "$bin/kernels_bench" --exact Q4_1 Q8_0
  echo "## prompt tuning: batch 8, 20 virtual tokens"
  "$bin/tune_bench" "$model" "$shared/datasets/sst2/train.tsv"
  echo "## LoRA: batch 8, r 8 on q and v (AdamW)"
  if [ -x "${PWB_REF_PYTHON:-}" ] && "$PWB_REF_PYTHON" -c 'import peft' 2>/dev/null; then
    echo "## ... against PEFT + PyTorch (PWB_REF_PYTHON) on the same step, alternating, 2 threads"
    TUNE_BENCH="$bin/tune_bench" PWB_SHARED="$shared" PWB_BENCH_MODEL="$model" sh bench/lora_step.sh "${LORA_ROUNDS:-3}"
  else
    "$bin/tune_bench" "$model" "$shared/datasets/sst2/train.tsv" --lora 8
    echo "## PEFT + PyTorch LoRA comparison skipped: set PWB_REF_PYTHON to a python with torch, transformers, peft"
  fi
  echo "## pwb serve: 64 clients x 20 requests, mixed adapters (TinyStories-656K; latency and RSS)"
  PWB_SERVE_LOAD=64x20 PWB_BIN=${PWB_BIN:-$root/build/pwb} PWB_ROOT=$root PWB_SHARED=$shared \
    "$root/build/tests/integration" --filter 'serve/load_mixed_adapters' 2>&1 | grep '^serve load'
  if python3 -c 'import llama_cpp' 2>/dev/null; then
    # The issue's must-show ratios, alternating pwb and llama.cpp runs; 1-minute load after each.
    echo "## ratios: pwb / llama.cpp, same GGUF, 2 threads (load average after each run)"
    ld() { cut -d' ' -f1 /proc/loadavg; }
    num() { sed -n "s/$1/\1/p" | head -1; }
    dev=$shared/datasets/sst2/dev.tsv
    pr=$("$bin/engine_bench" "$model" "$dev" --threads 2 --limit 200 --no-prefix --rank-only | num '.* \([0-9.]*\) examples\/s.*'); l1=$(ld)
    lr=$(python3 bench/llamacpp_rank_bench.py "$model" "$dev" --limit 200 | num '^  examples\/s *\([0-9.]*\).*'); l2=$(ld)
    pd=$("$bin/engine_bench" "$model" "$dev" --threads 2 --limit 8 | num '.*decode \([0-9.]*\) tok\/s.*'); l3=$(ld)
    lc=$(env -u OMP_WAIT_POLICY python3 bench/llamacpp_decode_bench.py "$model" | num '.*decode \([0-9.]*\) tok\/s.*'); l4=$(ld)
    p8=$("$bin/engine_bench" "$model" "$dev" --threads 2 --limit 8 --int8 | num '.*decode \([0-9.]*\) tok\/s.*'); l7=$(ld)
    awk -v pr="$pr" -v lr="$lr" -v pd="$pd" -v lc="$lc" -v p8="$p8" -v l1="$l1" -v l2="$l2" -v l3="$l3" -v l4="$l4" -v l7="$l7" 'BEGIN {
      printf "rank SST-2 dev (200, no prefix sharing): pwb %s ex/s (load %s), llama.cpp %s ex/s (load %s): %.2fx (must show 2.5x)\n", pr, l1, lr, l2, (lr > 0 ? pr / lr : 0)
      printf "decode batch 1: pwb %s tok/s (load %s), llama.cpp default settings %s tok/s (load %s): %.2fx (must show 1x)\n", pd, l3, lc, l4, (lc > 0 ? pd / lc : 0)
      printf "decode batch 1, 8-bit activations as llama.cpp computes (pwb generate --int8): %s tok/s (load %s): %.2fx\n", p8, l7, (lc > 0 ? p8 / lc : 0) }'
    if python3 -c 'import numpy' 2>/dev/null; then
      pf=$("$bin/engine_bench" "$model" "$dev" --threads 2 --limit 8 | num '^prefill batch 8: .* \([0-9.]*\) tok\/s.*'); l5=$(ld)
      sg=$(OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 python3 -c '
import time, numpy as np
a = np.random.rand(1024, 576).astype(np.float32); b = np.random.rand(576, 1536).astype(np.float32)
best = 0
for _ in range(20):
    t = time.perf_counter(); a @ b; best = max(best, 2 * 1024 * 576 * 1536 / (time.perf_counter() - t))
print(f"{best / 1e9:.1f}")'); l6=$(ld)
      awk -v pf="$pf" -v sg="$sg" -v l5="$l5" -v l6="$l6" 'BEGIN {
        g = 2 * 134.5e6 * pf / 1e9
        printf "prefill batch 8: pwb %s tok/s = %.1f GFLOP/s (2 x 134.5M per token, load %s); numpy SGEMM 1024x576x1536 %s GFLOP/s (load %s): %.0f%% (must show 60%%)\n", pf, g, l5, sg, l6, (sg > 0 ? 100 * g / sg : 0) }'
    fi
    if [ -x "${PWB_REF_PYTHON:-}" ] && "$PWB_REF_PYTHON" -c 'import torch, tokenizers' 2>/dev/null; then
      # The soft-prompt step against PyTorch (tests/reference/torch_grad_reference.py --bench: the
      # same rows, tokens and weights dequantized to F32, padded batch), exact arithmetic for pwb.
      sp() { sed -n 's/^seconds\/step \([0-9.]*\).*/\1/p'; }
      sf=$("$bin/tune_bench" "$model" "$shared/datasets/sst2/train.tsv" --threads 2 --exact | sp); l8=$(ld)
      ss=$("$bin/tune_bench" "$model" "$shared/datasets/sst2/train.tsv" --threads 2 --exact --prefix | sp); l9=$(ld)
      st=$("$PWB_REF_PYTHON" tests/reference/torch_grad_reference.py "$model" "$shared/datasets/sst2" \
           "$shared/models/smollm2-tokenizer/tokenizer.json" - --bench --threads 2 2>/dev/null | sp); l10=$(ld)
      awk -v sf="$sf" -v ss="$ss" -v st="$st" -v l8="$l8" -v l9="$l9" -v l10="$l10" 'BEGIN {
        printf "soft-prompt step, batch 8: pwb %s s flat (load %s), %s s prefix-shared (load %s); PyTorch %s s (load %s): %.2fx flat (must show 3x), %.2fx prefix-shared\n", sf, l8, ss, l9, st, l10, (sf > 0 ? st / sf : 0), (ss > 0 ? st / ss : 0) }'
    else
      echo "## soft-prompt step against PyTorch skipped: set PWB_REF_PYTHON to a python with torch and tokenizers"
    fi
    echo "## llama.cpp (llama-cpp-python), same rank classification, 2 threads"
    python3 bench/llamacpp_rank_bench.py "$model" "$shared/datasets/sst2/dev.tsv"
  else
    echo "## llama.cpp comparison skipped: pip install llama-cpp-python to run it"
  fi
} 2>&1 | tee "$log"
echo "bench: results in $log"

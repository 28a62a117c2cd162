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
  echo "## prompt tuning: batch 8, 20 virtual tokens"
  "$bin/tune_bench" "$model" "$shared/datasets/sst2/train.tsv"
  echo "## LoRA: batch 8, r 8 on q and v (AdamW)"
  "$bin/tune_bench" "$model" "$shared/datasets/sst2/train.tsv" --lora 8
  if [ -x "${PWB_REF_PYTHON:-}" ] && "$PWB_REF_PYTHON" -c 'import peft' 2>/dev/null; then
    echo "## the same LoRA step with PEFT + PyTorch (PWB_REF_PYTHON), 2 threads"
    "$PWB_REF_PYTHON" tests/reference/peft_reference.py "$model" --bench --threads 2
  else
    echo "## PEFT + PyTorch LoRA comparison skipped: set PWB_REF_PYTHON to a python with torch, transformers, peft"
  fi
  echo "## pwb serve: 64 clients x 20 requests, mixed adapters (TinyStories-656K; latency and RSS)"
  PWB_SERVE_LOAD=64x20 PWB_BIN=${PWB_BIN:-$root/build/pwb} PWB_ROOT=$root PWB_SHARED=$shared \
    "$root/build/tests/integration" --filter 'serve/load_mixed_adapters' 2>&1 | grep '^serve load'
  if python3 -c 'import llama_cpp' 2>/dev/null; then
    echo "## llama.cpp (llama-cpp-python), same rank classification, 2 threads"
    python3 bench/llamacpp_rank_bench.py "$model" "$shared/datasets/sst2/dev.tsv"
  else
    echo "## llama.cpp comparison skipped: pip install llama-cpp-python to run it"
  fi
} 2>&1 | tee "$log"
echo "bench: results in $log"

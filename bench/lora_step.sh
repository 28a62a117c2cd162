#!/bin/sh
# The LoRA training step, pwb against PEFT + PyTorch, alternating so both see the same machine:
# ROUNDS rounds (default 3) of one pwb run (build/bench/tune_bench --lora 8: batch 8 of the first
# SST-2 training rows, r 8 on q and v, alpha 16, dropout 0.05, AdamW, 2 threads; mean seconds/step
# after a warm-up step) and one PEFT run (tests/reference/peft_reference.py --bench: the same rows,
# tokens, targets and weights, dequantized by transformers). Prints every run, the medians of the
# seconds per step and of the peak RSS, the ratios, and the load average before and after.
#   PWB_REF_PYTHON=path/to/venv/bin/python sh bench/lora_step.sh [ROUNDS]
# TUNE_BENCH names another tune_bench binary (e.g. to compare two builds); EXTRA_BENCH a second one
# run in the same rounds.
set -eu
root=${PWB_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
rounds=${1:-3}
shared=${PWB_SHARED:-$root/../shared}
model=${PWB_BENCH_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
tb=${TUNE_BENCH:-build/bench/tune_bench}
py=${PWB_REF_PYTHON:?set PWB_REF_PYTHON to a python with torch, transformers and peft}
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "# LoRA step, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
pwb_run() { # binary, label
    "$1" "$model" "$shared/datasets/sst2/train.tsv" --lora 8 --steps 4 --threads 2 >"$tmp/out" 2>&1 || {
        cat "$tmp/out"; exit 1; }
    s=$(sed -n 's/^seconds\/step \([0-9.]*\).*/\1/p' "$tmp/out")
    m=$(sed -n 's/^peak RSS \([0-9.]*\) MiB.*/\1/p' "$tmp/out")
    echo "$2 s_per_step $s peak_rss_mib $m" | tee -a "$tmp/runs"
}
for i in $(seq "$rounds"); do
    pwb_run "$tb" pwb
    [ -n "${EXTRA_BENCH:-}" ] && pwb_run "$EXTRA_BENCH" pwb-extra
    "$py" tests/reference/peft_reference.py "$model" --bench --threads 2 --steps 2 \
        --sst2 "$shared/datasets/sst2" --tokenizer "$shared/models/smollm2-tokenizer/tokenizer.json" >"$tmp/py" 2>"$tmp/py.err" || {
        cat "$tmp/py" "$tmp/py.err"; exit 1; }
    grep '^{' "$tmp/py" | tail -1 | "$py" -c 'import json,sys; d=json.load(sys.stdin); print("peft s_per_step %.3f peak_rss_mib %.1f torch %s" % (d["s_per_step"], d["peak_rss_mb"], d["torch"]))' | tee -a "$tmp/runs"
done
"$py" - "$tmp/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.split()
    runs.setdefault(f[0], []).append((float(f[2]), float(f[4])))
med = {k: (statistics.median(s for s, _ in v), statistics.median(m for _, m in v)) for k, v in runs.items()}
for k, (s, m) in med.items():
    print("median %-9s %8.3f s/step  %8.1f MiB peak RSS  (%d runs)" % (k, s, m, len(runs[k])))
if "pwb" in med and "peft" in med:
    print("ratio: PEFT + PyTorch takes %.2fx pwb's time and %.2fx its peak memory" %
          (med["peft"][0] / med["pwb"][0], med["peft"][1] / med["pwb"][1]))
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

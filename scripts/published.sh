#!/bin/sh
# Regenerates the published comparison: runs suites/sst2-smollm2.json, suites/gsm8k-smollm2.json,
# suites/agnews-smollm2.json, suites/agnews-smollm2-sweep.json and the engineered-prompt suites
# (sst2-smollm2-engineered, agnews-smollm2-engineered: calibration, docs/calibration.md;
# agnews-smollm2-similar: similar shots as chat turns, docs/optimize.md;
# sst2-smollm2-optimized: prompt search, docs/optimize.md), csqa-smollm2 and boolq-smollm2 (engineered
# and soft prompt at the same budget), sst2-smollm2-peft and agnews-smollm2-peft (LoRA, prefix tuning and
# soft prompt against the best engineered prompt) on the built-in engine
# (SmolLM2-135M-Instruct, `make model`), then sst2-models and agnews-models (every arm on Gemma 3 270M
# and SmolLM2-135M-Instruct; `make published` fetches Gemma 3 too), sst2-smollm2-budget (the SST-2
# labelled-example budget sweep behind the data-efficiency chart) and sst2-gemma3-soft-long (Gemma 3's
# soft prompt trained for 1,000 steps against few-shot), and renders reports/<suite>.md
# with their SVG charts.
# `make published` calls this after building. PUBLISHED_SUITES="a b" runs only those.
#
# A rerun into the same databases resumes (finished cells are not recomputed, trained soft prompts
# are reused from results/soft/); PUBLISHED_FRESH=1 starts over in new databases. Timings differ from
# run to run; every accuracy, token count and p-value is deterministic (greedy decoding, seeded
# sampling and training, batch-independent arithmetic).
set -eu
cd "$(dirname "$0")/.."
PWB=${PWB:-./pwb}
: "${OMP_WAIT_POLICY:=passive}"
export OMP_WAIT_POLICY
mkdir -p results reports
SUITES=${PUBLISHED_SUITES:-sst2-smollm2 gsm8k-smollm2 agnews-smollm2 agnews-smollm2-sweep sst2-smollm2-engineered agnews-smollm2-engineered agnews-smollm2-similar sst2-smollm2-optimized csqa-smollm2 boolq-smollm2 sst2-smollm2-peft agnews-smollm2-peft sst2-models agnews-models sst2-smollm2-budget sst2-gemma3-soft-long}
if [ "${PUBLISHED_FRESH:-0}" = 1 ]; then
    for s in $SUITES; do rm -f "results/$s.db" "results/$s.db-wal" "results/$s.db-shm"; done
fi
for s in $SUITES; do
    echo "== $s"
    "$PWB" run "suites/$s.json" --db "results/$s.db"
    "$PWB" report --db "results/$s.db" -o "reports/$s.md"
    echo "wrote reports/$s.md"
done

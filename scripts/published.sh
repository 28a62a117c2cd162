#!/bin/sh
# Regenerates the published comparison: runs suites/sst2-smollm2.json and suites/gsm8k-smollm2.json
# on the built-in engine (SmolLM2-135M-Instruct, `make model`) and renders reports/sst2-smollm2.md and
# reports/gsm8k-smollm2.md with their SVG charts. `make published` calls this after building.
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
if [ "${PUBLISHED_FRESH:-0}" = 1 ]; then
    rm -f results/sst2-smollm2.db* results/gsm8k-smollm2.db*
fi
for s in sst2-smollm2 gsm8k-smollm2; do
    echo "== $s"
    "$PWB" run "suites/$s.json" --db "results/$s.db"
    "$PWB" report --db "results/$s.db" -o "reports/$s.md"
    echo "wrote reports/$s.md"
done

#!/bin/sh
# The SST-2 suite through `pwb serve` against the same suite on the local engine, row for row.
#
#   scripts/serve-check.sh [--limit N] [--cot-limit N] [--steps N] [--keep DIR]
#
# Local: four hard prompts ranked (zero-shot, few-shot, role, sst2-review), chain-of-thought
# generated (the first --cot-limit rows), and soft-20, a 20-token soft prompt trained for --steps
# steps on the sst2-review input (trained here; its quality does not matter, its equality does).
# Served: `pwb serve --adapter soft20=<that prompt>` on a free loopback port; the hard prompts rank
# through provider openai-completions (echo log-probabilities, the model's chat template rendered
# by the client), chain-of-thought generates through provider openai (/v1/chat/completions), and
# model "soft20" ranks the sst2-review input with the soft prompt in front. Prints, per method, the
# rows compared, the rows whose output and extracted answer agree, and the largest difference of a
# label log-likelihood. Exits 1 when any row differs.
#
# Needs: build/pwb (make), models/SmolLM2-135M-Instruct.Q4_1.gguf (make model), the SST-2 card on
# PWB_DATA_PATH (make sets it), sqlite3.
set -eu
LIMIT=40
COT=8
STEPS=4
KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --limit) LIMIT=$2; shift 2 ;;
    --cot-limit) COT=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "usage: $0 [--limit N] [--cot-limit N] [--steps N] [--keep DIR]" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PWB=${PWB_BIN:-build/pwb}
MODEL=${PWB_SMOLLM2_GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
[ -x "$PWB" ] || { echo "no $PWB (make)" >&2; exit 2; }
[ -r "$MODEL" ] || { echo "no $MODEL (make model)" >&2; exit 2; }
command -v sqlite3 >/dev/null || { echo "sqlite3 is needed for the comparison" >&2; exit 2; }
export OMP_WAIT_POLICY=passive
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$tmp"/*.db "$tmp"/*.json "$tmp"/serve.log "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

hard='{"name": "zero-shot", "template": "zero-shot", "scoring": "rank"},
    {"name": "few-shot", "template": "few-shot", "scoring": "rank"},
    {"name": "role", "template": "role", "scoring": "rank"},
    {"name": "sst2-review", "template": "sst2-review", "scoring": "rank"}'
cot="{\"name\": \"cot\", \"template\": \"cot\", \"limit\": $COT}"
data="{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": $LIMIT}"
cat >"$tmp/local.json" <<JSON
{"name": "serve-check-local", "seed": 1, "datasets": [$data],
 "models": [{"name": "local", "provider": "local", "model": "$MODEL", "temperature": 0, "max_tokens": 96}],
 "methods": [$hard, $cot,
    {"name": "soft-20", "template": "sst2-review", "scoring": "rank",
     "soft_prompt": {"tokens": 20, "init": "class", "steps": $STEPS, "lr": 0.003, "batch": 4,
                     "train_limit": 64, "eval_n": 0}}]}
JSON
t0=$(date +%s)
"$PWB" run "$tmp/local.json" --db "$tmp/local.db" -q
t_local=$(( $(date +%s) - t0 ))
soft=$(ls -d "$tmp"/soft/*/ | head -n 1)

"$PWB" serve --model "$MODEL" --adapter "soft20=$soft" --port 0 --port-file "$tmp/port" 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 1 300); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || { cat "$tmp/serve.log" >&2; exit 1; }
url="http://127.0.0.1:$(cat "$tmp/port")/v1"
served() { # name provider model-id
    echo "{\"name\": \"$1\", \"provider\": \"$2\", \"base_url\": \"$url\", \"model\": \"$3\", \"chat_template\": \"chatml\",
      \"tokenizer\": \"$MODEL\", \"temperature\": 0, \"max_tokens\": 96, \"concurrency\": 8, \"price\": {\"input\": 0, \"output\": 0}}"
}
cat >"$tmp/served-rank.json" <<JSON
{"name": "serve-check-rank", "seed": 1, "datasets": [$data], "models": [$(served served openai-completions base)],
 "methods": [$hard]}
JSON
cat >"$tmp/served-chat.json" <<JSON
{"name": "serve-check-chat", "seed": 1, "datasets": [$data], "models": [$(served served-chat openai base)],
 "methods": [$cot]}
JSON
cat >"$tmp/served-soft.json" <<JSON
{"name": "serve-check-soft", "seed": 1, "datasets": [$data], "models": [$(served served-soft openai-completions soft20)],
 "methods": [{"name": "sst2-review", "template": "sst2-review", "scoring": "rank"}]}
JSON
t0=$(date +%s)
for s in rank chat soft; do "$PWB" run "$tmp/served-$s.json" --db "$tmp/served.db" -q; done
t_served=$(( $(date +%s) - t0 ))
kill "$pid" && wait "$pid" || true
pid=

echo "SST-2 dev, $LIMIT seeded rows ($COT for cot); local run ${t_local}s (soft prompt training included), served ${t_served}s"
sqlite3 -header -column "$tmp/local.db" "
ATTACH '$tmp/served.db' AS s;
SELECT lc.method AS local_method, sc.model || '/' || sc.method AS served_cell, count(*) AS rows,
       sum(lp.output IS sp.output AND lp.extracted IS sp.extracted) AS same_answer,
       sum(lp.correct) AS local_correct, sum(sp.correct) AS served_correct,
       printf('%.2e', max(abs(coalesce(json_extract(lp.choice_logprobs, '\$[0]') - json_extract(sp.choice_logprobs, '\$[0]'), 0)),
                          abs(coalesce(json_extract(lp.choice_logprobs, '\$[1]') - json_extract(sp.choice_logprobs, '\$[1]'), 0))))
         AS max_logprob_diff,
       sum(sp.error IS NOT NULL) AS served_errors
FROM main.cells lc JOIN main.predictions lp ON lp.cell_id = lc.id
JOIN s.cells sc ON sc.method = (CASE lc.method WHEN 'soft-20' THEN 'sst2-review' ELSE lc.method END)
               AND sc.model = (CASE lc.method WHEN 'soft-20' THEN 'served-soft' WHEN 'cot' THEN 'served-chat' ELSE 'served' END)
JOIN s.predictions sp ON sp.cell_id = sc.id AND sp.row = lp.row
GROUP BY lc.id, sc.id ORDER BY lc.id;" | tee "$tmp/table.txt"
diff=$(sqlite3 "$tmp/local.db" "
ATTACH '$tmp/served.db' AS s;
SELECT count(*) FROM main.cells lc JOIN main.predictions lp ON lp.cell_id = lc.id
JOIN s.cells sc ON sc.method = (CASE lc.method WHEN 'soft-20' THEN 'sst2-review' ELSE lc.method END)
               AND sc.model = (CASE lc.method WHEN 'soft-20' THEN 'served-soft' WHEN 'cot' THEN 'served-chat' ELSE 'served' END)
JOIN s.predictions sp ON sp.cell_id = sc.id AND sp.row = lp.row
WHERE NOT (lp.output IS sp.output AND lp.extracted IS sp.extracted);")
echo "rows that differ: $diff"
[ "$diff" = 0 ]

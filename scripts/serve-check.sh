#!/bin/sh
# The SST-2 suite through `pwb serve` against the same suite on the local engine, row for row.
#
#   scripts/serve-check.sh [--limit N] [--cot-limit N] [--steps N] [--keep DIR]
#
# One method list, two sets of models. Locally: four hard prompts ranked (zero-shot, few-shot,
# role, sst2-review), chain-of-thought generated (the first --cot-limit rows), and three tuned
# methods on the sst2-review input, each trained here for --steps steps (their quality does not
# matter, their equality does): soft-20 (a 20-token soft prompt), lora-r8 (LoRA on q and v) and
# prefix-10 (prefix tuning). Each tuned method names the model id it is served under
# ("served_model": soft20, lora8, prefix10). Then `pwb serve` on a free loopback port with
# `--adapter soft20=<its folder> --adapter lora8=... --adapter prefix10=...` (the folders the local
# run recorded), and the same methods on HTTP models: ranked over provider openai-completions (echo
# log-probabilities; the model's chat template rendered by the client; a tuned method's requests
# name its served_model, nothing is trained), chain-of-thought over provider openai
# (/v1/chat/completions). Prints, per method, the rows compared, the rows whose output and
# extracted answer agree, and the largest difference of a label log-likelihood. Exits 1 when any
# row differs.
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

train="\"steps\": $STEPS, \"lr\": 0.003, \"batch\": 4, \"train_limit\": 64, \"eval_n\": 0"
methods="{\"name\": \"zero-shot\", \"template\": \"zero-shot\", \"scoring\": \"rank\"},
    {\"name\": \"few-shot\", \"template\": \"few-shot\", \"scoring\": \"rank\"},
    {\"name\": \"role\", \"template\": \"role\", \"scoring\": \"rank\"},
    {\"name\": \"sst2-review\", \"template\": \"sst2-review\", \"scoring\": \"rank\"},
    {\"name\": \"soft-20\", \"template\": \"sst2-review\", \"served_model\": \"soft20\",
     \"soft_prompt\": {\"tokens\": 20, \"init\": \"class\", $train}},
    {\"name\": \"lora-r8\", \"template\": \"sst2-review\", \"served_model\": \"lora8\",
     \"lora\": {\"r\": 8, \"targets\": \"q,v\", $train}},
    {\"name\": \"prefix-10\", \"template\": \"sst2-review\", \"served_model\": \"prefix10\",
     \"prefix\": {\"tokens\": 10, $train}}"
cot="{\"name\": \"cot\", \"template\": \"cot\", \"limit\": $COT}"
data="{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": $LIMIT}"
cat >"$tmp/local.json" <<JSON
{"name": "serve-check-local", "seed": 1, "datasets": [$data],
 "models": [{"name": "local", "provider": "local", "model": "$MODEL", "temperature": 0, "max_tokens": 96}],
 "methods": [$methods, $cot]}
JSON
t0=$(date +%s)
"$PWB" run "$tmp/local.json" --db "$tmp/local.db" -q
t_local=$(( $(date +%s) - t0 ))

# each tuned method's folder, served under its served_model
adapters=$(sqlite3 -separator ' ' "$tmp/local.db" "
SELECT CASE c.method WHEN 'soft-20' THEN 'soft20' WHEN 'lora-r8' THEN 'lora8' ELSE 'prefix10' END || '=' || s.artifact_path
FROM cells c JOIN soft_prompts s ON s.id = c.soft_prompt_id ORDER BY c.method;")
[ "$(echo "$adapters" | wc -w)" = 3 ] || { echo "want 3 trained adapters, got: $adapters" >&2; exit 1; }
set --
for a in $adapters; do set -- "$@" --adapter "$a"; done
"$PWB" serve --model "$MODEL" "$@" --port 0 --port-file "$tmp/port" 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 1 300); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || { cat "$tmp/serve.log" >&2; exit 1; }
url="http://127.0.0.1:$(cat "$tmp/port")/v1"
served() { # name provider
    echo "{\"name\": \"$1\", \"provider\": \"$2\", \"base_url\": \"$url\", \"model\": \"base\", \"chat_template\": \"chatml\",
      \"tokenizer\": \"$MODEL\", \"temperature\": 0, \"max_tokens\": 96, \"concurrency\": 8, \"price\": {\"input\": 0, \"output\": 0}}"
}
cat >"$tmp/served-rank.json" <<JSON
{"name": "serve-check-rank", "seed": 1, "datasets": [$data], "models": [$(served served openai-completions)],
 "methods": [$methods]}
JSON
cat >"$tmp/served-chat.json" <<JSON
{"name": "serve-check-chat", "seed": 1, "datasets": [$data], "models": [$(served served-chat openai)],
 "methods": [$cot]}
JSON
t0=$(date +%s)
for s in rank chat; do "$PWB" run "$tmp/served-$s.json" --db "$tmp/served.db" -q; done
t_served=$(( $(date +%s) - t0 ))
kill "$pid" && wait "$pid" || true
pid=

echo "SST-2 dev, $LIMIT seeded rows ($COT for cot); local run ${t_local}s (training included), served ${t_served}s"
echo "served: $adapters"
join="FROM main.cells lc JOIN main.predictions lp ON lp.cell_id = lc.id
JOIN s.cells sc ON sc.method = lc.method
JOIN s.predictions sp ON sp.cell_id = sc.id AND sp.row = lp.row"
sqlite3 -header -column "$tmp/local.db" "
ATTACH '$tmp/served.db' AS s;
SELECT lc.method AS method, sc.model AS served_model_entry, count(*) AS rows,
       sum(lp.output IS sp.output AND lp.extracted IS sp.extracted) AS same_answer,
       sum(lp.correct) AS local_correct, sum(sp.correct) AS served_correct,
       printf('%.2e', max(abs(coalesce(json_extract(lp.choice_logprobs, '\$[0]') - json_extract(sp.choice_logprobs, '\$[0]'), 0)),
                          abs(coalesce(json_extract(lp.choice_logprobs, '\$[1]') - json_extract(sp.choice_logprobs, '\$[1]'), 0))))
         AS max_logprob_diff,
       sum(sp.error IS NOT NULL) AS served_errors
$join GROUP BY lc.id, sc.id ORDER BY lc.id;" | tee "$tmp/table.txt"
diff=$(sqlite3 "$tmp/local.db" "ATTACH '$tmp/served.db' AS s;
SELECT count(*) $join WHERE NOT (lp.output IS sp.output AND lp.extracted IS sp.extracted);")
rows=$(sqlite3 "$tmp/local.db" "ATTACH '$tmp/served.db' AS s; SELECT count(*) $join;")
want=$(sqlite3 "$tmp/local.db" "SELECT count(*) FROM predictions;")
echo "rows compared: $rows of $want local; rows that differ: $diff"
[ "$diff" = 0 ] && [ "$rows" = "$want" ]

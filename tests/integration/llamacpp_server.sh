#!/bin/sh
# Runs an SST-2 suite (the four generic hard templates, greedy) through llama.cpp's
# OpenAI-compatible server (llama-cpp-python[server], from PyPI) on loopback and, with --compare,
# the same suite on pwb's local engine, then prints each cell's accuracy side by side.
# The server is started here on a free port and always stopped (trap), even on failure.
#
#   tests/integration/llamacpp_server.sh [--limit N] [--compare] [--threads T] [--keep DIR]
#
# --keep DIR copies both databases (llamacpp.db, local.db) and the server's log into DIR before the
# temporary folder goes. With --compare it also prints, per cell, how often the two backends
# extracted the same answer for the same row.
#
# Needs: ./pwb or build/pwb (make), models/SmolLM2-135M-Instruct.Q4_1.gguf (make model),
# python3 with llama_cpp.server, sqlite3 for the table. Exits 77 (skip) when something is missing.
# The Criterion test tests/integration/test_llamacpp.c covers the backend itself (chat, stream,
# rank); this script is the whole-suite check.
set -eu

LIMIT=50
COMPARE=0
THREADS=1
KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --limit) LIMIT=$2; shift 2 ;;
    --compare) COMPARE=1; shift ;;
    --threads) THREADS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "usage: $0 [--limit N] [--compare] [--threads T] [--keep DIR]" >&2; exit 2 ;;
    esac
done

ROOT=${PWB_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$ROOT"
PWB=${PWB_BIN:-}
[ -n "$PWB" ] || { [ -x ./pwb ] && PWB=./pwb; } || PWB=build/pwb
MODEL=${PWB_SMOLLM2_GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -x "$PWB" ] || { echo "skip: no pwb binary (make)"; exit 77; }
[ -r "$MODEL" ] || { echo "skip: no $MODEL (make model)"; exit 77; }
python3 -c 'import llama_cpp.server' 2>/dev/null || { echo "skip: python3 cannot import llama_cpp.server"; exit 77; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pwb-llamacpp.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        i=0
        while kill -0 "$SERVER_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP" && cp "$TMP"/*.db "$TMP/server.log" "$KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

python3 -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port "$PORT" --n_threads "$THREADS" \
    --n_ctx 2048 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
i=0
until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited:"; cat "$TMP/server.log"; exit 1; }
    i=$((i + 1))
    [ $i -lt 600 ] || { echo "the server did not come up in 120 s"; exit 1; }
    sleep 0.2
done
echo "llama.cpp server on 127.0.0.1:$PORT (pid $SERVER_PID)"

suite() { # name provider-fields
    cat >"$TMP/$1.json" <<EOF
{
  "name": "sst2-$1",
  "seed": 1,
  "datasets": [{"name": "sst2", "split": "dev", "limit": $LIMIT}],
  "models": [$2],
  "methods": [
    {"name": "zero-shot", "template": "zero-shot"},
    {"name": "few-shot", "template": "few-shot"},
    {"name": "cot", "template": "cot"},
    {"name": "role", "template": "role"}
  ]
}
EOF
}
suite llamacpp "{\"name\": \"smollm2-llamacpp\", \"provider\": \"openai\", \"base_url\": \"http://127.0.0.1:$PORT/v1\",
     \"model\": \"smollm2\", \"temperature\": 0, \"concurrency\": 1, \"timeout_s\": 600, \"max_retries\": 2}"
suite local "{\"name\": \"smollm2-local\", \"provider\": \"local\", \"model\": \"$ROOT/$MODEL\", \"temperature\": 0}"

rc=0
"$PWB" run "$TMP/llamacpp.json" --db "$TMP/llamacpp.db" --no-cache --fresh || rc=$?
if [ "$COMPARE" = 1 ]; then
    "$PWB" run "$TMP/local.json" --db "$TMP/local.db" --no-cache --fresh || rc=$?
fi
if command -v sqlite3 >/dev/null 2>&1; then
    q="SELECT c.method, COUNT(*), ROUND(100.0 * SUM(p.correct) / COUNT(*), 1) FROM predictions p JOIN cells c ON c.id = p.cell_id GROUP BY c.method ORDER BY c.method;"
    echo "method | n | accuracy % (llama.cpp server)"
    sqlite3 -separator ' | ' "$TMP/llamacpp.db" "$q" 2>/dev/null || echo "(query failed: schema differs)"
    if [ "$COMPARE" = 1 ]; then
        echo "method | n | accuracy % (local engine)"
        sqlite3 -separator ' | ' "$TMP/local.db" "$q" 2>/dev/null || true
        echo "method | rows in both | same extracted answer %"
        sqlite3 -separator ' | ' "$TMP/llamacpp.db" "ATTACH '$TMP/local.db' AS l;
            SELECT a.method, COUNT(*), ROUND(100.0 * SUM(pa.extracted IS pb.extracted) / COUNT(*), 1)
            FROM predictions pa JOIN cells a ON a.id = pa.cell_id
            JOIN l.cells b ON b.method = a.method JOIN l.predictions pb ON pb.cell_id = b.id AND pb.row = pa.row
            GROUP BY a.method ORDER BY a.method;" 2>/dev/null || true
    fi
fi
exit $rc

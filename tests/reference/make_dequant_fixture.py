#!/usr/bin/env python3
"""Writes tests/fixtures/quant/dequant_ref.txt: random blocks of the types pwb dequantizes without
a quantizer of its own (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K) and their values as gguf-py's reference
dequantization (ggml's block formats) gives them. Scales are set to finite fp16 values.

One line per type: `TYPE n_blocks hex-bytes`, then one line of the n_blocks * block_size values
(%.9g). Usage: make_dequant_fixture.py OUT.txt
"""
import sys

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

# type -> byte offsets of its fp16 scale fields
SCALES = {"Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82], "Q3_K": [108], "Q5_K": [0, 2]}


def main():
    rng = np.random.default_rng(12)
    out = []
    for name, offs in SCALES.items():
        qt = GGMLQuantizationType[name]
        bs, ts = GGML_QUANT_SIZES[qt]
        nb = 2
        raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
        for b in range(nb):
            for o in offs:
                raw[b, o:o + 2] = np.frombuffer(np.float16(rng.uniform(0.001, 0.1)).tobytes(), np.uint8)
        vals = quants.dequantize(raw.reshape(-1), qt).reshape(-1).astype(np.float32)
        out.append(f"{name} {nb} {raw.tobytes().hex()}")
        out.append(" ".join(f"{v:.9g}" for v in vals))
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

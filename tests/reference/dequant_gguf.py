#!/usr/bin/env python3
"""Writes an F32 copy of a GGUF: the same metadata (general.file_type set to 0, ALL_F32) and every
tensor dequantized to F32 exactly as ggml dequantizes it (Q4_1: d*q + m, Q8_0: d*q, fp16 scales).

Why: llama.cpp multiplies quantized weights with 8-bit-quantized activations (Q8_1/Q8_0) and keeps
an F16 KV cache, so its logits on the Q4_1 file differ from exact arithmetic by ~0.1-0.2. Run on this
F32 copy with an F32 KV cache (make_logit_fixtures.py --exact), llama.cpp computes in F32
throughout: the reference for an engine that computes Q4_1 x F32 activations exactly.

Usage: dequant_gguf.py IN.gguf OUT.gguf
"""

import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from np_forward import Gguf  # noqa: E402

GGML_TYPE_SIZE = {0: (1, 4), 1: (1, 2), 3: (32, 20), 8: (32, 34)}  # type -> (block elems, bytes)


def kv_spans(mm, off, nkv):
    """Byte spans of the metadata pairs, with their keys."""
    def u(fmt):
        nonlocal off
        n = struct.calcsize(fmt)
        v = struct.unpack(fmt, bytes(mm[off:off + n]))
        off += n
        return v

    def s():
        nonlocal off
        (n,) = u("<Q")
        off += n
        return bytes(mm[off - n:off]).decode()

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def val(t):
        nonlocal off
        if t == 8:
            s()
        elif t == 9:
            at, n = u("<IQ")
            if at in sizes:
                off += sizes[at] * n
            else:
                for _ in range(n):
                    val(at)
        else:
            off += sizes[t]

    spans = []
    for _ in range(nkv):
        start = off
        k = s()
        (t,) = u("<I")
        val(t)
        spans.append((k, start, off))
    return spans, off


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    g = Gguf(src)
    mm = g.mm
    _, nt, nkv = struct.unpack("<IQQ", bytes(mm[4:24]))
    spans, _ = kv_spans(mm, 24, nkv)
    align = g.kv.get("general.alignment", 32)
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, nt, nkv))
    for k, a, b in spans:
        if k == "general.file_type":
            kb = k.encode()
            out += struct.pack("<Q", len(kb)) + kb + struct.pack("<II", 4, 0)
        else:
            out += bytes(mm[a:b])
    names = list(g.tensors)  # file order
    offs, cur = {}, 0
    for name in names:
        dims, _, _ = g.tensors[name]
        offs[name] = cur
        cur += int(np.prod(dims)) * 4
        cur = (cur + align - 1) // align * align
    for name in names:
        dims, _, _ = g.tensors[name]
        nb = name.encode()
        out += struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(dims))
        out += struct.pack("<" + "Q" * len(dims), *dims) + struct.pack("<IQ", 0, offs[name])
    out += b"\0" * ((-len(out)) % align)
    with open(dst, "wb") as f:
        f.write(out)
        base = f.tell()
        for name in names:
            a, _ = g.tensor(name)
            f.seek(base + offs[name])
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
        f.truncate(base + cur)
    print(f"{dst}: {nt} tensors as F32, {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    main()

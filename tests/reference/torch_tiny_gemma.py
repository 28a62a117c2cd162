#!/usr/bin/env python3
"""PyTorch autograd reference for Gemma 3's layer operations in pwb's backward pass.

Not part of pwb (pwb never runs Python). A tiny random Gemma 3-style model (2 layers, hidden 16,
2 query heads and 1 key/value head of dimension 12, so the query width differs from the hidden
size as in Gemma 3 270M) is written out with numpy's seeded generator, and torch computes in
float64, written here from the Gemma 3 definition and nothing of pwb's:

  - token embeddings scaled by sqrt(hidden) (the soft prompt's vectors are not),
  - RMSNorm before attention and MLP, and after them (post-attention, post-FFN norms),
  - per-head RMSNorm of queries and keys (QK norm) before RoPE (rotate-half layout),
  - layer 0 a sliding-window layer (window 3, its own RoPE base), layer 1 global,
  - GeGLU with the tanh GELU,
  - final-logit soft-capping c * tanh(logits / c).

Two sequences [soft prompt][ids] (lengths past the window), each scored at its last two
positions; loss = mean over sequences of the summed -log p(target) (engine/backward.h). The
loss, each target's log-probability and d loss / d soft prompt go to OUT_DIR/tiny_gemma.json and
OUT_DIR/tiny_gemma.f32 (the weights, the soft prompt and the gradient, little-endian float32,
at the offsets the JSON lists); tests/unit/engine/test_backward.c loads the same weights into
pwb's model struct and compares.

  python3 tests/reference/torch_tiny_gemma.py tests/fixtures/grad
"""

import json
import os
import sys

import numpy as np
import torch

SEED = 20261202
CFG = {"n_layer": 2, "hidden": 16, "n_head": 2, "n_head_kv": 1, "head_dim": 12, "n_ff": 24,
       "n_vocab": 48, "norm_eps": 1e-6, "rope_base": 10000.0, "rope_base_swa": 100.0,
       "window": 3, "swa_layers": [0], "final_softcap": 3.0, "n_soft": 3}


def weights(rng):
    """name -> float32 array, in the order they are written."""
    c = CFG
    d, hd, ff, V = c["hidden"], c["head_dim"], c["n_ff"], c["n_vocab"]
    qd, kd = c["n_head"] * hd, c["n_head_kv"] * hd
    w = {}

    def mat(name, rows, cols, sd):
        w[name] = (sd * rng.standard_normal((rows, cols))).astype(np.float32)

    def norm(name, n):
        w[name] = (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    mat("token_embd", V, d, 1.0 / np.sqrt(d))
    mat("output", V, d, 1.0)
    norm("output_norm", d)
    s = 1.0 / np.sqrt(d)
    for l in range(c["n_layer"]):
        p = f"blk.{l}."
        norm(p + "attn_norm", d)
        norm(p + "ffn_norm", d)
        norm(p + "attn_q_norm", hd)
        norm(p + "attn_k_norm", hd)
        norm(p + "post_attention_norm", d)
        norm(p + "post_ffw_norm", d)
        # larger q/k weights: peaked attention exercises the softmax's backward
        mat(p + "attn_q", qd, d, 2.0 * s)
        mat(p + "attn_k", kd, d, 2.0 * s)
        mat(p + "attn_v", kd, d, s)
        mat(p + "attn_output", d, qd, 1.0 / np.sqrt(qd))
        mat(p + "ffn_gate", ff, d, s)
        mat(p + "ffn_up", ff, d, s)
        mat(p + "ffn_down", d, ff, 1.0 / np.sqrt(ff))
    return w


def rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + CFG["norm_eps"]) * w


def rope(x, pos, base):
    """Rotate-half RoPE of x [T, H, hd] at positions pos [T]."""
    hd = x.shape[-1]
    half = hd // 2
    inv = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = pos[:, None].double() * inv[None, :]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, a * s + b * c], -1)


def forward(W, soft, ids):
    """Logits [T, V] of one sequence [soft][ids]."""
    c = CFG
    d, H, Hk, hd = c["hidden"], c["n_head"], c["n_head_kv"], c["head_dim"]
    emb = W["token_embd"][torch.tensor(ids)] * np.sqrt(d)
    x = torch.cat([soft, emb], 0)
    T = x.shape[0]
    pos = torch.arange(T)
    for l in range(c["n_layer"]):
        p = f"blk.{l}."
        swa = l in c["swa_layers"]
        h = rmsnorm(x, W[p + "attn_norm"])
        q = rmsnorm((h @ W[p + "attn_q"].T).view(T, H, hd), W[p + "attn_q_norm"])
        k = rmsnorm((h @ W[p + "attn_k"].T).view(T, Hk, hd), W[p + "attn_k_norm"])
        v = (h @ W[p + "attn_v"].T).view(T, Hk, hd)
        base = c["rope_base_swa"] if swa else c["rope_base"]
        q, k = rope(q, pos, base), rope(k, pos, base)
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
        sc = torch.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        allowed = pos[None, :] <= pos[:, None]
        if swa:
            allowed = allowed & (pos[:, None] - pos[None, :] < c["window"])
        sc = sc.masked_fill(~allowed[None], float("-inf"))
        att = torch.einsum("hts,shd->thd", torch.softmax(sc, -1), v).reshape(T, H * hd)
        x = x + rmsnorm(att @ W[p + "attn_output"].T, W[p + "post_attention_norm"])
        h = rmsnorm(x, W[p + "ffn_norm"])
        g = torch.nn.functional.gelu(h @ W[p + "ffn_gate"].T, approximate="tanh")
        y = (g * (h @ W[p + "ffn_up"].T)) @ W[p + "ffn_down"].T
        x = x + rmsnorm(y, W[p + "post_ffw_norm"])
    logits = rmsnorm(x, W["output_norm"]) @ W["output"].T
    cap = c["final_softcap"]
    return cap * torch.tanh(logits / cap)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    rng = np.random.default_rng(SEED)
    w = weights(rng)
    c = CFG
    soft = (rng.random((c["n_soft"], c["hidden"])) - 0.5).astype(np.float32)
    V = c["n_vocab"]
    examples = []
    for n in (6, 9):
        ids = [int(i) for i in rng.integers(3, V, n)]
        T = c["n_soft"] + n
        examples.append({"ids": ids, "tgt_pos": [T - 2, T - 1], "targets": [int(i) for i in rng.integers(3, V, 2)]})

    W = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    S = torch.tensor(soft, dtype=torch.float64, requires_grad=True)
    loss = 0
    for ex in examples:
        lp = torch.log_softmax(forward(W, S, ex["ids"]), -1)
        tl = [lp[p, t] for p, t in zip(ex["tgt_pos"], ex["targets"])]
        ex["logprobs"] = [float(v) for v in tl]
        loss = loss - sum(tl)
    loss = loss / len(examples)
    loss.backward()
    grad = S.grad.numpy().astype(np.float32)

    blobs, tensors, off = [], [], 0
    for name, a in list(w.items()) + [("soft_prompt", soft), ("grad", grad)]:
        tensors.append({"name": name, "shape": list(a.shape), "offset": off})
        blobs.append(a.astype("<f4").tobytes())
        off += a.size
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tiny_gemma.f32"), "wb") as f:
        f.write(b"".join(blobs))
    fx = {"what": "loss and d loss / d soft prompt of a tiny random Gemma 3-style model, PyTorch autograd "
                  "in float64 (tests/reference/torch_tiny_gemma.py)",
          "torch": torch.__version__, "seed": SEED, "config": c,
          "loss_definition": "mean over examples of the summed -log p(target); input [soft prompt][ids]",
          "data_file": "tiny_gemma.f32", "n_floats": off, "tensors": tensors,
          "loss": float(loss), "grad_l2": float(np.linalg.norm(grad.astype(np.float64))), "examples": examples}
    with open(os.path.join(out, "tiny_gemma.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(fx, f, indent=1)
        f.write("\n")
    print(f"loss {float(loss):.8f}, |grad| {fx['grad_l2']:.6f}, {off} floats")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference for pwb's backward pass to the input embeddings (prompt tuning).

Not part of pwb (pwb never runs Python): it reads the SmolLM2 GGUF file itself (its own GGUF parser
and Q4_1/Q8_0 dequantizers in NumPy, nothing from pwb), undoes llama.cpp's q/k row permutation,
builds the Llama forward in torch (Hugging Face's rotate-half RoPE, grouped-query attention,
SwiGLU, RMSNorm) and lets autograd give the gradient of the prompt-tuning loss with respect to a
fixed soft prompt.

  fixture mode (default): 3 short SST-2 dev sentences in the zero-shot ChatML prompt of pwbref.py,
      a soft prompt of N_SOFT vectors in front, targets = the label verbalizer then <|im_end|>; the
      loss (mean over examples of the summed target NLL) and its gradient, computed in float64,
      go to tests/fixtures/grad/ (JSON header + raw little-endian F32 files).
  --bench: the training step tune_bench.c times (batch 8 of the first SST-2 training rows, 20
      virtual tokens, float32, right-padded batch with a padding mask), seconds per step and peak
      RSS, with torch.set_num_threads(--threads).

Needs torch (Debian's python3-torch works), numpy and Hugging Face `tokenizers` (for the ids).
  python3 tests/reference/torch_grad_reference.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
      ../shared/datasets/sst2 ../shared/models/smollm2-tokenizer/tokenizer.json tests/fixtures/grad
  python3 tests/reference/torch_grad_reference.py MODEL SST2_DIR TOKENIZER_JSON - --bench --threads 2
"""

import argparse
import json
import os
import resource
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pwbref  # noqa: E402  (prompt formats and readers shared with the llama.cpp scripts)

N_SOFT = 8          # fixture soft prompt length (kept short so the C test stays fast)
FIXTURE_ROWS = 3
PROMPT_SEED = 1234


# ---- GGUF ------------------------------------------------------------------------------------

GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0 = 0, 1, 2, 3, 8


def read_gguf(path):
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal off
        n = take("Q")
        s = bytes(buf[off:off + n]).decode("utf-8", "replace")
        off += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t in scalar:
            return take(scalar[t])
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        raise ValueError(f"gguf: unknown value type {t}")

    if bytes(buf[:4]) != b"GGUF":
        sys.exit(f"{path}: not a GGUF file")
    off = 4
    version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    if version != 3:
        sys.exit(f"{path}: GGUF version {version}")
    kv = {}
    for _ in range(n_kv):
        k = string()
        kv[k] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        nd = take("I")
        dims = [take("Q") for _ in range(nd)]
        infos.append((name, dims, take("I"), take("Q")))
    align = kv.get("general.alignment", 32)
    base = (off + align - 1) // align * align
    tensors = {}
    for name, dims, typ, toff in infos:
        n = int(np.prod(dims))
        raw = data[base + toff:]
        tensors[name] = dequant(raw, typ, n).reshape(list(reversed(dims)))
    return kv, tensors


def f16(a):
    return a.view(np.float16).astype(np.float32)


def dequant(raw, typ, n):
    if typ == GGML_F32:
        return np.frombuffer(raw[:4 * n].tobytes(), dtype="<f4").copy()
    if typ == GGML_F16:
        return f16(np.frombuffer(raw[:2 * n].tobytes(), dtype="<u2").copy())
    nb = n // 32
    if typ == GGML_Q8_0:
        b = np.frombuffer(raw[:34 * nb].tobytes(), dtype=np.uint8).reshape(nb, 34)
        d = f16(b[:, :2].copy().view("<u2"))
        q = b[:, 2:].view(np.int8).astype(np.float32)
        return (q * d).reshape(-1)
    if typ in (GGML_Q4_0, GGML_Q4_1):
        size = 18 if typ == GGML_Q4_0 else 20
        b = np.frombuffer(raw[:size * nb].tobytes(), dtype=np.uint8).reshape(nb, size)
        d = f16(b[:, :2].copy().view("<u2"))
        qs = b[:, size - 16:]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)  # elements 0..15, 16..31
        if typ == GGML_Q4_0:
            return ((q - 8.0) * d).reshape(-1)
        m = f16(b[:, 2:4].copy().view("<u2"))
        return (q * d + m).reshape(-1)
    sys.exit(f"gguf: tensor type {typ} not handled by this reference")


def unpermute(w, n_head):
    """Undo llama.cpp's convert permutation of q/k rows (GGUF adjacent-pair RoPE -> HF rotate-half)."""
    r = w.shape[0]
    return w.reshape(n_head, r // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Llama:
    def __init__(self, path, dtype):
        kv, t = read_gguf(path)
        a = kv["general.architecture"]
        self.n_layer = kv[f"{a}.block_count"]
        self.d = kv[f"{a}.embedding_length"]
        self.n_head = kv[f"{a}.attention.head_count"]
        self.n_kv = kv[f"{a}.attention.head_count_kv"]
        self.hd = self.d // self.n_head
        self.eps = kv[f"{a}.attention.layer_norm_rms_epsilon"]
        self.base = kv.get(f"{a}.rope.freq_base", 10000.0)
        T = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(dtype)  # noqa: E731
        self.embd = T(t["token_embd.weight"])
        self.out = T(t["output.weight"]) if "output.weight" in t else self.embd
        self.norm = T(t["output_norm.weight"])
        self.layers = []
        for i in range(self.n_layer):
            g = lambda n: t[f"blk.{i}.{n}.weight"]  # noqa: E731
            self.layers.append(dict(
                an=T(g("attn_norm")), fn=T(g("ffn_norm")),
                wq=T(unpermute(g("attn_q"), self.n_head)), wk=T(unpermute(g("attn_k"), self.n_kv)),
                wv=T(g("attn_v")), wo=T(g("attn_output")),
                wg=T(g("ffn_gate")), wu=T(g("ffn_up")), wd=T(g("ffn_down"))))
        self.dtype = dtype

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def forward(self, x, mask):
        """x: [B, L, d] input embeddings; mask: [B, L] 1 for real positions (right padding)."""
        B, L, _ = x.shape
        inv = 1.0 / (self.base ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat([ang, ang], -1)
        cos, sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)

        def rope(v):  # [B, H, L, hd], rotate-half
            h = self.hd // 2
            rot = torch.cat([-v[..., h:], v[..., :h]], -1)
            return v * cos + rot * sin

        causal = torch.ones(L, L, dtype=torch.bool).tril()
        allow = causal[None, None] & mask[:, None, None, :].bool()
        rep = self.n_head // self.n_kv
        for p in self.layers:
            h = self.rms(x, p["an"])
            q = (h @ p["wq"].T).view(B, L, self.n_head, self.hd).transpose(1, 2)
            k = (h @ p["wk"].T).view(B, L, self.n_kv, self.hd).transpose(1, 2)
            v = (h @ p["wv"].T).view(B, L, self.n_kv, self.hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            s = (q @ k.transpose(-1, -2)) / (self.hd ** 0.5)
            s = s.masked_fill(~allow, float("-inf"))
            o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, L, self.d)
            x = x + o @ p["wo"].T
            h = self.rms(x, p["fn"])
            x = x + (torch.nn.functional.silu(h @ p["wg"].T) * (h @ p["wu"].T)) @ p["wd"].T
        return self.rms(x, self.norm)


def build_batch(model, tok, rows, n_soft):
    """ids per example: prompt, then the label and <|im_end|>; targets the label and <|im_end|>."""
    im_end = tok.token_to_id("<|im_end|>")
    out = []
    for sentence, label in rows:
        p = tok.encode(pwbref.sst2_prompt(sentence), add_special_tokens=False).ids
        lab = tok.encode(pwbref.LABELS[label], add_special_tokens=False).ids
        tg = lab + [im_end]
        ids = p + lab            # the last target is predicted, not fed
        pos = [n_soft + len(p) - 1 + k for k in range(len(tg))]
        out.append(dict(sentence=sentence, label=label, ids=ids, targets=tg, tgt_pos=pos))
    return out


def loss_of(model, soft, batch):
    """Mean over examples of the summed NLL of the targets; padded batch, one forward."""
    d = model.d
    L = max(len(b["ids"]) for b in batch) + soft.shape[0]
    x = torch.zeros(len(batch), L, d, dtype=model.dtype)
    mask = torch.zeros(len(batch), L)
    xs = []
    for i, b in enumerate(batch):
        e = model.embd[torch.tensor(b["ids"])]
        n = soft.shape[0] + len(b["ids"])
        xs.append(torch.cat([soft, e], 0))
        mask[i, :n] = 1
    x = torch.stack([torch.nn.functional.pad(v, (0, 0, 0, L - v.shape[0])) for v in xs])
    hfin = model.forward(x, mask)
    total = 0.0
    lps = []
    for i, b in enumerate(batch):
        rows = hfin[i, b["tgt_pos"]]
        logp = torch.log_softmax(rows @ model.out.T, -1)
        lp = logp[torch.arange(len(b["targets"])), torch.tensor(b["targets"])]
        lps.append(lp.detach().double().tolist())
        total = total - lp.sum()
    return total / len(batch), lps


def fixture_rows(dev):
    """The FIXTURE_ROWS shortest dev sentences, both labels among them: keeps the C tests quick."""
    order = sorted(range(len(dev)), key=lambda i: (len(dev[i][0]), i))
    picked, labels = [], set()
    for i in order:
        if len(picked) == FIXTURE_ROWS - 1 and len(labels) == 1 and dev[i][1] in labels:
            continue
        picked.append(i)
        labels.add(dev[i][1])
        if len(picked) == FIXTURE_ROWS:
            break
    return sorted(picked)


def fixture_args(doc):
    """The command line the gradient references share: GGUF SST2_DIR TOKENIZER_JSON OUT_DIR [--threads]."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("gguf", "sst2_dir", "tokenizer_json", "out_dir"):
        ap.add_argument(name)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = fixture_args(__doc__)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(a.tokenizer_json)

    if a.bench:
        t0 = time.time()
        model = Llama(a.gguf, torch.float32)
        t_load = time.time() - t0
        rows = pwbref.read_sst2(os.path.join(a.sst2_dir, "train.tsv"))[:a.batch]
        batch = build_batch(model, tok, rows, a.tokens)
        rng = np.random.RandomState(42)
        soft = torch.tensor(rng.uniform(-0.5, 0.5, (a.tokens, model.d)), dtype=torch.float32, requires_grad=True)
        ntok = sum(a.tokens + len(b["ids"]) for b in batch)
        padded = len(batch) * (a.tokens + max(len(b["ids"]) for b in batch))
        before = rss_mib()
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {t_load:.2f} s")
        print(f"batch {len(batch)}, {a.tokens} virtual tokens, {ntok} tokens ({padded} with padding)")
        times = []
        for s in range(a.steps):
            ts = time.time()
            loss, _ = loss_of(model, soft, batch)
            soft.grad = None
            loss.backward()
            with torch.no_grad():
                soft -= 0.3 * soft.grad / (soft.grad.norm() + 1e-12)
            dt = time.time() - ts
            times.append(dt)
            print(f"step {s + 1}: loss {loss.item():.4f}, {dt:.3f} s")
        tail = times[1:] or times
        print(f"seconds/step {sum(tail) / len(tail):.3f} (mean of {len(tail)} after the first)")
        print(f"peak RSS {rss_mib():.1f} MiB ({before:.1f} MiB before the first step)")
        return

    model = Llama(a.gguf, torch.float64)
    dev = pwbref.read_sst2(os.path.join(a.sst2_dir, "dev.tsv"))
    picked = fixture_rows(dev)
    batch = build_batch(model, tok, [dev[i] for i in picked], N_SOFT)
    rng = np.random.RandomState(PROMPT_SEED)
    soft32 = rng.uniform(-0.5, 0.5, (N_SOFT, model.d)).astype(np.float32)
    soft = torch.tensor(soft32, dtype=torch.float64, requires_grad=True)
    loss, lps = loss_of(model, soft, batch)
    loss.backward()
    grad = soft.grad.numpy().astype("<f4")
    os.makedirs(a.out_dir, exist_ok=True)
    soft32.astype("<f4").tofile(os.path.join(a.out_dir, "smollm2_sst2_prompt.f32"))
    grad.tofile(os.path.join(a.out_dir, "smollm2_sst2_grad.f32"))
    for b, i, lp in zip(batch, picked, lps):
        b["row"] = i
        b["logprobs"] = lp
    hdr = dict(
        what="loss and d loss / d soft prompt, PyTorch autograd in float64 on the dequantized GGUF weights",
        model=os.path.basename(a.gguf), model_sha256=pwbref.sha256_file(a.gguf),
        torch=torch.__version__, prompt=pwbref.CHATML.replace("{user}", pwbref.SST2_USER),
        loss_definition="mean over examples of the summed -log p(target); input [soft prompt][ids]",
        n_soft=N_SOFT, hidden=model.d, prompt_seed=PROMPT_SEED,
        prompt_file="smollm2_sst2_prompt.f32", grad_file="smollm2_sst2_grad.f32",
        loss=loss.item(), grad_l2=float(np.linalg.norm(grad.astype(np.float64))), examples=batch)
    # one line per example keeps the file short and diffable
    ex = hdr.pop("examples")
    text = json.dumps(hdr, indent=1)[:-2] + ',\n "examples": [\n'
    text += ",\n".join("  " + json.dumps(b) for b in ex) + "\n ]\n}\n"
    json.loads(text)
    with open(os.path.join(a.out_dir, "smollm2_sst2.json"), "w") as f:
        f.write(text)
    print(f"loss {loss.item():.6f}, |grad| {hdr['grad_l2']:.6f}, examples {picked}")


if __name__ == "__main__":
    main()

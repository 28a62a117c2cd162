#!/usr/bin/env python3
"""Parses the committed reference fixtures (a second reader of the format in
docs/reference-tests.md), checks their internal consistency, and prints how hard the agreement
targets are: near-ties in the argmax and in the rank decisions.

With --model it also measures llama.cpp against itself: the same prompts evaluated one token per
decode (n_batch=1, matrix-vector kernels) instead of one batch, which gives the size of purely
numerical differences between two correct implementations.

Usage: check_fixtures.py FIXTURE_DIR [--model MODEL.gguf] [--n-self 20]
"""

import argparse
import json
import os
import struct
import sys

import numpy as np


def read_logits(path):
    hdr, prompts = {}, []
    with open(path, encoding="utf-8") as f:
        it = iter(f)
        for line in it:
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            if line == "end_header":
                break
            k, _, v = line.partition(" ")
            hdr[k] = json.loads(v) if v.startswith('"') else v
        cur = None
        for line in it:
            w = line.split()
            if w[0] == "prompt":
                cur = {"index": int(w[1]), "source": w[2], "row": int(w[3]), "n": int(w[4]), "t": []}
                prompts.append(cur)
            elif w[0] == "text":
                cur["text"] = json.loads(line[5:])
            elif w[0] == "ids":
                cur["ids"] = [int(x) for x in w[1:]]
            elif w[0] == "t":
                k = int(hdr["topk"])
                ids = [int(w[1 + 2 * j]) for j in range(k)]
                vals = [float(w[2 + 2 * j]) for j in range(k)]
                cur["t"].append((ids, vals, float(w[1 + 2 * k])))
            elif w[0] == "end":
                break
            else:
                sys.exit(f"{path}: unexpected line {line[:40]!r}")
    assert len(prompts) == int(hdr["n_prompts"])
    for p in prompts:
        assert len(p["ids"]) == p["n"] == len(p["t"]), p["index"]
    return hdr, prompts


def read_full(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"PWBLOGF1"
    n_vocab, n = struct.unpack_from("<II", data, 8)
    off, rows = 16, []
    for _ in range(n):
        pi, pos = struct.unpack_from("<II", data, off)
        row = np.frombuffer(data, dtype="<f2", count=n_vocab, offset=off + 8).astype(np.float32)
        rows.append((pi, pos, row))
        off += 8 + 2 * n_vocab
    assert off == len(data)
    return n_vocab, rows


def read_rank(path):
    hdr, ex = {"label": []}, []
    with open(path, encoding="utf-8") as f:
        it = iter(f)
        for line in it:
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            if line == "end_header":
                break
            k, _, v = line.partition(" ")
            if k == "label":
                hdr["label"].append(v)
            else:
                hdr[k] = json.loads(v) if v.startswith('"') else v
        for line in it:
            w = line.split()
            if w[0] == "end":
                break
            n = int(w[6])
            ex.append({"row": int(w[1]), "gold": int(w[2]), "lp": (float(w[3]), float(w[4])),
                       "pred": int(w[5]), "ids": [int(x) for x in w[7:7 + n]]})
            assert len(ex[-1]["ids"]) == n
    assert len(ex) == int(hdr["n_examples"])
    return hdr, ex


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--model")
    ap.add_argument("--n-self", type=int, default=20)
    a = ap.parse_args()

    hdr, prompts = read_logits(os.path.join(a.dir, "smollm2_logits.txt"))
    n_pos = sum(p["n"] for p in prompts)
    gaps = np.array([t[1][0] - t[1][1] for p in prompts for t in p["t"]])
    print(f"logits: {len(prompts)} prompts, {n_pos} positions; top1-top2 gap < 0.01: "
          f"{(gaps < 0.01).sum()}, < 0.05: {(gaps < 0.05).sum()}, < 0.1: {(gaps < 0.1).sum()}")

    n_vocab, rows = read_full(os.path.join(a.dir, "smollm2_logits_full.bin"))
    worst = 0.0
    for pi, pos, row in rows:
        ids, vals, lse = prompts[pi]["t"][pos]
        assert int(np.argmax(row)) == ids[0] or row[ids[0]] == row.max(), (pi, pos)
        worst = max(worst, max(abs(float(row[i]) - v) for i, v in zip(ids, vals)))
    print(f"full rows: {len(rows)} x {n_vocab}, max |f16 - text| on the top-k {worst:.4f}")

    rh, ex = read_rank(os.path.join(a.dir, "sst2_dev_rank.txt"))
    margins = np.array([abs(e["lp"][1] - e["lp"][0]) for e in ex])
    acc = np.mean([e["pred"] == e["gold"] for e in ex])
    print(f"rank: {len(ex)} examples, accuracy {acc:.4f} (header {rh['accuracy']}); |margin| < 0.01: "
          f"{(margins < 0.01).sum()}, < 0.05: {(margins < 0.05).sum()}, < 0.1: {(margins < 0.1).sum()}, "
          f"median {np.median(margins):.3f}")

    # llama.cpp's default arithmetic against llama.cpp in F32: the spread between two correct
    # implementations of the same Q4_1 file, i.e. what a tolerance must allow.
    ex_txt = os.path.join(a.dir, "smollm2_exact_logits.txt")
    ex_rank = os.path.join(a.dir, "sst2_dev_rank_exact.txt")
    if os.path.exists(ex_txt):
        _, xp = read_logits(ex_txt)
        same = tot = 0
        d, dec = [], 0
        for p, q in zip(prompts, xp):
            assert p["ids"] == q["ids"]
            for (ids, vals, lse), (xids, xvals, xlse) in zip(p["t"], q["t"]):
                tot += 1
                if ids[0] == xids[0]:
                    same += 1
                elif xvals[0] - xvals[1] > 0.25:
                    dec += 1
                # log-probabilities of the tokens both top lists hold
                common = [(v - lse, xv - xlse) for i, v in zip(ids, vals) for xi, xv in zip(xids, xvals) if i == xi]
                d.extend(abs(u - w) for u, w in common)
        d = np.array(d)
        print(f"default vs exact logits: argmax agreement {same / tot:.4f} ({tot - same} differ, {dec} where the "
              f"exact gap > 0.25); |dlogprob| on shared top-k mean {d.mean():.4f} p99 {np.percentile(d, 99):.4f} "
              f"max {d.max():.4f}")
    if os.path.exists(ex_rank):
        _, xe = read_rank(ex_rank)
        same = sum((e["lp"][1] > e["lp"][0]) == (x["lp"][1] > x["lp"][0]) for e, x in zip(ex, xe))
        dl = np.array([abs(e["lp"][c] - x["lp"][c]) for e, x in zip(ex, xe) for c in (0, 1)])
        dm = np.array([abs((e["lp"][1] - e["lp"][0]) - (x["lp"][1] - x["lp"][0])) for e, x in zip(ex, xe)])
        flips = [abs(x["lp"][1] - x["lp"][0]) for e, x in zip(ex, xe)
                 if (e["lp"][1] > e["lp"][0]) != (x["lp"][1] > x["lp"][0])]
        xacc = np.mean([(x["lp"][1] > x["lp"][0]) == x["gold"] for x in xe])
        print(f"default vs exact rank: same decision {same}/{len(ex)} = {same / len(ex):.4f}; exact accuracy "
              f"{xacc:.4f}; |dlogprob| mean {dl.mean():.4f} max {dl.max():.4f}; |dmargin| mean {dm.mean():.4f} "
              f"p99 {np.percentile(dm, 99):.4f} max {dm.max():.4f}; largest exact margin that flipped "
              f"{max(flips) if flips else 0:.4f}")

    if a.model:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import pwbref
        llm = pwbref.load_llama(a.model, n_ctx=2048, logits_all=True, n_batch=1)
        same = tot = 0
        maxdiff = []
        sel = prompts[: a.n_self // 2] + prompts[150: 150 + a.n_self // 2]
        for p in sel:
            llm.reset()
            llm.eval(p["ids"])
            lg = np.array(llm.scores[: p["n"]], dtype=np.float32)
            for pos, (ids, vals, _) in enumerate(p["t"]):
                same += int(np.argmax(lg[pos])) == ids[0]
                tot += 1
                maxdiff.append(max(abs(float(lg[pos][i]) - v) for i, v in zip(ids, vals)))
        md = np.array(maxdiff)
        print(f"llama.cpp n_batch=1 vs batched, {len(sel)} prompts: argmax agreement {same}/{tot}; "
              f"top-k |dlogit| median {np.median(md):.4f}, p99 {np.percentile(md, 99):.4f}, max {md.max():.4f}")


if __name__ == "__main__":
    main()

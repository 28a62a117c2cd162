#!/usr/bin/env python3
"""Rank classification of SST-2 dev with llama.cpp (llama-cpp-python) as reference decisions.

Each example: prompt = pwbref.sst2_prompt(sentence) (ChatML, open assistant turn); each label's
score is the sum over its verbalizer tokens of log-softmax, the verbalizer ("negative",
"positive", no leading space) being tokenized as a continuation of the prompt. Decision = the label
with the higher score (ties -> label 0). Writes OUT_DIR/sst2_dev_rank.txt (docs/reference-tests.md).

With --exact F32.gguf the reference computes in F32 throughout (see make_logit_fixtures.py) and
the file is sst2_dev_rank_exact.txt.

With --format raw --name gemma3 (a base model): the raw prompt pwbref.RAW_SST2 with the
verbalizers " negative" / " positive", into gemma3_sst2_dev_rank[_exact].txt.

Usage: make_rank_fixtures.py MODEL.gguf SST2_DEV.tsv OUT_DIR [--limit N] [--exact F32.gguf]
       [--format chatml|raw] [--name NAME]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pwbref  # noqa: E402


def log_softmax(row):
    row = row.astype(np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def continuation(llm, prompt_ids, prompt, label):
    """Token ids of label as a continuation of prompt; checks the prompt's ids are a prefix."""
    full = pwbref.tokenize(llm, prompt + label)
    if full[: len(prompt_ids)] != prompt_ids:
        sys.exit(f"label {label!r} changes the prompt's tokenization")
    return full[len(prompt_ids):]


def last_log_softmax(llm):
    """log-softmax of the last decoded position (logits_all=False: the only row llama.cpp outputs)."""
    n_vocab = llm.n_vocab()
    return log_softmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,)))


def score(llm, prompt_ids, label_ids):
    """Sum of log-softmax of label_ids following prompt_ids (fresh context, nothing reused)."""
    llm.reset()
    llm.eval(prompt_ids)
    total = 0.0
    for j, t in enumerate(label_ids):
        if j:
            llm.eval([label_ids[j - 1]])
        total += float(last_log_softmax(llm)[t])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("sst2_dev")
    ap.add_argument("out_dir")
    ap.add_argument("--limit", type=int, default=0, help="first N examples only (debugging)")
    ap.add_argument("--exact", metavar="F32_GGUF", help="reference in F32: this dequantized copy, F32 KV")
    ap.add_argument("--format", choices=["chatml", "raw"], default="chatml")
    ap.add_argument("--name", default="", help="file name prefix (gemma3: gemma3_sst2_dev_rank...)")
    a = ap.parse_args()
    LABELS = pwbref.labels(a.format)

    rows = pwbref.read_sst2(a.sst2_dev)
    if a.limit:
        rows = rows[: a.limit]
    if a.exact:
        llm = pwbref.load_llama(pwbref.exact_model(a.model, a.exact), n_ctx=1024, logits_all=False,
                                n_batch=1024, f32_kv=True)
    else:
        llm = pwbref.load_llama(a.model, n_ctx=1024, logits_all=False, n_batch=1024)
    ver = pwbref.versions()

    # Verbalizer tokens, checked on the first prompt and re-checked on every prompt.
    # capitalised variants, reported only
    extra = {v.replace(v.strip(), v.strip().capitalize()): None for v in LABELS.values()}
    neg_cap, pos_cap = list(extra)
    lines = []
    correct = 0
    correct_cap = 0
    label_tok = {}
    n_prompt_tokens = 0
    for i, (sentence, gold) in enumerate(rows):
        text = pwbref.sst2_prompt(sentence, a.format)
        ids = pwbref.tokenize(llm, text)
        n_prompt_tokens += len(ids)
        lab = {k: continuation(llm, ids, text, v) for k, v in LABELS.items()}
        cap = {k: continuation(llm, ids, text, k) for k in extra}
        if not label_tok:
            label_tok = lab
        elif lab != label_tok:
            sys.exit(f"example {i}: verbalizer tokens differ: {lab} vs {label_tok}")
        if all(len(v) == 1 for v in list(lab.values()) + list(cap.values())):
            # One forward pass: every label is scored from the last prompt position.
            llm.reset()
            llm.eval(ids)
            ls = last_log_softmax(llm)
            lp = {k: float(ls[v[0]]) for k, v in lab.items()}
            lpc = {k: float(ls[v[0]]) for k, v in cap.items()}
        else:
            lp = {k: score(llm, ids, v) for k, v in lab.items()}
            lpc = {k: score(llm, ids, v) for k, v in cap.items()}
        pred = 1 if lp[1] > lp[0] else 0
        pred_cap = 1 if lpc[pos_cap] > lpc[neg_cap] else 0
        correct += pred == gold
        correct_cap += pred_cap == gold
        lines.append(f"ex {i} {gold} {lp[0]:.6f} {lp[1]:.6f} {pred} {len(ids)} "
                     + " ".join(str(t) for t in ids))
        if i % 100 == 0:
            print(f"{i}/{len(rows)} acc so far {correct / (i + 1):.4f}", file=sys.stderr)

    n = len(rows)
    os.makedirs(a.out_dir, exist_ok=True)
    prefix = a.name + "_" if a.name else ""
    path = os.path.join(a.out_dir, prefix + ("sst2_dev_rank_exact.txt" if a.exact else "sst2_dev_rank.txt"))
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("# pwb reference rank classification, format 1: see docs/reference-tests.md\n")
        f.write(f"model {pwbref.model_name(a.model)}\n")
        f.write(f"model_sha256 {pwbref.sha256_file(a.model)}\n")
        f.write(f"reference llama-cpp-python {ver['llama_cpp_python']}\n")
        f.write("arithmetic " + ("f32 (weights dequantized to F32, F32 KV cache)" if a.exact else
                                 "llama.cpp default (Q8 activations for quantized matmuls, F16 KV cache)") + "\n")
        f.write("dataset sst2 dev\n")
        for key, tpl in pwbref.template_header(a.format, "rank"):
            f.write(f"{key} {pwbref.jstr(tpl)}\n")
        f.write("sentence_strip 1\n")
        for k in sorted(LABELS):
            f.write(f"label {k} {pwbref.jstr(LABELS[k])} {len(label_tok[k])} "
                    + " ".join(str(t) for t in label_tok[k]) + "\n")
        f.write(f"n_examples {n}\n")
        f.write(f"accuracy {correct / n:.6f}\n")
        f.write("end_header\n")
        for line in lines:
            f.write(line + "\n")
        f.write("end\n")
    print(f"label tokens: " + ", ".join(f"{LABELS[k]!r} -> {v}" for k, v in label_tok.items()))
    print(f"accuracy {correct}/{n} = {correct / n:.4f} (capitalised verbalizers: {correct_cap / n:.4f})")
    print(f"prompt tokens {n_prompt_tokens} (mean {n_prompt_tokens / n:.1f})")
    print(f"-> {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()

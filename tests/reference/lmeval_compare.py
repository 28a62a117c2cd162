#!/usr/bin/env python3
"""lm-evaluation-harness's side of the prompt-agreement checks (docs/formats.md).

Runs one of lm-evaluation-harness's own multiple-choice prompts (glue `sst2`, `commonsense_qa`),
pointed at a local data file, with its `hf` model on the same GGUF pwb reads (transformers loads it
with gguf_file=; add_bos_token=False), and writes one line per question:

    row <i> gold <k> pred <k> ll <ll_0> <ll_1> ...

plus header lines (the exact context of the first rows, JSON-quoted). `compare` reads a pwb
results database (the suites sst2-lmeval and csqa-lmeval) and prints the per-question agreement.

    python3 tests/reference/lmeval_compare.py sst2 MODEL.gguf sst2/dev.tsv out.txt
    python3 tests/reference/lmeval_compare.py commonsense_qa MODEL.gguf commonsense_qa/validation.jsonl out.txt
    python3 tests/reference/lmeval_compare.py compare out.txt results.db lmeval

A long run splits into jobs with --start/--limit (questions [start, limit)); `merge OUT PART...`
joins their files into one fixture.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_config(task, data):
    data = os.path.abspath(data)
    if task == "sst2":  # lm_eval/tasks/glue/sst2/default.yaml, the data from a GLUE TSV
        return {
            "task": "pwb_sst2",
            "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"validation": data}, "sep": "\t", "quoting": 3,
                               "keep_default_na": False},
            "output_type": "multiple_choice",
            "validation_split": "validation",
            "doc_to_text": "{{sentence}}\nQuestion: Is this sentence positive or negative?\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": ["negative", "positive"],
            "metric_list": [{"metric": "acc"}],
        }
    if task == "commonsense_qa":  # lm_eval/tasks/commonsense_qa/default.yaml
        return {
            "task": "pwb_commonsense_qa",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"validation": data}},
            "output_type": "multiple_choice",
            "validation_split": "validation",
            "doc_to_text": "Question: {{ question.strip() }}\nA. {{choices['text'][0]}}\nB. {{choices['text'][1]}}\n"
                           "C. {{choices['text'][2]}}\nD. {{choices['text'][3]}}\nE. {{choices['text'][4]}}\nAnswer:",
            "doc_to_target": "answerKey",
            "doc_to_choice": ["A", "B", "C", "D", "E"],
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        }
    raise SystemExit("task must be sst2 or commonsense_qa")


def compare(fixture, db, method):
    """Per-question agreement of lm-evaluation-harness's fixture with a pwb results database."""
    import sqlite3

    ref = {}
    for line in open(fixture):
        f = line.split()
        if f and f[0] == "row":
            ref[int(f[1])] = (int(f[3]), int(f[5]), [float(x) for x in f[7:]])
    con = sqlite3.connect(db)
    rows = con.execute("SELECT p.row, p.choice_logprobs, x.label FROM predictions p JOIN cells c ON c.id = p.cell_id"
                       " LEFT JOIN examples x ON x.dataset = c.dataset AND x.split = c.split AND x.row = p.row"
                       " WHERE c.method = ? AND c.run_id = (SELECT max(run_id) FROM cells WHERE method = ?)",
                       (method, method)).fetchall()
    n = agree = both = pwb_ok = ref_ok = 0
    worst = 0.0
    for row, lps, gold in rows:
        if row not in ref or not lps:
            continue
        lp = json.loads(lps)
        pred = max(range(len(lp)), key=lambda i: lp[i])
        rgold, rpred, rll = ref[row]
        n += 1
        agree += pred == rpred
        pwb_ok += pred == rgold
        ref_ok += rpred == rgold
        worst = max(worst, max(abs(a - b) for a, b in zip(lp, rll)))
    print("%d questions in both: predictions agree on %d (%.2f%%); accuracy pwb %.2f%%, lm-eval %.2f%%; "
          "largest log-likelihood difference %.4f" % (n, agree, 100.0 * agree / max(n, 1), 100.0 * pwb_ok / max(n, 1),
                                                      100.0 * ref_ok / max(n, 1), worst))


def merge(out, parts):
    """One fixture from the files of runs split with --start/--limit: the first file's header, the
    count and accuracy over all rows, each row once, in order."""
    head, ctx, rows = [], [], {}
    for i, path in enumerate(parts):
        for line in open(path):
            f = line.split()
            if not f:
                continue
            if f[0] == "row":
                rows[int(f[1])] = line
            elif f[0] in ("context", "continuations"):
                if i == 0:
                    ctx.append(line)
            elif line.startswith("#") and i == 0:
                head.append(line)
    keys = sorted(rows)
    if keys != list(range(len(keys))):
        raise SystemExit("merge: the parts do not cover questions 0..%d without a gap" % (len(keys) - 1))
    right = sum(rows[k].split()[3] == rows[k].split()[5] for k in keys)
    with open(out, "w") as o:
        o.write(head[0].split("; questions")[0].rstrip("\n") + "; questions 0..%d\n" % (len(keys) - 1))
        o.writelines(head[1:])
        o.write("n %d acc %.6f\n" % (len(keys), right / max(len(keys), 1)))
        o.writelines(ctx)
        o.writelines(rows[k] for k in keys)
    print("%s: %d questions, acc %.4f" % (out, len(keys), right / max(len(keys), 1)))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "merge":
        if len(sys.argv) < 4:
            raise SystemExit("usage: lmeval_compare.py merge OUT PART...")
        return merge(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        if len(sys.argv) != 5:
            raise SystemExit("usage: lmeval_compare.py compare FIXTURE PWB_DB METHOD")
        return compare(sys.argv[2], sys.argv[3], sys.argv[4])
    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("model", help="GGUF file")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, default=None, help="stop before this question")
    ap.add_argument("--start", type=int, default=0, help="first question (split a long run into jobs)")
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    import torch
    import transformers
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    d, f = os.path.split(os.path.abspath(a.model))
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    from lm_eval.api.task import ConfigurableTask

    # lm-evaluation-harness's own task builds the requests (its doc_to_text, doc_to_choice and
    # target delimiter) and its hf model scores them; evaluate()'s printing is left out (0.4.5 cannot
    # print a task given as a dict).
    lm = HFLM(pretrained=model, tokenizer=tok, add_bos_token=False, batch_size=a.batch)
    task = ConfigurableTask(config=task_config(a.task, a.data))
    task.build_all_requests(limit=a.limit, rank=0, world_size=1)
    reqs = [r for r in task.instances if r.doc_id >= a.start]
    resps = lm.loglikelihood(reqs)
    docs = {}
    for inst, r in zip(reqs, resps):
        d = docs.setdefault(inst.doc_id, {"doc": inst.doc, "args": {}, "ll": {}})
        d["args"][inst.idx] = inst.arguments
        d["ll"][inst.idx] = r[0]
    samples = []
    for doc_id in sorted(docs):
        d = docs[doc_id]
        choices = task.doc_to_choice(d["doc"])
        target = task.doc_to_target(d["doc"])
        gold = choices.index(target) if isinstance(target, str) else int(target)
        lls = [d["ll"][i] for i in sorted(d["ll"])]
        samples.append({"doc_id": doc_id, "gold": gold, "lls": lls, "args": [d["args"][i] for i in sorted(d["args"])]})
    acc = sum(max(range(len(s["lls"])), key=lambda i: s["lls"][i]) == s["gold"] for s in samples) / max(len(samples), 1)
    with open(a.out, "w") as o:
        o.write("# lm-evaluation-harness %s prompt, its hf model on %s (gguf_file=, add_bos_token=False), batch %d;"
                " questions %d..%d\n" % (a.task, f, a.batch, a.start, a.start + len(samples) - 1))
        o.write("# lm_eval %s, transformers %s, torch %s\n"
                % (getattr(lm_eval, "__version__", "0.4.5"), transformers.__version__, torch.__version__))
        o.write("n %d acc %.6f\n" % (len(samples), acc))
        for s in samples[:3]:
            o.write("context %d %s\n" % (s["doc_id"], json.dumps(s["args"][0][0])))
            o.write("continuations %d %s\n" % (s["doc_id"], json.dumps([x[1] for x in s["args"]])))
        for s in samples:
            pred = max(range(len(s["lls"])), key=lambda i: s["lls"][i])
            o.write("row %d gold %d pred %d ll %s\n" % (s["doc_id"], s["gold"], pred,
                                                          " ".join("%.6f" % x for x in s["lls"])))
    print("%s: %d questions, acc %.4f -> %s" % (a.task, len(samples), acc, a.out))


if __name__ == "__main__":
    sys.exit(main())

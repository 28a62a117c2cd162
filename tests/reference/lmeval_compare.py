#!/usr/bin/env python3
"""lm-evaluation-harness's side of the prompt-agreement checks (docs/formats.md).

Runs one of lm-evaluation-harness's own multiple-choice prompts (glue `sst2`, `commonsense_qa`),
pointed at a local data file, with its `hf` model on the same GGUF pwb reads (transformers loads it
with gguf_file=; add_bos_token=False), and writes one line per question:

    row <i> gold <k> pred <k> ll <ll_0> <ll_1> ...

plus header lines (the exact context of the first rows, JSON-quoted). pwb's side compares with
`pwb run` predictions (tests/integration/test_formats.c) or this script's --compare.

    python3 tests/reference/lmeval_compare.py sst2 MODEL.gguf sst2/dev.tsv out.txt
    python3 tests/reference/lmeval_compare.py commonsense_qa MODEL.gguf commonsense_qa/validation.jsonl out.txt
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("model", help="GGUF file")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, default=None)
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
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager

    # a task given as a dict reaches the results table with alias None, which 0.4.5 cannot print
    show = lm_eval.evaluator.prepare_print_tasks

    def prepare(task_dict, results, *args, **kw):
        for v in results.values():
            if isinstance(v, dict) and v.get("alias", "") is None:
                v.pop("alias")
        return show(task_dict, results, *args, **kw)

    lm_eval.evaluator.prepare_print_tasks = prepare
    lm = HFLM(pretrained=model, tokenizer=tok, add_bos_token=False, batch_size=a.batch)
    res = lm_eval.simple_evaluate(model=lm, tasks=[task_config(a.task, a.data)], limit=a.limit,
                                  log_samples=True, num_fewshot=0,
                                  task_manager=TaskManager(include_defaults=False))
    name = "pwb_" + a.task
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    acc = res["results"][name]["acc,none"]
    with open(a.out, "w") as o:
        o.write("# lm-evaluation-harness %s, %s prompt, hf model on %s (gguf_file=, add_bos_token=False)\n"
                % (lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?", a.task, f))
        o.write("# transformers %s, torch %s\n" % (transformers.__version__, torch.__version__))
        o.write("n %d acc %.6f\n" % (len(samples), acc))
        for s in samples[:3]:
            o.write("context %d %s\n" % (s["doc_id"], json.dumps(s["arguments"][0][0])))
            o.write("continuations %d %s\n" % (s["doc_id"], json.dumps([x[1] for x in s["arguments"]])))
        for s in samples:
            lls = [r[0][0] for r in s["resps"]]
            pred = max(range(len(lls)), key=lambda i: lls[i])
            o.write("row %d gold %d pred %d ll %s\n" % (s["doc_id"], s["target"], pred,
                                                          " ".join("%.6f" % x for x in lls)))
    print("%s: %d questions, acc %.4f -> %s" % (a.task, len(samples), acc, a.out))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Hugging Face PEFT reference for pwb's LoRA and prefix-tuning adapters.

Not part of pwb (pwb never runs Python). transformers loads the same GGUF file pwb uses
(`gguf_file=`, dequantized to F32, q/k rows un-permuted), PEFT loads an adapter folder onto it, and
the logits at the last position of a few fixed prompts are written as test vectors:

  make  ADAPTER_DIR... : for each folder (made by `pwb tune --method lora|prefix`, or by PEFT
        itself with --make-peft-lora), logits with the adapter -> DIR/reference_logits.json, which
        tests/unit/tune/test_peft_adapters.c compares with pwb's own (no Python in CI).
  --make-peft-lora DIR : writes a LoRA adapter made by PEFT (random A and B, seeded) to DIR, for
        the other direction (pwb loads a PEFT-made adapter).
  --bench : one LoRA training step (batch 8, r 8 on q and v, AdamW) timed with PEFT + PyTorch,
        seconds per step and peak RSS (bench/lora_step.sh runs it beside pwb's).

  python3 tests/reference/peft_reference.py models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --make-peft-lora tests/fixtures/peft/peft_lora
  python3 tests/reference/peft_reference.py models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      make tests/fixtures/peft/pwb_lora tests/fixtures/peft/pwb_prefix tests/fixtures/peft/peft_lora

Versions used: transformers 4.47.1, peft 0.13.2, torch (the venv's), CPU.
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

# Token ids of two fixed prompts (SmolLM2's ChatML around short sentences; any ids would do: the
# point is the same ids through both implementations).
PROMPTS = [
    [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
     8182, 2, 198, 1, 4093, 198, 378, 1345, 436, 3104, 30, 2, 198, 1, 520, 9531, 198],
    [1, 4093, 198, 11180, 20, 1745, 1694, 1097, 4963, 28, 2, 198, 1, 520, 9531, 198, 504],
]
STRIDE = 16  # logits kept for every STRIDE-th vocabulary id (plus the top 10), to keep files small


def load_base(gguf_path):
    from transformers import AutoModelForCausalLM

    d, f = os.path.split(os.path.abspath(gguf_path))
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    m.eval()
    return m


def last_logits(model, ids):
    with torch.no_grad():
        x = torch.tensor([ids])
        out = model(input_ids=x, attention_mask=torch.ones_like(x))
    return out.logits[0, -1].double()


def make(args):
    import copy

    from peft import PeftModel

    base0 = load_base(args.model)  # PEFT changes the model it wraps: each adapter gets a copy
    for d in args.dirs:
        m = PeftModel.from_pretrained(copy.deepcopy(base0), d)
        m.eval()
        rows = []
        for ids in PROMPTS:
            lg = last_logits(m, ids)
            top = torch.topk(lg, 10).indices.tolist()
            keep = sorted(set(range(0, lg.shape[0], STRIDE)) | set(top))
            rows.append({"ids": ids, "vocab_ids": keep, "logits": [round(float(lg[i]), 6) for i in keep], "top": top})
        # the bare model too: the adapter must move the logits
        base_rows = []
        with m.disable_adapter():
            for ids in PROMPTS:
                lg = last_logits(m, ids)
                base_rows.append([round(float(lg[i]), 6) for i in range(0, lg.shape[0], STRIDE * 64)])
        out = {"peft_type": m.peft_config["default"].peft_type.value, "model": os.path.basename(args.model),
               "stride": STRIDE, "prompts": rows, "base_logits_coarse": base_rows,
               "versions": {"transformers": __import__("transformers").__version__,
                            "peft": __import__("peft").__version__, "torch": torch.__version__}}
        with open(os.path.join(d, "reference_logits.json"), "w") as f:
            json.dump(out, f)
        print(d, out["peft_type"], "top ids", rows[0]["top"][:5])


def make_peft_lora(args):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1234)
    base = load_base(args.model)
    cfg = LoraConfig(r=1, lora_alpha=2, lora_dropout=0.0, target_modules=["o_proj", "gate_proj", "up_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    m = get_peft_model(base, cfg)
    with torch.no_grad():  # small values: an adapter that moves the logits without wrecking them
        for n, p in m.named_parameters():
            if "lora_" in n:
                p.mul_(0.05)
    m.save_pretrained(args.make_peft_lora)
    print("wrote", args.make_peft_lora)


def bench(args):
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = load_base(args.model)
    m = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                        task_type="CAUSAL_LM"))
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    # tune_bench.c's batch: the first 8 SST-2 training rows in pwbref's zero-shot ChatML prompt, the
    # label then <|im_end|> as targets, right-padded with a padding mask
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pwbref
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    im_end = tok.token_to_id("<|im_end|>")
    rows = pwbref.read_sst2(os.path.join(args.sst2, "train.tsv"))[:8]
    seqs = []
    for sentence, label in rows:
        p = tok.encode(pwbref.sst2_prompt(sentence), add_special_tokens=False).ids
        lab = tok.encode(pwbref.LABELS[label], add_special_tokens=False).ids
        seqs.append((p + lab, len(p), lab + [im_end]))
    B, L = len(seqs), max(len(x[0]) for x in seqs) + 1  # room for the last target's label
    ids = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    labels = torch.full((B, L), -100)
    for b, (x, np_, tg) in enumerate(seqs):
        ids[b, :len(x)] = torch.tensor(x)
        mask[b, :len(x)] = 1
        for k, t in enumerate(tg):  # HF shifts labels: position i scores token i
            labels[b, np_ + k] = t
    lens = mask.sum(1)
    times = []
    for i in range(args.steps + 1):
        t0 = time.time()
        out = m(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # the first step warms up
            times.append(time.time() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "peft+torch", "torch": torch.__version__, "threads": args.threads,
                      "s_per_step": sum(times) / len(times), "peak_rss_mb": rss, "tokens": int(lens.sum())}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--make-peft-lora")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--sst2", default=os.path.join(os.path.dirname(__file__), "../../../shared/datasets/sst2"))
    ap.add_argument("--tokenizer",
                    default=os.path.join(os.path.dirname(__file__), "../../../shared/models/smollm2-tokenizer/tokenizer.json"))
    args = ap.parse_args()
    if args.make_peft_lora:
        make_peft_lora(args)
    elif args.bench:
        bench(args)
    else:
        if args.dirs and args.dirs[0] == "make":
            args.dirs = args.dirs[1:]
        make(args)


if __name__ == "__main__":
    sys.exit(main())

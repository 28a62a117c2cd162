#!/usr/bin/env python3
"""PyTorch autograd through Hugging Face PEFT: the reference for pwb's LoRA and prefix gradients.

Not part of pwb (pwb never runs Python). transformers loads the SmolLM2 GGUF file pwb uses
(`gguf_file=`, dequantized, q/k rows un-permuted) in float64; PEFT loads an adapter folder onto
it as trainable (the committed tests/fixtures/peft/pwb_lora, LoRA r 2 on q, k and v, and
tests/fixtures/peft/pwb_prefix, a 4-token prefix); the loss is the one pwb's backward pass
defines (the mean over examples of the summed -log p of each example's target tokens) on the
three short SST-2 dev sentences of the soft-prompt check (torch_grad_reference.py), in its
zero-shot ChatML prompt, the label verbalizer then <|im_end|> as targets, one example per forward
(no padding), LoRA dropout off. Autograd's gradient of every adapter tensor is written as a PEFT
folder of the same config whose tensors are the gradients (float32, PEFT's names and Hugging
Face's row order), so pwb reads it with its own adapter reader (which also maps q/k rows to its
order); OUT/peft_grad.json holds the batch, the loss and the log-probabilities.
tests/unit/tune/test_peft_grad.c checks pwb's gradients against them (no Python in CI).

  python3 tests/reference/peft_grad_reference.py models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      ../shared/datasets/sst2 ../shared/models/smollm2-tokenizer/tokenizer.json tests/fixtures/grad

Versions used: transformers 4.47.1, peft 0.13.2, torch 2.4.1 (CPU).
"""

import copy
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pwbref  # noqa: E402
import torch_grad_reference as tgr  # noqa: E402  (the soft-prompt check's batch)

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTERS = {"lora": os.path.join(HERE, "../fixtures/peft/pwb_lora"),
            "prefix": os.path.join(HERE, "../fixtures/peft/pwb_prefix")}


def loss_of(m, batch):
    total, lps = 0.0, []
    for b in batch:
        x = torch.tensor([b["ids"]])
        logits = m(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
        logp = torch.log_softmax(logits[b["tgt_pos"]], -1)
        lp = logp[torch.arange(len(b["targets"])), torch.tensor(b["targets"])]
        lps.append(lp.detach().tolist())
        total = total - lp.sum()
    return total / len(batch), lps


def main():
    a = tgr.fixture_args(__doc__).parse_args()
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(a.tokenizer_json)
    d, f = os.path.split(os.path.abspath(a.gguf))
    base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float64)
    base.eval()  # no dropout anywhere
    dev = pwbref.read_sst2(os.path.join(a.sst2_dir, "dev.tsv"))
    picked = tgr.fixture_rows(dev)
    batch = tgr.build_batch(None, tok, [dev[i] for i in picked], 0)
    out = {"what": "loss and d loss / d adapter tensors, PyTorch autograd in float64 through Hugging Face PEFT "
                   "on the dequantized GGUF weights",
           "model": os.path.basename(a.gguf), "model_sha256": pwbref.sha256_file(a.gguf),
           "loss_definition": "mean over examples of the summed -log p(target); one example per forward",
           "versions": {"transformers": __import__("transformers").__version__,
                        "peft": __import__("peft").__version__, "torch": torch.__version__},
           "rows": picked, "examples": [{k: b[k] for k in ("ids", "targets", "tgt_pos")} for b in batch],
           "adapters": {}}
    for kind, src in ADAPTERS.items():
        # PEFT refuses is_trainable for prompt-learning adapters: the prefix is made trainable by hand
        m = PeftModel.from_pretrained(copy.deepcopy(base), src, is_trainable=kind == "lora")
        m.double()
        if kind == "prefix":
            m.peft_config["default"].inference_mode = False
            m.prompt_encoder["default"].embedding.weight.requires_grad_(True)
        m.eval()
        saved = load_file(os.path.join(src, "adapter_model.safetensors"))
        params = dict(m.named_parameters())
        # PEFT's file names drop the adapter's name ("default") that its parameters carry
        names = {}
        for k in saved:
            if k == "prompt_embeddings":
                names[k] = "prompt_encoder.default.embedding.weight"
            else:
                names[k] = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(
                    ".lora_B.weight", ".lora_B.default.weight")
            p = params[names[k]]
            assert p.requires_grad and tuple(p.shape) == tuple(saved[k].shape), k
            assert torch.equal(p.detach().float(), saved[k].float()), k  # the committed values, loaded
        loss, lps = loss_of(m, batch)
        loss.backward()
        grads = {k: params[names[k]].grad.detach().float().contiguous() for k in saved}
        dst = os.path.join(a.out_dir, f"peft_{kind}_grad")
        os.makedirs(dst, exist_ok=True)
        shutil.copy(os.path.join(src, "adapter_config.json"), dst)
        save_file(grads, os.path.join(dst, "adapter_model.safetensors"))
        g2 = float(sum(np.sum(v.double().numpy() ** 2) for v in grads.values()))
        out["adapters"][kind] = {"adapter": os.path.relpath(src, os.path.join(HERE, "..")).replace(os.sep, "/"),
                                 "grad_dir": f"peft_{kind}_grad", "loss": loss.item(), "grad_l2": g2 ** 0.5,
                                 "logprobs": lps}
        print(f"{kind}: loss {loss.item():.6f}, |grad| {g2 ** 0.5:.6f}")
    with open(os.path.join(a.out_dir, "peft_grad.json"), "w") as fp:
        json.dump(out, fp, indent=1)


if __name__ == "__main__":
    main()

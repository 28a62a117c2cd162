"""Shared helpers for the llama.cpp reference scripts (fixture makers and the baseline bench).

These scripts are NOT part of pwb: they produce committed test vectors and a baseline number with
an independent implementation (llama.cpp through llama-cpp-python). Prompt formats live here once,
and are written verbatim into every fixture header so the C side can rebuild them.
"""

import csv
import hashlib
import json
import os
import sys

# SmolLM2-135M-Instruct's default system message (from its chat template).
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# ChatML with a system turn, one user turn and an open assistant turn.
# {user} is replaced by the user message (plain str.replace, no other escaping).
CHATML = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
          "<|im_start|>user\n{user}<|im_end|>\n"
          "<|im_start|>assistant\n")

# SST-2 zero-shot user message. {sentence} is the dev.tsv sentence with leading and trailing
# whitespace removed (Python str.strip(): the files end most sentences with a space).
SST2_USER = ("Review: {sentence}\n"
             "Is the sentiment of this review positive or negative? Answer with one word.")

# GSM8K: the user message is the question verbatim; the assistant turn is teacher-forced with the
# gold answer verbatim, closed by <|im_end|> and a newline, so the positions cover real answer text.
GSM8K_ASSISTANT = "{answer}<|im_end|>\n"

# Rank-classification verbalizers: scored as the first assistant token(s), no leading space.
LABELS = {0: "negative", 1: "positive"}


# Raw completion prompts, for base models without a chat template (Gemma 3 270M). {sentence} as
# above; GSM8K is question and gold answer verbatim; verbalizers carry their leading space.
RAW_SST2 = "Review: {sentence}\nSentiment:"
RAW_GSM8K = "Question: {question}\nAnswer: {answer}"
RAW_LABELS = {0: " negative", 1: " positive"}


def sst2_prompt(sentence, fmt="chatml"):
    if fmt == "raw":
        return RAW_SST2.replace("{sentence}", sentence.strip())
    return CHATML.replace("{user}", SST2_USER.replace("{sentence}", sentence.strip()))


def gsm8k_prompt(question, answer, fmt="chatml"):
    if fmt == "raw":
        return RAW_GSM8K.replace("{question}", question).replace("{answer}", answer)
    return CHATML.replace("{user}", question) + GSM8K_ASSISTANT.replace("{answer}", answer)


def labels(fmt="chatml"):
    return RAW_LABELS if fmt == "raw" else LABELS


def template_header(fmt, kind):
    """The fixture header lines naming the prompt templates (kind: "logits" or "rank")."""
    if fmt == "raw":
        if kind == "rank":
            return [("template_raw", RAW_SST2)]
        return [("template_raw_sst2", RAW_SST2), ("template_raw_gsm8k", RAW_GSM8K)]
    if kind == "rank":
        return [("template_chatml", CHATML), ("template_user", SST2_USER)]
    return [("template_chatml", CHATML), ("template_sst2_user", SST2_USER),
            ("template_gsm8k_assistant", GSM8K_ASSISTANT)]


def read_sst2(path):
    """Rows of (sentence, label int) in file order, header skipped."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(r)
        if header[:2] != ["sentence", "label"]:
            sys.exit(f"{path}: unexpected header {header!r}")
        for row in r:
            rows.append((row[0], int(row[1])))
    return rows


def read_gsm8k(path, n):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(out) >= n:
                break
            d = json.loads(line)
            out.append((d["question"], d["answer"]))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def jstr(s):
    """One-line JSON string literal (escapes newlines, keeps non-ASCII as \\u escapes)."""
    return json.dumps(s, ensure_ascii=True)


def versions():
    import llama_cpp
    v = {"llama_cpp_python": getattr(llama_cpp, "__version__", "?")}
    try:
        info = llama_cpp.llama_print_system_info()
        v["system_info"] = info.decode() if isinstance(info, bytes) else str(info)
    except Exception:  # noqa: BLE001 - informational only
        pass
    return v


def load_llama(model_path, n_ctx, logits_all, n_batch=512, f32_kv=False):
    """llama.cpp context, 2 threads. f32_kv: F32 KV cache instead of llama.cpp's default F16 (with an
    F32 model file this makes llama.cpp compute in F32 throughout: the "exact" reference)."""
    import llama_cpp
    kw = {"type_k": 0, "type_v": 0} if f32_kv else {}  # GGML_TYPE_F32
    return llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                           n_threads=2, n_threads_batch=2, seed=0, logits_all=logits_all,
                           verbose=False, **kw)


def exact_model(model_path, exact_gguf):
    """Path of the F32 copy of model_path (made with dequant_gguf.py when exact_gguf is missing)."""
    if not os.path.exists(exact_gguf):
        import subprocess
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, os.path.join(here, "dequant_gguf.py"), model_path, exact_gguf],
                       check=True)
    return exact_gguf


def tokenize(llm, text):
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def model_name(path):
    return os.path.basename(path)

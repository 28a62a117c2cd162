#!/usr/bin/env python3
"""Rank-classification throughput of `pwb serve` against llama.cpp's OpenAI server
(llama-cpp-python), the same GGUF and threads, at a fixed number of concurrent clients.

A request is what pwb's HTTP rank scoring sends (src/llm/logprobs.c): one per label, {"prompt":
SST-2 ChatML prompt + label, "echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0}.
Each example's two requests go out together; CLIENTS threads send examples. The prompts start
with SmolLM2's BOS text (ChatML), after which llama-cpp-python 0.3's echoed log-probabilities line
up (without it they are one position off and pwb refuses them), so both servers answer the same
usable rank requests.

pwb serve runs with four adapters, random values written here as PEFT folders: a soft prompt
(20 vectors), a LoRA (r 8 on q and v) and a prefix (10 positions), and measures the load asking
for the base model alone, for each adapter alone, and spread evenly over base + soft + LoRA +
prefix (mixed-adapter batches). Each pwb load gets a fresh server (no prompt of another load in
its prefix pool; an example's second label still reuses its first's prompt, as in a real run);
llama.cpp's server stays up. The loads alternate, --rounds times, and the medians are printed with
the load average before and after.

Usage: serve_rank_bench.py MODEL.gguf SST2_DEV.tsv [--pwb build/pwb] [--n 48] [--clients 8]
                           [--threads 2] [--rounds 1] [--llama-n N] [--skip-llamacpp] [--python PYTHON]
Needs only the standard library (and llama_cpp.server, in --python's environment, for the
llama.cpp side). The model must be SmolLM2-135M (the adapters are shaped for it).
"""

import argparse
import concurrent.futures
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import pwbref  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def wait_up(url, proc, what):
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            return
        except Exception:
            time.sleep(0.25)
    sys.exit(f"{what} did not come up")


def soft_prompt_dir(root, name, n, dim, seed):
    """A PEFT PROMPT_TUNING folder with small random vectors."""
    import random
    rnd = random.Random(seed)
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": n,
                   "token_dim": dim, "prompt_tuning_init": "RANDOM"}, f)
    data = struct.pack(f"<{n * dim}f", *[rnd.uniform(-0.05, 0.05) for _ in range(n * dim)])
    hdr = json.dumps({"prompt_embeddings": {"dtype": "F32", "shape": [n, dim], "data_offsets": [0, len(data)]}})
    hdr = hdr.encode() + b" " * (-len(hdr) % 8)
    with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + data)
    return d


def safetensors(path, tensors):
    """Writes F32 tensors {name: (shape, flat values)} as a safetensors file."""
    meta, blobs, off = {}, [], 0
    for name, (shape, vals) in tensors.items():
        data = struct.pack(f"<{len(vals)}f", *vals)
        meta[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hdr = json.dumps(meta).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + b"".join(blobs))


# SmolLM2-135M's shape
N_LAYER, DIM, KV_DIM = 30, 576, 192


def lora_dir(root, name, r, seed):
    """A PEFT LORA folder on q_proj and v_proj with small random A and B."""
    import random
    rnd = random.Random(seed)
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0,
                   "target_modules": ["q_proj", "v_proj"], "bias": "none"}, f)
    t = {}
    for layer in range(N_LAYER):
        for mod, out in (("q_proj", DIM), ("v_proj", KV_DIM)):
            pre = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
            t[pre + ".lora_A.weight"] = ((r, DIM), [rnd.uniform(-0.04, 0.04) for _ in range(r * DIM)])
            t[pre + ".lora_B.weight"] = ((out, r), [rnd.uniform(-0.02, 0.02) for _ in range(out * r)])
    safetensors(os.path.join(d, "adapter_model.safetensors"), t)
    return d


def prefix_dir(root, name, n, seed):
    """A PEFT PREFIX_TUNING folder: n positions of keys and values for every layer."""
    import random
    rnd = random.Random(seed)
    d = os.path.join(root, name)
    os.makedirs(d)
    width = N_LAYER * 2 * KV_DIM
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": n,
                   "token_dim": KV_DIM, "num_layers": N_LAYER, "num_attention_heads": 3,
                   "num_transformer_submodules": 1, "prefix_projection": False}, f)
    safetensors(os.path.join(d, "adapter_model.safetensors"),
                {"prompt_embeddings": ((n, width), [rnd.uniform(-0.5, 0.5) for _ in range(n * width)])})
    return d


def run_load(url, prompts, models, clients):
    """Sends every example's label requests; returns (requests/s, requests, seconds)."""
    def one(i):
        p = prompts[i]
        model = models[i % len(models)]
        for label in ("negative", "positive"):
            r = post(url + "/completions", {"model": model, "prompt": p + label, "echo": True, "logprobs": 1,
                                            "max_tokens": 1, "temperature": 0})
            assert r["choices"][0]["logprobs"]["token_logprobs"], r
        return 2
    post(url + "/completions", {"model": models[0], "prompt": prompts[0] + "negative", "echo": True,
                                "logprobs": 1, "max_tokens": 1, "temperature": 0})
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        n = sum(ex.map(one, range(len(prompts))))
    dt = time.time() - t0
    return n / dt, n, dt


def median(xs):
    xs = sorted(xs)
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


PWB_LOADS = (("pwb serve, base", ["base"]), ("pwb serve, soft prompt", ["soft"]), ("pwb serve, LoRA", ["lora"]),
             ("pwb serve, prefix", ["prefix"]),
             ("pwb serve, base + soft + LoRA + prefix mixed", ["base", "soft", "lora", "prefix"]))
LLAMA = "llama.cpp server (llama-cpp-python), same requests"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dev")
    ap.add_argument("--pwb", default="build/pwb")
    ap.add_argument("--n", type=int, default=48, help="examples (two requests each)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of every load; medians printed")
    ap.add_argument("--llama-n", type=int, default=0,
                    help="examples for the llama.cpp load (0: --n); its first ones, a rate is a rate")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--python", default=sys.executable, help="the Python that has llama_cpp.server")
    a = ap.parse_args()
    rows = pwbref.read_sst2(a.dev)[: a.n]
    prompts = [pwbref.sst2_prompt(s) for s, _ in rows]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMP_WAIT_POLICY="passive")
    print(f"# {a.n} SST-2 dev examples x 2 labels, {a.clients} concurrent clients, {a.threads} threads, "
          f"{a.rounds} rounds, load {os.getloadavg()}", flush=True)
    results = {}
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        soft = soft_prompt_dir(tmp, "soft", 20, DIM, 1)
        lora = lora_dir(tmp, "lora", 8, 2)
        prefix = prefix_dir(tmp, "prefix", 10, 3)
        def start_pwb():
            port = free_port()
            proc = subprocess.Popen([a.pwb, "serve", "--model", a.model, "--port", str(port), "--threads",
                                     str(a.threads), "--adapter", f"soft={soft}", "--adapter", f"lora={lora}",
                                     "--adapter", f"prefix={prefix}", "-q"], env=env)
            url = f"http://127.0.0.1:{port}/v1"
            wait_up(url, proc, "pwb serve")
            return proc, url

        try:
            llama_url = None
            if not a.skip_llamacpp:
                port = free_port()
                procs.append(subprocess.Popen([a.python, "-m", "llama_cpp.server", "--model", a.model, "--host",
                                               "127.0.0.1", "--port", str(port), "--n_threads", str(a.threads),
                                               "--n_threads_batch", str(a.threads), "--n_ctx", "2048",
                                               "--logits_all", "true"],
                                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                llama_url = f"http://127.0.0.1:{port}/v1"
                wait_up(llama_url, procs[-1], "llama_cpp.server")
            for rnd in range(a.rounds):
                loads = [(name, models) for name, models in PWB_LOADS]
                if llama_url:
                    loads.append((LLAMA, ["smollm2"]))
                if rnd % 2:  # alternate which server goes first
                    loads.reverse()
                for name, models in loads:
                    # a fresh pwb serve per load: no prompt another load left in its prefix pool
                    pwb = start_pwb() if name != LLAMA else None
                    try:
                        rps, n, dt = run_load(pwb[1] if pwb else llama_url,
                                              prompts if pwb or a.llama_n <= 0 else prompts[: a.llama_n], models,
                                              a.clients)
                    finally:
                        if pwb:
                            pwb[0].terminate()
                            pwb[0].wait()
                    results.setdefault(name, []).append(rps)
                    print(f"round {rnd + 1}: {name}: {n} requests in {dt:.1f} s, {rps:.2f} requests/s", flush=True)
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    print(f"# medians over {a.rounds} rounds (requests/s); load {os.getloadavg()}")
    med = {k: median(v) for k, v in results.items()}
    for k, v in med.items():
        print(f"{k}: {v:.2f}")
    if LLAMA in med:
        print(f"pwb serve (base) / llama.cpp server: {med['pwb serve, base'] / med[LLAMA]:.2f}x")
    singles = [med[n] for n, m in PWB_LOADS if len(m) == 1]
    mixed = med[PWB_LOADS[-1][0]]
    print(f"mixed / single-adapter: {mixed / median(singles):.2f} (median of the four single loads), "
          f"{mixed / min(singles):.2f} against the slowest, {mixed / max(singles):.2f} against the fastest")


if __name__ == "__main__":
    main()

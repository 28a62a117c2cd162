#!/usr/bin/env python3
"""Rank-classification throughput of `pwb serve` against llama.cpp's OpenAI server
(llama-cpp-python), the same GGUF and threads, at a fixed number of concurrent clients.

A request is what pwb's HTTP rank scoring sends (src/llm/logprobs.c): one per label, {"prompt":
SST-2 ChatML prompt + label, "echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0}.
Each example's two requests go out together; CLIENTS threads send examples. Prints requests/s
per server (after one warm-up request) and, for pwb, the same load with every request for one soft
prompt against requests spread over the base model and two soft prompts (random vectors, written
here as PEFT folders): mixed-adapter batches against single-adapter ones.

Usage: serve_rank_bench.py MODEL.gguf SST2_DEV.tsv [--pwb build/pwb] [--n 48] [--clients 8]
                           [--threads 2] [--skip-llamacpp]
Needs only the standard library (and llama_cpp.server for the llama.cpp side).
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dev")
    ap.add_argument("--pwb", default="build/pwb")
    ap.add_argument("--n", type=int, default=48, help="examples (two requests each)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-llamacpp", action="store_true")
    a = ap.parse_args()
    rows = pwbref.read_sst2(a.dev)[: a.n]
    prompts = [pwbref.sst2_prompt(s) for s, _ in rows]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OMP_WAIT_POLICY="passive")
    print(f"# {a.n} SST-2 dev examples x 2 labels, {a.clients} concurrent clients, {a.threads} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        dim = 576  # SmolLM2-135M's hidden size; pwb serve refuses another
        sa = soft_prompt_dir(tmp, "a", 20, dim, 1)
        sb = soft_prompt_dir(tmp, "b", 20, dim, 2)
        port = free_port()
        proc = subprocess.Popen([a.pwb, "serve", "--model", a.model, "--port", str(port), "--threads", str(a.threads),
                                 "--adapter", f"a={sa}", "--adapter", f"b={sb}", "-q"], env=env)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            wait_up(url, proc, "pwb serve")
            for name, models in (("pwb serve, base", ["base"]), ("pwb serve, one soft prompt", ["a"]),
                                 ("pwb serve, base + two soft prompts mixed", ["base", "a", "b"])):
                rps, n, dt = run_load(url, prompts, models, a.clients)
                results[name] = rps
                print(f"{name}: {n} requests in {dt:.1f} s, {rps:.2f} requests/s", flush=True)
        finally:
            proc.terminate()
            proc.wait()
    if not a.skip_llamacpp:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", a.model, "--host", "127.0.0.1",
                                 "--port", str(port), "--n_threads", str(a.threads), "--n_ctx", "2048",
                                 "--logits_all", "true"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            wait_up(url, proc, "llama_cpp.server")
            rps, n, dt = run_load(url, prompts, ["smollm2"], a.clients)
            results["llama.cpp server"] = rps
            print(f"llama.cpp server (llama-cpp-python): {n} requests in {dt:.1f} s, {rps:.2f} requests/s", flush=True)
        finally:
            proc.terminate()
            proc.wait()
        print(f"pwb serve / llama.cpp: {results['pwb serve, base'] / results['llama.cpp server']:.2f}x")
    print(f"mixed / one soft prompt: {results['pwb serve, base + two soft prompts mixed'] / results['pwb serve, one soft prompt']:.2f}")


if __name__ == "__main__":
    main()

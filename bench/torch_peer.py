#!/usr/bin/env python3
"""PyTorch peer of selfsteer's engine benchmark: the same Llama model and presets, measured the same way.

Training: forward + backward + AdamW, next-token loss on all tokens, tokens/s = batch * seq / step time.
Generation: batch B, 16-token prompt, greedy decoding with a KV cache up to the preset's sequence length,
tokens/s = batch * new tokens / time. Prints one JSON object per preset.

Needs Debian's python3-torch and libopenblas0-pthread:  apt-get install -y python3-torch libopenblas0-pthread
Usage: python3 bench/torch_peer.py --preset S [--threads 2] [--steps 10] [--warmup 2] [--generate-runs 3]
The thread count governs both torch's intra-op threads and its BLAS library's own threads (OpenBLAS
keeps a pool of its own, sized by every core unless told otherwise).
"""
import argparse
import ctypes
import json
import math
import resource
import time

import torch
import torch.nn.functional as F

PRESETS = {
    "S": dict(vocab=512, hidden=128, inter=512, layers=4, heads=4, kv=4, seq=64, batch=8),
    "M": dict(vocab=2048, hidden=256, inter=1024, layers=4, heads=4, kv=4, seq=128, batch=8),
    "L": dict(vocab=4096, hidden=512, inter=2048, layers=6, heads=8, kv=8, seq=128, batch=8),
    # Shaped like SmolLM2-135M (random weights), as selfsteer's XL.
    "XL": dict(vocab=49152, hidden=576, inter=1536, layers=30, heads=9, kv=3, seq=256, batch=2, tied=True),
}


def blas_libraries():
    """The BLAS/LAPACK-like shared libraries loaded into this process (after importing torch)."""
    seen = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            name = path.rsplit("/", 1)[-1]
            if (("blas" in name or "mkl" in name or "blis" in name) and ".so" in name and path not in seen):
                seen.append(path)
    return seen


def blas_info(threads):
    """Which BLAS torch's products run in, with OpenBLAS's core type; sets its thread count too."""
    config = torch.__config__.show()
    info = {"torchBlas": next((part.split("=", 1)[1] for part in config.replace(",", " ").split()
                               if part.startswith("BLAS_INFO=")), "unknown"),
            "cpuCapability": next((line.split(":", 1)[1].strip() for line in config.splitlines()
                                   if "CPU capability usage" in line), "unknown"),
            "libraries": blas_libraries()}
    for path in info["libraries"]:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            info["openblas"] = lib.openblas_get_config().decode().split(" ")[1]
            info["openblasCore"] = lib.openblas_get_corename().decode()
            lib.openblas_set_num_threads(threads)
            info["openblasThreads"] = lib.openblas_get_num_threads()
            break
    return info


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, positions, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = positions[:, None].float() * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        h, self.nh, self.nkv = p["hidden"], p["heads"], p["kv"]
        self.hd = h // self.nh
        self.ln1 = RMSNorm(h, 1e-5)
        self.ln2 = RMSNorm(h, 1e-5)
        self.q = torch.nn.Linear(h, self.nh * self.hd, bias=False)
        self.k = torch.nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v = torch.nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o = torch.nn.Linear(self.nh * self.hd, h, bias=False)
        self.gate = torch.nn.Linear(h, p["inter"], bias=False)
        self.up = torch.nn.Linear(h, p["inter"], bias=False)
        self.down = torch.nn.Linear(p["inter"], h, bias=False)

    def forward(self, x, cos, sin, cache=None):
        b, t, _ = x.shape
        a = self.ln1(x)
        q = self.q(a).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k(a).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v(a).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        rep = self.nh // self.nkv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        tk = k.shape[2]
        mask = torch.ones(t, tk, dtype=torch.bool).tril(diagonal=tk - t)
        s = s.masked_fill(~mask, float("-inf"))
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.o(y)
        m = self.ln2(x)
        return x + self.down(F.silu(self.gate(m)) * self.up(m))


class Llama(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p
        self.embed = torch.nn.Embedding(p["vocab"], p["hidden"])
        self.blocks = torch.nn.ModuleList([Block(p) for _ in range(p["layers"])])
        self.norm = RMSNorm(p["hidden"], 1e-5)
        self.head = torch.nn.Linear(p["hidden"], p["vocab"], bias=False)
        for prm in self.parameters():
            if prm.dim() == 2:
                torch.nn.init.normal_(prm, std=0.02)
        if p.get("tied", False):
            self.head.weight = self.embed.weight

    def forward(self, ids, start=0, caches=None):
        t = ids.shape[1]
        hd = self.p["hidden"] // self.p["heads"]
        cos, sin = rope_tables(hd, torch.arange(start, start + t), 10000.0)
        x = self.embed(ids)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if caches is None else caches[i])
        return self.head(self.norm(x))


def bench_train(model, p, steps, warmup):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, p["vocab"], (p["batch"], p["seq"] + 1), generator=g)
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, p["vocab"]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:  # the first steps warm up allocators and caches
            times.append(time.perf_counter() - t0)
    times.sort()
    return p["batch"] * p["seq"] / times[len(times) // 2]


@torch.no_grad()
def bench_generate(model, p, reps):
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, p["vocab"], (p["batch"], 16), generator=g)
    new_tokens = p["seq"] - 16
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        caches = [dict() for _ in model.blocks]
        logits = model(prompt, 0, caches)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        for step in range(1, new_tokens):
            logits = model(nxt, 16 + step - 1, caches)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
        best = min(best, time.perf_counter() - t0)
    return p["batch"] * new_tokens / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="default 10, XL 3 (as selfsteer bench)")
    ap.add_argument("--warmup", type=int, default=None, help="default 2, XL 1")
    ap.add_argument("--generate-runs", type=int, default=None, help="default 3, XL 2")
    args = ap.parse_args()
    xl = args.preset == "XL"
    steps = args.steps if args.steps is not None else (3 if xl else 10)
    warmup = args.warmup if args.warmup is not None else (1 if xl else 2)
    runs = args.generate_runs if args.generate_runs is not None else (2 if xl else 3)
    torch.set_num_threads(args.threads)
    kernels = blas_info(args.threads)
    torch.manual_seed(0)
    p = PRESETS[args.preset]
    model = Llama(p)
    params = sum(prm.numel() for prm in model.parameters())
    train_tps = bench_train(model, p, steps, warmup)
    train_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gen_tps = bench_generate(model, p, runs)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peer": "pytorch", "version": torch.__version__, "threads": args.threads,
                      "preset": args.preset, "parameters": params, "kernels": kernels,
                      "trainTokensPerSec": round(train_tps, 1), "generateTokensPerSec": round(gen_tps, 1),
                      "trainPeakRssMB": round(train_rss_mb, 1), "peakRssMB": round(rss_mb, 1)}))


if __name__ == "__main__":
    main()

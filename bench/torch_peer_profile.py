#!/usr/bin/env python3
"""Where the PyTorch peer's training step goes: the share of aten::mm/bmm/addmm (the BLAS products).

The same model, batch and AdamW step as bench/torch_peer.py, run under torch.profiler after two
warm-up steps. Compare with `selfsteer bench --preset X --threads T --profile` (our products' share):
when both sides spend most of a step in the same OpenBLAS products, the ratio of the two steps is
bounded by how much of the peer's step lies outside them.

Usage: /usr/bin/python3 bench/torch_peer_profile.py --preset L [--threads 1] [--steps 3]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_peer  # noqa: E402

PRODUCTS = ("aten::mm", "aten::bmm", "aten::addmm")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", required=True, choices=sorted(torch_peer.PRESETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p = torch_peer.PRESETS[args.preset]
    model = torch_peer.Llama(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, p["vocab"], (p["batch"], p["seq"] + 1))

    def step():
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, p["vocab"]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    plain = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        plain.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        profiled = time.perf_counter() - t0
    products_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in PRODUCTS)
    products_ms = products_us / 1000 / args.steps
    print(
        f"peer {args.preset}, {args.threads} thread(s): median step {1000 * sorted(plain)[len(plain) // 2]:.0f} ms "
        f"unprofiled; products {products_ms:.0f} ms per step, "
        f"{products_us / 1e6 / profiled:.1%} of the profiled step"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch side of bench/bench_cpu: the same model and weights, timed in several modes.

Usage: torch_cpu.py WEIGHTS.safetensors THREADS ITER_B1 ITER_B64 TRAIN_STEPS
Prints one line per measurement: `torch <mode> batch <N> <images/s>`. Modes: eager,
eager_channels_last, jit_optimized (torch.jit.optimize_for_inference(torch.jit.script(...)):
batch norm folded, oneDNN layouts: PyTorch at its best on the CPU), and train (eager, Adam,
MultiLabelSoftMarginLoss, batch 16). Each figure is the median of 5 repeats.
"""
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
from captcha_model import CaptchaNet, load_safetensors  # noqa: E402


def rate(fn, batch, iters, repeats=5):
    fn()  # warm-up
    fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates)


def main():
    path, threads, iter_b1, iter_b64, train_steps = sys.argv[1], *map(int, sys.argv[2:])
    torch.set_num_threads(threads)
    tensors, meta = load_safetensors(path)
    length, charset = int(meta.get("length", 5)), len(meta.get("charset", "x" * 36))
    h, w = int(meta.get("input_height", 32)), int(meta.get("input_width", 128))
    model = CaptchaNet(length, charset, h, w)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    for batch, iters in ((1, iter_b1), (64, iter_b64)):
        x = torch.rand(batch, 3, h, w) * 2 - 1
        with torch.no_grad():
            print(f"torch eager batch {batch} {rate(lambda: model(x), batch, iters):.1f}", flush=True)
            mcl = CaptchaNet(length, charset, h, w).to(memory_format=torch.channels_last)
            mcl.load_state_dict(tensors)
            mcl.eval()
            xcl = x.to(memory_format=torch.channels_last)
            print(f"torch eager_channels_last batch {batch} "
                  f"{rate(lambda: mcl(xcl), batch, iters):.1f}", flush=True)
            jit = torch.jit.optimize_for_inference(torch.jit.script(model.eval()))
            print(f"torch jit_optimized batch {batch} {rate(lambda: jit(x), batch, iters):.1f}",
                  flush=True)
    if train_steps > 0:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.MultiLabelSoftMarginLoss()
        x = torch.rand(16, 3, h, w) * 2 - 1
        t = torch.zeros(16, length * charset)
        t[:, ::charset] = 1

        def step():
            opt.zero_grad()
            loss_fn(model(x), t).backward()
            opt.step()
        print(f"torch train batch 16 {rate(step, 16, train_steps, repeats=3):.1f}", flush=True)


if __name__ == "__main__":
    main()

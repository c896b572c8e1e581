#!/usr/bin/env python3
"""PyTorch side of bench/bench_cpu: the same model and weights, timed in several modes.

Usage: torch_cpu.py WEIGHTS.safetensors THREADS ITER_B1 ITER_B64 TRAIN_STEPS
       torch_cpu.py --serve WEIGHTS.safetensors THREADS MODE
Prints one line per measurement: `torch <mode> batch <N> <images/s>`.
With --serve it builds the model once in MODE, prints `ready`, then for each line `BATCH ITERS`
read from stdin runs ITERS forwards at that batch (after one untimed forward) and prints the
seconds they took: bench_cpu alternates these bursts with its own, pair by pair. Modes: eager,
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


def build(tensors, length, charset, h, w, mode):
    model = CaptchaNet(length, charset, h, w)
    if mode == "eager_channels_last":
        model = model.to(memory_format=torch.channels_last)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    if mode == "jit_optimized":
        return torch.jit.optimize_for_inference(torch.jit.script(model))
    return model


def serve(path, threads, mode):
    torch.set_num_threads(threads)
    tensors, meta = load_safetensors(path)
    length, charset = int(meta.get("length", 5)), len(meta.get("charset", "x" * 36))
    h, w = int(meta.get("input_height", 32)), int(meta.get("input_width", 128))
    model = build(tensors, length, charset, h, w, mode)
    inputs = {}
    print("ready", flush=True)
    for line in sys.stdin:
        batch, iters = map(int, line.split())
        if batch not in inputs:
            inputs[batch] = torch.rand(batch, 3, h, w) * 2 - 1
            if mode == "eager_channels_last":
                inputs[batch] = inputs[batch].to(memory_format=torch.channels_last)
        x = inputs[batch]
        with torch.no_grad():
            model(x)
            t0 = time.perf_counter()
            for _ in range(iters):
                model(x)
            print(f"{time.perf_counter() - t0:.9f}", flush=True)


def main():
    if sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
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

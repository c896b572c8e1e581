#!/usr/bin/env python3
"""PyTorch side of bench/bench_gpu: the same model and weights, eager mode, on the GPU.

Usage: torch_gpu.py [--gpu N] [--dry-run] WEIGHTS.safetensors LATENCY_ITERS THROUGHPUT_ITERS EPOCHS

FP32 with TF32 off (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False),
torch.backends.cudnn.benchmark = True. Prints one line per figure:
  torch latency_us <median> <p99>   batch 1, host pixels to text: a 50x200x4 uint8 BGRA host
                                    array -> torch.from_numpy -> .cuda() -> BGR planes as float
                                    -> F.interpolate(bilinear, align_corners=False) on the GPU
                                    (OpenCV INTER_LINEAR's sampling grid, without its uint8
                                    rounding) -> /255, (x - mean) / std -> model -> argmax per
                                    position -> .cpu() -> text
  torch throughput <images/s>       batch 256 forward, input already on the GPU, median of 5
  torch train_epoch_s <seconds>     one epoch of 936 random 3x32x128 images with random one-hot
                                    targets, batch 16 (58 steps + one of 8): inputs and targets
                                    uploaded at each step, Adam lr 1e-3,
                                    MultiLabelSoftMarginLoss, loss.item() per step (our API
                                    returns the loss to the host at every step too); median of
                                    EPOCHS after one warm-up epoch
  torch info <text>                 versions and the GPU's name
Without CUDA it prints the reason and exits 77. --dry-run runs everything on the CPU with the
counts given (to check the script where there is no GPU; the figures mean nothing).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
from captcha_model import CaptchaNet, load_safetensors  # noqa: E402

IMAGE_WIDTH, IMAGE_HEIGHT = 200, 50  # the captcha-v2 images
THROUGHPUT_BATCH = 256
TRAIN_IMAGES, TRAIN_BATCH = 936, 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("weights")
    ap.add_argument("latency_iters", type=int)
    ap.add_argument("throughput_iters", type=int)
    ap.add_argument("epochs", type=int)
    args = ap.parse_args()

    if args.dry_run:
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(f"torch SKIP: PyTorch {torch.__version__} sees no CUDA device "
              f"(built with CUDA {torch.version.cuda})", flush=True)
        sys.exit(77)
    else:
        dev = torch.device("cuda", args.gpu)
        torch.cuda.set_device(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    print(f"torch info PyTorch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version()}, {name}; resize: F.interpolate bilinear "
          f"align_corners=False on the GPU", flush=True)

    tensors, meta = load_safetensors(args.weights)
    charset = meta.get("charset", "0123456789abcdefghijklmnopqrstuvwxyz")
    length = int(meta.get("length", 5))
    h, w = int(meta.get("input_height", 32)), int(meta.get("input_width", 128))
    mean, std = float(meta.get("mean", 0.5)), float(meta.get("std", 0.5))
    bgr = meta.get("channel_order", "BGR") == "BGR"
    model = CaptchaNet(length, len(charset), h, w)
    model.load_state_dict(tensors, strict=True)
    model = model.to(dev).eval()

    # ---- 1. batch-1 latency, host pixels to text ----
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 4), dtype=np.uint8)  # BGRA
    planes = [0, 1, 2] if bgr else [2, 1, 0]

    def infer():
        x = torch.from_numpy(pixels).to(dev)
        x = x[:, :, planes].permute(2, 0, 1).unsqueeze(0).float()
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = (x / 255 - mean) / std
        index = model(x).view(length, len(charset)).argmax(1).cpu()
        return "".join(charset[i] for i in index.tolist())

    times = []
    with torch.no_grad():
        for i in range(-max(args.latency_iters // 10, 50), args.latency_iters):
            t0 = time.perf_counter()
            infer()
            if i >= 0:
                times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    print(f"torch latency_us {times[len(times) // 2]:.1f} {times[int(len(times) * 0.99)]:.1f}",
          flush=True)

    # ---- 2. batch-256 throughput, input on the device ----
    x = torch.rand(THROUGHPUT_BATCH, 3, h, w, device=dev) * 2 - 1
    rates = []
    with torch.no_grad():
        for r in range(-1, 5):
            sync()
            t0 = time.perf_counter()
            n = 3 if r < 0 else args.throughput_iters
            for _ in range(n):
                model(x)
            sync()
            if r >= 0:
                rates.append(THROUGHPUT_BATCH * n / (time.perf_counter() - t0))
    print(f"torch throughput {statistics.median(rates):.1f}", flush=True)

    # ---- 3. one training epoch, batch 16, host inputs uploaded per step ----
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MultiLabelSoftMarginLoss()
    gen = torch.Generator().manual_seed(4)
    xs = torch.rand(TRAIN_IMAGES, 3, h, w, generator=gen) * 2 - 1
    ts = torch.zeros(TRAIN_IMAGES, length, len(charset))
    ts.scatter_(2, torch.randint(len(charset), (TRAIN_IMAGES, length, 1), generator=gen), 1.0)
    ts = ts.view(TRAIN_IMAGES, -1)
    seconds = []
    for e in range(-1, args.epochs):
        sync()
        t0 = time.perf_counter()
        for start in range(0, TRAIN_IMAGES, TRAIN_BATCH):
            xb = xs[start:start + TRAIN_BATCH].to(dev)
            tb = ts[start:start + TRAIN_BATCH].to(dev)
            opt.zero_grad()
            loss = loss_fn(model(xb), tb)
            loss.backward()
            opt.step()
            loss.item()
        sync()
        if e >= 0:
            seconds.append(time.perf_counter() - t0)
    print(f"torch train_epoch_s {statistics.median(seconds):.4f}", flush=True)


if __name__ == "__main__":
    main()

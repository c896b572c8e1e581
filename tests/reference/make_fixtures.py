#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for tests/test_parity_torch.c.

Usage: make_fixtures.py OUT_DIR

For each case (the reference 32x128 / length 5 / 36 classes model, and a 64x192 / length 6 /
10 classes one) it builds CaptchaNet with a fixed seed, trains WARMUP Adam steps on random data
(so running statistics and optimizer moments are not at their initial values), then writes to
OUT_DIR/<case>/:
  weights.safetensors      the state_dict at that point, with gst-captcha metadata
  input_eval.f32           [4, 3, H, W] eval input
  logits_eval.f32          model.eval() logits for it
  input_train.f32          [8, 3, H, W]   train-mode input of the measured step
  targets_train.f32        [8, classes]   one-hot targets (MultiLabelSoftMarginLoss)
  loss.f32                 [1] the train-mode loss
  grad.<name>.f32          every parameter's gradient
  adam_m.f32, adam_v.f32   Adam moments before the measured step, flattened in parameter order
  adam_step.txt            Adam steps taken before the measured step
  after.<name>.f32         every parameter after the measured Adam step
  running_after.<name>.f32 every running statistic after the train-mode forward
  lr.txt                   Adam learning rate
Raw .f32 files are little-endian float32, C order.
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from captcha_model import CaptchaNet, save_safetensors  # noqa: E402

WARMUP = 2
LR = 1e-3

CASES = {
    "reference": dict(charset="0123456789abcdefghijklmnopqrstuvwxyz", length=5, h=32, w=128),
    "wide6": dict(charset="0123456789", length=6, h=64, w=192),
}


def write(path, tensor):
    with open(path, "wb") as f:
        f.write(tensor.detach().contiguous().float().numpy().tobytes())


def random_batch(gen, n, h, w, length, classes_per_pos):
    x = torch.rand(n, 3, h, w, generator=gen) * 2 - 1
    labels = torch.randint(0, classes_per_pos, (n, length), generator=gen)
    t = torch.zeros(n, length, classes_per_pos)
    t.scatter_(2, labels.unsqueeze(2), 1.0)
    return x, t.reshape(n, -1)


def make_case(out, charset, length, h, w):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1234)
    gen = torch.Generator().manual_seed(99)
    c = len(charset)
    model = CaptchaNet(length, c, h, w)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.MultiLabelSoftMarginLoss()
    model.train()
    for _ in range(WARMUP):
        x, t = random_batch(gen, 8, h, w, length, c)
        opt.zero_grad()
        loss_fn(model(x), t).backward()
        opt.step()

    meta = dict(format="gst-captcha/1", charset=charset, length=length, input_height=h,
                input_width=w, channel_order="BGR", mean=0.5, std=0.5)
    save_safetensors(model.state_dict(), os.path.join(out, "weights.safetensors"), meta)

    x_eval = torch.rand(4, 3, h, w, generator=gen) * 2 - 1
    model.eval()
    with torch.no_grad():
        write(os.path.join(out, "input_eval.f32"), x_eval)
        write(os.path.join(out, "logits_eval.f32"), model(x_eval))

    params = list(model.named_parameters())
    m = torch.cat([opt.state[p]["exp_avg"].flatten() for _, p in params])
    v = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for _, p in params])
    step = int(opt.state[params[0][1]]["step"])
    write(os.path.join(out, "adam_m.f32"), m)
    write(os.path.join(out, "adam_v.f32"), v)
    with open(os.path.join(out, "adam_step.txt"), "w") as f:
        f.write(f"{step}\n")
    with open(os.path.join(out, "lr.txt"), "w") as f:
        f.write(f"{LR!r}\n")

    model.train()
    x, t = random_batch(gen, 8, h, w, length, c)
    write(os.path.join(out, "input_train.f32"), x)
    write(os.path.join(out, "targets_train.f32"), t)
    opt.zero_grad()
    loss = loss_fn(model(x), t)
    loss.backward()
    write(os.path.join(out, "loss.f32"), loss.reshape(1))
    for name, p in params:
        write(os.path.join(out, f"grad.{name}.f32"), p.grad)
    for name, b in model.named_buffers():
        if not name.endswith("num_batches_tracked"):
            write(os.path.join(out, f"running_after.{name}.f32"), b)
    opt.step()
    for name, p in params:
        write(os.path.join(out, f"after.{name}.f32"), p)


def main():
    torch.set_num_threads(2)
    out = sys.argv[1]
    for name, case in CASES.items():
        make_case(os.path.join(out, name), **case)
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    main()

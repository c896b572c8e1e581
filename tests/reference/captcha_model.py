"""The reference network in PyTorch, and a minimal safetensors reader/writer.

This is the oracle the C implementation is checked against (tests/reference/make_fixtures.py,
tests/test_parity_torch.c, tests/test_model_file.c). Debian 12's python3-torch (1.13) has no
safetensors package, so the format (8-byte little-endian header size, JSON header, raw data) is
read and written here with json/struct only.
"""
import json
import struct

import torch
import torch.nn as nn

BLOCKS = [(3, 32, 1), (32, 64, 2), (64, 64, 2), (64, 128, 2), (128, 256, 2), (256, 256, 2)]


class ResidualBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        return torch.relu(self.block(x) + self.skip(x))


class CaptchaNet(nn.Module):
    def __init__(self, length=5, charset_size=36, input_height=32, input_width=128):
        super().__init__()
        self.cnn_layers = nn.Sequential(*[ResidualBlock(i, o, s) for i, o, s in BLOCKS])
        flatten = 256 * (input_height // 32) * (input_width // 32)
        self.fc_layers = nn.Sequential(nn.Linear(flatten, length * charset_size))

    def forward(self, x):
        x = self.cnn_layers(x)
        return self.fc_layers(x.flatten(1))


_DTYPES = {torch.float32: "F32", torch.int64: "I64"}
_TORCH = {"F32": torch.float32, "I64": torch.int64}


def save_safetensors(tensors, path, metadata=None):
    header = {}
    offset = 0
    blobs = []
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    """Returns (tensors: dict name -> torch.Tensor, metadata: dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + begin:base + end]), dtype=_TORCH[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, metadata

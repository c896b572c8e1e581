"""PyTorch side of tests/test_model_file.c: the model file exchanged with PyTorch both ways.

  model_file_check.py export OUT.safetensors OUT.raw
      Builds the reference CaptchaNet (seeded; batch-norm affine parameters randomized and two
      training-mode forwards run so running statistics and num_batches_tracked are not their
      initial values) and saves its plain state_dict() as safetensors without metadata, as a
      PyTorch user would. OUT.raw: every float tensor of the state_dict in order, little-endian
      float32, concatenated (num_batches_tracked left out); stdout: "num_batches_tracked N".

  model_file_check.py import IN.safetensors OUT.raw
      Loads a file written by gst-captcha, builds CaptchaNet with the file's metadata (length,
      charset, input size) and calls load_state_dict(strict=True). OUT.raw as above, from the
      loaded model's state_dict(); stdout: "order ok" when the file lists the tensors in
      state_dict() order, and "num_batches_tracked N" (one line per distinct value).
"""
import sys

import torch

from captcha_model import CaptchaNet, load_safetensors, save_safetensors


def write_raw(state, path):
    with open(path, "wb") as f:
        for name, t in state.items():
            if name.endswith("num_batches_tracked"):
                continue
            f.write(t.detach().cpu().numpy().astype("<f4").tobytes())


def export(out_model, out_raw):
    torch.manual_seed(1234)
    model = CaptchaNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.train()
        for _ in range(2):
            model(torch.rand(4, 3, 32, 128) * 2 - 1)
    state = model.state_dict()
    save_safetensors(state, out_model)
    write_raw(state, out_raw)
    print("num_batches_tracked", int(state["cnn_layers.0.block.1.num_batches_tracked"]))


def import_(in_model, out_raw):
    tensors, metadata = load_safetensors(in_model)
    charset = metadata.get("charset", "0123456789abcdefghijklmnopqrstuvwxyz")
    model = CaptchaNet(length=int(metadata.get("length", 5)), charset_size=len(charset),
                       input_height=int(metadata.get("input_height", 32)),
                       input_width=int(metadata.get("input_width", 128)))
    model.load_state_dict(tensors, strict=True)
    state = model.state_dict()
    if list(tensors.keys()) == list(state.keys()):
        print("order ok")
    for value in sorted({int(t) for n, t in state.items() if n.endswith("num_batches_tracked")}):
        print("num_batches_tracked", value)
    write_raw(state, out_raw)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("export", "import"):
        sys.exit(__doc__)
    (export if sys.argv[1] == "export" else import_)(sys.argv[2], sys.argv[3])

#!/usr/bin/python3
"""torch_export.py — `tapegrad export` round-trips into PyTorch.

For each case: train a few steps with tapegrad (so the weights are not the initial ones), export
the checkpoint, load the export into a module built from torch.nn (nn.Embedding for text,
nn.RNN / nn.LSTM / nn.GRU, nn.Linear) with load_state_dict(strict=True), run it on the input that
tests/export_logits.c ran tapegrad's model on, and compare the logits.

    torch_export.py TAPEGRAD EXPORT_LOGITS SOURCE_DIR
Exit 0: all agree; 1: a mismatch or a failure; 77: torch is not installed (meson: skipped).
"""
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch is not installed: skipped")
    sys.exit(77)

TAPEGRAD, HELPER, SRC = sys.argv[1:4]
sys.path.insert(0, os.path.join(SRC, "tests", "fixtures"))
from gen_torch_fixtures import read_safetensors  # noqa: E402  (stdlib reader, no numpy)

_DT = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def load(path):
    raw, meta = read_safetensors(path)
    return {k: torch.tensor(v, dtype=_DT[st]).reshape(shape) for k, (st, shape, v) in raw.items()}, meta


class Exported(nn.Module):
    """What the export's metadata describes; names are the export's tensor names."""

    def __init__(self, meta):
        super().__init__()
        I, H, L = int(meta["input_size"]), int(meta["hidden_size"]), int(meta["num_layers"])
        V, O = int(meta["vocab_size"]), int(meta["outputs"])
        if V:
            self.embed = nn.Embedding(V, I)
        kind, D = meta["torch_module"], 1 + int(meta.get("bidirectional", "0"))
        if kind == "RNN":
            self.rnn = nn.RNN(I, H, L, nonlinearity=meta["nonlinearity"], bidirectional=D == 2)
        else:
            self.rnn = getattr(nn, kind)(I, H, L, bidirectional=D == 2)
        self.out = nn.Linear(D * H, O)

    def forward(self, inp):
        x = self.embed(inp) if hasattr(self, "embed") else inp
        y, _ = self.rnn(x)
        return self.out(y)


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(args)}\n{r.stderr}")
    return r


def case(tmp, name, dtype, extra):
    ck, ex, lg = (os.path.join(tmp, name + s) for s in (".ck.safetensors", ".safetensors", ".logits"))
    run(TAPEGRAD, "train", "--steps", "5", "--hidden", "6", "--batch", "4", "--dtype", dtype,
        "--checkpoint", ck, "--overwrite", "--eval-every", "5", "--eval-size", "4", *extra)
    run(TAPEGRAD, "export", "--checkpoint", ck, "--out", ex)
    run(HELPER, ck, lg)
    params, meta = load(ex)
    assert meta["format"] == "tapegrad-export", meta
    model = Exported(meta)
    if dtype == "f64":
        model = model.double()
    model.load_state_dict(params, strict=True)  # every name and shape, nothing extra
    io, _ = load(lg)
    inp = io["tokens"] if "tokens" in io else io["x"].to(params["out.weight"].dtype)
    with torch.no_grad():
        got = model(inp).double()
    want = io["logits"]
    err = (got - want).abs().max().item()
    tol = 1e-12 if dtype == "f64" else 1e-5
    scale = want.abs().max().item()
    print(f"{name:28s} {meta['torch_module']:5s} {dtype}  max |torch - tapegrad| = {err:.3g} "
          f"(logits up to {scale:.3g})")
    if not err <= tol * max(1.0, scale):
        sys.exit(f"FAIL: {name}: logits differ by {err} > {tol}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "corpus.txt")
        with open(text, "w") as f:
            f.write("the cat sat on the mat; the dog sat on the log.\n" * 30)
        txt = ["--task", "text", "--data", text, "--seq", "8"]
        reber = ["--task", "reber", "--length", "12"]
        case(tmp, "lstm_text_2layers", "f64", txt + ["--cell", "lstm", "--layers", "2"])
        case(tmp, "gru_text", "f32", txt + ["--cell", "gru"])
        case(tmp, "rnn_relu_reber", "f64", reber + ["--cell", "rnn_relu"])
        case(tmp, "rnn_tanh_reber_2layers", "f64", reber + ["--cell", "rnn_tanh", "--layers", "2"])
        case(tmp, "gru_reber_f32", "f32", reber + ["--cell", "gru"])
        # bidirectional: *_reverse names, out.weight reads [forward; reverse] (2H); dropout is a
        # training-only option, so the exported module (eval) must match with it set
        copy = ["--task", "copy", "--length", "6"]
        case(tmp, "lstm_copy_bidir_2layers", "f64",
             copy + ["--cell", "lstm", "--layers", "2", "--bidirectional", "--dropout", "0.2"])
        case(tmp, "gru_copy_bidir", "f32", copy + ["--cell", "gru", "--bidirectional"])
        case(tmp, "rnn_tanh_copy_bidir", "f64", copy + ["--cell", "rnn_tanh", "--bidirectional"])
        # a cell file that restates nn.LSTM exports as nn.LSTM too
        case(tmp, "lstm.cell_text", "f64", txt + ["--cell", os.path.join(SRC, "models", "cells", "lstm.cell")])
    print("export round-trips into PyTorch")


main()

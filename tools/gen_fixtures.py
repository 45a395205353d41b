"""Writes the reference fixtures (assets/fixtures/<notebook>.safetensors) with PyTorch's own ops.

Runs in the tool venv with the full torch==2.13.0 (see environment.md); `make test` does not need
it, it reads the committed files. `make fixtures` runs it.

Layout of a file, per check (read by hw9::check::Fixtures):
    <check>/tolerance                 float64 scalar
    <check>/<case>/<input>            inputs, case = "public" (shown in the notebook) or "autograder"
    <check>/<case>/expected           the expected output (or expected.0, expected.1, ...)
"""

from __future__ import annotations

import argparse
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "fixtures"


def add_check(tensors: dict, name: str, tolerance: float, cases: dict[str, tuple[dict, object]]):
    tensors[f"{name}/tolerance"] = torch.tensor(tolerance, dtype=torch.float64)
    for case, (inputs, expected) in cases.items():
        for k, v in inputs.items():
            tensors[f"{name}/{case}/{k}"] = v.contiguous()
        if isinstance(expected, (tuple, list)):
            for i, e in enumerate(expected):
                tensors[f"{name}/{case}/expected.{i}"] = e.contiguous()
        else:
            tensors[f"{name}/{case}/expected"] = expected.contiguous()


def setup_check() -> dict:
    """00_setup_check: a hand-written MSE and softmax attention weights."""
    t = {}
    g = torch.Generator().manual_seed(0)

    def mse_case(n):
        pred, target = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
        return {"pred": pred, "target": target}, F.mse_loss(pred, target)

    add_check(t, "mse", 1e-5, {"public": mse_case(16), "autograder": mse_case(37)})

    def attention_case(tq, tk, d):
        q, k = torch.randn(tq, d, generator=g), torch.randn(tk, d, generator=g)
        return {"q": q, "k": k}, torch.softmax(q @ k.T / math.sqrt(d), dim=-1)

    add_check(t, "attention_weights", 1e-5, {"public": attention_case(5, 5, 8), "autograder": attention_case(7, 9, 16)})
    return t


NOTEBOOKS = {"00_setup_check": setup_check}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help=f"which to write (default: all of {sorted(NOTEBOOKS)})")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.notebooks or sorted(NOTEBOOKS):
        tensors = NOTEBOOKS[name]()
        path = OUT / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"generator": "tools/gen_fixtures.py", "torch": torch.__version__})
        print(f"wrote {path.relative_to(ROOT)} ({len(tensors)} tensors, torch {torch.__version__})")


if __name__ == "__main__":
    main()

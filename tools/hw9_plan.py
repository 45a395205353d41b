"""The crate's sizes for the PyTorch benches: `hw9 plan --profile P` (every notebook's plan and the
benchmarks' sizes as JSON), so tools/bench_torch*.py build what `hw9 bench` builds without copying
numbers from src/plan.rs.

The binary: $HW9_BIN, else target/release/hw9 (what tools/bench_pairs.py times), else
target/debug/hw9.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def hw9_binary() -> pathlib.Path:
    if os.environ.get("HW9_BIN"):
        return pathlib.Path(os.environ["HW9_BIN"])
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "hw9"
        if path.exists():
            return path
    sys.exit("no hw9 binary: run `cargo build --release` (or set HW9_BIN)")


@functools.cache
def plan(profile: str) -> dict:
    """Every notebook's plan for `profile` (quick, cpu or full), as `hw9 plan` prints it."""
    done = subprocess.run(
        [str(hw9_binary()), "plan", "--profile", profile], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"hw9 plan --profile {profile} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def encoder(cfg: dict) -> dict:
    """An EncoderConfig in the keyword names of tools/fixtures/vit_mae.py's models."""
    return dict(d=cfg["d_model"], heads=cfg["n_heads"], layers=cfg["n_layers"], ffn=cfg["d_ffn"])

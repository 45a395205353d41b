"""The GPU check (issue 31, item 4): on CUDA, hw9's training steps against PyTorch eager's, then
notebooks 1 and 2 in the `full` profile (the original homework's sizes), inside a time budget.
Writes build/gpu/summary.json and summary.md (the figures for BENCHMARKS.md) and prints the table.

Without a CUDA device, or with --dry-run, it runs the same steps on the CPU at the smallest sizes
(one timed step at a small batch, the notebooks in the `quick` profile): proof that every step of
the script works, not a benchmark, and the summary says so. CI runs the dry run
(tests/notebooks/test_gpu_check.py).

    .venv/bin/python tools/gpu_check.py              # a GPU machine after `make setup`
    .venv/bin/python tools/gpu_check.py --dry-run    # anywhere, about 3 minutes on 2 cores

Needs what `make setup` installs (libtorch, the "Rust (hw9)" kernel) and, for the PyTorch side, a
Python with torch: --torch-python, else the tool venv (~/.cache/hw9/tool-venv, `make fixtures`),
else python3; without one that imports torch, the PyTorch side is skipped and the summary says so.
The notebooks run on copies in build/gpu-run/ (nothing under notebooks/ is written). hw9 picks
CUDA by itself when libtorch sees a device (HW9_DEVICE=cpu or cuda:N overrides).

What the `device` tool's machines cannot do (written down 2026-12-07): they hold PyTorch 2.11 and
no Rust toolchain, carry at most 64 MiB, and reach no registry, so neither hw9 (built against
libtorch 2.13, ~1 GB with its CUDA libraries) nor the evcxr kernel can be brought there. A GPU
machine with `make setup` (Debian, PyPI's torch 2.13 with its nvidia-* wheels) runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbrun  # noqa: E402

TOOL_VENV_PYTHON = pathlib.Path.home() / ".cache" / "hw9" / "tool-venv" / "bin" / "python"
NOTEBOOKS = ["01_vit_mae", "02_summarization"]
STEP = re.compile(r"(cpu|full) sizes?(?: \(source \d+, summary \d+ tokens\))?: (.*)")
FIGURE = re.compile(r"(ViT step|MAE step|step) ([\d.]+) s")
CHECK = re.compile(r"(✓ PASS|✗ FAIL) (.*)")


class Budget:
    """Seconds left of the whole run."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    """Runs `cmd` in the repository; (exit code, stdout + stderr, seconds). A timeout is code 124."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, timeout), env=env)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - t0
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(stopped after {timeout:.0f} s: the budget ran out)", time.monotonic() - t0


def step_figures(out: str) -> dict[str, float]:
    """`{"ViT cpu": s, "MAE full": s, "summarizer cpu": s, ...}` from a bench's output."""
    found = {}
    for size, rest in STEP.findall(out):
        for name, seconds in FIGURE.findall(rest):
            model = "summarizer" if name == "step" else name.split()[0]
            found[f"{model} {size}"] = float(seconds)
    return found


def torch_python(asked: str | None) -> str | None:
    """A Python that imports torch: `asked`, the tool venv's, or python3; None without one."""
    for candidate in [asked, str(TOOL_VENV_PYTHON), shutil.which("python3")]:
        if candidate and os.access(candidate, os.X_OK) and run([candidate, "-c", "import torch"], 120)[0] == 0:
            return candidate
    return None


def cuda_seen(hw9: list[str]) -> tuple[bool, str]:
    """Whether hw9's libtorch sees a CUDA device (`hw9 doctor`'s libtorch line)."""
    code, out, _ = run([*hw9, "doctor"], 300)
    line = next((ln for ln in out.splitlines() if "CUDA available" in ln or "no CUDA device" in ln), out[-300:])
    return "CUDA available" in line, line.strip()


def benches(hw9: list[str], py: str | None, dry: bool, device: str, budget: Budget) -> dict:
    """hw9's and PyTorch's step times, both sizes; dry: one step at a small batch."""
    small = ["--warmup", "1", "--steps", "1"]
    runs = {
        "hw9 ViT/MAE": [*hw9, "bench", *(small + ["--batch", "8"] if dry else [])],
        "hw9 summarizer": [*hw9, "bench-summarizer", *(small + ["--batch", "2"] if dry else [])],
    }
    if py:
        on = ["--device", device]
        runs["PyTorch ViT/MAE"] = [py, "tools/bench_torch.py", *on, *(small + ["--batch", "8"] if dry else [])]
        runs["PyTorch summarizer"] = [
            py,
            "tools/bench_torch_summarizer.py",
            *on,
            *(small + ["--batch", "2"] if dry else []),
        ]
    results = {}
    for name, cmd in runs.items():
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"), HW9_BIN=hw9[0])  # the sizes come from `hw9 plan`
        code, out, took = run(cmd, budget.left(), env)
        results[name] = {"ok": code == 0, "seconds": round(took, 1), "figures": step_figures(out)}
        if code != 0 or not results[name]["figures"]:
            results[name]["ok"] = False
            results[name]["output"] = out[-2000:]
        print(f"{name}: {'ok' if results[name]['ok'] else 'FAILED'} in {took:.0f} s {results[name]['figures']}")
    return results


def notebooks(profile: str, budget: Budget, out_dir: pathlib.Path) -> dict:
    """Notebooks 1 and 2 (solutions) in `profile` on copies; per-cell times and the checks' lines."""
    run_dir = ROOT / "build" / "gpu-run"  # two folders down, as the notebooks' `:dep hw9 = { path = "../.." }` needs
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results = {}
    os.environ["HW9_PROFILE"] = profile
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / "solutions" / f"{name}.ipynb", run_dir)
        nb = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
        left = budget.left()
        if left < 30:
            results[name] = {"ok": False, "problems": ["not run: the budget ran out"]}
            continue
        t0 = time.monotonic()
        problems = nbrun.execute(nb, run_dir, timeout=int(left))
        took = time.monotonic() - t0
        nbformat.write(nb, out_dir / f"{name}.ipynb")
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        cells = [
            (i, nbrun.cell_seconds(c), c.source.splitlines()[0][:50] if c.source else "")
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code"
        ]
        slow = sorted((c for c in cells if c[1] is not None), key=lambda c: -c[1])[:4]
        results[name] = {
            "ok": not problems,
            "seconds": round(took, 1),
            "checks": [f"{mark} {what}" for mark, what in CHECK.findall(text)],
            "slowest_cells": [{"cell": i, "seconds": round(s, 1), "source": src} for i, s, src in slow],
            "problems": problems[:10],
        }
        print(f"{name} ({profile}): {'ok' if not problems else 'FAILED'} in {took:.0f} s")
    return results


def markdown(summary: dict) -> str:
    lines = [f"GPU check, {summary['mode']}: {summary['device']} ({summary['date']}, {summary['seconds']:.0f} s)", ""]
    if summary["dry_run"]:
        lines += [
            "**A dry run: CPU, smallest sizes. These figures prove the script works; they are no benchmark.**",
            "",
        ]
    lines += ["| step time (s) | hw9 | PyTorch eager | ratio |", "|---|---|---|---|"]
    hw9 = {**summary["benches"].get("hw9 ViT/MAE", {}).get("figures", {})}
    hw9.update(summary["benches"].get("hw9 summarizer", {}).get("figures", {}))
    torch = {**summary["benches"].get("PyTorch ViT/MAE", {}).get("figures", {})}
    torch.update(summary["benches"].get("PyTorch summarizer", {}).get("figures", {}))
    for key, ours in sorted(hw9.items()):
        theirs = torch.get(key)
        ratio = f"{ours / theirs:.2f}×" if theirs else "—"
        lines.append(f"| {key} | {ours:.4f} | {f'{theirs:.4f}' if theirs else '—'} | {ratio} |")
    if not summary["torch_python"]:
        lines += ["", "PyTorch side skipped: no Python here imports torch (see --torch-python)."]
    lines += ["", "| notebook | profile | result | time | checks |", "|---|---|---|---|---|"]
    for name, r in summary["notebooks"].items():
        checks = "; ".join(r.get("checks", [])) or "—"
        result = "ok" if r["ok"] else "FAILED"
        lines.append(f"| {name} | {summary['profile']} | {result} | {r.get('seconds', 0):.0f} s | {checks} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, smallest sizes (also chosen without CUDA)")
    ap.add_argument("--budget", type=float, default=840, help="seconds for the whole run (default 840)")
    ap.add_argument("--torch-python", help="a Python with torch for the PyTorch side")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "gpu", help="where the summary goes")
    args = ap.parse_args()
    budget = Budget(args.budget)
    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)

    # The release build times the steps; a dry run uses the test build (CI has it already).
    profile = [] if args.dry_run else ["--release"]
    code, out, _ = run(["cargo", "build", "--locked", "-q", *profile, "--bin", "hw9"], budget.left())
    if code != 0:
        print(f"cargo build failed:\n{out[-3000:]}", file=sys.stderr)
        return 1
    hw9 = [str(ROOT / "target" / ("debug" if args.dry_run else "release") / "hw9")]
    cuda, line = cuda_seen(hw9)
    dry = args.dry_run or not cuda
    if not args.dry_run and not cuda:
        print(f"no CUDA device here ({line}): running the dry run instead; its figures are no benchmark")
    device = "cpu" if dry else "cuda"
    if dry:
        os.environ["HW9_DEVICE"] = "cpu"
    py = torch_python(args.torch_python)
    summary = {
        "mode": "dry run (CPU, smallest sizes)" if dry else "CUDA",
        "dry_run": dry,
        "device": line,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "profile": "quick" if dry else "full",
        "torch_python": py,
    }
    summary["benches"] = benches(hw9, py, dry, device, budget)
    summary["notebooks"] = notebooks(summary["profile"], budget, args.out)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    summary["ok"] = all(r["ok"] for r in [*summary["benches"].values(), *summary["notebooks"].values()])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    md = markdown(summary)
    (args.out / "summary.md").write_text(md)
    print(md)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

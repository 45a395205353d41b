"""hw9's training step against PyTorch eager's, measured in back-to-back pairs.

This machine's speed drifts (by a third within an hour on the shared 2-core dev machine), so a
ratio is only meaningful between runs made one right after the other. Each round runs hw9's bench
and the PyTorch bench once, alternating which goes first, and takes the ratio within the round;
the summary is the median over rounds.

    ~/.cache/hw9/tool-venv/bin/python tools/bench_pairs.py vit-mae --rounds 5
    ~/.cache/hw9/tool-venv/bin/python tools/bench_pairs.py summarizer --rounds 6 --steps 25

Needs `cargo build --release` (target/release/hw9) and the tool venv's PyTorch (run it with that
venv's python: the PyTorch side runs with sys.executable).
"""

import argparse
import pathlib
import re
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
HW9 = ROOT / "target" / "release" / "hw9"

# What each bench prints, one figure per (model, size).
VIT_MAE = re.compile(r"(cpu|full) sizes: ViT step ([\d.]+) s, MAE step ([\d.]+) s")
SUMMARIZER = re.compile(r"(cpu|full) size \(source \d+, summary \d+ tokens\): step ([\d.]+) s")


def figures(kind: str, out: str) -> dict:
    found = {}
    if kind == "vit-mae":
        for size, vit, mae in VIT_MAE.findall(out):
            found[f"ViT {size}"] = float(vit)
            found[f"MAE {size}"] = float(mae)
    else:
        for size, step in SUMMARIZER.findall(out):
            found[f"summarizer {size}"] = float(step)
    if not found:
        sys.exit(f"no step times in this output:\n{out}")
    return found


def run(cmd: list) -> str:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["vit-mae", "summarizer"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", choices=["cpu", "full", "both"], default="both", help="summarizer only")
    args = ap.parse_args()
    if not HW9.exists():
        sys.exit(f"{HW9} is missing: run `cargo build --release` first")
    common = ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.kind == "vit-mae":
        hw9 = [HW9, "bench", *common]
        torch = [sys.executable, ROOT / "tools" / "bench_torch.py", *common]
    else:
        hw9 = [HW9, "bench-summarizer", "--size", args.size, *common]
        torch = [sys.executable, ROOT / "tools" / "bench_torch_summarizer.py", "--size", args.size, *common]

    rows = {}  # name -> list of (hw9 s, torch s)
    for r in range(args.rounds):
        order = [("hw9", hw9), ("torch", torch)]
        if r % 2:
            order.reverse()
        got = {who: figures(args.kind, run(cmd)) for who, cmd in order}
        for name in got["hw9"]:
            rows.setdefault(name, []).append((got["hw9"][name], got["torch"][name]))
        print(
            f"round {r + 1}: "
            + ", ".join(f"{n} {h:.3f}/{t:.3f} = {h / t:.2f}x" for n, (h, t) in ((n, v[-1]) for n, v in rows.items())),
            flush=True,
        )

    print(
        f"\n{args.threads} threads, {args.steps} steps after {args.warmup} per run, "
        f"{args.rounds} rounds (hw9 / PyTorch eager)"
    )
    print("| model | hw9 median | PyTorch median | ratio per round | median ratio |")
    print("|---|---|---|---|---|")
    for name, pairs in rows.items():
        ratios = [h / t for h, t in pairs]
        print(
            f"| {name} | {statistics.median(h for h, _ in pairs):.3f} s "
            f"| {statistics.median(t for _, t in pairs):.3f} s "
            f"| {', '.join(f'{x:.2f}' for x in ratios)} | **{statistics.median(ratios):.2f}x** |"
        )


if __name__ == "__main__":
    main()

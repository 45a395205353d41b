"""Faults on purpose, for the reliability table in BENCHMARKS.md (a benchmark, not a test: the
tests that guard each behaviour are named in the table).

    .venv/bin/python tools/fault_injection.py

1. `hw9 summarize --state DIR` (quick profile, 3 epochs, its state saved every 4 steps) killed with
   SIGKILL at random moments, then run again with the same `--state` until it finishes: every
   resume must start from a complete saved state and the run must end with epoch 3 exported.
2. The tokenised-corpus cache file corrupted: the next load must warn, tokenise again and rewrite it.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
HW9 = ROOT / "target" / "release" / "hw9"


def summarize(out: pathlib.Path) -> subprocess.Popen:
    args = [str(HW9), "summarize", "--out", str(out), "--logdir", str(out / "runs"), "--epochs", "3"]
    env = os.environ | {"HW9_PROFILE": "quick"}
    return subprocess.Popen(
        args + ["--state", str(out / "state")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kills_and_resumes(rounds: int = 8) -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "ckpt"
        # The time a whole run takes, to spread the kills over it.
        t0 = time.monotonic()
        full = summarize(pathlib.Path(tmp) / "uninterrupted")
        full.communicate()
        whole = time.monotonic() - t0
        kills, resumed_from = 0, []
        p = summarize(out)
        for _ in range(rounds):
            time.sleep(rng.uniform(0.05, whole))
            if p.poll() is not None:
                break
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            p = summarize(out)
            time.sleep(0.5)
        text, _ = p.communicate()
        resumed_from += [line for line in text.splitlines() if ("resumed from" in line or "skipping" in line)]
        ok = p.returncode == 0 and (out / "epoch-3" / "model.safetensors").exists()
        last = resumed_from[-1:] or ["(started fresh)"]
        verdict = "finished, epoch-3 complete" if ok else "FAILED"
        print(f"summarize: a whole run {whole:.1f} s; {kills} SIGKILLs at random moments, then resumed to the end:")
        print(f"  {verdict} (exit {p.returncode}); the last resume said {last}")


def corrupt_cache() -> None:
    cache = pathlib.Path(os.environ.get("HW9_CACHE", pathlib.Path.home() / ".cache" / "hw9")) / "tokenized"
    files = sorted(cache.glob("*.bin")) if cache.exists() else []
    if not files:
        print("tokenised-corpus cache: no file yet (run notebook 2 or `hw9 summarize` first)")
        return
    sizes = {f: f.stat().st_size for f in files}
    for f in files:  # every cached tokenisation cut in half
        f.write_bytes(f.read_bytes()[: sizes[f] // 2])
    env = os.environ | {"HW9_PROFILE": "quick"}
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(HW9), "summarize", "--out", tmp, "--logdir", tmp + "/runs", "--epochs", "1"]
        r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    warned = "ignoring the corrupt tokenised-corpus cache" in r.stdout + r.stderr
    restored = [f.name[:12] for f in files if f.stat().st_size == sizes[f]]
    print(
        f"tokenised-corpus cache files cut in half: exit {r.returncode}, warned: {warned}, rewritten whole: {restored}"
    )


if __name__ == "__main__":
    kills_and_resumes()
    corrupt_cache()

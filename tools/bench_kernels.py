"""How long a notebook's first `:dep hw9` cell takes when N kernels start at once (the build-slot
seeding of jupyter/kernels/hw9-rust/launch), and the disk the slots use.

    .venv/bin/python tools/bench_kernels.py 1 2 4      # after `make setup` (it keeps the seed)
    .venv/bin/python tools/bench_kernels.py --fresh 2  # remove the idle slots first (they are re-seeded)

Prints one line per kernel: the seconds from asking for the kernel to the first cell's reply.
"""

from __future__ import annotations

import argparse
import fcntl
import pathlib
import shutil
import subprocess
import threading
import time

import nbrun  # noqa: F401  (sets JUPYTER_PATH)
from jupyter_client.manager import start_new_kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
SLOTS = ROOT / ".cache" / "evcxr"


def drop_idle_slots() -> list[str]:
    """Removes every slot but slot-0 that no kernel holds (they will start from the seed)."""
    dropped = []
    for slot in sorted(SLOTS.glob("slot-*")):
        if slot.suffix == ".lock" or slot.name == "slot-0" or not slot.is_dir():
            continue
        with open(SLOTS / f"{slot.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(slot)
            dropped.append(slot.name)
    return dropped


def first_cell(i: int, results: dict):
    t0 = time.monotonic()
    km, kc = start_new_kernel(kernel_name=nbrun.KERNEL, cwd=str(ROOT / "notebooks"), startup_timeout=600)
    try:
        seen = []
        for code in [
            ':dep hw9 = { path = ".." }',
            'format!("{:?} {}", hw9::device(), std::env::var("EVCXR_TMPDIR").unwrap())',
        ]:
            reply = kc.execute_interactive(
                code, timeout=900, output_hook=lambda m: seen.append(m["content"].get("data", {}).get("text/plain"))
            )
            assert reply["content"]["status"] == "ok", reply["content"]
        results[i] = (time.monotonic() - t0, next((s for s in seen if s), ""))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def du(path: pathlib.Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("counts", nargs="+", type=int)
    ap.add_argument("--fresh", action="store_true", help="remove idle slots (not slot-0) before each round")
    args = ap.parse_args()
    print(f"seed: {'present, ' + du(SLOTS / 'seed') if (SLOTS / 'seed').is_dir() else 'missing'}")
    for n in args.counts:
        if args.fresh:
            print(f"removed idle slots: {drop_idle_slots()}")
        results: dict = {}
        threads = [threading.Thread(target=first_cell, args=(i, results)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"{n} kernel(s) at once, done in {time.monotonic() - t0:.1f} s:")
        for i in sorted(results):
            secs, said = results[i]
            print(f"  kernel {i}: first :dep hw9 + one cell in {secs:.1f} s  ({said})")
        print(f"  slots now: {du(SLOTS)} in all")


if __name__ == "__main__":
    main()

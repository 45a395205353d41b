"""Times the hw9 kernel as a student meets it: kernel start, the first `:dep hw9` cell (warm build
cache), a trivial cell, and the setup-check notebook end to end. Prints one line per figure.

    .venv/bin/python tools/bench_kernel.py          (after `make setup`; JUPYTER_PATH is set here)
"""

import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbformat  # noqa: E402
import nbrun  # noqa: E402  (sets JUPYTER_PATH)
from jupyter_client.manager import start_new_kernel  # noqa: E402


def timed_cell(kc, code):
    t0 = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=600, output_hook=lambda m: None)
    assert reply["content"]["status"] == "ok", reply["content"]
    return time.perf_counter() - t0


def main():
    starts, deps, trivial = [], [], []
    for _ in range(3):
        t0 = time.perf_counter()
        km, kc = start_new_kernel(kernel_name=nbrun.KERNEL, cwd=str(ROOT / "notebooks"))
        starts.append(time.perf_counter() - t0)
        try:
            deps.append(timed_cell(kc, ':dep hw9 = { path = ".." }\nuse hw9::prelude::*;'))
            timed_cell(kc, "let a = 1;")
            trivial += [timed_cell(kc, f"let a = a + {i}; a") for i in range(5)]
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    print(
        f"kernel start (to ready):             median {statistics.median(starts):.2f} s  "
        f"{[round(s, 2) for s in starts]}"
    )
    print(f"first `:dep hw9` + prelude, warm:    median {statistics.median(deps):.2f} s  {[round(s, 2) for s in deps]}")
    print(f"trivial warm cell:                   median {statistics.median(trivial):.2f} s  (n={len(trivial)})")
    os.environ.setdefault("HW9_PROFILE", "cpu")
    path = ROOT / "notebooks" / "solutions" / "00_setup_check.ipynb"
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    problems = nbrun.execute(nb, path.parent)
    took = time.perf_counter() - t0
    print(
        f"setup-check notebook end to end ({os.environ['HW9_PROFILE']} profile): {took:.1f} s"
        f"{'' if not problems else f'  PROBLEMS: {problems}'}"
    )


if __name__ == "__main__":
    main()

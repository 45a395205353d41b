"""Run notebooks headless on the hw9 kernel ("Rust (hw9)") through nbclient, a real Jupyter client.

A cell fails on any `error` output AND on `panicked at` in its stderr. The hw9 kernel (evcxr with
tools/evcxr/'s patches) gives a panic or a `?` error an `error` output and status "error"; stock
evcxr replied "ok" to both with the message on stderr only, so the stderr check stays as a guard.
A cell tagged `plot` must produce an `image/png` output. Every cell has a timeout. With `--rerun`,
every cell is then run once more in the same kernel and must run clean again (a cell tagged
`no-rerun` is skipped, and says why).

    python tools/nbrun.py notebooks/00_setup_check.ipynb [--out build/notebooks] [--timeout 600]
    python tools/nbrun.py --warm-up      # compile hw9 in the kernel's build folder (setup's last step)

The kernelspec is found through JUPYTER_PATH, which this module points at the repo's `jupyter/`
folder when it is unset (the Makefile sets it too).
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

KERNEL = "hw9-rust"
ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 600
os.environ.setdefault("JUPYTER_PATH", str(ROOT / "jupyter"))


def cell_problems(cell, i: int) -> list[str]:
    """What went wrong in one executed code cell (empty: all good)."""
    found = []
    outputs = cell.get("outputs", [])
    # A panic's message arrives in several stderr chunks: read them as one text.
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    for o in outputs:
        if o.output_type == "error":
            ename = o.get("ename", "")
            if ename == "Panic" and "panicked at" in stderr:
                continue  # reported below, with the panic's own message
            msg = (o.get("evalue") or "").strip() or "\n".join(o.get("traceback", []))
            if ename == "Error" and "through `?`" in msg and stderr.strip():
                msg = " ".join(stderr.split())[-2000:]  # the error `?` returned, printed on stderr
            found.append(f"cell {i}: error {ename}: {msg[:2000]}")
    if "panicked at" in stderr:
        panic = stderr[stderr.index("panicked at") :].strip()
        found.append(f"cell {i}: panicked: {' '.join(panic.split())[:2000]}")
    if "plot" in cell.metadata.get("tags", []) and not any("image/png" in o.get("data", {}) for o in outputs):
        found.append(f"cell {i}: tagged 'plot' but produced no image/png output")
    return found


def problems_of(nb) -> list[str]:
    """What went wrong in an executed notebook, one line per problem (empty: all good)."""
    return [p for i, cell in enumerate(nb.cells) if cell.cell_type == "code" for p in cell_problems(cell, i)]


# A cell that cannot be run twice by design carries this tag and says why in a comment.
NO_RERUN = "no-rerun"


def rerun_problems(client, nb) -> list[str]:
    """Runs every code cell once more in the same kernel, as a student who goes back to a cell
    does, on a copy so that the first run's outputs stay. Last cell first: each cell meets the
    state the whole notebook left (and the cells below it), not a state that re-running the
    cells above it rebuilt, so a cell that moves what an earlier cell made is caught. A cell that
    ran clean the first time must run clean again; one that failed (a TODO) may fail again."""
    found = []
    for i, cell in reversed(list(enumerate(nb.cells))):
        if cell.cell_type != "code" or NO_RERUN in cell.metadata.get("tags", []):
            continue
        again = copy.deepcopy(cell)
        again.outputs = []
        client.execute_cell(again, i)
        nb.cells[i] = cell  # nbclient stores the cell it ran into the notebook: keep the first run's
        if not cell_problems(cell, i):
            found += [p.replace(f"cell {i}:", f"cell {i} (re-run):", 1) for p in cell_problems(again, i)]
    return found


def execute(nb, cwd: pathlib.Path, timeout: int = DEFAULT_TIMEOUT, rerun: bool = False):
    """Executes `nb` in place on the hw9 kernel with the working directory `cwd`.

    Runs every cell even after a failing one (as a student would), so that all problems are
    reported; a timeout or a dead kernel stops the run and is recorded on the cell. With
    `rerun`, then runs every cell once more (see `rerun_problems`); its problems read
    `cell N (re-run): ...`. Returns the list of problems.
    """
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    extra = []
    try:
        client.reset_execution_trackers()
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            if rerun:
                extra += rerun_problems(client, nb)
    except CellTimeoutError as e:
        extra.append(f"timed out (per-cell limit {timeout} s): {str(e).splitlines()[0]}")
    except DeadKernelError as e:
        extra.append(f"the kernel died: {e}")
    return problems_of(nb) + extra


def cell_seconds(cell) -> float | None:
    """Wall time of an executed cell from nbclient's timing metadata."""
    t = cell.metadata.get("execution", {})
    start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (start and end):
        return None
    from datetime import datetime

    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def code_notebook(*sources: str, tags: list[list[str]] | None = None):
    """An in-memory notebook of code cells on the hw9 kernel (tests and warm-up use it)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Rust (hw9)", "language": "rust"}
    for i, src in enumerate(sources):
        cell = nbformat.v4.new_code_cell(src)
        if tags and i < len(tags) and tags[i]:
            cell.metadata["tags"] = tags[i]
        nb.cells.append(cell)
    return nb


WARM_UP = code_notebook(
    ':dep hw9 = { path = ".." }',
    "use hw9::prelude::*;\n"
    'let warm = LineChart::new("warm-up").series("x", &[1.0, 2.0]).draw().map(|f| f.size());\n'
    'println!("{warm:?} {:?}", Tensor::ones([2], (Kind::Float, Device::Cpu)).sum(Kind::Float));',
    'println!("slot={}", std::env::var("EVCXR_TMPDIR").unwrap_or_default());',
)


def keep_seed(slot: pathlib.Path) -> pathlib.Path:
    """Copies the slot the warm-up built into `<slots>/seed`, the pristine warm build that the
    kernel launcher copies into every new slot. Holds the slot's lock while copying (no kernel
    writes into it meanwhile); replaces the old seed only once the copy is whole."""
    import fcntl
    import shutil
    import subprocess

    base = slot.parent
    with open(base / f"{slot.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = base / "seed.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(slot), str(tmp)], check=True)
        # Not worth copying into every new slot: rustc's incremental caches (a fresh slot's
        # fingerprints are checked, not rebuilt) and the compiled cells of past sessions.
        for junk in [*tmp.glob("target/*/debug/incremental"), *tmp.glob("target/debug/incremental")]:
            shutil.rmtree(junk, ignore_errors=True)
        for junk in tmp.glob("target/*/debug/libcode_*"):
            junk.unlink(missing_ok=True)
        shutil.rmtree(base / "seed", ignore_errors=True)
        tmp.rename(base / "seed")
    return base / "seed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=pathlib.Path)
    ap.add_argument("--warm-up", action="store_true", help="compile hw9 in the kernel's build folder")
    ap.add_argument("--out", type=pathlib.Path, help="write executed copies into this folder")
    ap.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="per-cell timeout in seconds")
    ap.add_argument("--rerun", action="store_true", help="then run every cell once more (it must run clean again)")
    args = ap.parse_args()
    if args.warm_up:
        nb = copy.deepcopy(WARM_UP)
        problems = execute(nb, ROOT / "notebooks", args.timeout)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            return 1
        said = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
        slot = pathlib.Path(said.split("slot=", 1)[-1].strip())
        if slot.name.startswith("slot-") and slot.is_dir():
            print(f"warm build kept as {keep_seed(slot)} (new kernel slots start from it)")
        return 0
    failed = 0
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        t0 = time.monotonic()
        problems = execute(nb, path.resolve().parent, args.timeout, args.rerun)
        took = time.monotonic() - t0
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.out / path.name)
        status = "FAILED" if problems else "ok"
        print(f"{status:6} {path} in {took:.1f} s")
        for i, cell in enumerate(nb.cells):
            s = cell_seconds(cell) if cell.cell_type == "code" else None
            if s is not None:
                print(f"       cell {i:2}: {s:6.2f} s  {cell.source.splitlines()[0][:60] if cell.source else ''}")
        for p in problems:
            print(f"  {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

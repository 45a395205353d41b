"""Shared by the notebook tests: each notebook is executed once per session (quick profile)."""

import functools
import os
import pathlib
import shutil
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import nbrun  # noqa: E402

os.environ["HW9_PROFILE"] = "quick"  # kernels inherit it
OUT = ROOT / "build" / "notebooks"


@functools.cache
def executed(path: pathlib.Path):
    """Executes the notebook at `path` in its own folder, then runs every cell once more (the
    re-run pass); returns (notebook, problems). Re-run problems read `cell N (re-run): ...`.
    The executed copy (first run's outputs) is kept under build/notebooks/ (solutions/ for
    solution sources)."""
    nb = nbformat.read(path, as_version=4)
    # Training state an earlier run saved (notebook 1 resumes from output/runs) would let this
    # run skip its training: each test trains from scratch; the re-run pass then loads the state.
    shutil.rmtree(path.parent / "output" / "runs", ignore_errors=True)
    problems = nbrun.execute(nb, path.parent, rerun=True)
    out = OUT / "solutions" if path.parent.name == "solutions" else OUT
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / path.name)
    return nb, problems

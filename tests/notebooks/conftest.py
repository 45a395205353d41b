"""Shared by the notebook tests: each notebook is executed once per session (quick profile), on a
copy in a temporary folder.

The notebooks under notebooks/ are the student's work (in the handout) or the course's sources (in
the repository): a test never runs them in place. It copies each into a folder of its own under a
temporary directory, with `:dep hw9 = { path = "…" }` pointed at this checkout (evcxr resolves a
relative path to the same absolute one, so the kernel's warm build is reused), and runs it there:
its training runs, figures, TensorBoard logs and submission land in that folder, which goes when
the session ends. Nothing under notebooks/ is written, moved or deleted.
"""

import atexit
import functools
import os
import pathlib
import re
import shutil
import sys
import tempfile

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import nbrun  # noqa: E402

os.environ["HW9_PROFILE"] = "quick"  # kernels inherit it
OUT = ROOT / "build" / "notebooks"
# The session's copies; removed at exit (the executed notebooks are kept under build/notebooks/).
WORK = pathlib.Path(tempfile.mkdtemp(prefix="hw9-notebook-tests-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)

DEP = re.compile(r':dep hw9 = \{ path = "[^"]*" \}')


def working_copy(path: pathlib.Path) -> pathlib.Path:
    """A copy of the notebook at `path` in a fresh folder of its own under WORK, its `:dep hw9`
    line pointing at this checkout. Returns the copy's path."""
    kind = "solutions" if path.parent.name == "solutions" else "notebooks"
    folder = WORK / f"{kind}-{path.stem}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = DEP.sub(lambda _: f':dep hw9 = {{ path = "{ROOT}" }}', cell.source)
    copy = folder / path.name
    nbformat.write(nb, copy)
    return copy


@functools.cache
def executed(path: pathlib.Path):
    """Executes a copy of the notebook at `path` (see `working_copy`), then runs every cell once
    more (the re-run pass); returns (notebook, problems, folder), `folder` being where the copy ran
    and wrote its outputs and submission. Re-run problems read `cell N (re-run): ...`. The executed
    copy (first run's outputs) is kept under build/notebooks/ (solutions/ for solution sources)."""
    copy = working_copy(path)
    nb = nbformat.read(copy, as_version=4)
    problems = nbrun.execute(nb, copy.parent, rerun=True)
    out = OUT / "solutions" if path.parent.name == "solutions" else OUT
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / path.name)
    return nb, problems, copy.parent

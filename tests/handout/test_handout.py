"""The student handout as a student and a TA meet it: unpacked from its .tar.gz on this machine,
`make test` passes inside it exactly as in the repository (setup, lint, cargo tests, the student
notebooks failing only at their TODOs), and the solution notebooks, run against the handout's
crate (no reference answers, public fixtures only), pass every public check.

`make test-handout` runs it (part of `make test`); it sets the handout up from scratch, so it takes
about 15 minutes on 2 cores and ~6 GB of disk, removed again when it passes. (`tests/handout.rs`
scans the handout for answers.)
"""

import os
import pathlib
import shutil
import subprocess
import tarfile
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "handout"
RUN = ROOT / "build" / "handout-run"
LOG = ROOT / "build" / "handout-make-test.log"
# What the repository's own make exports must not leak into the handout's.
LEAKS = [
    "HW9_ROOT",
    "JUPYTER_PATH",
    "LIBTORCH",
    "LD_LIBRARY_PATH",
    "CARGO_TARGET_DIR",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
]
LEAKS += ["VIRTUAL_ENV", "PYTHONPATH", "HW9_PROFILE"]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in LEAKS}


def test_the_unpacked_handout_passes_make_test_and_the_solutions_pass_its_public_checks():
    subprocess.run(["cargo", "run", "-q", "--bin", "hw9", "--", "handout", "--out", str(OUT)], cwd=ROOT, check=True)
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    with tarfile.open(OUT / "hw9-handout.tar.gz") as tar:
        tar.extractall(RUN, filter="data")
    handout = RUN / "hw9"
    assert not (handout / "notebooks" / "solutions").exists()

    t0 = time.monotonic()
    r = subprocess.run(["make", "test"], cwd=handout, env=clean_env(), capture_output=True, text=True, timeout=3600)
    # Kept (outside the run folder, which goes when the test passes) to see where the time went.
    LOG.write_text(
        f"make test in the handout: {time.monotonic() - t0:.0f} s, rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    )
    assert r.returncode == 0, f"make test in the handout failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert "passed" in r.stdout

    # A correct implementation filled in: the solution sources, run against the handout's crate.
    check = handout / "notebooks" / "solutions-check"
    check.mkdir()
    for nb in sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb")):
        shutil.copy(nb, check / nb.name)
    env = clean_env() | {"JUPYTER_PATH": str(handout / "jupyter"), "HW9_PROFILE": "quick"}
    notebooks = sorted(check.glob("*.ipynb"))
    r = subprocess.run(
        [str(handout / ".venv/bin/python"), str(handout / "tools/nbrun.py"), "--out", str(RUN / "executed")]
        + [str(p) for p in notebooks],
        cwd=handout,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, f"a solution notebook failed against the handout:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    passes = 0
    for p in notebooks:
        nb = nbformat.read(RUN / "executed" / p.name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and "rec.check(" in cell.source:
                text = "".join(o.get("text", "") for o in cell.get("outputs", []))
                assert "✗ FAIL" not in text, f"{p.name}: a public check failed with a correct implementation:\n{text}"
                passes += text.count("✓ PASS")
    assert passes >= 16, f"only {passes} public checks passed"
    # Passed: give the ~6 GB back (its venv, cargo target and kernel build folder); a failed run
    # stays for reading. CI's disk is shared and was once filled by this folder.
    shutil.rmtree(RUN)

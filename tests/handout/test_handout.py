"""The student handout as a student and a TA meet it: unpacked from its .tar.gz on this machine,
`make test` passes inside it (setup, lint, cargo tests, the student notebooks failing only at their
TODOs) and leaves every file of the student's unchanged; filled in with the solutions' code, as a
student who has done every TODO has it, `make test` passes again (every check passing) and still
touches nothing of the student's; and every command and file a student notebook names exists in
the handout and works there.

`make test-handout` runs it (part of `make test`); it sets the handout up from scratch, so it takes
about 20 minutes on 2 cores and ~6 GB of disk, removed again when it passes. (`tests/handout.rs`
scans the handout for answers.)
"""

import hashlib
import json
import os
import pathlib
import re
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


def tree_digest(folder: pathlib.Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def make_test(handout: pathlib.Path, what: str) -> str:
    """`make test` in the handout; its log is kept (outside the run folder, which goes when the test
    passes) to see where the time went."""
    t0 = time.monotonic()
    r = subprocess.run(["make", "test"], cwd=handout, env=clean_env(), capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    with LOG.open("a") as log:
        log.write(f"==== make test in the handout ({what}): {took:.0f} s, rc {r.returncode}\n{r.stdout}\n{r.stderr}\n")
    assert r.returncode == 0, f"make test in the handout ({what}) failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert "passed" in r.stdout
    return r.stdout


def student_work(notebooks: pathlib.Path):
    """What a student has beside the notebooks after working on them: a saved training run and a
    submission (made-up bytes: a test must leave them exactly as they are)."""
    (notebooks / "output" / "runs" / "ViT-0123abcd").mkdir(parents=True)
    (notebooks / "output" / "runs" / "ViT-0123abcd" / "state.safetensors").write_bytes(os.urandom(4096))
    (notebooks / "submission" / "01_vit_mae").mkdir(parents=True)
    (notebooks / "submission" / "01_vit_mae" / "hw9_submission.zip").write_bytes(b"PK" + os.urandom(1024))


def fill_todos(handout: pathlib.Path):
    """Every TODO cell of the handout's notebooks replaced by the solution source's cell (matched
    by cell id), as a student who has done them all saves the notebook."""
    filled = 0
    for student in sorted((handout / "notebooks").glob("*.ipynb")):
        solution = nbformat.read(ROOT / "notebooks" / "solutions" / student.name, as_version=4)
        by_id = {c.id: c for c in solution.cells}
        nb = nbformat.read(student, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and 'todo!("TODO:' in cell.source:
                answer = by_id[cell.id].source
                cell.source = re.sub(r"^\s*// (BEGIN|END) SOLUTION.*\n", "", answer, flags=re.M).replace(
                    ':dep hw9 = { path = "../.." }', ':dep hw9 = { path = ".." }'
                )
                filled += 1
        nbformat.write(nb, student)
    assert filled >= 16, f"only {filled} TODO cells filled"


def named_in_notebooks(handout: pathlib.Path) -> tuple[set[str], set[str], set[str]]:
    """The make targets, hw9 commands and files the student notebooks name."""
    targets, commands, files = set(), set(), set()
    spans = re.compile(r"`([^`\n]+)`|```[a-z]*\n(.*?)```", re.S)
    generated = ("output/", "submission/", "runs/", "written/", "build/", "~/", "http")
    for nb_path in sorted((handout / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            text = cell.source
            run = r"cargo run (?:--release )?(?:-q )?-- ([a-z][a-z-]*)"
            if cell.cell_type != "markdown":
                # Code names commands in its strings and comments; only `cargo run -- …` is one
                # unambiguously there (`// make sure` is no make target).
                commands.update(re.findall(run, text))
                continue
            for piece in [a or b for a, b in spans.findall(text)]:
                targets.update(re.findall(r"\bmake ([a-z][a-z-]*)", piece))
                commands.update(re.findall(run, piece))
                commands.update(re.findall(r"(?:^|\s)hw9 ([a-z][a-z-]*)", piece))
                if " " in piece.strip():
                    continue
                token = piece.strip()
                if token.startswith(generated):
                    continue
                top = ("assets/", "src/", "tests/", "tools/", "notebooks/", "jupyter/", "crates/")
                if token.startswith(top) or re.fullmatch(r"[A-Za-z_.-]+\.(md|rs|py|toml|sh)", token):
                    files.add(token)
    return targets, commands, files


def test_the_unpacked_handout_passes_make_test_fresh_and_filled_and_leaves_the_students_files_alone():
    subprocess.run(["cargo", "run", "-q", "--bin", "hw9", "--", "handout", "--out", str(OUT)], cwd=ROOT, check=True)
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    LOG.write_text("")
    with tarfile.open(OUT / "hw9-handout.tar.gz") as tar:
        tar.extractall(RUN, filter="data")
    handout = RUN / "hw9"
    notebooks = handout / "notebooks"
    assert not (notebooks / "solutions").exists()

    # Fresh, with a student's saved run and submission beside the notebooks.
    student_work(notebooks)
    before = tree_digest(notebooks)
    make_test(handout, "fresh")
    assert tree_digest(notebooks) == before, "make test changed the student's files under notebooks/"

    # Every command and file the notebooks name exists in the handout and works there.
    targets, commands, files = named_in_notebooks(handout)
    assert {"written", "doctor", "tensorboard"} <= targets and "train-gpt" in commands, (targets, commands)
    env = clean_env()
    for t in sorted(targets):
        r = subprocess.run(["make", "-n", t], cwd=handout, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"a notebook names `make {t}`, which the handout's Makefile lacks: {r.stderr}"
    hw9 = handout / "target" / "debug" / "hw9"
    lib = handout / ".venv/lib/python3.11/site-packages/torch/lib"
    for c in sorted(commands):
        r = subprocess.run(
            [str(hw9), c, "--help"],
            cwd=handout,
            env=env | {"LD_LIBRARY_PATH": str(lib)},
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, f"a notebook names `hw9 {c}`, which the handout's hw9 lacks: {r.stderr[-1000:]}"
    missing = sorted(f for f in files if not (handout / f).exists())
    assert not missing, f"the notebooks name files the handout does not have: {missing}"

    # Filled in: every TODO done, as the student saves it; make test passes and every check does.
    fill_todos(handout)
    before = tree_digest(notebooks)
    make_test(handout, "every TODO filled")
    assert tree_digest(notebooks) == before, "make test changed the student's filled-in notebooks"
    executed = handout / "build" / "notebooks"
    passes = 0
    for p in sorted(notebooks.glob("*.ipynb")):
        nb = json.loads((executed / p.name).read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and "rec.check(" in "".join(cell["source"]):
                text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
                assert "✗ FAIL" not in text, f"{p.name}: a check failed with the solutions filled in:\n{text}"
                passes += text.count("✓ PASS")
    assert passes >= 20, f"only {passes} checks passed with every TODO filled"
    # Passed: give the ~6 GB back (its venv, cargo target and kernel build folder); a failed run
    # stays for reading. CI's disk is shared and was once filled by this folder.
    shutil.rmtree(RUN)

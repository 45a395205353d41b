"""The assignment pipeline end to end, for every notebook that has a solution source:
the solution runs clean (quick profile), every cell of it runs clean a second time (the re-run
pass), and its submission grades full; the generated student version fails only at its TODOs,
each with its own message, and still writes a submission. Every notebook runs on a copy in a
temporary folder (conftest): the files under notebooks/ are never written.
"""

import pathlib
import re
import subprocess

import nbformat
import nbrun
import pytest
from conftest import ROOT, executed

SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
# The student notebooks: in the repository, one per solution source; in the student handout (which
# has no solutions and no autograder expected outputs), the notebooks it ships.
STUDENTS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HANDOUT = not (ROOT / "notebooks" / "solutions").exists()


def grade(zip_path: pathlib.Path) -> str:
    r = subprocess.run(
        # The outputs the notebook recorded, as a student checks their own work (the handout has
        # no hidden cases to re-run on); grading by re-running has its own tests (tests/rerun.rs).
        ["cargo", "run", "-q", "--bin", "hw9", "--", "grade", "--read-outputs", str(zip_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))


@pytest.mark.parametrize("source", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_runs_clean_and_its_submission_grades_full(source):
    nb, problems, folder = executed(source)
    assert problems == []
    report = grade(folder / "submission" / source.stem / "hw9_submission.zip")
    passed, total = map(int, re.search(r"(\d+)/(\d+) checks passed", report).groups())
    has_checks = any("rec.check(" in c.source for c in nb.cells if c.cell_type == "code")
    assert passed == total and (total > 0) == has_checks, report


def todo_caused(problem: str) -> bool:
    """A problem an unfilled TODO explains: its panic, or an error or a missing figure for want of
    what the TODO's cell would have made."""
    return "TODO: " in problem or " error " in problem or "no image/png" in problem


@pytest.mark.parametrize("student", STUDENTS, ids=lambda p: p.stem)
def test_student_version_fails_only_at_its_todos(student):
    """In the repository: the generated student version fails at each TODO and only there. In the
    student handout, the same notebook as the student has it (on a copy: see conftest): every TODO
    still open fails only there, and every one filled in runs clean and passes its check."""
    nb, problems, folder = executed(student)
    # Every cell that ran clean runs clean again (the TODO cells fail again, as they should).
    assert [p for p in problems if "(re-run)" in p] == []
    hints = re.findall(r'todo!\("(TODO: [^"]*)"\)', "\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    checked = set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        one = nbformat.v4.new_notebook(cells=[cell])
        problems = nbrun.problems_of(one)
        if "needs-todo" in cell.metadata.get("tags", []):
            # Waits for a TODO: as generated it fails (else the tag is wrong), but only because of one.
            if not HANDOUT:
                assert problems, f"cell {i} is tagged needs-todo but ran clean in the student version"
            for p in problems:
                assert todo_caused(p), f"cell {i}: {p}"
            continue
        assert problems == [], f"cell {i} does not depend on a TODO but failed: {problems}"
        text = outputs_text(cell)
        if "rec.check(" in cell.source:
            # Each check line: a pass (a TODO filled in) or the TODO's own "not implemented yet"
            # reported as a failure, not a crash. Generated, every check reports its TODO.
            lines = [line for line in text.splitlines() if line.startswith(("✓ PASS", "✗ FAIL"))]
            assert lines, f"cell {i} printed no check line: {text!r}"
            for line in lines:
                ok = line.startswith("✓ PASS") or "not implemented yet (TODO: " in line
                assert ok, f"cell {i}: a check fails with code filled in: {line}"
            if not HANDOUT:
                assert "✗ FAIL" in text and "not implemented yet (TODO: " in text, f"cell {i}: {text!r}"
            checked.update(h for h in hints if h in text)
    assert checked == set(hints), f"TODOs whose check never reported them: {set(hints) - checked}"
    zip_path = folder / "submission" / student.stem / "hw9_submission.zip"
    assert zip_path.exists(), "the student version wrote no submission"
    if not HANDOUT:  # the handout cannot grade: it has no autograder expected outputs
        report = grade(zip_path)
        assert re.search(r": 0/\d+ checks passed", report), report
    source = ROOT / "notebooks" / "solutions" / student.name
    if source.exists():
        solution = nbformat.read(source, as_version=4)
        if any("BEGIN SOLUTION" in c.source for c in solution.cells if c.cell_type == "markdown"):
            assert any("Your answer:" in c.source for c in nb.cells if c.cell_type == "markdown"), (
                "written answers left"
            )

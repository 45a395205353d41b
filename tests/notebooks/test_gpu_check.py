"""tools/gpu_check.py (issue 31, item 4) without a GPU: its dry run builds hw9, times one small step
of each benchmark, runs notebooks 1 and 2 in the quick profile on copies under build/gpu-run/, and
writes a summary that says it is a dry run. Repository only (the handout has no solution sources)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

HANDOUT = not (ROOT / "notebooks" / "solutions").exists()


@pytest.mark.skipif(HANDOUT, reason="the GPU check runs the solution sources: repository only")
def test_gpu_check_dry_run_runs_every_step_and_says_it_is_no_benchmark(tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "notebooks").rglob("*.ipynb")}
    r = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--dry-run", "--budget", "900", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and summary["dry_run"] and summary["profile"] == "quick"
    figures = summary["benches"]["hw9 ViT/MAE"]["figures"] | summary["benches"]["hw9 summarizer"]["figures"]
    assert set(figures) == {"ViT cpu", "MAE cpu", "ViT full", "MAE full", "summarizer cpu", "summarizer full"}
    assert all(seconds > 0 for seconds in figures.values()), figures
    for name in ["01_vit_mae", "02_summarization"]:
        result = summary["notebooks"][name]
        assert result["ok"] and result["problems"] == [], result
        assert result["checks"] and all(c.startswith("✓ PASS") for c in result["checks"]), result["checks"]
        assert (tmp_path / f"{name}.ipynb").exists()
    md = (tmp_path / "summary.md").read_text()
    assert "A dry run" in md and "no benchmark" in md
    # The sources were only read: the runs happened on copies.
    assert before == {p: p.stat().st_mtime_ns for p in (ROOT / "notebooks").rglob("*.ipynb")}

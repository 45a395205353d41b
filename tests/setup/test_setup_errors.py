"""`make setup` on a broken machine stops at the failing step and says what is wrong and how to fix it.

Each test runs tools/setup.sh in a scratch copy of the repository's setup files, so the real
.venv is never touched, and each failure happens before anything heavy is installed.
"""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def scratch(tmp_path: pathlib.Path) -> pathlib.Path:
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "setup.sh", repo / "tools" / "setup.sh")
    for f in ["requirements.txt", "requirements-nodeps.txt"]:
        shutil.copy(ROOT / f, repo / f)
    return repo


def run_setup(repo: pathlib.Path, env: dict | None = None):
    e = {**os.environ, "HW9_CACHE": str(repo / "cache"), **(env or {})}
    return subprocess.run(["bash", "tools/setup.sh"], cwd=repo, env=e, capture_output=True, text=True, timeout=300)


def test_another_torch_in_the_venv_stops_setup_with_the_fix(tmp_path):
    repo = scratch(tmp_path)
    site = repo / ".venv" / "lib" / "python3.11" / "site-packages" / "torch"
    site.mkdir(parents=True)
    (site / "version.py").write_text("__version__ = '2.5.1+cpu'\n")
    (repo / ".venv" / "bin").mkdir()
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    r = run_setup(repo)
    assert r.returncode == 1
    assert 'setup FAILED at step "venv": another torch (2.5.1+cpu) is installed in .venv' in r.stderr
    assert "fix: rm -rf .venv && make setup" in r.stderr


def test_no_route_to_the_registry_is_named(tmp_path):
    repo = scratch(tmp_path)
    r = run_setup(repo, {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_CACHE_DIR": "1"})
    assert r.returncode == 1
    assert 'setup FAILED at step "venv": pip could not reach the package registry (PyPI)' in r.stderr, r.stderr
    assert "PIP_INDEX_URL" in r.stderr


def test_missing_python_venv_module_is_named(tmp_path):
    repo = scratch(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    # A python3 without venv/ensurepip, as on Debian without python3-venv.
    fake = fake_bin / "python3"
    fake.write_text(f'#!/bin/sh\ncase "$*" in *"import venv"*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    (fake_bin / "python3.11").symlink_to(fake)
    r = run_setup(repo, {"PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert r.returncode == 1
    assert 'setup FAILED at step "prereqs": Python\'s venv/ensurepip module is missing' in r.stderr
    assert "sudo apt-get install python3-venv" in r.stderr

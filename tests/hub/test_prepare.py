"""The hub's per-student preparation (deploy/hw9_hub.py) on a small fake course, as root: it runs
as root inside folders the student owns, so nothing a student plants there (symlinks to files
they may not write) may redirect its writes; and it seeds, links and reseeds as documented."""

from __future__ import annotations

import os
import pathlib
import pwd
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from hubclient import ensure_account, hw9_hub  # noqa: E402

STUDENT = "hw9t-mallory"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="prepares folders for another Unix account: run as root")


@pytest.fixture
def course(tmp_path):
    ensure_account(STUDENT)
    tmp_path.chmod(0o755)
    c = tmp_path / "course"
    (c / "notebooks").mkdir(parents=True)
    (c / "Cargo.toml").write_text("[package]\n")
    (c / "notebooks/00_setup_check.ipynb").write_text('{"cells": []}')
    deps = c / ".cache/evcxr/seed/target/x86_64-unknown-linux-gnu/debug/deps"
    deps.mkdir(parents=True)
    (deps / "libtorch_sys-0123456789abcdef.rlib").write_bytes(b"\0" * 300_000)  # an artefact: linked
    (deps / "libctx.so").write_bytes(b"\0" * 300_000)  # evcxr's own crate: copied
    (c / ".cache/evcxr/seed/Cargo.toml").write_text("[package]\nname = 'ctx'\n")
    (c / ".cache/evcxr/warm.stamp").write_text("1\n")
    for p in [c, *c.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (tmp_path / "builds").mkdir(mode=0o755)
    return c


def test_seeds_links_copies_and_leaves_the_students_work_alone(course):
    pw = pwd.getpwnam(STUDENT)
    builds = course.parent / "builds"
    done = hw9_hub.prepare_student(course, builds, STUDENT, pw.pw_uid, pw.pw_gid)
    assert done["copied_notebooks"] == ["00_setup_check.ipynb"] and done["slot"] == "seeded", done
    seed_rlib = next(course.rglob("seed/**/libtorch_sys-*.rlib"))
    slot = builds / STUDENT / "slot-0"
    rel = seed_rlib.relative_to(course / ".cache/evcxr/seed")
    assert (slot / rel).stat().st_ino == seed_rlib.stat().st_ino, "the artefact is a hard link"
    ctx = slot / rel.parent / "libctx.so"
    assert ctx.stat().st_ino != (seed_rlib.parent / "libctx.so").stat().st_ino and ctx.stat().st_uid == pw.pw_uid
    ws = hw9_hub.workspace(course, STUDENT)
    assert ws.stat().st_uid == pw.pw_uid and ws.stat().st_mode & 0o777 == 0o700

    (ws / "00_setup_check.ipynb").write_text("my work")
    again = hw9_hub.prepare_student(course, builds, STUDENT, pw.pw_uid, pw.pw_gid)
    assert again == {"copied_notebooks": [], "slot": "up to date"}, again
    assert (ws / "00_setup_check.ipynb").read_text() == "my work"

    # A new warm build (a new handout): the slot is reseeded at the next login.
    seed = course / ".cache/evcxr/seed"
    os.rename(seed, seed.with_name("old"))
    os.rename(seed.with_name("old"), seed.with_name("seed.new"))
    os.rename(seed.with_name("seed.new"), seed)
    (course / ".cache/evcxr/warm.stamp").write_text("2\n")
    assert hw9_hub.prepare_student(course, builds, STUDENT, pw.pw_uid, pw.pw_gid)["slot"].startswith("reseeded")


def test_planted_symlinks_do_not_redirect_roots_writes(course, tmp_path):
    pw = pwd.getpwnam(STUDENT)
    builds = course.parent / "builds"
    hw9_hub.prepare_student(course, builds, STUDENT, pw.pw_uid, pw.pw_gid)
    ws, mine = hw9_hub.workspace(course, STUDENT), builds / STUDENT
    # What a student could plant in their own folders, aiming at files only root may write.
    target_nb, target_slot = tmp_path / "root-only-nb", tmp_path / "root-only-dir"
    target_slot.mkdir(mode=0o700)
    (ws / "00_setup_check.ipynb").unlink()
    (ws / "00_setup_check.ipynb").symlink_to(target_nb)  # dangling: a copy would create it
    (course / "notebooks/01_new.ipynb").write_text("{}")
    (ws / "01_new.ipynb").symlink_to(tmp_path / "root-only-new")
    for p in (mine / "slot-0", mine / "slot-0.lock"):
        hw9_hub._remove(p)
    (mine / "slot-0").symlink_to(target_slot)
    (mine / "slot-0.lock").symlink_to(tmp_path / "root-only-lock")
    with pytest.raises(hw9_hub.PrepareError, match="not a plain file"):
        hw9_hub.prepare_student(course, builds, STUDENT, pw.pw_uid, pw.pw_gid)
    (mine / "slot-0.lock").unlink()
    done = hw9_hub.prepare_student(course, builds, STUDENT, pw.pw_uid, pw.pw_gid)
    assert not target_nb.exists() and not (tmp_path / "root-only-new").exists(), "root wrote through a symlink"
    assert not (tmp_path / "root-only-lock").exists()
    assert list(target_slot.iterdir()) == [], "root seeded into the symlink's target"
    assert done["slot"] == "seeded" and (mine / "slot-0").is_dir() and not (mine / "slot-0").is_symlink()
    assert not list(builds.glob(".staging-*")), "the staging folder is left behind"


def test_names_that_cannot_be_folders_are_refused():
    for bad in ["../etc", "Alice", "a/b", "", "x" * 40]:
        with pytest.raises(hw9_hub.PrepareError, match="username"):
            hw9_hub.check_name(bad)

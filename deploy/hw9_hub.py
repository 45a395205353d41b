"""What the hub does for each student before their server starts (jupyterhub_config.py's
pre_spawn_hook, run as root in the hub's process; also usable alone: see `main`).

A course's files live in one folder, the set-up student handout (`course/`, root's, read-only for
students). Each student gets:

- `course/student-<name>/`: their own folder (mode 0700), where JupyterLab opens, holding copies of
  the handout's notebooks (copied when missing, never overwritten: their work stays theirs). It
  sits directly inside the course because the notebooks load the crate with
  `:dep hw9 = { path = ".." }`: `..` must be the course's crate for every student, so that cargo
  sees the crate the warm build was compiled from and compiles nothing again.
- `builds/<name>/`: their own kernel build folders (mode 0700), the kernel launcher's
  `HW9_EVCXR_DIR`. Slot 0 is seeded from the course's warm build: the large compiled artefacts
  (tch, torch-sys, hw9, …) are hard links to the course's root-owned, read-only files (no copy, no
  disk), everything small (fingerprints, evcxr's own crate) is a private copy the student owns.
  The kernel cannot write into a linked artefact (it is root's and read-only to the student), so
  the course's copy stays intact whatever the student's builds do.
  Linking needs root (fs.protected_hardlinks): that is why the hub seeds slot 0, not the kernel.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import re
import shutil
import sys

# Hard-linked: the dependencies' compiled artefacts (cargo names them `lib<crate>-<hash>.rlib`,
# `.rmeta`, `.so`) and their build scripts' outputs (`build/<crate>-<hash>/out/`: torch-sys's
# compiled C++), when at least this large. Never evcxr's own crate (`libctx.so`, `libcode_N.so`),
# which every cell rewrites.
LINK_MIN_BYTES = 256 * 1024
ARTEFACT = re.compile(r"^lib[a-z0-9_]+-[0-9a-f]{16}\.(rlib|rmeta|so)$")


def linkable(rel: pathlib.PurePath, size: int) -> bool:
    if size < LINK_MIN_BYTES:
        return False
    parts = rel.parts
    if len(parts) >= 2 and parts[-2] == "deps" and ARTEFACT.match(parts[-1]):
        return True
    return "build" in parts and "out" in parts[parts.index("build") :]


# What JupyterHub usernames may be here: they become folder names and Unix user names.
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
STAMP = ".hw9-seed"


class PrepareError(RuntimeError):
    """A student's folders could not be prepared; the message says what and how to fix it."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise PrepareError(
            f"username {name!r} cannot name a folder and a Unix account: expected lowercase letters, "
            "digits, '_' or '-', starting with a letter or '_', at most 32 characters"
        )
    return name


def workspace(course: pathlib.Path, name: str) -> pathlib.Path:
    """The student's own folder inside the course (JupyterLab's root for them)."""
    return course / f"student-{check_name(name)}"


def seed_stamp(seed: pathlib.Path) -> str:
    """Identifies one warm build of the course: a new setup (a new handout) changes it."""
    st = seed.stat()
    warm = seed.parent / "warm.stamp"
    text = warm.read_text().strip() if warm.exists() else ""
    return f"{text}:{st.st_mtime_ns}:{st.st_ino}"


def _chown(path: pathlib.Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.lchown(path, uid, gid)


def _remove(path: pathlib.Path) -> None:
    """Removes a file, a symlink (never what it points to) or a folder tree."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path)


def seed_slot(seed: pathlib.Path, slot: pathlib.Path, uid: int, gid: int, staging: pathlib.Path) -> dict:
    """Fills the folder `slot` from `seed`: large files hard-linked (a copy when the link fails:
    another filesystem, or not root), the rest copied and owned by uid:gid. Everything is built in
    `staging`, a folder the student cannot write to (root writes nothing through a path the
    student controls: no symlink of theirs can redirect it), then renamed into place, so a
    half-seeded slot is never used. Returns counts and bytes."""
    tmp = staging
    _remove(tmp)
    linked = copied = linked_bytes = copied_bytes = 0
    for dirpath, _dirnames, filenames in os.walk(seed):
        src_dir = pathlib.Path(dirpath)
        dst_dir = tmp / src_dir.relative_to(seed)
        dst_dir.mkdir(parents=True, exist_ok=True)
        shutil.copystat(src_dir, dst_dir)
        _chown(dst_dir, uid, gid)
        for f in filenames:
            src, dst = src_dir / f, dst_dir / f
            st = src.lstat()
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                _chown(dst, uid, gid)
                continue
            if linkable(src.relative_to(seed), st.st_size):
                try:
                    os.link(src, dst)
                    linked += 1
                    linked_bytes += st.st_size
                    continue
                except OSError:
                    pass
            shutil.copy2(src, dst)
            _chown(dst, uid, gid)
            copied += 1
            copied_bytes += st.st_size
    (tmp / STAMP).write_text(seed_stamp(seed))
    _chown(tmp / STAMP, uid, gid)
    _remove(slot)
    os.rename(tmp, slot)  # replaces a symlink of theirs, never follows it; a folder made meanwhile: refused
    return {"linked": linked, "linked_bytes": linked_bytes, "copied": copied, "copied_bytes": copied_bytes}


def prepare_student(course: pathlib.Path, builds: pathlib.Path, name: str, uid: int, gid: int) -> dict:
    """Creates (or brings up to date) the student's folder and kernel build folder. Idempotent;
    never overwrites a notebook the student has; reseeds slot 0 only when the course's warm build
    changed and no kernel holds the slot. Returns what it did."""
    check_name(name)
    seed = course / ".cache" / "evcxr" / "seed"
    if not (course / "Cargo.toml").exists() or not seed.is_dir():
        raise PrepareError(
            f"{course} is not a set-up hw9 handout (no Cargo.toml or no warm kernel build in .cache/evcxr/seed): "
            "run deploy/setup-hub.sh"
        )
    done: dict = {"copied_notebooks": []}
    ws = workspace(course, name)
    ws.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ws, 0o700)
    _chown(ws, uid, gid)
    for src in sorted((course / "notebooks").glob("*.ipynb")):
        dst = ws / src.name
        if os.path.lexists(dst):
            continue  # theirs (a file, or anything else they put there): left alone
        try:  # created exclusively, never through a symlink: the folder is the student's
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(src.read_bytes())
            if os.geteuid() == 0:
                os.fchown(out.fileno(), uid, gid)
        done["copied_notebooks"].append(src.name)

    mine = builds / name
    mine.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(mine, 0o700)
    _chown(mine, uid, gid)
    slot = mine / "slot-0"
    lock_path = mine / "slot-0.lock"
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise PrepareError(f"{lock_path} is not a plain file ({e}): remove it, then log in again") from e
    with os.fdopen(fd, "a") as lock:
        if os.geteuid() == 0:
            os.fchown(lock.fileno(), uid, gid)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            done["slot"] = "in use by a running kernel: left as it is"
            return done
        want = seed_stamp(seed)
        stamp = slot / STAMP
        have = stamp.read_text() if stamp.is_file() and not stamp.is_symlink() and not slot.is_symlink() else None
        if have == want:
            done["slot"] = "up to date"
        else:
            done["slot"] = "seeded" if have is None else "reseeded (the course's warm build changed)"
            done.update(seed_slot(seed, slot, uid, gid, builds / f".staging-{name}"))
    return done


def processes_of(uid: int) -> list[int]:
    """The pids of uid's live processes (zombies left out)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        pids.append(int(pid))
    return pids


def kernels_of(course: pathlib.Path, uid: int) -> list[int]:
    """uid's running hw9 kernels: processes of the course's evcxr_jupyter (kernel and child)."""
    tools = (course / ".tools").resolve()
    pids = []
    for pid in processes_of(uid):
        try:
            if tools in pathlib.Path(os.readlink(f"/proc/{pid}/exe")).parents:
                pids.append(pid)
        except OSError:
            continue
    return pids


def reap_kernels(course: pathlib.Path, uid: int) -> list[int]:
    """Kills the hw9 kernels still running as uid: after a server stops, none of its kernels
    should outlive it (each holds over a gigabyte). Returns their pids."""
    import signal

    killed = []
    for pid in kernels_of(course, uid):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def main() -> None:
    """`python deploy/hw9_hub.py COURSE BUILDS USER`: prepares one student by hand (as root)."""
    import pwd

    if len(sys.argv) != 4:
        sys.exit("usage: hw9_hub.py COURSE BUILDS USER")
    course, builds, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    pw = pwd.getpwnam(name)
    print(prepare_student(course, builds, name, pw.pw_uid, pw.pw_gid))


if __name__ == "__main__":
    main()

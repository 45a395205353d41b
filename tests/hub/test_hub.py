"""hw9 under JupyterHub, for real (`make test-hub`, part of `make test` where node/npm are present).

deploy/setup-hub.sh prepares a hub root (HW9_HUB_TEST_ROOT, default /srv/hw9-hub-test: kept between
runs, like the other caches outside the clone) from the student handout; this test starts that
hub (JupyterHub, configurable-http-proxy, the local spawner) on free ports with the test
authenticator, creates two students through the REST API, logs them in through the login form,
and, through the proxy, as each student: solves the setup-check notebook (the solution's cells
uploaded through the contents API), runs it on the hw9 kernel over the kernel's websocket and
checks its outputs and submission. Then: a student's kernel cannot read the other's folder or
write into the course or the shared build; a student's login or token cannot reach the other's
server; a stopped server's work is there when it starts again and none of its kernels outlived
it; the idle culler runs with the rights it needs. Needs root (the students are Unix accounts);
skipped otherwise, with the reason.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from hubclient import Hub, Server, ensure_account, hw9_hub, solved_setup_check  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
HUB_ROOT = pathlib.Path(os.environ.get("HW9_HUB_TEST_ROOT", "/srv/hw9-hub-test"))
COURSE = HUB_ROOT / "course"
STUDENTS = ["hw9t-alice", "hw9t-bob"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the hub test creates Unix accounts: run it as root")


@pytest.fixture(scope="module")
def hub():
    assert (HUB_ROOT / "start-hub").exists(), f"{HUB_ROOT} is not set up: make test-hub runs deploy/setup-hub.sh first"
    for name in STUDENTS:
        ensure_account(name)
        # A first login each run: the student's folder and build folder are created and seeded.
        shutil.rmtree(COURSE / f"student-{name}", ignore_errors=True)
        shutil.rmtree(HUB_ROOT / "builds" / name, ignore_errors=True)
    (HUB_ROOT / "state" / "jupyterhub.sqlite").unlink(missing_ok=True)
    h = Hub(HUB_ROOT, STUDENTS)
    try:
        h.add_users(STUDENTS)
        yield h
    finally:
        for name in STUDENTS:
            try:
                h.stop(name)
            except Exception:
                pass
        h.close()


def kernels_of(name: str) -> list[int]:
    """The pids of the hw9 kernels running as the student."""
    return hw9_hub.kernels_of(COURSE, pwd.getpwnam(name).pw_uid)


def run_notebook(server: Server, path: str) -> list[dict]:
    """Runs every code cell of the student's notebook (read back from their server) in order."""
    r = server.get(f"/api/contents/{path}")
    assert r.status_code == 200, r.text
    cells = [c for c in r.json()["content"]["cells"] if c["cell_type"] == "code"]
    kernel = server.kernel(path)
    try:
        results = []
        for cell in cells:
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            res = kernel.execute(src)
            res["source"] = src
            results.append(res)
            assert res["status"] == "ok", f"{server.name}: cell failed:\n{src}\n{res['text'][-3000:]}"
            assert "panicked at" not in res["text"], f"{server.name}: cell panicked:\n{src}\n{res['text'][-3000:]}"
        return results
    finally:
        kernel.close()


def test_two_students_log_in_run_the_setup_check_and_stay_apart(hub):
    # Logging in through the form: the right password works, a wrong one does not.
    assert hub.login(STUDENTS[0], "wrong").login_status == 403
    sessions = {n: hub.login(n) for n in STUDENTS}
    assert all(s.login_status == 302 for s in sessions.values()), {n: s.login_status for n, s in sessions.items()}

    seed = COURSE / ".cache/evcxr/seed/target"
    torch_sys = sorted(seed.glob("*/debug/deps/libtorch_sys-*.rlib"))
    assert torch_sys, f"no compiled torch-sys in the course's warm build {seed}"
    seed_inode = torch_sys[0].stat().st_ino

    servers, first_cell = {}, {}
    for name in STUDENTS:
        spawn = hub.start(name)
        token = hub.user_token(name)
        server = servers[name] = Server(hub, name, token)
        listing = server.get("/api/contents/").json()
        names = {item["name"] for item in listing["content"]}
        assert "00_setup_check.ipynb" in names and "04_facenet.ipynb" in names, names
        ws = COURSE / f"student-{name}"
        assert ws.stat().st_uid == pwd.getpwnam(name).pw_uid and ws.stat().st_mode & 0o077 == 0

        server.put_notebook("00_setup_check.ipynb", solved_setup_check(REPO))
        results = run_notebook(server, "00_setup_check.ipynb")
        first_cell[name] = results[0]["seconds"]
        print(f"{name}: server ready in {spawn:.1f} s, first cell (:dep hw9) {results[0]['seconds']:.1f} s")
        text = "".join(r["text"] for r in results)
        assert text.count("✓ PASS") >= 2 and "✗ FAIL" not in text, text[-3000:]
        r = server.get("/api/contents/submission/00_setup_check/hw9_submission.zip", params={"content": "0"})
        assert r.status_code == 200, f"{name}: no submission zip: {r.text}"

        # The warm build was used, not rebuilt: the student's slot still links the course's torch-sys.
        slot_rlib = HUB_ROOT / "builds" / name / "slot-0" / torch_sys[0].relative_to(COURSE / ".cache/evcxr/seed")
        assert slot_rlib.stat().st_ino == seed_inode, f"{name}'s kernel recompiled torch-sys"
        # (The first cell's time is a benchmark figure, not asserted here: tools/bench_hub.py.)

    # Apart: through the proxy, a student's token and login reach only their own server.
    alice, bob = STUDENTS
    assert servers[alice].get("/api/contents/").status_code == 200
    r = Server(hub, bob, servers[alice].token).get("/api/contents/")
    assert r.status_code in (403, 404), f"{alice}'s token reached {bob}'s server: {r.status_code}"
    # In the browser: alice's login opens her JupyterLab (the hub's OAuth hands her server a
    # cookie) and its API with the page's XSRF token, and is refused bob's.
    page = sessions[alice].get(f"{hub.url}/user/{alice}/lab", timeout=60)
    assert page.status_code == 200 and "jupyter-config-data" in page.text, f"{alice}'s JupyterLab: {page.status_code}"
    xsrf = sessions[alice].cookies.get("_xsrf", path=f"/user/{alice}/")
    r = sessions[alice].get(f"{hub.url}/user/{alice}/api/contents/", headers={"X-XSRFToken": xsrf or ""}, timeout=60)
    assert r.status_code == 200 and "00_setup_check.ipynb" in r.text, f"{alice}'s files with her login: {r.status_code}"
    r = sessions[alice].get(f"{hub.url}/user/{bob}/lab", timeout=60)
    assert r.status_code == 403, f"{alice}'s login opened {bob}'s JupyterLab: {r.status_code} {r.url}"
    r = sessions[alice].get(f"{hub.url}/user/{bob}/api/contents/", timeout=60)
    assert r.status_code == 403 and "00_setup_check" not in r.text, f"{alice}'s login reached {bob}'s files"

    # Apart on disk: alice's kernel cannot read bob's folders nor write into the course or the shared build.
    linked = HUB_ROOT / "builds" / alice / "slot-0" / torch_sys[0].relative_to(COURSE / ".cache/evcxr/seed")
    probe = (
        "use std::io::ErrorKind;\n"
        f'for p in ["{COURSE}/student-{bob}", "{HUB_ROOT}/builds/{bob}"] {{\n'
        '    println!("read {p}: {:?}", std::fs::read_dir(p).map(|_| ()).map_err(|e| e.kind()));\n'
        "}\n"
        f'println!("write course: {{:?}}", std::fs::write("{COURSE}/src/lib.rs", "").map_err(|e| e.kind()));\n'
        'println!("write shared artefact: {:?}", std::fs::OpenOptions::new().append(true)'
        f'.open("{linked}").map(|_| ()).map_err(|e| e.kind()));\n'
    )
    kernel = servers[alice].kernel("probe.ipynb")
    try:
        out = kernel.execute(':dep hw9 = { path = ".." }')
        assert out["status"] == "ok", out["text"]
        out = kernel.execute(probe)
    finally:
        kernel.close()
    lines = [ln for ln in out["text"].splitlines() if ln.startswith(("read ", "write "))]
    assert len(lines) == 4 and all(ln.endswith("Err(PermissionDenied)") for ln in lines), out["text"]

    # A stopped server's work is there when it starts again, and nothing overwrote it; none of
    # its kernels outlived it (each holds over a gigabyte).
    hub.stop(alice)
    assert not kernels_of(alice), f"{alice}'s kernels still run after her server stopped: {kernels_of(alice)}"
    hub.start(alice)
    server = Server(hub, alice, servers[alice].token)
    nb = server.get("/api/contents/00_setup_check.ipynb").json()["content"]
    sources = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert 'todo!("TODO' not in sources, "the restarted server shows the unsolved notebook"
    r = server.get("/api/contents/submission/00_setup_check/hw9_submission.zip", params={"content": "0"})
    assert r.status_code == 200, "the submission is gone after a restart"
    print("first cells:", {n: round(s, 1) for n, s in first_cell.items()})

    # The idle culler runs as the hub's service, and its first pass over the users was allowed.
    services = hub.api("GET", "/services").json()
    assert "idle-culler" in services, services
    culler = [
        p
        for p in filter(str.isdigit, os.listdir("/proc"))
        if b"jupyterhub_idle_culler" in pathlib.Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    assert culler, "the idle culler is not running"
    log = hub.log_tail(100000)
    refused = [ln for ln in log.splitlines() if "idle-culler" in ln and (" 403 " in ln or "Forbidden" in ln)]
    assert not refused, refused

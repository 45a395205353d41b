"""A small client of hw9's JupyterHub, the way a browser uses it: the hub's REST API (users,
servers, tokens), the login form, and a student's Jupyter server through the proxy (contents
API, sessions, and the kernel's websocket with the Jupyter messaging protocol). Used by
tests/hub/test_hub.py (make test-hub) and tools/bench_hub.py (the load benchmark)."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import pwd
import signal
import socket
import subprocess
import sys
import time
import uuid

import requests
import websocket

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "deploy"))
import hw9_hub  # noqa: E402, F401  (re-exported: the process helpers the tests and the bench use)


def ensure_account(name: str) -> pwd.struct_passwd:
    """The Unix account of a test student, created (with a home) when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        return pwd.getpwnam(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def solved_setup_check(repo: pathlib.Path) -> dict:
    """The setup-check notebook as a student who solved it hands it in: the solution's cells
    (the solutions sit one folder deeper, in notebooks/solutions/: the crate is `..` for students)."""
    nb = json.loads((repo / "notebooks/solutions/00_setup_check.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = src.replace(':dep hw9 = { path = "../.." }', ':dep hw9 = { path = ".." }')
    return nb


def reap_stale(root: pathlib.Path) -> list[int]:
    """Kills what a crashed or killed earlier run left of this test root's hub (the hub, its proxy,
    its services): they would hold the ports, the log and a deleted database."""
    names = ("jupyterhub", "configurable-http-proxy")  # the hub, its services and servers, the proxy
    killed = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(pid) != os.getpid() and str(root) in cmd and any(n in cmd for n in names):
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
            except ProcessLookupError:
                pass
    return killed


class Hub:
    """A running hub started from HUB_ROOT's start script (a real JupyterHub, proxy and spawner)."""

    def __init__(self, root: pathlib.Path, users: list[str], extra_env: dict | None = None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = uuid.uuid4().hex
        self.password = uuid.uuid4().hex
        self.log_path = root / "state" / "test-hub.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HW9_", "JUPYTER", "LIBTORCH", "LD_LIBRARY"))}
        env |= {
            "HW9_HUB_URL": f"http://127.0.0.1:{self.port}",
            "HW9_HUB_INTERNAL_PORT": str(free_port()),
            "HW9_HUB_PROXY_API_PORT": str(free_port()),
            "HW9_HUB_AUTH": "dummy",
            "HW9_HUB_DUMMY_PASSWORD": self.password,
            "HW9_HUB_USERS": ",".join(users),
            "HW9_HUB_ADMIN_TOKEN": self.token,
        } | (extra_env or {})
        reap_stale(root)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(root / "start-hub")], env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the hub did not start; its log:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, n: int = 60) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kw)

    def add_users(self, names: list[str]) -> None:
        r = self.api("POST", "/users", json={"usernames": names})
        assert r.status_code in (201, 409), r.text

    def start(self, name: str, timeout: float = 300) -> float:
        """Starts the user's server and waits until it answers; returns the seconds it took."""
        t0 = time.time()
        r = self.api("POST", f"/users/{name}/server")
        assert r.status_code in (201, 202, 400), f"start {name}: {r.status_code} {r.text}"
        while time.time() - t0 < timeout:
            server = self.api("GET", f"/users/{name}").json().get("servers", {}).get("")
            if server and server.get("ready"):
                return time.time() - t0
            if server is None and r.status_code == 202 and time.time() - t0 > 5:
                raise RuntimeError(f"{name}'s server failed to start; the hub's log:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"{name}'s server not ready in {timeout} s; the hub's log:\n{self.log_tail()}")

    def stop(self, name: str, timeout: float = 120) -> None:
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), r.text
        t0 = time.time()
        while self.api("GET", f"/users/{name}").json().get("servers", {}).get(""):
            if time.time() - t0 > timeout:
                raise TimeoutError(f"{name}'s server did not stop")
            time.sleep(0.5)

    def user_token(self, name: str) -> str:
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "hw9 test", "expires_in": 3600})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def login(self, name: str, password: str | None = None) -> requests.Session:
        """Logs in through the hub's login form, as a browser does (cookies, XSRF)."""
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=30)
        xsrf = s.cookies.get("_xsrf", "")
        r = s.post(
            f"{self.url}/hub/login?next=",
            data={"username": name, "password": password or self.password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=30,
        )
        s.login_status = r.status_code  # 302 on success, 403 on a wrong password
        return s

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        reap_stale(self.root)  # a proxy or service the hub's shutdown left behind
        self.log.close()


class Server:
    """One student's Jupyter server, reached through the hub's proxy with the student's token."""

    def __init__(self, hub: Hub, name: str, token: str):
        self.hub, self.name, self.token = hub, name, token
        self.base = f"{hub.url}/user/{name}"

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.base}{path}", headers={"Authorization": f"token {self.token}"}, timeout=60, **kw)

    def put_notebook(self, path: str, nb: dict) -> None:
        r = requests.put(
            f"{self.base}/api/contents/{path}",
            headers={"Authorization": f"token {self.token}"},
            json={"type": "notebook", "format": "json", "content": nb},
            timeout=60,
        )
        assert r.status_code in (200, 201), r.text

    def kernel(self, path: str, kernel_name: str = "hw9-rust") -> Kernel:
        r = requests.post(
            f"{self.base}/api/sessions",
            headers={"Authorization": f"token {self.token}"},
            json={"path": path, "type": "notebook", "name": path, "kernel": {"name": kernel_name}},
            timeout=120,
        )
        assert r.status_code == 201, r.text
        return Kernel(self, r.json()["kernel"]["id"])


class Kernel:
    """A kernel's websocket: execute code, gather its outputs as a notebook cell's."""

    def __init__(self, server: Server, kernel_id: str):
        ws_url = server.base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {server.token}"], timeout=900, enable_multithread=True
        )
        self.session = uuid.uuid4().hex

    def execute(self, code: str, timeout: float = 900) -> dict:
        """Runs code; returns {"outputs": [...], "status": "ok"|"error", "seconds": float, "text": str}."""
        msg_id = uuid.uuid4().hex
        now = datetime.datetime.now(datetime.UTC).isoformat()
        msg = {
            "header": {
                "msg_id": msg_id,
                "username": "hw9",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": now,
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        t0 = time.time()
        self.ws.send(json.dumps(msg))
        outputs, status, idle = [], None, False
        while not (idle and status):
            if time.time() - t0 > timeout:
                raise TimeoutError(f"no reply in {timeout} s to: {code[:80]}")
            reply = json.loads(self.ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = reply["header"]["msg_type"], reply["content"]
            if kind in ("stream", "display_data", "execute_result", "error"):
                outputs.append({"output_type": kind, **content})
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
            elif kind == "execute_reply":
                status = content.get("status")
        text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
        text += "".join(o.get("evalue", "") for o in outputs if o["output_type"] == "error")
        return {"outputs": outputs, "status": status, "seconds": time.time() - t0, "text": text}

    def close(self) -> None:
        self.ws.close()

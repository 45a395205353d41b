"""hw9's JupyterHub on one machine (deploy/setup-hub.sh copies this file into HUB_ROOT).

Every student is a Unix account on the machine. At each login the hub (running as root) prepares
the student's folders (hw9_hub.prepare_student: their own copy of the handout's notebooks in
course/student-<name>/, their own kernel build folder with a warm slot 0), then starts their
JupyterLab as that account. Settings come from the environment, so the file itself stays as
shipped:

  HW9_HUB_URL         where the hub listens (default http://:8000; put TLS in front, or set
                      HW9_HUB_SSL_CERT and HW9_HUB_SSL_KEY)
  HW9_HUB_AUTH        pam (default: the machine's own accounts and passwords) or dummy (tests only:
                      any listed user with HW9_HUB_DUMMY_PASSWORD)
  HW9_HUB_GROUP       the Unix group whose members may log in (default hw9-students)
  HW9_HUB_ADMINS      comma-separated admin usernames (the TAs)
  HW9_HUB_USERS       comma-separated users allowed besides the group (dummy auth: the only ones)
  HW9_HUB_SPAWNER     local (default) or systemd (jupyterhub-systemdspawner: enforces the limits)
  HW9_HUB_MEM_LIMIT   memory per student (default 3G; enforced by the systemd spawner and on
                      Kubernetes, advisory with the local spawner)
  HW9_HUB_CPU_LIMIT   CPUs per student (default 2)
  HW9_HUB_CULL_AFTER  seconds of inactivity before the idle culler stops a server (default 3600)
  HW9_HUB_MAX_SERVERS servers running at once (default: what the memory holds, 1.8 GB each after
                      3 GB for the system: 11 on 24 GB); one more student is asked to retry later
  HW9_HUB_ADMIN_TOKEN an API token with admin rights (service "hw9-admin"), for scripts and tests
  HW9_HUB_COURSE      the set-up handout (default HUB_ROOT/course)
"""

import os
import pathlib
import pwd
import sys

HUB = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HUB))
import hw9_hub  # noqa: E402  (next to this file)

c = get_config()  # noqa: F821  (JupyterHub defines it)
env = os.environ.get
COURSE = pathlib.Path(env("HW9_HUB_COURSE") or HUB / "course")
BUILDS = HUB / "builds"
STATE = HUB / "state"

c.JupyterHub.bind_url = env("HW9_HUB_URL", "http://:8000")
if env("HW9_HUB_SSL_CERT"):
    c.JupyterHub.ssl_cert = env("HW9_HUB_SSL_CERT")
    c.JupyterHub.ssl_key = env("HW9_HUB_SSL_KEY")
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = [str(HUB / "proxy/node_modules/.bin/configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
# The hub's own port for the proxy and the servers (the default 8081 may be taken).
c.JupyterHub.hub_port = int(env("HW9_HUB_INTERNAL_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(env('HW9_HUB_PROXY_API_PORT', '8001'))}"


def default_max_servers() -> int:
    """As many running servers as the memory holds with a notebook's kernel open in each (1.6-1.7
    GB measured, 1.8 counted) after 3 GB for the system. One more student is told to try again
    later, instead of the machine running out of memory for everyone: with 20 students on 24 GB it
    stalled (BENCHMARKS.md, "The hub under load")."""
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(1, int((total_kb / 1024**2 - 3) / 1.8))


c.JupyterHub.active_server_limit = int(env("HW9_HUB_MAX_SERVERS") or default_max_servers())

# Who may log in.
users = {u.strip() for u in env("HW9_HUB_USERS", "").split(",") if u.strip()}
admins = {u.strip() for u in env("HW9_HUB_ADMINS", "").split(",") if u.strip()}
c.Authenticator.admin_users = admins
if env("HW9_HUB_AUTH", "pam") == "dummy":
    if not env("HW9_HUB_DUMMY_PASSWORD"):
        raise SystemExit("HW9_HUB_AUTH=dummy needs HW9_HUB_DUMMY_PASSWORD (the test authenticator's password)")
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = env("HW9_HUB_DUMMY_PASSWORD")
    c.Authenticator.allowed_users = users | admins
else:
    c.JupyterHub.authenticator_class = "pam"
    c.LocalAuthenticator.allowed_groups = {env("HW9_HUB_GROUP", "hw9-students")}
    c.Authenticator.allowed_users = users
# Admins may create users through the admin page / REST API (the Unix accounts must exist).
c.Authenticator.delete_invalid_users = False

# Each student's server: JupyterLab in their own folder, with the course's "Rust (hw9)" kernel.
if env("HW9_HUB_SPAWNER", "local") == "systemd":
    c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
    c.SystemdSpawner.isolate_tmp = True
    c.SystemdSpawner.isolate_devices = True
    c.SystemdSpawner.readonly_paths = [str(COURSE)]
    c.SystemdSpawner.readwrite_paths = [str(COURSE) + "/student-{USERNAME}", str(BUILDS) + "/{USERNAME}"]
    c.SystemdSpawner.disable_user_sudo = True
else:
    c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.mem_limit = env("HW9_HUB_MEM_LIMIT", "3G")
c.Spawner.cpu_limit = float(env("HW9_HUB_CPU_LIMIT", "2"))
c.Spawner.cmd = [str(HUB / "venv/bin/jupyterhub-singleuser")]
c.Spawner.notebook_dir = str(COURSE) + "/student-{username}"
c.Spawner.default_url = "/lab/tree/00_setup_check.ipynb"
# A loaded machine starts servers slowly (measured: BENCHMARKS.md, the hub's load).
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.Spawner.environment = {
    "JUPYTER_PATH": str(COURSE / "jupyter"),
    "HW9_EVCXR_DIR": lambda spawner: str(BUILDS / hw9_hub.check_name(spawner.user.name)),
    "PATH": f"{HUB}/rust/bin:{HUB}/venv/bin:/usr/local/bin:/usr/bin:/bin",
    "CARGO_HOME": str(HUB / "cargo"),
    "LANG": "C.UTF-8",
}
# Only the Rust (hw9) kernel is offered; idle kernels (not busy ones: training) are shut down
# after an hour so their libtorch memory comes back.
c.Spawner.args = [
    "--KernelSpecManager.allowed_kernelspecs=hw9-rust",
    "--MappingKernelManager.cull_idle_timeout=3600",
    "--MappingKernelManager.cull_interval=300",
]


def prepare(spawner):
    """Before each start: the student's folder and warm kernel build folder (as root)."""
    name = spawner.user.name
    try:
        pw = pwd.getpwnam(name)
    except KeyError as e:
        raise RuntimeError(
            f"{name!r} has no Unix account on this machine: create it (sudo useradd -m -G "
            f"{env('HW9_HUB_GROUP', 'hw9-students')} {name}) before the student logs in"
        ) from e
    done = hw9_hub.prepare_student(COURSE, BUILDS, name, pw.pw_uid, pw.pw_gid)
    spawner.log.info("hw9: prepared %s: %s", name, done)


def reap(spawner):
    """After each stop (by the student, an admin or the idle culler): no kernel outlives its server.
    (The kernel's launcher also stops it when the server is gone; this catches the rest.)"""
    try:
        uid = pwd.getpwnam(spawner.user.name).pw_uid
    except KeyError:
        return
    killed = hw9_hub.reap_kernels(COURSE, uid)
    if killed:
        spawner.log.warning(
            "hw9: killed %d kernel processes %s left by %s's server", len(killed), killed, spawner.user.name
        )


c.Spawner.pre_spawn_hook = prepare
c.Spawner.post_stop_hook = reap

# The idle culler stops servers nobody used for HW9_HUB_CULL_AFTER seconds (their files stay).
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={int(env('HW9_HUB_CULL_AFTER', '3600'))}",
            "--cull-every=300",
        ],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
if env("HW9_HUB_ADMIN_TOKEN"):
    c.JupyterHub.services.append({"name": "hw9-admin", "api_token": env("HW9_HUB_ADMIN_TOKEN")})
    c.JupyterHub.load_roles.append({"name": "admin", "services": ["hw9-admin"]})

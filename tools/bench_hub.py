"""The hub under load (`make bench-hub`, as root, after deploy/setup-hub.sh): N students log in
at the same moment and each runs the setup-check notebook (solved) on their own kernel, through
the proxy, as tests/hub does for two. For each N: seconds from "start my server" to the server
ready, to the first cell's result (`:dep hw9`, the student's first output) and to the whole
notebook done (p50/p95/max); memory: the machine's used memory at its peak and with every kernel
idle after its run, per student, and each student's processes' PSS (libtorch's pages shared
between students counted once); the CPU time it took. Every student is a first login: their
folders are created and slot 0 seeded, as at the start of a class.

    python tools/bench_hub.py --root /srv/hw9-hub-test --users 5 10 20 [--json build/bench_hub.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/hub"))
from hubclient import Hub, Server, ensure_account, hw9_hub, solved_setup_check  # noqa: E402


def used_mb() -> float:
    info = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        info[k] = int(v.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def pss_mb(uid: int, by_process: dict | None = None) -> float:
    """The PSS of uid's processes in MB; `by_process` gathers it per command name."""
    total = 0
    for pid in hw9_hub.processes_of(uid):
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    kb = int(line.split()[1])
                    total += kb
                    if by_process is not None:
                        comm = open(f"/proc/{pid}/comm").read().strip()
                        by_process[comm] = by_process.get(comm, 0) + round(kb / 1024)
        except OSError:
            continue
    return total / 1024


def available_mb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    fields = open("/proc/stat").readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / ticks


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def one_student(hub: Hub, name: str, t0: float, nb: dict, out: dict, hold: threading.Event) -> None:
    rec = out[name] = {}
    try:
        hub.start(name, timeout=900)
        rec["ready"] = time.time() - t0
        server = Server(hub, name, hub.user_token(name))
        server.put_notebook("00_setup_check.ipynb", nb)
        cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
        kernel = server.kernel("00_setup_check.ipynb")
        for i, cell in enumerate(cells):
            res = kernel.execute(cell["source"])
            if res["status"] != "ok" or "panicked at" in res["text"]:
                raise RuntimeError(f"cell {i} failed: {res['text'][-500:]}")
            if i == 0:
                rec["first_result"] = time.time() - t0
                rec["first_cell"] = res["seconds"]
        rec["done"] = time.time() - t0
        hold.wait()  # keep the kernel alive until memory is measured
        kernel.close()
    except Exception as e:  # recorded, and the run goes on for the others
        rec["error"] = str(e)[-800:]


def run(root: pathlib.Path, n: int) -> dict:
    names = [f"hw9b-{i:02d}" for i in range(1, n + 1)]
    uids = {}
    for name in names:
        uids[name] = ensure_account(name).pw_uid
        shutil.rmtree(root / "course" / f"student-{name}", ignore_errors=True)
        shutil.rmtree(root / "builds" / name, ignore_errors=True)
    (root / "state" / "jupyterhub.sqlite").unlink(missing_ok=True)
    hub = Hub(root, names)
    try:
        hub.add_users(names)
        nb = solved_setup_check(REPO)
        for cell in nb["cells"]:
            if isinstance(cell["source"], list):
                cell["source"] = "".join(cell["source"])
        time.sleep(3)
        base_mem, peak = used_mb(), [used_mb()]
        stop = threading.Event()
        aborted: list[str] = []

        def sample():
            # Students' processes go first if memory runs out (as a per-user limit would have it),
            # not the hub or this benchmark.
            total = used_mb() + available_mb()
            while not stop.is_set():
                peak[0] = max(peak[0], used_mb())
                if available_mb() < 1200 and not aborted:
                    # Out of memory: without swap the machine thrashes rather than killing
                    # (measured: 30 minutes unresponsive). Stop every student now.
                    aborted.append(f"memory exhausted: {used_mb():.0f} of {total:.0f} MB used")
                    for uid in uids.values():
                        subprocess.run(["pkill", "-KILL", "-U", str(uid)], check=False)
                for pid in (p for uid in uids.values() for p in hw9_hub.processes_of(uid)):
                    try:
                        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
                            f.write("800")
                    except OSError:
                        pass
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out: dict = {}
        hold = threading.Event()
        cpu0, t0 = cpu_seconds(), time.time()
        threads = [threading.Thread(target=one_student, args=(hub, nm, t0, nb, out, hold), daemon=True) for nm in names]
        for t in threads:
            t.start()
        while not aborted and any(
            t.is_alive() and "done" not in out.get(nm, {}) and "error" not in out.get(nm, {})
            for t, nm in zip(threads, names, strict=True)
        ):
            time.sleep(0.5)
        wall, cpu = time.time() - t0, cpu_seconds() - cpu0
        time.sleep(2)
        idle_mem = used_mb()
        first_user: dict = {}
        pss = [pss_mb(uids[nm], first_user if i == 0 else None) for i, nm in enumerate(names)]
        hold.set()
        for t in threads:
            t.join(timeout=5 if aborted else 120)
        stop.set()
        for nm in names:
            if "done" not in out.get(nm, {}):
                out.setdefault(nm, {}).setdefault("error", aborted[0] if aborted else "did not finish")
        ok = [out[nm] for nm in names if "error" not in out[nm]]
        served = sum(1 for nm in names if "ready" in out[nm])  # the others were refused or failed
        errors = {nm: out[nm]["error"] for nm in names if "error" in out[nm]}

        def stats(key):
            xs = [r[key] for r in ok if key in r]
            if not xs:
                return None
            return {"p50": round(statistics.median(xs), 1), "p95": round(pct(xs, 0.95), 1), "max": round(max(xs), 1)}

        return {
            "users": n,
            "ok": len(ok),
            "aborted": aborted[0] if aborted else None,
            "errors": errors,
            "ready_s": stats("ready"),
            "first_result_s": stats("first_result"),
            "first_cell_s": stats("first_cell"),
            "notebook_done_s": stats("done"),
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "mem_base_mb": round(base_mem),
            "mem_peak_mb": round(peak[0]),
            "mem_idle_kernels_mb": round(idle_mem),
            "served": served,
            "mem_per_user_peak_mb": round((peak[0] - base_mem) / max(1, served)),
            "mem_per_user_idle_mb": round((idle_mem - base_mem) / max(1, served)),
            "pss_per_user_mb": round(statistics.median(pss)),
            "pss_one_user_by_process_mb": first_user,
        }
    finally:
        for name in names:
            try:
                hub.stop(name)
            except Exception:
                pass
        hub.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path("/srv/hw9-hub-test"))
    ap.add_argument("--users", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--json", type=pathlib.Path, default=REPO / "build/bench_hub.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_hub: run as root (the students are Unix accounts)")
    results = []
    for n in args.users:
        print(f"--- {n} students at once", flush=True)
        r = run(args.root, n)
        print(json.dumps(r), flush=True)
        results.append(r)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(), "runs": results}, indent=1)
        )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

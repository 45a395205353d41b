"""Notebooks executed by a real Jupyter client (nbclient) on the project kernel "Rust (hw9)".

Run by `make test` after `make setup` (which registers the kernel through JUPYTER_PATH and warms
its build cache). The harness itself is tools/nbrun.py; the tests below also prove that it
catches what nbconvert alone misses (a panic reported with status "ok").
"""

import base64
import os
import queue
import time

import nbrun
from conftest import ROOT, executed
from jupyter_client.manager import start_new_kernel

NOTEBOOKS = ROOT / "notebooks"


def run(nb, cwd=NOTEBOOKS, timeout=nbrun.DEFAULT_TIMEOUT):
    return nbrun.execute(nb, cwd, timeout)


def texts(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_setup_check_notebook_runs_clean_and_plots():
    path = NOTEBOOKS / "solutions" / "00_setup_check.ipynb"
    nb, problems, folder = executed(path)
    assert problems == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    joined = "\n".join(texts(c) for c in code)
    assert "learned w = " in joined and ("device: Cpu" in joined or "device: Cuda" in joined)
    plots = [c for c in code if "plot" in c.metadata.get("tags", [])]
    assert len(plots) == 2
    for c in plots:
        png = next(o["data"]["image/png"] for o in c.outputs if "image/png" in o.get("data", {}))
        assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ["setup_check_heatmap.png", "setup_check_loss.png"]:
        assert (folder / "output" / name).read_bytes()[:4] == b"\x89PNG"


def test_harness_fails_on_a_panic_that_evcxr_reports_as_ok():
    nb = nbrun.code_notebook(
        "let x: i32 = 1;", 'fn unpatchify() -> i32 { todo!("write unpatchify") }\nunpatchify()', "x + 1"
    )
    problems = run(nb)
    assert len(problems) == 1, problems
    assert problems[0].startswith("cell 1: panicked:") and "write unpatchify" in problems[0]
    # The kernel survived and kept earlier state: the last cell still ran.
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "2"


def test_harness_fails_on_an_error_that_the_last_cell_returns_through_question_mark():
    # Stock evcxr replied "ok" with the error on stderr (sometimes under the next execution): a
    # notebook whose last cell failed so passed. The hw9 kernel fails the cell.
    nb = nbrun.code_notebook("let x: i32 = 1;", 'Err::<(), String>("no weights file at output/vit".into())?;')
    problems = run(nb)
    assert len(problems) == 1, problems
    assert problems[0].startswith("cell 1: error Error:") and "no weights file at output/vit" in problems[0]


def test_harness_fails_on_a_compile_error_and_a_missing_plot():
    nb = nbrun.code_notebook('let y: i32 = "text";', 'println!("no figure here");', tags=[[], ["plot"]])
    problems = run(nb)
    assert len(problems) == 2, problems
    assert problems[0].startswith("cell 0: error") and "mismatched types" in problems[0]
    assert problems[1] == "cell 1: tagged 'plot' but produced no image/png output"


def test_rerun_pass_catches_a_cell_that_moves_what_an_earlier_cell_made():
    nb = nbrun.code_notebook(
        'let owned = String::from("weights");',
        "let moved = owned;  // the second run finds `owned` gone",
        "let also = owned;  // can only run once, on purpose",
        tags=[[], [], ["no-rerun"]],
    )
    problems = nbrun.execute(nb, NOTEBOOKS, rerun=True)
    # The third cell fails on its first run (owned is gone); only cell 1's re-run is a new problem.
    reruns = [p for p in problems if "(re-run)" in p]
    assert len(reruns) == 1 and reruns[0].startswith("cell 1 (re-run): error"), problems
    # The first run's outputs are kept: cell 1 ran clean then.
    assert nbrun.cell_problems(nb.cells[1], 1) == []


def test_a_libtorch_error_shows_its_operation_and_first_line_only():
    nb = nbrun.code_notebook(
        ':dep hw9 = { path = ".." }',
        "hw9::report_panics_whole();\n"
        "let a = hw9::tch::Tensor::zeros([1, 2], hw9::tch::kind::FLOAT_CPU);\n"
        "a.matmul(&hw9::tch::Tensor::zeros([3, 3], hw9::tch::kind::FLOAT_CPU))",
    )
    problems = run(nb)
    stderr = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.get("name") == "stderr")
    assert "libtorch error in `matmul`: mat1 and mat2 shapes cannot be multiplied (1x2 and 3x3)" in stderr, stderr
    assert "Exception raised from" not in stderr and "frame #" not in stderr, stderr
    assert len(problems) == 1 and "panicked" in problems[0], problems


def test_harness_enforces_the_per_cell_timeout():
    nb = nbrun.code_notebook("std::thread::sleep(std::time::Duration::from_secs(30));")
    problems = run(nb, timeout=5)
    assert any("timed out (per-cell limit 5 s)" in p for p in problems), problems


def test_two_kernels_at_once_build_in_separate_folders():
    """Two notebooks open at once must not share evcxr's build folder (it holds their sources)."""
    kernels = [start_new_kernel(kernel_name=nbrun.KERNEL, cwd=str(NOTEBOOKS)) for _ in range(2)]
    try:
        dirs = []
        for _, kc in kernels:  # both kernels are alive here
            seen = []
            reply = kc.execute_interactive(
                'std::env::var("EVCXR_TMPDIR").unwrap()',
                timeout=120,
                output_hook=lambda m: seen.append(m["content"].get("data", {}).get("text/plain")),
            )
            assert reply["content"]["status"] == "ok"
            dirs.append(next(s for s in seen if s))
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    assert dirs[0] != dirs[1], dirs
    assert all("/.cache/evcxr/slot-" in d for d in dirs), dirs


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_kernel_does_not_outlive_the_server_that_started_it():
    """evcxr ignores its parent's death (ipykernel polls JPY_PARENT_PID; evcxr does not): a stopped
    or culled Jupyter server would leave every kernel running. The launcher's watchdog stops it."""
    import subprocess
    import sys
    import time

    starter = (
        "import os, sys\n"
        "from jupyter_client.manager import start_new_kernel\n"
        f"km, kc = start_new_kernel(kernel_name={nbrun.KERNEL!r}, cwd={str(NOTEBOOKS)!r})\n"
        "kc.execute_interactive('1 + 1', timeout=120)\n"
        "open(sys.argv[1], 'w').write(str(km.provisioner.pid))\n"
        "os._exit(0)  # the server dies without shutting its kernel down\n"
    )
    pid_file = ROOT / "build" / "kernel-lifetime.pid"
    pid_file.parent.mkdir(exist_ok=True)
    pid_file.unlink(missing_ok=True)
    # Not through pipes: the kernel inherits the starter's stdout and would hold them open.
    r = subprocess.run([sys.executable, "-c", starter, str(pid_file)], stdout=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0 and pid_file.exists(), "the starter could not start a kernel"
    pid = int(pid_file.read_text())

    def group() -> list[int]:  # the kernel, its child and the watchdog share its process group
        out = []
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                if _alive(int(p)) and os.getpgid(int(p)) == pid:
                    out.append(int(p))
            except ProcessLookupError:
                pass
        return out

    deadline = time.time() + 20
    while (_alive(pid) or group()) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(pid) and not group(), f"the kernel {pid} (group {group()}) still runs 20 s after its server died"


SLOW_TRAINING = """use hw9::prelude::*;
use hw9::data::images::{ImageSet, Splits};
use hw9::tasks::images::train_classifier;
use hw9::train::{Every, ResumeConfig, TrainConfig};
#[derive(Debug)]
struct Slow(nn::Linear);
impl ModuleT for Slow {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train { std::thread::sleep(std::time::Duration::from_millis(10)); }
        xs.flatten(1, -1).apply(&self.0)
    }
}
fn first(images: &Tensor, labels: &Tensor, n: i64) -> ImageSet {
    let classes = vec!["a".into(), "b".into(), "c".into()];
    ImageSet { images: images.narrow(0, 0, n), labels: labels.narrow(0, 0, n), classes }
}
tch::manual_seed(0);
let images = Tensor::randint(256, [640, 1, 8, 8], (Kind::Uint8, Device::Cpu));
let labels = Tensor::randint(3, [640], (Kind::Int64, Device::Cpu));
let (train, test) = (first(&images, &labels, 640), first(&images, &labels, 64));
let data = Splits { train, test, mean: vec![0.5], std: vec![0.3] };
let vs = nn::VarStore::new(Device::Cpu);
let model = Slow(nn::linear(vs.root() / "linear", 64, 3, Default::default()));
let mut cfg = TrainConfig::adamw(10, 16, 1e-2, 0.0); // 400 steps of at least 10 ms
cfg.resume = Some(ResumeConfig { dir: "RUNS".into(), every: Every::Steps(10), seed: 1 });
let h = train_classifier(&model, &vs, &data, &cfg, "slow")?;
println!("trained steps: {}", h.step_losses.len());"""


def drain_iopub(kc) -> str:
    """The text and errors the kernel has published so far."""
    out = []
    while True:
        try:
            c = kc.get_iopub_msg(timeout=0.5)["content"]
        except queue.Empty:
            return "".join(out)
        out.append(c.get("text", "") + c.get("evalue", ""))


def test_an_interrupted_training_cell_continues_when_run_again(tmp_path):
    """The stop button stops the training between two steps (the hw9 kernel sends SIGINT; Fit saves
    its state and returns an error): the cell fails, the variables of earlier cells stay (a failed
    cell's own new variables are dropped, evcxr's rule), and the training cell run again continues
    from the state it saved (not from step 0) and says so."""
    runs = tmp_path / "runs"
    cells = [':dep hw9 = { path = ".." }', SLOW_TRAINING.replace("RUNS", str(runs))]
    km, kc = start_new_kernel(kernel_name=nbrun.KERNEL, cwd=str(NOTEBOOKS))
    try:
        assert kc.execute_interactive(cells[0] + "\nlet kept = 41;", timeout=300)["content"]["status"] == "ok"
        msg_id = kc.execute(cells[1])
        deadline = time.time() + 300
        while not list(runs.glob("slow-*/step-*")):
            assert time.time() < deadline, "the training saved no state"
            try:
                reply = kc.get_shell_msg(timeout=0.1)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                raise AssertionError(f"the training cell ended before it saved a state:\n{drain_iopub(kc)}")
        km.interrupt_kernel()
        while True:  # the interrupted cell's reply
            reply = kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert not list(runs.glob("slow-*/step-400")), "interrupted too late: training had finished"
        assert reply["content"]["status"] == "error", reply["content"]
        assert "slow: stopped by the interrupt" in drain_iopub(kc)
        out = []
        for code in ["kept + 1", cells[1]]:
            r = kc.execute_interactive(
                code,
                timeout=300,
                output_hook=lambda m: out.append(
                    m["content"].get("text", "") or m["content"].get("data", {}).get("text/plain", "")
                ),
            )
            assert r["content"]["status"] == "ok", "".join(out)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    assert "panicked" not in text, text
    resumed = [line for line in text.splitlines() if "slow: resumed from" in line]
    assert resumed and " step 0)" not in resumed[0], text
    assert "trained steps: 400" in text, text
    assert text.startswith("42"), text  # a variable defined before the interrupt was still there

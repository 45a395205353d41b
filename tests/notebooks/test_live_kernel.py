"""The live notebook, through a real Jupyter client (jupyter_client) on the "Rust (hw9)" kernel, with
the arrival time and parent of every iopub message: progress that moves while a cell runs, errors
under the cell that raised them, "Run All" stopping at a failed cell, and the stop button keeping
the notebook's variables.

The kernel is evcxr_jupyter with hw9's patches (tools/evcxr/); without them every test here fails
(a `\\r` progress bar shows nothing until the cell ends, a panic replies "ok", an interrupt kills
the process that holds the variables).
"""

from __future__ import annotations

import json
import queue
import time

import nbrun
import pytest
from conftest import ROOT
from jupyter_client.manager import start_new_kernel

DEP = f':dep hw9 = {{ path = "{ROOT}" }}'

# A training run through hw9's Fit: a linear model, `steps` steps of ~100 ms each (a sleep stands
# for the work), resumable in `dir` when it is not empty. Returns the steps its history holds.
TRAIN = """
fn train(steps: usize, dir: &str) -> hw9::Result<usize> {
    use hw9::train::{Evaluation, Every, Fit, OptimConfig, Step};
    use hw9::tch::nn::{self, Module};
    use hw9::tch::{self, Device, Kind, Tensor};
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = nn::linear(vs.root(), 4, 1, Default::default());
    let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
    let mut fit = Fit::epochs("slow demo", 1, steps, &OptimConfig::adamw(1e-2, (0.9, 0.999), 0.0));
    if !dir.is_empty() {
        fit = fit.resumable(dir, &"slow-demo", Every::Steps(1000), 1)?;
    }
    let history = fit.run(
        &vs,
        |_| 0..steps,
        |_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            Ok(Step { loss: lin.forward(&x).square().mean(Kind::Float), weight: 1.0, correct: None })
        },
        || Ok(Evaluation::default()),
    )?;
    Ok(history.step_losses.len())
}
"""


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name=nbrun.KERNEL, cwd=str(ROOT / "notebooks"))
    try:
        reply = kc.execute_interactive(DEP + "\n" + TRAIN, timeout=600)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run_cells(kc, cells: list[str], stop_on_error: bool = False, timeout: float = 300, during=None):
    """Sends every cell at once (as "Run All" does), then reads iopub and shell until each has its
    reply and its idle status. Returns (msg_ids, iopub [(seconds since sent, msg)], replies by
    msg_id [(seconds, msg)]). `during(elapsed, messages)` is called at least every 50 ms."""
    t0 = time.monotonic()
    ids = [kc.execute(c, stop_on_error=stop_on_error) for c in cells]
    iopub, replies, idle = [], {}, set()
    deadline = t0 + timeout
    while len(idle) < len(ids) or len(replies) < len(ids):
        assert time.monotonic() < deadline, f"no reply within {timeout} s: {len(replies)}/{len(ids)} replies"
        try:
            msg = kc.get_iopub_msg(timeout=0.05)
            iopub.append((time.monotonic() - t0, msg))
            parent = msg["parent_header"].get("msg_id")
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" and parent in ids:
                idle.add(parent)
        except queue.Empty:
            pass
        if during:
            during(time.monotonic() - t0, iopub)
        try:
            while True:
                msg = kc.get_shell_msg(timeout=0.001)
                replies[msg["parent_header"]["msg_id"]] = (time.monotonic() - t0, msg)
        except queue.Empty:
            pass
    return ids, iopub, replies


def of(iopub, msg_id, *types):
    return [(t, m) for t, m in iopub if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] in types]


def stderr_of(iopub, msg_id) -> str:
    return "".join(m["content"]["text"] for _, m in of(iopub, msg_id, "stream") if m["content"]["name"] == "stderr")


def test_a_progress_bar_moves_while_the_cell_runs_as_one_display_updated_in_place(kernel):
    _, kc = kernel
    cell = (
        'let mut bar = hw9::train::Progress::new("live", 10);\n'
        "for i in 0..10 {\n"
        "    std::thread::sleep(std::time::Duration::from_millis(600));\n"
        '    bar.tick(&format!("step {i}"));\n'
        "}\n"
        'bar.finish("done");'
    )
    (mid,), iopub, replies = run_cells(kc, [cell])
    reply_at = replies[mid][0]
    shown = of(iopub, mid, "display_data", "update_display_data")
    kinds = [m["msg_type"] for _, m in shown]
    assert kinds[0] == "display_data" and set(kinds[1:]) == {"update_display_data"}, kinds
    ids = {m["content"]["transient"]["display_id"] for _, m in shown}
    assert len(ids) == 1, ids
    # The bar moved while the cell ran (ticks 600 ms apart): at least every 2 s, from early on.
    times = [t for t, _ in shown]
    assert len(times) >= 8, kinds
    assert times[0] < reply_at - 4.0, (times, reply_at)
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 2.0, times
    assert "10/10" in shown[-1][1]["content"]["data"]["text/plain"]
    assert "<progress" in shown[-1][1]["content"]["data"]["text/html"]
    # No `\r` redraws in the saved output: the display is all there is.
    assert not any("\r" in m["content"]["text"] for _, m in of(iopub, mid, "stream")), of(iopub, mid, "stream")


def test_through_nbclient_the_executed_notebook_keeps_one_progress_output_in_its_last_state():
    nb = nbrun.code_notebook(
        DEP,
        'let mut bar = hw9::train::Progress::new("saved", 30);\n'
        'for _ in 0..30 { std::thread::sleep(std::time::Duration::from_millis(100)); bar.tick(""); }\n'
        'bar.finish("done");',
    )
    assert nbrun.execute(nb, ROOT / "notebooks") == []
    outputs = nb.cells[1].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    assert "30/30" in outputs[0].data["text/plain"] and "done" in outputs[0].data["text/plain"]


def test_fifty_failing_cells_each_show_their_error_under_themselves_and_fail(kernel):
    _, kc = kernel
    cells = ["let kept_before_failures = 7;"]
    for i in range(50):
        if i % 2:
            cells.append(f'panic!("bang-{i}.");')
        else:
            cells.append(f'Err::<(), String>("boom-{i}.".to_string())?;')
    cells.append("kept_before_failures * 6")
    ids, iopub, replies = run_cells(kc, cells, stop_on_error=False)
    for i, mid in enumerate(ids[1:-1]):
        token = f"bang-{i}." if i % 2 else f"boom-{i}."
        assert token in stderr_of(iopub, mid), (i, stderr_of(iopub, mid))
        for other in ids:
            if other != mid:
                assert token not in stderr_of(iopub, other), (i, "arrived under another cell")
        reply = replies[mid][1]["content"]
        assert reply["status"] == "error", (i, reply)
        errors = of(iopub, mid, "error")
        assert len(errors) == 1 and errors[0][1]["content"]["ename"] == ("Panic" if i % 2 else "Error"), errors
    last = of(iopub, ids[-1], "execute_result")
    assert last and last[0][1]["content"]["data"]["text/plain"] == "42"
    assert replies[ids[-1]][1]["content"]["status"] == "ok"


def test_run_all_stops_at_a_failed_cell(kernel):
    _, kc = kernel
    ids, iopub, replies = run_cells(kc, ["let a_run_all = 1;", 'panic!("stop here");', "let b_run_all = 2;"], True)
    statuses = [replies[m][1]["content"]["status"] for m in ids]
    assert statuses == ["ok", "error", "aborted"], statuses
    assert not of(iopub, ids[2], "execute_input"), "the aborted cell ran"
    # The abort covers only what was already queued behind the failure: a cell run afterwards runs.
    (mid,), iopub, replies = run_cells(kc, ["a_run_all + 1"], True)
    assert replies[mid][1]["content"]["status"] == "ok"
    assert of(iopub, mid, "execute_result")[0][1]["content"]["data"]["text/plain"] == "2"


def interrupt_when_training(km, started: list[float]):
    """A `during` callback: sends the interrupt once the run's progress display has updated twice."""

    def during(elapsed, iopub):
        if not started and sum(m["msg_type"] == "update_display_data" for _, m in iopub) >= 2:
            started.append(elapsed)
            km.interrupt_kernel()

    return during


def test_the_stop_button_stops_training_within_seconds_and_keeps_every_variable(kernel, tmp_path):
    km, kc = kernel
    run_cells(kc, ["let kept = 41;"])
    interrupted_at: list[float] = []
    dir = json.dumps(str(tmp_path / "run"))
    (mid,), iopub, replies = run_cells(
        kc, [f"let steps = train(300, {dir})?;"], during=interrupt_when_training(km, interrupted_at)
    )
    assert interrupted_at, "the run never showed progress"
    stopped_after = replies[mid][0] - interrupted_at[0]
    assert stopped_after < 3.0, f"the cell replied {stopped_after:.1f} s after the interrupt"
    assert replies[mid][1]["content"]["status"] == "error"
    err = stderr_of(iopub, mid)
    assert "slow demo: stopped by the interrupt after" in err and "run the cell again to continue" in err, err
    # Every variable is still there, and the run goes on from its saved state to the end.
    (mid,), iopub, replies = run_cells(kc, ["kept + 1"])
    assert of(iopub, mid, "execute_result")[0][1]["content"]["data"]["text/plain"] == "42"
    (mid,), iopub, replies = run_cells(kc, [f"train(300, {dir})?"])
    assert replies[mid][1]["content"]["status"] == "ok", stderr_of(iopub, mid)
    assert of(iopub, mid, "execute_result")[0][1]["content"]["data"]["text/plain"] == "300"
    # It resumed from the state saved at the interrupt, not from step 0.
    said = "".join(m["content"].get("text", "") for _, m in of(iopub, mid, "stream"))
    assert "slow demo: resumed from" in said and " step 0)" not in said, said


def test_outside_training_the_stop_button_still_ends_an_endless_loop(kernel):
    km, kc = kernel
    sent: list[float] = []

    def during(elapsed, iopub):
        if not sent and elapsed > 3.0:
            sent.append(elapsed)
            km.interrupt_kernel()

    (mid,), iopub, replies = run_cells(
        kc, ["loop { std::thread::sleep(std::time::Duration::from_millis(10)); }"], during=during
    )
    assert sent and replies[mid][0] - sent[0] < 3.0
    assert replies[mid][1]["content"]["status"] == "error"
    # The process that ran the loop ended (SIGINT's default), as it always did: the next cell runs.
    (mid,), iopub, replies = run_cells(kc, ["1 + 1"])
    assert of(iopub, mid, "execute_result")[0][1]["content"]["data"]["text/plain"] == "2"

"""Times the live notebook on the hw9 kernel through jupyter_client, from message arrival times:
how often a training cell's progress display updates, how long after the stop button a training
cell ends (steps of 0.1 s and 1 s), and a warm trivial cell. Prints one line per figure.

    .venv/bin/python tools/bench_live.py          (after `make setup`; JUPYTER_PATH is set here)
"""

import pathlib
import queue
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbrun  # noqa: E402  (sets JUPYTER_PATH)
from jupyter_client.manager import start_new_kernel  # noqa: E402

TRAIN = """
fn train(steps: usize, step_ms: u64, dir: &str) -> hw9::Result<usize> {
    use hw9::tch::nn::{self, Module};
    use hw9::tch::{self, Device, Kind, Tensor};
    use hw9::train::{Evaluation, Every, Fit, OptimConfig, Step};
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = nn::linear(vs.root(), 4, 1, Default::default());
    let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
    let fit = Fit::epochs("bench", 1, steps, &OptimConfig::adamw(1e-2, (0.9, 0.999), 0.0))
        .resumable(dir, &"bench", Every::Steps(1000), 1)?;
    let h = fit.run(&vs, |_| 0..steps, |_| {
        std::thread::sleep(std::time::Duration::from_millis(step_ms));
        Ok(Step { loss: lin.forward(&x).square().mean(Kind::Float), weight: 1.0, correct: None })
    }, || Ok(Evaluation::default()))?;
    Ok(h.step_losses.len())
}
"""


def run_until_reply(kc, code, interrupt_after=None, km=None):
    """Sends `code`; returns (iopub messages with arrival seconds, reply seconds, interrupt seconds)."""
    t0 = time.monotonic()
    mid = kc.execute(code, stop_on_error=False)
    msgs, sent = [], None
    while True:
        now = time.monotonic() - t0
        if interrupt_after is not None and sent is None and now > interrupt_after:
            km.interrupt_kernel()
            sent = time.monotonic() - t0
        try:
            m = kc.get_iopub_msg(timeout=0.02)
            if m["parent_header"].get("msg_id") == mid:
                msgs.append((time.monotonic() - t0, m))
        except queue.Empty:
            pass
        try:
            r = kc.get_shell_msg(timeout=0.001)
            if r["parent_header"].get("msg_id") == mid:
                return msgs, time.monotonic() - t0, sent
        except queue.Empty:
            pass


def main():
    km, kc = start_new_kernel(kernel_name=nbrun.KERNEL, cwd=str(ROOT / "notebooks"))
    try:
        run_until_reply(kc, ':dep hw9 = { path = ".." }\n' + TRAIN)
        with tempfile.TemporaryDirectory() as d:
            msgs, reply, _ = run_until_reply(kc, f'train(100, 100, "{d}/a")?')
        shown = [t for t, m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
        gaps = [b - a for a, b in zip(shown, shown[1:], strict=False)]
        print(
            f"progress display of a 100-step cell ({reply:.1f} s): {len(shown)} updates, first at "
            f"{shown[0]:.2f} s, gap median {statistics.median(gaps):.2f} s, max {max(gaps):.2f} s"
        )
        for step_ms in (100, 1000):
            lat = []
            for i in range(3):
                with tempfile.TemporaryDirectory() as d:
                    _, reply, sent = run_until_reply(kc, f'train(1000, {step_ms}, "{d}/r{i}")?', 3.0, km)
                lat.append(reply - sent)
            print(
                f"stop button to the training cell's reply, steps of {step_ms} ms: median "
                f"{statistics.median(lat):.2f} s ({', '.join(f'{x:.2f}' for x in lat)})"
            )
        run_until_reply(kc, "let a = 1;")
        warm = [run_until_reply(kc, f"let a = a + {i}; a")[1] for i in range(7)]
        print(f"a trivial warm cell: median {statistics.median(warm):.2f} s of 7")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()

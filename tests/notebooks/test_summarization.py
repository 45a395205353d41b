"""Notebook 2 as a user runs it (quick profile): TensorBoard's own reader reads the event files
the notebook wrote, with the same validation losses the submission records, and each epoch
left a checkpoint."""

import json

from conftest import ROOT, executed

SOURCE = ROOT / "notebooks" / "solutions" / "02_summarization.ipynb"


def test_tensorboard_reads_the_runs_and_checkpoints_exist():
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, problems = executed(SOURCE)
    assert problems == []
    folder = SOURCE.parent
    runs = sorted((folder / "runs").glob("summarizer-*"), key=lambda p: p.stat().st_mtime)
    assert runs, "the notebook wrote no TensorBoard run"
    acc = EventAccumulator(str(runs[-1]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/validation", "accuracy/validation", "learning_rate"} <= tags, tags
    log = json.loads((folder / "submission" / "02_summarization" / "submission_log.json").read_text())
    recorded = log["values"]["val_loss_per_epoch"]
    val = acc.Scalars("loss/validation")
    assert len(val) == len(recorded) == 2
    for event, value in zip(val, recorded, strict=True):
        assert abs(event.value - value) <= 1e-5 * abs(value), (event, value)
    assert val[0].step < val[1].step
    accuracy = [e.value for e in acc.Scalars("accuracy/validation")]
    assert all(0.0 <= a <= 1.0 for a in accuracy) and abs(accuracy[-1] - log["values"]["final_val_acc"]) < 1e-6
    train = acc.Scalars("loss/train")
    assert len(train) >= 2 and all(e.value > 0 for e in train)
    for epoch in (1, 2):
        ckpt = folder / "output" / "summarizer" / f"epoch-{epoch}"
        assert (ckpt / "model.safetensors").stat().st_size > 0 and json.loads((ckpt / "config.json").read_text())[
            "d_model"
        ] > 0

"""The scalars record the run report reads its curves from (<run>/scalars.jsonl, written by the
tensorboard hook): equal to the TensorBoard events of the same run, and read back across a resume."""
import json

import pytest

from lib.report.records import read_scalars


def test_scalars_record_holds_what_tensorboard_holds(demo_runs):
    from tests.engine.test_hooks import read_scalars as read_tensorboard

    train, _ = demo_runs["a"]
    events = read_tensorboard(train / "tensorboard")  # decoded from the event files' protobufs
    # tensorboardX writes a space in a tag as "_" (val_iou/shower curtain); the record keeps the name
    record = {tag.replace(" ", "_"): points for tag, points in read_scalars(train / "scalars.jsonl").items()}
    assert set(record) == set(events) and {"train/loss", "train/lr", "loss/ce", "val/mIoU"} <= set(record)
    for tag, points in record.items():
        assert [i for i, _ in points] == sorted(events[tag]), tag
        for iteration, value in points:  # TensorBoard keeps float32
            assert value == pytest.approx(events[tag][iteration], rel=1e-6, abs=1e-12), (tag, iteration)
    assert [i for i, _ in record["train/loss"]] == [1, 2, 3] and [i for i, _ in record["val/mIoU"]] == [3]


def test_a_resumed_run_keeps_the_last_value_and_a_killed_line_is_skipped(tmp_path):
    path = tmp_path / "scalars.jsonl"
    lines = [{"iteration": 1, "train/loss": 3.0}, {"iteration": 2, "train/loss": 2.5, "train/lr": 0.1},
             # resumed from the iteration-1 checkpoint: iteration 2 again
             {"iteration": 2, "train/loss": 2.4}, {"iteration": 3, "train/loss": 2.0}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"iteration": 4, "train/lo')
    assert read_scalars(path) == {"train/loss": [[1, 3.0], [2, 2.4], [3, 2.0]], "train/lr": [[2, 0.1]]}
    path.write_text('{"iteration": 1, "a": 1}\nnot json\n{"iteration": 2, "a": 2}\n')
    with pytest.raises(ValueError, match=r"scalars.jsonl: line 2 is not a scalars record"):
        read_scalars(path)
    assert read_scalars(tmp_path / "absent.jsonl") == {}


def test_the_hook_starts_the_record_anew_and_keeps_it_up_to_a_resume(tmp_path):
    pytest.importorskip("tensorboardX", reason="the tensorboard hook writes events with tensorboardX")
    from types import SimpleNamespace

    from lib.engine.hooks import TensorBoardHook
    from lib.engine.storage import EventStorage

    path = tmp_path / "scalars.jsonl"

    def run(start, stop):
        hook = TensorBoardHook(tmp_path / "tb", path)
        trainer = SimpleNamespace(iteration=start, storage=EventStorage(start))
        hook.before_train(trainer)
        for it in range(start + 1, stop + 1):
            trainer.iteration = trainer.storage.iteration = it
            trainer.storage.put_scalar("train/loss", 10.0 * start + it)
            trainer.storage.put_scalar("train/nan", float("nan"))  # not finite: left out, as in TensorBoard
            hook.after_step(trainer)
        hook.after_train(trainer)

    run(0, 5)  # a run killed at 5 whose last checkpoint was at 2
    with path.open("a") as f:
        f.write('{"iteration": 6, "train/lo')
    run(2, 3)  # resumed from 2, stopped at 3
    assert read_scalars(path) == {"train/loss": [[1, 1.0], [2, 2.0], [3, 23.0]]}
    run(0, 1)  # a new run in the folder
    assert read_scalars(path) == {"train/loss": [[1, 1.0]]}

"""What the evaluator writes: the log table, metrics.json and the two PNGs."""
import json

import numpy as np
import torch

from lib import IGNORE_INDEX as IGN
from lib.metrics import SegEvaluator


def _evaluator():
    ev = SegEvaluator(["wall", "floor", "chair"], "nan_absent")
    ev.update(torch.tensor([0, 0, 1, 1, 2, 1]), torch.tensor([0, 1, 1, 1, IGN, 2]))
    return ev


def test_table_names_classes_and_convention():
    table = _evaluator().table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "Acc", "GT", "points"]
    floor = next(line for line in lines if line.startswith("floor"))
    # floor: tp 2, fn 1 (predicted wall), fp 1 (chair point predicted floor) -> IoU 50.00; acc 66.67
    assert floor.split()[1:3] == ["50.00", "66.67"]
    assert lines[-1].startswith("convention: nan_absent")
    assert "skipped 1 points" in table


def test_save_writes_json_and_pngs(tmp_path):
    import matplotlib.image as mpimg

    summary = _evaluator().save(tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == summary
    assert on_disk["convention"] == "nan_absent"
    assert on_disk["confusion_matrix"] == [[1, 0, 0, 0], [1, 2, 0, 0], [0, 1, 0, 0]]
    assert on_disk["per_class"]["chair"]["iou"] == 0.0
    assert on_disk["mIoU"] == (0.5 + 0.5 + 0.0) / 3
    for name in ("confusion_matrix.png", "iou_per_class.png"):
        image = mpimg.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert np.ptp(image[..., :3]) > 0.5  # something was drawn, not a blank canvas


def test_nan_classes_become_null_in_json(tmp_path):
    ev = SegEvaluator(["a", "b"])
    ev.update(torch.tensor([0]), torch.tensor([0]))
    summary = ev.save(tmp_path, plots=False)
    assert summary["per_class"]["b"]["iou"] is None
    assert not (tmp_path / "confusion_matrix.png").exists()
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)


def test_confusion_figure_shows_counts_the_run_and_absent_classes():
    """Issue 23: counts in the cells, the run's name on top, a class without ground truth marked."""
    import matplotlib.pyplot as plt

    from lib.metrics.plots import confusion_figure, iou_figure

    valid = torch.tensor([[5, 2, 0, 0], [0, 0, 0, 0], [1, 0, 7, 3]])  # "door" has no ground-truth point
    fig = confusion_figure(valid, ["wall", "door", "chair"], normalize=True, title="test-run - train/best.pth")
    (ax,) = [a for a in fig.axes if a.get_ylabel() == "ground truth"]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(0, 0): "5", (0, 1): "2", (2, 0): "1", (2, 2): "7", (2, 3): "3"}  # every non-zero count
    assert [t.get_text() for t in ax.get_yticklabels()] == ["wall", "door (absent)", "chair"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["wall", "door", "chair", "invalid"]
    assert ax.get_title().startswith("test-run - train/best.pth\n")
    plt.close(fig)

    ev = _evaluator()
    fig = iou_figure(ev.compute(), title="test-run - train/best.pth")
    assert fig.axes[0].get_title().startswith("test-run - train/best.pth\n")
    plt.close(fig)


def test_plot_title_names_the_run_and_checkpoint():
    from lib.engine.modes.evaluate import plot_title

    assert plot_title("outputs/demo/test1", "outputs/demo/run7/best.pth") == "test1 - run7/best.pth"
    assert plot_title("out/t", "best.pth") == "t - best.pth"

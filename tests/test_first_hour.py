"""What a new user meets in a first run (issue 23): the thread choice logged, an override that
replaces a recipe's key said in log.txt and obeyed, best and final validation in summary.json,
no run folder left by a run that fails before it made anything."""
import json
import re
import sys

import pytest
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "datasets"))
from data_helpers import preprocessed_rooms  # noqa: E402

import main  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return preprocessed_rooms(tmp_path_factory.mktemp("first_hour"))


def _recipe(tmp_path, root, **train):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "device": "cpu", "engine": "torch",
        "data": {"dataset": "scannet", "root": str(root), "voxel_size": 0.1, "batch_size": 1, "num_workers": 0},
        "model": {"name": "Res16UNet14A"},
        "train": {"val_every": 1, "ckpt_every": 0, "log_every": 1, "progress": False,
                  "hooks": ["logging", "validation", "checkpoint"],
                  "optimizer": {"name": "adam", "lr": 0.01}, **train},
        "eval": {"plots": False}, "export": {"ply": False}}))
    return path


def test_a_first_run_says_what_it_chose(tmp_path, data_root):
    recipe = _recipe(tmp_path, data_root, epochs=50)  # a recipe that trains by epochs
    run = tmp_path / "run"
    code = main.main(["--config", str(recipe), "--output-dir", str(run), "train.iterations=3",
                      "train.optimizer.momentum=0.5"])
    assert code == 0
    log = (run / "log.txt").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 3  # not 50 epochs of two scenes
    assert re.search(r"train\.cpu_threads auto -> \d+ \(cpu device, \d+ cores", log), log[:2000]
    assert "train.iterations=3 (command line) replaces train.epochs=50" in log
    assert "train.optimizer.momentum (command line) has no effect: train.optimizer.name is 'adam'" in log
    # best and final validation: the logged mIoU of each validation is the independent record
    logged = [(int(i), float(m)) for i, m in re.findall(r"validation at iter (\d+): mIoU=([0-9.]+)", log)]
    assert [i for i, _ in logged] == [1, 2, 3]
    best_iter, best = max(logged, key=lambda t: t[1])
    assert summary["final_iteration"] == 3 and summary["final_metrics"]["miou"] == pytest.approx(logged[-1][1], abs=1e-4)
    assert summary["metrics"]["miou"] == pytest.approx(best, abs=1e-4)
    assert summary["best_iteration"] in [i for i, m in logged if abs(m - best) < 1e-4]
    assert set(summary["final_metrics"]) == set(summary["metrics"]) == {"miou", "macc", "allacc", "per_class_iou"}


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, data_root, capsys):
    recipe = _recipe(tmp_path, data_root, iterations=1)
    run = tmp_path / "outputs" / "run"
    assert main.main(["--config", str(recipe), "--output-dir", str(run), "model.args.bn_momentun=0.1"]) == 2
    assert "did you mean 'bn_momentum'" in capsys.readouterr().err
    assert not run.exists()
    # a folder that was there before (e.g. one being resumed, or holding the user's files) stays
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    assert main.main(["--config", str(recipe), "--output-dir", str(run), "model.args.bn_momentun=0.1"]) == 2
    assert (run / "notes.txt").read_text() == "mine" and (run / "config.yaml").is_file()


def test_discard_keeps_a_folder_with_results(tmp_path):
    from lib.engine.launch import discard_unused_run_dir

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "log.txt").write_text("x")
    (tmp_path / "a" / "config.yaml").write_text("x")
    assert discard_unused_run_dir(tmp_path / "a") and not (tmp_path / "a").exists()
    (tmp_path / "b" / "tensorboard").mkdir(parents=True)
    (tmp_path / "b" / "log.txt").write_text("x")
    assert not discard_unused_run_dir(tmp_path / "b") and (tmp_path / "b" / "log.txt").is_file()

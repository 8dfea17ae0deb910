"""--resume with overrides: keys that change what the run trains are refused (or, with
--allow-config-change, recorded); keys that only change how long it runs or how it is watched pass."""
import json

import pytest
import yaml

from tests.engine import standin_main
from tests.engine import standins as S
from lib.config import ConfigError
from lib.config import config_to_dict
from lib.config.resume import RESUME_SAFE, config_changes, flatten, is_resume_safe
from lib.config.schema import Config
from lib.engine.launch import run

BASE = ["train.iterations=4", "train.ckpt_every=2", "train.stop_at=2"]


def _train(run_dir, overrides, resume=False, allow=False):
    cfg = standin_main.config(BASE + list(overrides))
    return run(cfg, "train", run_dir, S.build_dataset, S.build_model, S.collate, resume=resume,
               allow_config_change=allow)


@pytest.fixture
def started(tmp_path):
    """A stand-in run stopped at iteration 2 with last.pth and config.yaml."""
    _train(tmp_path / "run", [])
    assert (tmp_path / "run" / "last.pth").is_file()
    return tmp_path / "run"


def test_run_changing_override_is_refused_naming_old_and_new(started):
    before = (started / "config.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        _train(started, ["train.optimizer.lr=0.5", "seed=3", "train.stop_at=0"], resume=True)
    message = str(err.value)
    assert "\n" not in message
    assert "train.optimizer.lr: 0.1 -> 0.5" in message and "seed: 0 -> 3" in message
    assert "train.stop_at" not in message  # harmless keys are not listed
    assert "--allow-config-change" in message
    assert (started / "config.yaml").read_text() == before  # the folder still states the run


def test_harmless_overrides_resume(started):
    summary = _train(started, ["train.stop_at=0", "train.iterations=6", "train.log_every=3"], resume=True)
    assert summary["iterations"] == 6
    assert yaml.safe_load((started / "config.yaml").read_text())["train"]["iterations"] == 6
    assert not (started / "config_changes.json").exists()


def test_allowed_change_is_recorded_in_the_run_folder(started):
    _train(started, ["train.stop_at=0", "train.optimizer.lr=0.05"], resume=True, allow=True)
    history = json.loads((started / "config_changes.json").read_text())
    assert history[-1]["changes"] == {"train.optimizer.lr": {"old": 0.1, "new": 0.05}}
    assert yaml.safe_load((started / "config.yaml").read_text())["train"]["optimizer"]["lr"] == 0.05


def test_the_keys_named_by_the_issue_change_the_run():
    for key in ("data.voxel_size", "model.name", "model.args.bn_momentum", "data.dataset", "data.features",
                "data.splits", "seed", "train.loss.ce_weight", "data.augment.scale", "train.amp"):
        assert not is_resume_safe(key), key
    for key in ("train.iterations", "train.epochs", "train.log_every", "engine", "dist.nproc",
                "eval.tta.enabled", "data.num_workers"):
        assert is_resume_safe(key), key


def test_every_safe_key_exists_in_the_schema():
    keys = set(flatten(config_to_dict(Config())))
    for entry in RESUME_SAFE:
        assert any(k == entry or k.startswith(entry) for k in keys), entry


def test_config_changes_flattens_nested_args():
    assert config_changes({"model": {"args": {"a": 1}}}, {"model": {"args": {"a": 2, "b": 3}}}) == \
        {"model.args.a": (1, 2), "model.args.b": (None, 3)}

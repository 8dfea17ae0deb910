"""Config values out of range, keys given twice, and where an override's unknown key came from."""
import dataclasses
import typing

import pytest

from lib.config import ConfigError, load_config
from lib.config.constraints import RULES
from lib.config.schema import Config


def _recipe(tmp_path, text="seed: 1\n"):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("override, key, reason", [
    ("data.voxel_size=-0.02", "data.voxel_size", "> 0"),
    ("data.voxel_size=0", "data.voxel_size", "> 0"),
    ("data.voxel_size=.nan", "data.voxel_size", "finite"),
    ("data.voxel_size=.inf", "data.voxel_size", "finite"),
    ("train.iterations=0", "train.iterations", ">= 1"),
    ("train.iterations=-5", "train.iterations", ">= 1"),
    ("data.batch_size=0", "data.batch_size", ">= 1"),
    ("data.num_workers=-1", "data.num_workers", ">= 0"),
    ("train.optimizer.lr=-0.1", "train.optimizer.lr", ">= 0"),
    ("train.optimizer.betas=[0.9, 1.5]", "train.optimizer.betas", "< 1"),
    ("data.augment.dropout_p=1.5", "data.augment.dropout_p", "<= 1"),
    ("train.loss.label_smoothing=1", "train.loss.label_smoothing", "< 1"),
    ("dist.master_port=70000", "dist.master_port", "<= 65535"),
    ("train.loss_weights={'aux': -1.0}", "train.loss_weights", ">= 0"),
    ("train.loss_weights={'aux': .nan}", "train.loss_weights", "finite"),
    ("profile.fit_fractions=[0.5, 1.5]", "profile.fit_fractions", "<= 1"),
    ("profile.depth=0", "profile.depth", ">= 1"),
    ("data.limit_numpoints=-3", "data.limit_numpoints", ">= 0"),
])
def test_out_of_range_values_are_one_line_errors_naming_the_key(tmp_path, override, key, reason):
    with pytest.raises(ConfigError) as err:
        load_config(_recipe(tmp_path), [override])
    message = str(err.value)
    assert "\n" not in message and f"'{key}'" in message and reason in message, message
    assert "command line" in message


def test_range_error_names_the_file_it_came_from(tmp_path):
    path = _recipe(tmp_path, "data:\n  voxel_size: -0.05\n")
    with pytest.raises(ConfigError, match=r"'data.voxel_size' \(from .*r.yaml\): must be > 0"):
        load_config(path)


def test_values_in_range_pass(tmp_path):
    cfg = load_config(_recipe(tmp_path), ["data.voxel_size=0.05", "train.iterations=1", "train.optimizer.lr=0",
                                          "data.num_workers=0", "data.augment.dropout_p=1"])
    assert cfg.data.voxel_size == 0.05 and cfg.train.iterations == 1 and cfg.train.optimizer.lr == 0.0


def test_every_rule_names_a_field_and_every_default_obeys_its_rules():
    from lib.config.constraints import check_value

    for cls, rules in RULES.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(rules) <= names, (cls.__name__, set(rules) - names)
        defaults = cls()
        for name in names:
            assert check_value(cls, name, getattr(defaults, name)) is None, (cls.__name__, name)
    # every shipped recipe still loads
    from lib.config import CONFIG_DIR
    for path in sorted(CONFIG_DIR.glob("*.yaml")):  # config/ holds recipes only (label maps live in datasets/)
        assert isinstance(load_config(path), Config), path


def test_every_numeric_section_field_has_a_rule():
    """A new numeric knob without a range is caught here (add it to lib/config/constraints.py)."""
    unruled, sections = [], [Config]
    while sections:
        cls = sections.pop()
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                sections.append(tp)
                continue
            args = typing.get_args(tp)
            numeric = tp in (int, float) or (args and set(args) - {type(None)} <= {int, float})
            if numeric and f.name not in RULES.get(cls, {}):
                unruled.append(f"{cls.__name__}.{f.name}")
    assert unruled == []


def test_a_key_given_twice_in_one_file_names_both_lines(tmp_path):
    path = _recipe(tmp_path, "seed: 1\ndata:\n  voxel_size: 0.02\n  batch_size: 2\n  voxel_size: 0.05\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "'voxel_size' is given twice (lines 3 and 5)" in message, message
    # the same key in two different sections is fine
    ok = _recipe(tmp_path, "data:\n  voxel_size: 0.02\ntrain:\n  iterations: 3\neval:\n  tta:\n    rotations: 3\n")
    assert load_config(ok).train.iterations == 3


def test_a_top_level_key_given_twice(tmp_path):
    path = _recipe(tmp_path, "seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"'seed' is given twice \(lines 1 and 2\)"):
        load_config(path)


def test_unknown_override_key_is_reported_as_from_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_recipe(tmp_path), ["trian.iterations=3"])
    message = str(err.value)
    assert "unknown key 'trian'" in message and "(from command line)" in message and "defaults" not in message
    assert "did you mean 'train'" in message
    with pytest.raises(ConfigError, match=r"unknown key 'data.augment.nope' \(from command line\)"):
        load_config(_recipe(tmp_path), ["data.augment.nope.deeper=1"])

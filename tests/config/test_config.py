"""The config system: `_base_` inheritance, typed overrides, and the error texts users see."""
import dataclasses
from typing import Literal, Optional

import pytest
import yaml

from lib.config import ConfigError, config_to_dict, load_config, save_config
from lib.config.validate import build_dataclass


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def recipes(tmp_path):
    write(tmp_path / "base.yaml", {"seed": 3, "data": {"dataset": "s3dis"}, "model": {"name": "A", "args": {"x": 1, "y": 2}}})
    write(tmp_path / "mid.yaml", {"_base_": "base.yaml", "model": {"args": {"y": 5}}, "device": "cpu"})
    write(tmp_path / "top.yaml", {"_base_": ["mid.yaml"], "seed": 7})
    return tmp_path


def test_base_inheritance_merges_deeply_and_child_wins(recipes):
    cfg = load_config(recipes / "top.yaml")
    assert cfg.seed == 7                      # child overrides base
    assert cfg.device == "cpu"                # from the middle file
    assert cfg.data.dataset == "s3dis"        # from the base file
    assert cfg.model.args == {"x": 1, "y": 5}  # dicts merge key by key


def test_inheritance_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_overrides_are_parsed_to_the_declared_type(recipes):
    cfg = load_config(recipes / "top.yaml", ["seed=11", "device=cuda", "model.args.z=[1, 2]", "model.name=123"])
    assert cfg.seed == 11 and isinstance(cfg.seed, int)
    assert cfg.device == "cuda"
    assert cfg.model.args["z"] == [1, 2]
    assert cfg.model.name == "123"  # a str field keeps the text, not the number YAML would make of it


@dataclasses.dataclass
class Inner:
    lr: float = 0.1
    steps: list[int] = dataclasses.field(default_factory=list)
    mode: Literal["a", "b"] = "a"
    path: Optional[str] = None


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    flag: bool = False


def test_types_int_to_float_lists_optional():
    obj = build_dataclass(Outer, {"inner": {"lr": 1, "steps": [1, 2], "path": None}, "flag": True}, {})
    assert obj.inner.lr == 1.0 and isinstance(obj.inner.lr, float)
    assert obj.inner.steps == [1, 2] and obj.flag is True and obj.inner.path is None


def test_unknown_key_names_key_file_and_suggestion(recipes):
    write(recipes / "bad.yaml", {"_base_": "top.yaml", "model": {"nmae": "B"}})
    with pytest.raises(ConfigError) as err:
        load_config(recipes / "bad.yaml")
    msg = str(err.value)
    assert "unknown key 'model.nmae'" in msg
    assert str(recipes / "bad.yaml") in msg
    assert "did you mean 'model.name'?" in msg


def test_unknown_key_from_command_line(recipes):
    with pytest.raises(ConfigError) as err:
        load_config(recipes / "top.yaml", ["sed=1"])
    assert "unknown key 'sed' (from command line); did you mean 'seed'?" in str(err.value)


def test_wrong_type_names_key_source_and_expected_type(recipes):
    write(recipes / "bad.yaml", {"_base_": "top.yaml", "seed": "many"})
    with pytest.raises(ConfigError) as err:
        load_config(recipes / "bad.yaml")
    msg = str(err.value)
    assert "wrong type for 'seed'" in msg and str(recipes / "bad.yaml") in msg
    assert "expected int, got str 'many'" in msg
    with pytest.raises(ConfigError, match=r"wrong type for 'seed' \(from command line\): expected int, got float"):
        load_config(recipes / "top.yaml", ["seed=0.5"])


def test_exponent_floats_without_a_dot_are_floats():
    # YAML 1.1 (PyYAML) reads 1e-3 as text; a float field takes it as the number users mean
    obj = build_dataclass(Outer, {"inner": {"lr": "1e-3"}}, {})
    assert obj.inner.lr == 0.001
    with pytest.raises(ConfigError, match="expected float, got str 'fast'"):
        build_dataclass(Outer, {"inner": {"lr": "fast"}}, {})


def test_bool_is_not_an_int_and_literal_suggests():
    with pytest.raises(ConfigError, match="expected bool"):
        build_dataclass(Outer, {"flag": 1}, {})
    with pytest.raises(ConfigError, match="did you mean 'b'"):
        build_dataclass(Outer, {"inner": {"mode": "bb"}}, {})


def test_key_from_a_base_file_names_that_file(recipes):
    write(recipes / "base.yaml", {"model": {"name": 5}})
    with pytest.raises(ConfigError, match=r"wrong type for 'model.name' \(from .*base\.yaml\)"):
        load_config(recipes / "top.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    (tmp_path / "evil.yaml").write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


def test_bare_name_resolves_inside_config_dir():
    cfg = load_config("demo.yaml")
    assert cfg.data.dataset
    assert load_config("demo").seed == cfg.seed  # the suffix may be left out


def test_saved_config_round_trips(recipes, tmp_path):
    cfg = load_config(recipes / "top.yaml", ["seed=5"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(out)
    assert config_to_dict(again) == config_to_dict(cfg)


def test_every_recipe_in_config_dir_validates():
    from lib.config import CONFIG_DIR
    names = [p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("_")]
    assert names, "config/ holds no recipe"
    for path in names:
        load_config(path)

"""The dataset registry: built-in datasets found by name, unknown names answered in one line with
the closest registered name, the same protocol for every dataset."""
import numpy as np
import pytest

import datasets
from datasets.registry import dataset_names, get_dataset, register_dataset
from datasets.spec import DatasetSpec
from lib.config import ConfigError
from lib.config.schema_data import DataConfig


def test_builtin_datasets_are_registered_with_one_protocol():
    assert {"scannet", "s3dis", "semantickitti", "folder"} <= set(dataset_names())
    for name in ("scannet", "s3dis", "semantickitti"):
        spec = get_dataset(name)
        assert isinstance(spec, DatasetSpec) and spec.name == name
        k = len(spec.class_names)
        assert np.array(spec.palette).shape == (k, 3)
        assert len(spec.raw_ids) in (0, k)
        assert spec.convention in ("nan_absent", "zero_absent")
        assert spec.benchmark is None or callable(spec.write_benchmark)
    assert len(get_dataset("semantickitti").class_names) == 19 and get_dataset("scannet").raw_ids[-1] == 39


def test_unknown_dataset_names_suggest_the_closest(tmp_path):
    with pytest.raises(ConfigError) as exc_info:
        get_dataset("scanet")
    message = str(exc_info.value)
    assert message.startswith("unknown dataset 'scanet' for 'data.dataset'; did you mean 'scannet'?")
    assert "\n" not in message and "folder" in message
    with pytest.raises(ConfigError, match="did you mean 'semantickitti'"):
        datasets.build_dataset(DataConfig(dataset="semantic_kitti", root=str(tmp_path)), "train")
    with pytest.raises(ConfigError, match="'data.dataset' is not set"):
        datasets.build_dataset(DataConfig(root=str(tmp_path)), "train")


def test_a_name_cannot_be_taken_twice():
    class Other(DatasetSpec):
        name = "scannet"

    with pytest.raises(ValueError, match="dataset 'scannet' is registered twice"):
        register_dataset(Other)
    with pytest.raises(ValueError, match="needs a non-empty `name`"):
        register_dataset(DatasetSpec)


def test_a_dataset_without_a_generator_says_so(tmp_path):
    class Bare(DatasetSpec):
        name = "bare_test_dataset"

    from datasets import registry

    register_dataset(Bare)
    try:
        cfg = DataConfig(dataset="bare_test_dataset", synthetic=True, cache_dir=str(tmp_path))
        with pytest.raises(ValueError, match="dataset 'bare_test_dataset' has no synthetic generator"):
            datasets.build_dataset(cfg, "train")
    finally:
        registry.DATASETS.pop("bare_test_dataset")


def test_main_names_an_unknown_dataset_in_one_line_before_anything_runs(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "main.py", "--config", "demo.yaml", "data.dataset=scanet",
                          "--output-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: unknown dataset 'scanet' for 'data.dataset'; did you mean 'scannet'? "
                               "(registered: folder, s3dis, scannet, semantickitti")
    assert not (tmp_path / "run").exists()

"""The transformer recipes load, build their networks, and stop with one line without data."""
import pytest

import models
from lib.config import load_config
from tests.test_main_cli import run_main

RECIPES = {"scannet_tr.yaml": "CodedVTRUNet", "scannet_vtr.yaml": "VTRUNet", "s3dis_tr.yaml": "CodedVTRUNet",
           "semantickitti_tr.yaml": "CodedVTRUNet", "demo_tr.yaml": "CodedVTRUNet"}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_builds_its_network(recipe):
    cfg = load_config(recipe, [])
    model = models.build_model(cfg.model, 6, 20)
    assert type(model).__name__ == RECIPES[recipe]


def test_scannet_tr_without_data_stops_with_one_line_naming_the_preprocessing(tmp_path):
    missing = tmp_path / "scannet" / "processed"
    out = run_main("--config", "scannet_tr.yaml", f"data.root={missing}", "device=cpu",
                   f"--output-dir={tmp_path / 'run'}")
    assert out.returncode != 0
    errors = [line for line in out.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and "scripts.preprocess scannet" in errors[0]
    assert "data.synthetic=true" in errors[0]

"""`--mode test` with the shipped recipes writes a PLY per scene (the README follows its test command
with how to look at one), read back here by plyfile."""
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lib.config import load_config
from tests.conftest import ROOT

RECIPES = sorted(p.name for p in (ROOT / "config").glob("*.yaml")
                 if "learning_map" not in (yaml.safe_load(p.read_text()) or {}))  # not the KITTI label map


@pytest.mark.parametrize("recipe", RECIPES)
def test_shipped_recipes_export_ply_in_test_mode(recipe):
    assert load_config(recipe).export.ply, f"{recipe}: --mode test would write no PLY"


def _main(*args):
    out = subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]


def test_demo_test_mode_writes_a_ply_per_scene(tmp_path):
    plyfile = pytest.importorskip("plyfile", reason="plyfile reads the PLY back (pip install plyfile)")
    small = [f"data.cache_dir={tmp_path / 'cache'}", "train.progress=false", "eval.plots=false"]
    train = tmp_path / "train"
    _main("--config", "demo.yaml", "--output-dir", train, "train.iterations=1", "train.val_every=0",
          "train.ckpt_every=1", *small)
    test = tmp_path / "test"
    # no export override: what the recipe ships
    _main("--config", "demo.yaml", "--mode", "test", "--weights", train / "last.pth", "--output-dir", test, *small)
    plys = sorted((test / "predictions" / "ply").glob("*.ply"))
    assert len(plys) == 3  # demo's 16 synthetic scenes hold 3 test scenes
    for path in plys:
        vertex = plyfile.PlyData.read(str(path))["vertex"]
        assert vertex.count > 1000 and {"x", "y", "z", "red", "green", "blue", "pred"} <= set(vertex.data.dtype.names)
        assert np.all(vertex["pred"] < 20)

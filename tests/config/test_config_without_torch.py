"""Recipes resolve with nothing but PyYAML: `python main.py --config X --print-config` must not import
torch or numpy (a user checks a recipe before the heavy install; the config layer stays light)."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'numpy'):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
import main
sys.exit(main.main(['--config', sys.argv[1], '--print-config']))
"""

RECIPES = sorted(p.name for p in (ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_resolves_without_torch_or_numpy(recipe):
    out = subprocess.run([sys.executable, "-c", BLOCKER, recipe], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model:" in out.stdout

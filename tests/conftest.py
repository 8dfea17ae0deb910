"""Test-wide setup: run from the repository root, where `lib`, `models` and `datasets` live."""
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Real scans shipped beside the checkout (../shared/data/real, or $VOXSEG_REAL_DATA); tests that
# need them skip, naming the folder, without.
REAL_DATA = Path(os.environ.get("VOXSEG_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (scripts/gpu_check.py runs `pytest -m cuda`)")


def pytest_collection_modifyitems(config, items):
    # A test that skips without CUDA is a CUDA test: marked here, so `pytest -m cuda` selects exactly
    # those (plus any marked by hand) without each file repeating the mark.
    for item in items:
        if any(re.search(r"cuda|gpu", str(m.kwargs.get("reason", "")), re.I) for m in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.cuda)

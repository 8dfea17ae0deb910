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


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size="256k", readonly=False) -> a folder that is a fresh tmpfs of that size, unmounted
    after the test: a real full disk or read-only file system. Needs mount rights (root in this
    sandbox and in CI); the test is skipped, naming the reason, where mounting is refused."""
    import subprocess

    mounted = []

    def mount(size: str = "256k", readonly: bool = False) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)

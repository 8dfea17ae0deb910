"""Fixtures of the data-pipeline tests: the real scans, preprocessed once per session."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # data_helpers, whatever the import mode
from data_helpers import REAL_KITTI, REAL_SCANNET  # noqa: E402


def _preprocess_real(tmp_path_factory, name: str, raw: Path, what: str) -> Path:
    """Preprocess the real `raw` tree of dataset `name` into a fresh temp folder (skip if absent)."""
    if not raw.is_dir():
        pytest.skip(f"real {what} not found at {raw}")
    from datasets.preprocessing import preprocess

    out = tmp_path_factory.mktemp(f"{name}_pre")
    preprocess(name, raw, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def scannet_root(tmp_path_factory):
    """The 17 real ScanNet scans, preprocessed once per test session."""
    return _preprocess_real(tmp_path_factory, "scannet", REAL_SCANNET, "ScanNet scans")


@pytest.fixture(scope="session")
def kitti_root(tmp_path_factory):
    """The 2 real SemanticKITTI frames, indexed once per test session."""
    return _preprocess_real(tmp_path_factory, "semantickitti", REAL_KITTI, "SemanticKITTI frames")

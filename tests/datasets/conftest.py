"""Fixtures of the data-pipeline tests: the real scans, preprocessed once per session."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # data_helpers, whatever the import mode
from data_helpers import REAL_KITTI, REAL_SCANNET  # noqa: E402


@pytest.fixture(scope="session")
def scannet_root(tmp_path_factory):
    """The 17 real ScanNet scans, preprocessed once per test session."""
    if not REAL_SCANNET.is_dir():
        pytest.skip(f"real ScanNet scans not found at {REAL_SCANNET}")
    from datasets.preprocessing import preprocess

    out = tmp_path_factory.mktemp("scannet_pre")
    preprocess("scannet", REAL_SCANNET, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def kitti_root(tmp_path_factory):
    """The 2 real SemanticKITTI frames, indexed once per test session."""
    if not REAL_KITTI.is_dir():
        pytest.skip(f"real SemanticKITTI frames not found at {REAL_KITTI}")
    from datasets.preprocessing import preprocess

    out = tmp_path_factory.mktemp("kitti_pre")
    preprocess("semantickitti", REAL_KITTI, out, workers=1, progress=False)
    return out

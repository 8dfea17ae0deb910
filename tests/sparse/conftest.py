"""Fixtures of the sparse-core tests."""
import pytest

from lib.sparse import native


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty native-kernel build cache in tmp_path and no library loaded yet in this process."""
    monkeypatch.setenv("VOXSEG_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_reasons", {})
    return tmp_path

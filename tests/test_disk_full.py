"""A full disk while a checkpoint or a preprocessed scene is written: DiskFullError naming the file
(one line from main.py and scripts/preprocess.py), and nothing half-written left behind.

Two kinds of evidence: a real 256 KiB tmpfs filled up (needs mount rights: root in this sandbox and
CI; skipped with the reason elsewhere), and the exact exceptions the libraries raise there, replayed
(torch.save's zip writer: RuntimeError "unexpected pos" whose context is the OSError ENOSPC; numpy
writing into an open file: OSError "N requested and M written" without an errno)."""
import errno
import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "datasets"))
from data_helpers import make_scannet_tree, random_scene  # noqa: E402

from datasets import store  # noqa: E402
from datasets.preprocessing import preprocess  # noqa: E402
from lib.engine.checkpoint import atomic_save  # noqa: E402
from lib.errors import DiskFullError, disk_full_cause  # noqa: E402


@pytest.fixture
def full_fs(tmpfs):
    """A 256 KiB tmpfs, so writes of more than that really fail (tests/conftest.py: tmpfs)."""
    return tmpfs("256k")


def _raw(tmp_path, points=3000):
    return make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene(points, 0)},
                             {"train": ["scene0000_00"], "val": []})


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def test_checkpoint_on_a_real_full_disk(full_fs):
    target = full_fs / "last.pth"
    with pytest.raises(DiskFullError) as err:
        atomic_save({"model": {"w": torch.zeros(200_000)}}, target)  # 800 KB > 256 KiB
    assert str(err.value).startswith(f"no space left writing {target} (")
    assert list(full_fs.iterdir()) == []


def test_preprocessing_on_a_real_full_disk(tmp_path, full_fs):
    out = full_fs / "out"
    with pytest.raises(DiskFullError) as err:
        preprocess("scannet", _raw(tmp_path, points=20_000), out, workers=1, progress=False)
    assert "no space left writing " + str(store.scene_dir(out, "scene0000_00")) in str(err.value)
    assert _leftovers(out) == [] and not store.scene_dir(out, "scene0000_00").exists()


class _FullAfter(io.RawIOBase):
    """A file whose writes fail with ENOSPC after `room` bytes, as a filling disk does."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()
        super().close()


def test_torch_save_runtime_error_is_disk_full(tmp_path, monkeypatch):
    import lib.io

    real_fdopen = lib.io.os.fdopen
    monkeypatch.setattr(lib.io.os, "fdopen", lambda fd, mode, **kw: _FullAfter(real_fdopen(fd, mode, **kw), 500))
    target = tmp_path / "best.pth"
    with pytest.raises(DiskFullError) as err:
        atomic_save({"model": {"w": torch.zeros(10_000)}}, target)
    assert str(err.value) == f"no space left writing {target} (No space left on device)"
    assert isinstance(err.value.__context__, RuntimeError)  # what torch.save raised
    assert list(tmp_path.iterdir()) == []


def test_numpy_short_write_is_disk_full_and_leaves_no_scene_folder(tmp_path, monkeypatch):
    def short_write(path, array):
        open(path, "wb").write(b"\x93NUMPY")
        raise OSError(f"{array.size} requested and 4080 written")

    monkeypatch.setattr(store.np, "save", short_write)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=r"no space left writing .*coord\.npy \(short write: "):
        preprocess("scannet", _raw(tmp_path, points=200), out, workers=1, progress=False)
    assert [p.name for p in (out / "scenes").iterdir()] == []


def test_disk_full_cause_reads_through_wrapped_errors():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as exc:
        assert disk_full_cause(exc) == "Disk quota exceeded"
    assert disk_full_cause(OSError("10 requested and 3 written")) == "short write: 10 requested and 3 written"
    assert disk_full_cause(RuntimeError("unexpected pos 1 vs 2")) is None
    assert disk_full_cause(OSError(errno.EACCES, "Permission denied")) is None


def test_preprocess_cli_on_a_real_full_disk_is_one_line_last(tmp_path, full_fs):
    raw = _raw(tmp_path, points=20_000)
    done = subprocess.run([sys.executable, "-m", "scripts.preprocess", "scannet", "--input", str(raw),
                           "--output", str(full_fs / "out"), "--workers", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.rstrip("\n").split("\n")
    assert lines[-1].startswith("error: no space left writing "), done.stderr
    assert "Traceback" not in done.stderr

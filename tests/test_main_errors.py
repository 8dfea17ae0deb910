"""main.py ends bad input in one line naming the file or key (exit 2), and SIGTERM like SIGINT:
the trainer's `finally` hooks flush the TensorBoard writer, the message says where the last
checkpoint is, the exit code is non-zero."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "datasets"))
from data_helpers import make_scannet_tree, random_scene  # noqa: E402

import main  # noqa: E402


def _room(n, seed):
    xyz, rgb, labels = random_scene(n, seed)
    return xyz * 1.5, rgb, labels  # 3 m cube: several voxels even at the U-Net's coarsest stride


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Three small rooms (two train, one val), preprocessed."""
    from datasets.preprocessing import preprocess

    tmp = tmp_path_factory.mktemp("main_errors")
    raw = make_scannet_tree(tmp / "raw", {f"scene000{i}_00": _room(400, i) for i in range(3)},
                            {"train": ["scene0000_00", "scene0001_00"], "val": ["scene0002_00"]})
    preprocess("scannet", raw, tmp / "pre", workers=1, progress=False)
    return tmp / "pre"


def _recipe(tmp_path, root, **train):
    recipe = {"device": "cpu", "engine": "torch",
              "data": {"dataset": "scannet", "root": str(root), "voxel_size": 0.1, "batch_size": 2,
                       "num_workers": 0},
              "model": {"name": "Res16UNet14A"},
              "train": {"iterations": 1, "val_every": 0, "ckpt_every": 1, "log_every": 1, "progress": False,
                        "cpu_threads": 1, **train},
              "eval": {"plots": False}, "export": {"ply": False}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _one_line_error(capsys, argv, *expected):
    assert main.main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error: ") or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("mode", ["train", "test", "profile"])
def test_checkpoint_of_another_class_count(tmp_path, data_root, capsys, mode):
    import torch

    import models
    from lib.config.schema import ModelConfig

    other = models.build_model(ModelConfig(name="Res16UNet14A"), 3, 13)  # an S3DIS model: 13 classes
    weights = tmp_path / "s3dis.pth"
    torch.save({"model": other.state_dict()}, weights)
    line = _one_line_error(capsys, ["--config", str(_recipe(tmp_path, data_root)), "--mode", mode,
                                    "--weights", str(weights), "--output-dir", str(tmp_path / "run")],
                           str(weights), "shape mismatch(es):", "(13,", "vs model", "(20,")
    assert "missing" not in line  # same architecture: only the classifier differs


def test_model_config_error(tmp_path, data_root, capsys):
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, data_root)), "model.args.bn_momentun=0.1",
                             "--output-dir", str(tmp_path / "run")], "model.args.bn_momentun", "bn_momentum")


def test_strict_run_on_a_manifest_with_skipped_scenes(tmp_path, data_root, capsys):
    import shutil

    root = tmp_path / "pre"
    shutil.copytree(data_root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["skipped"] = {"scene0009_00": "x.ply: truncated or corrupt PLY"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, root)), "--output-dir", str(tmp_path / "run")],
                    str(root / "manifest.json"), "scene0009_00", "data.strict=false")


def test_bad_scene_found_in_a_dataloader_worker(tmp_path, data_root, capsys):
    import shutil

    root = tmp_path / "pre"
    shutil.copytree(data_root, root)
    for scene in ("scene0000_00", "scene0001_00"):
        label_file = root / "scenes" / scene / "label.npy"
        label = np.load(label_file)
        label[2] = 77
        np.save(label_file, label)
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, root)), "data.num_workers=1",
                             "--output-dir", str(tmp_path / "run")], "scenes/scene000", "label id 77 out of range")


def test_one_voxel_batch_names_the_scene(tmp_path, capsys):
    from datasets.preprocessing import preprocess

    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": _room(1, 0), "scene0001_00": _room(400, 1)},
                            {"train": ["scene0000_00"], "val": ["scene0001_00"]})
    preprocess("scannet", raw, tmp_path / "pre", workers=1, progress=False)
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, tmp_path / "pre")), "data.batch_size=1",
                             "--output-dir", str(tmp_path / "run")], "scene(s) scene0000_00", "too few voxels")


def test_disk_full_names_the_file(tmp_path, monkeypatch):
    import torch

    from lib.engine.checkpoint import atomic_save
    from lib.errors import DiskFullError

    def save_to_full_disk(obj, f):
        with open("/dev/full", "wb") as full:  # fails with ENOSPC and no file name, as on a full disk
            full.write(b"\0" * 64)

    target = tmp_path / "last.pth"
    monkeypatch.setattr(torch, "save", save_to_full_disk)
    with pytest.raises(DiskFullError) as err:
        atomic_save({"model": {}}, target)
    assert str(err.value) == f"no space left writing {target} (No space left on device)"
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_disk_full_is_one_line_in_main(tmp_path, data_root, capsys, monkeypatch):
    import errno

    import lib.engine.launch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "x.ply"))

    monkeypatch.setattr(lib.engine.launch, "launch", full)
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, data_root)), "--output-dir", str(tmp_path / "run")],
                    "no space left writing", "x.ply")


def test_disk_full_during_a_checkpoint_ends_training_with_one_last_line(tmp_path, data_root, capsys, monkeypatch):
    import errno

    import lib.engine.checkpoint

    def torch_save_on_full_disk(obj, f):  # what torch.save raises there (tests/test_disk_full.py)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(lib.engine.checkpoint.torch, "save", torch_save_on_full_disk)
    run = tmp_path / "run"
    argv = ["--config", str(_recipe(tmp_path, data_root, progress=True)), "--output-dir", str(run)]
    assert main.main(argv) == 2
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    # the first checkpoint written is best.pth (validation at the end), then last.pth
    assert last == f"error: no space left writing {run / 'best.pth'} (No space left on device)", err[-2000:]
    assert "Traceback" not in err
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("how", ["file_in_place", "read_only_mount"])
def test_unwritable_output_dir_is_one_line(tmp_path, data_root, capsys, tmpfs, how):
    if how == "file_in_place":
        (tmp_path / "taken").write_text("a file where the run folder's parent should be")
        out = tmp_path / "taken" / "run"
        reason = f"{tmp_path / 'taken'} is a file, not a folder"
    else:
        out = tmpfs("64k", readonly=True) / "run"
        reason = "Read-only file system"
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, data_root)), "--output-dir", str(out)],
                    f"error: {out}: cannot write here ({reason}); choose another --output-dir")


@pytest.mark.parametrize("how", ["file_in_place", "read_only_mount"])
def test_unwritable_preprocess_output_is_one_line(tmp_path, tmpfs, how):
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": _room(50, 0)}, {"train": ["scene0000_00"], "val": []})
    if how == "file_in_place":
        out = tmp_path / "out.npy"
        out.write_text("")
    else:
        out = tmpfs("64k", readonly=True)
    done = subprocess.run([sys.executable, "-m", "scripts.preprocess", "scannet", "--input", str(raw), "--output",
                           str(out), "--workers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {out}: cannot write here "
                                                 f"({f'{out} is a file, not a folder' if how == 'file_in_place' else 'Read-only file system'}); "
                                                 "choose another --output"]


def test_batch_larger_than_the_training_scenes_is_a_config_error(tmp_path, data_root, capsys):
    _one_line_error(capsys, ["--config", str(_recipe(tmp_path, data_root)), "data.batch_size=3", "--output-dir",
                             str(tmp_path / "run")],
                    "error: data.batch_size=3 is larger than the 2 training scene(s) of each process")


def _worker_of_rank(launcher_pid: int, rank: int) -> int:
    """The pid of the --nproc worker with RANK=rank among the launcher's children."""
    from pathlib import Path

    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return int(child)
    raise AssertionError(f"no worker of rank {rank} under {launcher_pid}")


def test_rank_killed_under_nproc_is_one_line_naming_it(tmp_path, data_root):
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "main.py", "--config", str(_recipe(tmp_path, data_root, iterations=10_000)), "--nproc", "2",
         "data.batch_size=1", "--output-dir", str(run)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (run / "last.pth").is_file() and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.2)
        assert (run / "last.pth").is_file(), "no checkpoint written"
        victim = _worker_of_rank(launcher.pid, 1)
        os.kill(victim, signal.SIGKILL)
        _, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    assert err.rstrip("\n").split("\n")[-1] == (
        f"error: rank 1 of 2 (pid {victim}) was killed by SIGKILL; last checkpoint: {run / 'last.pth'} "
        f"(continue with --output-dir {run} --resume)"), err[-3000:]


def test_sigterm_flushes_events_and_names_the_last_checkpoint(tmp_path, data_root):
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, data_root, iterations=100000)
    proc = subprocess.Popen([sys.executable, "main.py", "--config", str(recipe), "--output-dir", str(run)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "last.pth").is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (run / "last.pth").is_file(), proc.communicate(timeout=5)[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last == (f"error: stopped by SIGTERM; last checkpoint: {run / 'last.pth'} "
                    f"(continue with --output-dir {run} --resume)"), err[-2000:]
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes()  # flushed by the writer's close

"""A SIGTERM at any moment of a run, garbage collections included, stops it with 143 and the
resume line (issue 23: one raised inside a gc callback was printed as "Exception ignored" and
training went on). main.main runs in this process; the moments are picked at random among the
Python calls (sys.setprofile) and the collections (gc.callbacks) of a reference run."""
import gc
import os
import random
import signal
import sys

import pytest
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tests" / "datasets"))
from data_helpers import preprocessed_rooms  # noqa: E402

import main  # noqa: E402
from lib.engine.signals import install_sigterm_handler, take_signal  # noqa: E402


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sigterm_moments")
    root = preprocessed_rooms(tmp)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "device": "cpu", "engine": "torch",
        "data": {"dataset": "scannet", "root": str(root), "voxel_size": 0.1, "batch_size": 2, "num_workers": 0},
        "model": {"name": "Res16UNet14A"},
        # validation and checkpoints inside the run, so moments fall in them too
        "train": {"iterations": 3, "val_every": 2, "ckpt_every": 1, "log_every": 1, "progress": False,
                  "hooks": ["logging", "validation", "checkpoint"]},
        "eval": {"plots": False}, "export": {"ply": False}}))
    return path


@pytest.fixture
def handler():
    previous = signal.getsignal(signal.SIGTERM)
    take_signal()
    install_sigterm_handler()  # before main.main: a signal while it parses is recorded, not fatal
    yield
    take_signal()
    signal.signal(signal.SIGTERM, previous)


def _run(argv, profile=None, gc_callback=None) -> int:
    if gc_callback is not None:
        gc.callbacks.append(gc_callback)
    sys.setprofile(profile)
    try:
        return main.main(argv)
    finally:
        sys.setprofile(None)
        if gc_callback is not None:
            gc.callbacks.remove(gc_callback)


def test_a_sigterm_at_random_moments_always_stops_the_run(recipe, tmp_path, capsys, handler):
    argv = ["--config", str(recipe)]
    assert _run(argv + ["--output-dir", str(tmp_path / "warm")]) == 0  # imports and caches warm
    counts = {"calls": 0, "collections": 0}

    def count_calls(frame, event, arg):
        if event == "call":
            counts["calls"] += 1

    def count_collections(phase, info):
        if phase == "start":
            counts["collections"] += 1

    assert _run(argv + ["--output-dir", str(tmp_path / "ref")], count_calls, count_collections) == 0
    assert counts["calls"] > 1000 and counts["collections"] > 10, counts
    capsys.readouterr()
    rng = random.Random(23)
    # 90 %: a run's count varies a little; the moment must come before the run ends
    moments = ([("call", rng.randint(1, int(0.9 * counts["calls"]))) for _ in range(3)]
               + [("collection", rng.randint(1, int(0.9 * counts["collections"]))) for _ in range(3)])
    for i, (kind, k) in enumerate(moments):
        seen, sent = [0], []

        def fire():
            seen[0] += 1
            if seen[0] == k and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)

        def on_call(frame, event, arg):
            if event == "call":
                fire()

        def on_collection(phase, info):
            if phase == "start":
                fire()
                sum(range(100))  # bytecode inside the gc callback, where the handler used to raise

        run = tmp_path / f"run{i}"
        code = _run(argv + ["--output-dir", str(run)], *((on_call, None) if kind == "call" else (None, on_collection)))
        err = capsys.readouterr().err
        assert sent, f"{kind} {k} never came"
        assert code == 128 + signal.SIGTERM, f"{kind} {k}: exit {code}\n{err[-1500:]}"
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: stopped by SIGTERM; ") and last.endswith(
            f"(continue with --output-dir {run} --resume)"), f"{kind} {k}: {last}"
        assert "Exception ignored" not in err, err[-1500:]

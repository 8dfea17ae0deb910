"""train.cpu_threads auto: the cores a process has to itself once its data workers run (issue 23)."""
import pytest
import torch

from lib.config import load_config
from lib.engine.cpu_threads import apply_cpu_threads, auto_threads, resolve_cpu_threads


@pytest.mark.parametrize("cores, procs, workers, expected", [
    (2, 1, 2, 1),    # this 2-core machine, the recipes' 2-4 workers: one thread (5x faster per step)
    (2, 1, 1, 1),    # the demos' one worker
    (2, 1, 0, 2),    # no workers: both cores for the main process
    (2, 2, 0, 1),    # --nproc 2 on 2 cores
    (16, 1, 4, 12),  # the GPU machine, _base_.yaml's 4 workers
    (16, 4, 2, 2),   # 4 processes there: 4 cores each, 2 of them feed the workers
    (16, 8, 4, 1),   # more workers than a process's share: never below one
    (1, 1, 0, 1),
])
def test_auto_rule(cores, procs, workers, expected):
    assert auto_threads(cores, procs, workers) == expected
    n, line = resolve_cpu_threads("auto", "cpu", cores, procs, workers)
    assert n == expected
    assert line.startswith(f"train.cpu_threads auto -> {expected} (cpu device, {cores} cores")


def test_explicit_count_and_torch_default_are_kept():
    assert resolve_cpu_threads(3, "cpu", 2, 1, 2)[0] == 3
    assert resolve_cpu_threads(0, "cpu", 2, 1, 2)[0] == torch.get_num_threads()


def test_default_is_auto_and_sets_torch(monkeypatch):
    cfg = load_config("demo.yaml")
    assert cfg.train.cpu_threads == "auto"
    before = torch.get_num_threads()
    monkeypatch.setattr("lib.engine.cpu_threads.usable_cores", lambda: 7)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    try:
        line = apply_cpu_threads(cfg, torch.device("cpu"), 1)
        assert torch.get_num_threads() == 7 - cfg.data.num_workers
        assert f"auto -> {7 - cfg.data.num_workers} " in line
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: 2 processes on this machine
        apply_cpu_threads(cfg, torch.device("cpu"), 2)
        assert torch.get_num_threads() == max(1, 7 // 2 - cfg.data.num_workers)
    finally:
        torch.set_num_threads(before)


def test_bad_values_name_the_key():
    from lib.config import ConfigError
    with pytest.raises(ConfigError, match="train.cpu_threads"):
        load_config("demo.yaml", ["train.cpu_threads=-1"])
    with pytest.raises(ConfigError, match="train.cpu_threads"):
        load_config("demo.yaml", ["train.cpu_threads=fast"])


def test_no_recipe_needs_to_set_it():
    from lib.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        assert load_config(path).train.cpu_threads == "auto", path.name

"""`train.cpu_threads`: torch's intra-op thread count per process, `auto` decided at start-up.

Why not torch's default (one thread per core): an intra-op parallel op hands its pieces to the
other threads and waits for all of them. When every core is already taken (by the DataLoader
workers voxelizing and augmenting scenes, or by the other processes of the run), the partner
thread only gets a core at the scheduler's next time slice, once per op, and a training step runs
thousands of small ops. On the 2-core developer machines that made full recipes 5x slower per step
(issue 23: scannet_tr 33.6 s against 5.9 s with one thread). The sparse kernels that do gain from
threads (lib/sparse/engines/torch_engine.py, lib/sparse/mixing_native.py) split their work over
`torch.get_num_threads()` threads of their own that meet once per call, so they follow this count.

The rule of `auto`: cores left to this process = (usable cores // processes of the run on this
machine) - its DataLoader workers, at least 1. The same on every device: on CUDA the main process's
CPU work is light, and the cores are better left to the workers that feed the GPU. OMP_NUM_THREADS
does not change `auto` (torchrun sets it to 1 for every --nproc run); an integer
`train.cpu_threads` is used as given.
"""
from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(cores: int, procs: int, workers: int) -> int:
    """The `auto` thread count: the cores one process has to itself once its workers run."""
    return max(1, cores // max(1, procs) - workers)


def resolve_cpu_threads(setting, device_type: str, cores: int, procs: int, workers: int) -> tuple[int, str]:
    """(threads, one log line saying how they were chosen). `setting`: train.cpu_threads
    (`auto`, 0 = torch's default, or a count)."""
    if setting == "auto":
        n = auto_threads(cores, procs, workers)
        return n, (f"train.cpu_threads auto -> {n} ({device_type} device, {cores} cores, {procs} process(es) "
                   f"here, {workers} data worker(s) each)")
    if setting == 0:
        return torch.get_num_threads(), f"train.cpu_threads 0 -> torch's default, {torch.get_num_threads()}"
    return int(setting), f"train.cpu_threads {setting} (from the recipe)"


def local_processes(world: int) -> int:
    """Processes of this run on this machine: torchrun's LOCAL_WORLD_SIZE, else the world size."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world))


def apply_cpu_threads(cfg, device: torch.device, world: int) -> str:
    """Set torch's intra-op threads per `cfg.train.cpu_threads`; returns the line to log."""
    n, line = resolve_cpu_threads(cfg.train.cpu_threads, device.type, usable_cores(), local_processes(world),
                                  cfg.data.num_workers)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return line

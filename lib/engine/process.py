"""Process setup shared by every mode: device, process group, per-rank RNG streams, the run folder
(stale temporaries of a killed run removed), and logging."""
import contextlib
import gc
import logging
import random
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from lib.engine import dist as D
from lib.io import ensure_writable_dir, remove_stale_temporaries

log = logging.getLogger("voxseg")


def seed_process(seed: int, rank: int) -> None:
    """Per-rank streams for python, numpy and torch (dropout masks etc. differ across ranks).
    Item augmentation does not use them: it is seeded per item (lib/engine/data.py)."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


@contextlib.contextmanager
def shared_seed(seed: int):
    """Inside: torch's CPU stream seeded with `seed` on every rank (identical initial weights; models
    are built on the CPU); after: each rank's own stream continues where it was. CUDA generators
    are left alone (torch.manual_seed would reseed them too, and fork_rng(devices=[]) would not
    restore them: every rank's GPU dropout would then draw the same masks)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


class _TqdmStream(logging.StreamHandler):
    """Writes log lines through tqdm so they do not break a progress bar."""

    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(run_dir: Path, rank: int) -> list:
    """Rank 0 logs INFO to stderr and <run>/log.txt; other ranks log warnings only.
    Returns the handlers added (`teardown_logging` removes them)."""
    logger = logging.getLogger("voxseg")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [_TqdmStream()]
    if rank == 0:
        handlers.append(logging.FileHandler(run_dir / "log.txt"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return handlers


def to_log_file(text: str) -> None:
    """`text` (a table printed on stdout) also into <run>/log.txt, not a second time on the console."""
    record = logging.LogRecord("voxseg", logging.INFO, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger("voxseg").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def teardown_logging(handlers: list) -> None:
    logger = logging.getLogger("voxseg")
    for h in handlers:
        logger.removeHandler(h)
        h.close()


@contextlib.contextmanager
def process(cfg, run_dir):
    """Set up this process for a run; yields (device, rank, world, run_dir) and tears down after."""
    from lib.engine.cpu_threads import apply_cpu_threads

    device = D.pick_device(cfg.device)
    D.init_distributed(cfg.dist, device)
    rank, world = D.get_rank(), D.get_world_size()
    threads_line = apply_cpu_threads(cfg, device, world)  # before any work: torch reads it per op
    run_dir = Path(D.broadcast_object(str(run_dir)))  # ranks may have computed different timestamps
    stale = 0
    if rank == 0:
        ensure_writable_dir(run_dir, "--output-dir")
        stale = remove_stale_temporaries(run_dir)
    D.barrier()
    handlers = setup_logging(run_dir, rank)
    try:
        log.info("%s", threads_line)
        if stale:
            log.info("removed %d temporary file(s) left in %s by an interrupted write", stale, run_dir)
        seed_process(cfg.seed, rank)
        yield device, rank, world, run_dir
        D.barrier()  # every rank done before the group goes (not after an error: the others may never arrive)
    finally:
        teardown_logging(handlers)
        release_run(sys.exc_info()[1])
        D.cleanup()


def release_run(error) -> None:
    """Free what the mode built (the DDP model, whose reducer holds the process group) before the
    group is destroyed. Left to the interpreter's shutdown, the last reference to a gloo group went
    during finalisation, where its threads died ("terminate called without an active exception",
    SIGABRT with no Python frame left: 2 of 100 repeated 2-process trainings before this, 0 of 100
    after, scripts/repeat_ddp_exit.py). Reference cycles hold it: the first DistributedDataParallel of
    a process imports torch._dynamo, where torch.fx.wrap keeps its own frame (a frame -> local ->
    frame cycle) and so, through f_back, the frames that built the model. An error's traceback holds
    them too: its frames' locals are cleared first."""
    if not D.is_dist():
        return
    if error is not None:
        traceback.clear_frames(error.__traceback__)
    gc.collect()

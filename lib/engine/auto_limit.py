"""`data.limit_numpoints: auto`: the largest voxel count per training batch whose predicted peak fits
`data.memory_budget`, from lib.profiler's points model measured on the first training batch.

Resolved inside the train mode: rank 0 measures once and every rank takes its number
(`agree_limit`), since ranks with different limits would pack different numbers of batches and
hang in a collective. A resumed run keeps the number its checkpoint recorded (the data stream's
saved position is a position in batches packed under it). The measurement leaves the training untouched: it builds its own model (its
forwards would move the real one's BatchNorm statistics) and restores this process's RNG streams.
"""
import logging

import torch

from lib.engine.checkpoint import capture_rng, restore_rng
from lib.engine.data import make_loader
from lib.engine.dist import broadcast_object
from lib.engine.inputs import for_model
from lib.profiler.fit import measure_points_model, optimizer_state_bytes
from lib.profiler.report import static_bytes
from lib.units import parse_bytes

log = logging.getLogger("voxseg")


def measure_limit(cfg, dataset, build_model, collate_fn, make_input, device) -> tuple:
    """(limit, a one-line note saying how it was found): a fresh model of the recipe (seeded with
    `cfg.seed`) measured on the first batch of `dataset`. `make_input`: (batch, device[, input_type])."""
    budget = parse_bytes(cfg.data.memory_budget)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dataset.meta.in_channels, dataset.meta.num_classes).to(device)
    batch = next(iter(make_loader(dataset, cfg.data.batch_size, 0, collate_fn, shuffle=True, seed=cfg.seed)))
    params = static_bytes(model)
    resident = params + optimizer_state_bytes(cfg.train.optimizer, params)
    points, samples = measure_points_model(model, batch, for_model(make_input, model), device,
                                           resident_bytes=resident)
    limit = points.largest_fitting(budget)
    note = (f"data.limit_numpoints auto -> {limit} voxels for data.memory_budget {cfg.data.memory_budget} "
            f"({budget} bytes) on {device}: {points.base_bytes:.0f} bytes + {points.bytes_per_voxel:.1f} "
            f"bytes/voxel, fitted on (voxels, bytes) {samples}")
    return limit, note


def recorded_limit(path) -> int:
    """The data.limit_numpoints a checkpoint's config holds (0 when none: not a number, or no file)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError):
        return 0
    value = ((ckpt.get("config") or {}).get("data") or {}).get("limit_numpoints") if isinstance(ckpt, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


def agree_limit(run, dataset) -> int:
    """The auto limit measured on rank 0 (run: a RunContext), the same number on every rank (every
    rank must call); when resuming, the number `<run>/last.pth` was trained under. This process's
    python / numpy / torch streams are as they were before."""
    if run.resume:
        limit = recorded_limit(run.run_dir / "last.pth")
        if limit:
            log.info("data.limit_numpoints auto -> %d voxels, as %s recorded", limit, run.run_dir / "last.pth")
            return limit
    measured, failure = None, None
    if run.rank == 0:
        state = capture_rng()
        try:
            measured = measure_limit(run.cfg, dataset, run.build_model, run.collate_fn, run.make_input, run.device)
        except Exception as exc:  # the other ranks wait in the broadcast: tell them, then raise here
            failure = exc
            measured = (None, f"{type(exc).__name__}: {exc}")
        finally:
            restore_rng(state)
            if run.device.type == "cuda":
                torch.cuda.empty_cache()  # the measurement's blocks go back before training allocates
    limit, note = broadcast_object(measured)
    if failure is not None:
        raise failure
    if limit is None:
        raise RuntimeError(f"rank 0 could not measure data.limit_numpoints auto ({note})")
    log.info(note)
    return int(limit)

"""`--mode train`: builds the model, loaders, optimizer, schedule and hooks from the config,
resumes from `<run>/last.pth` when asked, and runs the trainer."""
import logging

import torch
from torch import nn

from lib.config import config_to_dict
from lib.engine.checkpoint import (FORMAT_VERSION, CheckpointError, atomic_save, capture_rng,
                                   load_checkpoint, restore_rng)
from lib.engine.data import EpochStream, make_loader
from lib.engine.voxel_budget import VoxelBudgetBatchSampler
from lib.engine.dist import get_world_size, is_dist, is_main
from lib.engine.ema import ModelEMA
from lib.engine.hooks import CheckpointHook, LoggingHook, StopAtHook, TrainMetricsHook, ValidationHook
from lib.engine.inference import validate
from lib.engine.losses import build_loss
from lib.engine.optim import IterationScheduler, build_optimizer
from lib.engine.state_check import check_state_dict, load_weights
from lib.engine.trainer import Trainer

log = logging.getLogger("voxseg")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def prepare_model(model: nn.Module, ctx) -> nn.Module:
    """SyncBN conversion and DDP wrapping when more than one process trains."""
    cfg = ctx.cfg
    if not is_dist():
        return model
    if cfg.train.sync_bn:
        if ctx.device.type != "cuda":
            raise RuntimeError("train.sync_bn=true needs CUDA: torch.nn.SyncBatchNorm has no CPU path")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=cfg.dist.find_unused_parameters)


def gather_rng() -> list:
    """Every rank's RNG states, in rank order (on every rank)."""
    state = capture_rng()
    if not is_dist():
        return [state]
    states = [None] * get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


def run_train(ctx):
    """Train per `ctx.cfg`; returns (summary metrics source dict, trainer).

    ctx: a RunContext (cfg, run_dir, device, rank, world, build_dataset, build_model, collate_fn,
    make_input, weights, resume, train_collate_fn).
    """
    cfg, device = ctx.cfg, ctx.device
    train_set = ctx.build_dataset(cfg.data, "train")
    val_set = ctx.build_dataset(cfg.data, "val")
    meta = train_set.meta
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = ctx.build_model(cfg.model, meta.in_channels, meta.num_classes).to(device)
    if ctx.weights:
        load_weights(model, ctx.weights, device)
        log.info("initialised weights from %s", ctx.weights)
    model = prepare_model(model, ctx)
    criterion = build_loss(cfg.train.loss, meta.num_classes).to(device)
    optimizer = build_optimizer(unwrap(model), cfg.train.optimizer)

    budget = None
    if cfg.data.limit_numpoints > 0 and hasattr(train_set, "voxel_counts"):
        # Pack scenes under the voxel cap instead of a fixed count per batch (no scene dropped).
        budget = VoxelBudgetBatchSampler(train_set.voxel_counts(), cfg.data.limit_numpoints,
                                         cfg.data.batch_size, ctx.rank, ctx.world, shuffle=True, seed=cfg.seed)
    loader = make_loader(train_set, cfg.data.batch_size, cfg.data.num_workers,
                         ctx.train_collate_fn or ctx.collate_fn, ctx.rank, ctx.world, shuffle=True,
                         seed=cfg.seed, batch_sampler=budget)
    val_loader = make_loader(val_set, cfg.data.batch_size, cfg.data.num_workers, ctx.collate_fn,
                             ctx.rank, ctx.world, shuffle=False, seed=cfg.seed)
    stream = EpochStream(loader)
    accum = max(1, cfg.train.accum_steps)
    max_iter = (stream.steps_in(cfg.train.epochs) // accum if cfg.train.epochs > 0
                else cfg.train.iterations)
    scheduler = IterationScheduler(optimizer, cfg.train.scheduler, max_iter)
    use_scaler = cfg.train.amp == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    ema = ModelEMA(unwrap(model), cfg.train.ema.decay, cfg.train.ema.warmup) if cfg.train.ema.enabled else None

    from lib.metrics import SegEvaluator
    evaluator = SegEvaluator.from_meta(meta, cfg.eval.convention, device)
    trainer = Trainer(model, criterion, optimizer, scheduler, stream, ctx.make_input, max_iter,
                      cfg.train, device, scaler, ema)
    eval_model = ema.module if ema is not None else unwrap(model)
    val_hook = ValidationHook(lambda: validate(eval_model, val_loader, ctx.make_input, evaluator,
                                               device, trainer.autocast),
                              cfg.train.val_every, None)

    start_iter = 0
    resume_path = ctx.run_dir / "last.pth"
    if ctx.resume:
        ckpt = load_checkpoint(resume_path, device)
        check_state_dict(unwrap(model), ckpt["model"], resume_path)
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            if not ckpt.get("ema"):
                raise CheckpointError(f"{resume_path}: train.ema.enabled=true but the checkpoint has no EMA")
            ema.load_state_dict(ckpt["ema"])
        val_hook.best, val_hook.best_iteration = ckpt.get("best"), int(ckpt.get("best_iteration", 0))
        start_iter = int(ckpt["iteration"])
        rng = ckpt["rng"]
        if len(rng) != ctx.world:
            log.warning("%s was written by %d processes, resuming with %d: RNG streams differ",
                        resume_path, len(rng), ctx.world)
        restore_rng(rng[ctx.rank % len(rng)])
        log.info("resumed from %s at iteration %d", resume_path, start_iter)
    stream.seek(start_iter * accum)

    config_dict = config_to_dict(cfg)

    def save(name: str):
        rng = gather_rng()
        if not is_main():
            return
        atomic_save({
            "format": FORMAT_VERSION, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "ema": ema.state_dict() if ema is not None else None, "iteration": trainer.iteration,
            "rng": rng, "config": config_dict, "best": val_hook.best,
            "best_iteration": val_hook.best_iteration, "world_size": ctx.world,
        }, ctx.run_dir / f"{name}.pth")

    writer = None
    if is_main():
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(str(ctx.run_dir / "tensorboard"))
    val_hook.writer = writer
    logging_hook = LoggingHook(writer, cfg.train.log_every, cfg.train.progress)
    # Order matters: validation sets new_best before the checkpoint hook reads it.
    trainer.hooks = [logging_hook, TrainMetricsHook(meta.class_names, cfg.train.log_every, writer, device),
                     val_hook, CheckpointHook(save, cfg.train.ckpt_every)]
    if cfg.train.stop_at > 0:
        trainer.hooks.append(StopAtHook(cfg.train.stop_at))
    trainer.train(start_iter)
    if trainer.stop_reason:
        log.info("stopped early at iteration %d: %s", trainer.iteration, trainer.stop_reason)
    best = val_hook.best or val_hook.last
    return best, trainer

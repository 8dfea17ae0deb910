"""`--mode train`: builds the model, loaders, optimizer, schedule and the recipe's hooks
(`train.hooks`), resumes every checkpointed piece from `<run>/last.pth` when asked, and trains."""
import logging
import weakref

import torch
from torch import nn

from lib.config import config_to_dict
from lib.engine.auto_limit import agree_limit
from lib.engine.checkpoint import Checkpointer
from lib.engine.data import EpochStream, SeededItems, make_loader
from lib.engine.dist import average_buffers, is_dist, is_main
from lib.engine.ema import ModelEMA
from lib.engine.hookbase import build_hooks, check_hook_names
from lib.engine.hooks import HookEnv
from lib.engine.inference import predict_scene, validate
from lib.engine.inputs import for_model
from lib.engine.losses import build_loss
from lib.engine.model_card import build_card
from lib.engine.optim import IterationScheduler, build_optimizer
from lib.engine.process import shared_seed
from lib.engine.state_check import load_weights
from lib.engine.trainer import Trainer
from lib.engine.voxel_budget import CappedStream, VoxelBudgetBatchSampler
from lib.model_contract import unwrap

log = logging.getLogger("voxseg")


def prepare_model(model: nn.Module, run) -> nn.Module:
    """SyncBN conversion and DDP wrapping when more than one process trains."""
    cfg = run.cfg
    if not is_dist():
        return model
    if cfg.train.sync_bn:
        if run.device.type != "cuda":
            raise RuntimeError("train.sync_bn=true needs CUDA: torch.nn.SyncBatchNorm has no CPU path")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [run.device.index] if run.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=cfg.dist.find_unused_parameters)


def make_train_loaders(run, train_set, val_set):
    """(training stream, validation loader) for this rank. With `data.limit_numpoints` the loader
    yields lists of items and a `CappedStream` keeps the cap and collates in the main process."""
    cfg = run.cfg
    collate = run.train_collate_fn or run.collate_fn
    if cfg.data.limit_numpoints == "auto":  # measured once, on rank 0 (recorded in the checkpoint's config)
        cfg.data.limit_numpoints = agree_limit(run, train_set)
    limit = cfg.data.limit_numpoints
    budget = None
    if limit > 0 and hasattr(train_set, "voxel_counts"):
        # Pack scenes under the voxel cap instead of a fixed count per batch (no scene dropped).
        budget = VoxelBudgetBatchSampler(train_set.voxel_counts(), limit,
                                         cfg.data.batch_size, run.rank, run.world, shuffle=True, seed=cfg.seed)
    loader = make_loader(train_set, cfg.data.batch_size, cfg.data.num_workers, list if limit > 0 else collate,
                         run.rank, run.world, shuffle=True, seed=cfg.seed, batch_sampler=budget)
    val_loader = make_loader(val_set, cfg.data.batch_size, cfg.data.num_workers, run.collate_fn,
                             run.rank, run.world, shuffle=False, seed=cfg.seed)
    stream = CappedStream(loader, limit, collate) if limit > 0 else EpochStream(loader)
    return stream, val_loader


def build_trainer(run):
    """The trainer with its hooks and checkpointer, resumed when `run.resume`."""
    cfg, device = run.cfg, run.device
    check_hook_names(cfg.train.hooks)  # before anything slow is built
    train_set = run.build_dataset(cfg.data, "train")
    val_set = run.build_dataset(cfg.data, "val")
    meta = train_set.meta
    with shared_seed(cfg.seed):  # identical initial weights on every rank, per-rank streams after
        model = run.build_model(cfg.model, meta.in_channels, meta.num_classes).to(device)
    if run.weights:
        load_weights(model, run.weights)
        log.info("initialised weights from %s", run.weights)
    make_input = for_model(run.make_input, model)
    run.watch_model(model)
    model = prepare_model(model, run)
    criterion = build_loss(cfg.train.loss, meta.num_classes).to(device)
    optimizer = build_optimizer(unwrap(model), cfg.train.optimizer)

    stream, val_loader = make_train_loaders(run, train_set, val_set)
    accum = max(1, cfg.train.accum_steps)
    max_iter = (stream.steps_in(cfg.train.epochs) // accum if cfg.train.epochs > 0
                else cfg.train.iterations)
    scheduler = IterationScheduler(optimizer, cfg.train.scheduler, max_iter)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" and device.type == "cuda" else None
    ema = ModelEMA(unwrap(model), cfg.train.ema.decay, cfg.train.ema.warmup) if cfg.train.ema.enabled else None
    trainer = Trainer(model, criterion, optimizer, scheduler, stream, make_input, max_iter,
                      cfg.train, device, scaler, ema)

    from lib.metrics import SegEvaluator
    evaluator = SegEvaluator.from_meta(meta, cfg.eval.convention, device)
    eval_model = ema.module if ema is not None else unwrap(model)

    # The hooks' callables reach the trainer and the checkpointer through weak references, and the
    # checkpointer holds a weak proxy of the trainer: no reference cycle holds the trainer, so it
    # and the DDP model (whose reducer holds the process group) are freed as soon as the train
    # mode returns, before the group is destroyed. Kept alive by a cycle until the interpreter's
    # shutdown collected it, the group's gloo threads died under finalisation now and then
    # ("terminate called without an active exception"; tests/engine/test_teardown.py).
    owner = weakref.ref(trainer)

    def one_model():
        # Ranks' BatchNorm statistics (and so the EMA's) differ by their last batches: validate
        # and save their average, so every rank scores the same model and the checkpoint is it.
        average_buffers(unwrap(model), *([ema.module] if ema is not None else []))

    def validate_synced():
        one_model()
        return validate(eval_model, val_loader, make_input, evaluator, device, owner().autocast)

    def save_synced(name):
        one_model()
        return owner().checkpointer.save(name)

    val_items = SeededItems(val_set, cfg.seed)

    def preview():
        # One validation scene as `--mode test` predicts it (no TTA), for the pointcloud hook.
        item, probs = predict_scene(eval_model, val_items, 0, [(0.0, False, 1.0)], run.collate_fn,
                                    make_input, device, trainer.autocast)
        return item["scene"], item["points"], probs.argmax(dim=1).cpu().numpy(), item["point_labels"]

    env = HookEnv(cfg, meta.class_names, device, run_dir=run.run_dir, validate=validate_synced, save=save_synced,
                  preview=preview, palette=meta.palette)
    trainer.hooks = build_hooks(cfg.train.hooks, env)
    checkpointer = trainer.checkpointer = Checkpointer(run.run_dir, weakref.proxy(trainer), trainer.hooks, config_to_dict(cfg), is_writer=is_main(),
                                card=build_card(cfg, meta, train_set), model=unwrap(model), optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema)
    if run.resume:
        path = run.run_dir / "last.pth"
        checkpointer.load(path)
        log.info("resumed from %s at iteration %d", path, trainer.iteration)  # the stream too
    return trainer


def run(run):
    """Train per `run.cfg`; returns (the best validation scores, or the last, iterations done)."""
    trainer = build_trainer(run)
    if is_main():  # the report's parameter count (lib/report)
        from lib.report.records import count_parameters, write_run_info
        write_run_info(run.run_dir, mode="train", parameters=count_parameters(unwrap(trainer.model)))
    trainer.train()
    if trainer.stop_reason:
        log.info("stopped early at iteration %d: %s", trainer.iteration, trainer.stop_reason)
    scores = None
    if any(h.name == "validation" for h in trainer.hooks):
        val = trainer.hook("validation")
        scores = val.best or val.last
        # summary.json holds the last validation beside the best (lib/engine/launch.py)
        run.summary_extra = {"best_iteration": val.best_iteration, "final_iteration": val.last_iteration,
                             "final_metrics": val.last}
    return scores, trainer.iteration

"""Hooks of the training loop: logging, periodic validation, checkpoints, early stop.

Only rank 0 writes files; hooks that run collectives (validation, loss averaging) run on every
rank in the same order.
"""
import logging
import math

import torch

from lib.engine.dist import all_reduce_mean, is_main
from lib.engine.trainer import HookBase

log = logging.getLogger("voxseg")


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory in MiB since the last reset (NaN on the CPU, where torch keeps no count)."""
    if device.type != "cuda":
        return math.nan
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


class LoggingHook(HookBase):
    """Scalars to TensorBoard and the text log every `every` steps, a tqdm bar on rank 0.

    The losses written are means over ranks. The writer is closed in after_train, which the
    trainer runs on every exit path.
    """

    def __init__(self, writer, every: int, progress: bool):
        self.writer = writer  # tensorboardX SummaryWriter on rank 0, None elsewhere
        self.every = max(1, every)
        self.progress = progress
        self.bar = None
        self.losses = []  # (iteration, loss) of every step on this rank, for tests and the summary

    def before_train(self, trainer):
        if self.progress and is_main():
            from tqdm import tqdm
            self.bar = tqdm(total=trainer.max_iter, initial=trainer.iteration, desc="train",
                            dynamic_ncols=True, leave=False)

    def after_step(self, trainer):
        info = trainer.step_info
        self.losses.append((trainer.iteration, info["loss"]))
        if info["skipped"]:
            log.warning("iteration %d: non-finite loss, step skipped (%d in a row)",
                        trainer.iteration, trainer.bad_steps)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}")
        if trainer.iteration % self.every and trainer.iteration != trainer.max_iter:
            return
        scalars = {k: v if k == "lr" else all_reduce_mean(v)
                   for k, v in info.items() if k not in ("skipped", "grad_norm")}
        if not math.isnan(info["grad_norm"]):
            scalars["grad_norm"] = info["grad_norm"]
        scalars["peak_memory_mb"] = peak_memory_mb(trainer.device)
        if not is_main():
            return
        if self.writer is not None:
            for name, value in scalars.items():
                if not math.isnan(value):
                    self.writer.add_scalar(f"train/{name}", value, trainer.iteration)
        text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if not math.isnan(v))
        log.info("iter %d/%d %s", trainer.iteration, trainer.max_iter, text)

    def after_train(self, trainer):
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class TrainMetricsHook(HookBase):
    """Voxel-level mIoU / mAcc / allAcc of the training batches, accumulated over `every` steps,
    summed over ranks, written as train/mIoU etc. (voxels, not original points: augmentation
    changes the points, so this is a progress signal, not a benchmark number)."""

    def __init__(self, class_names: list, every: int, writer, device):
        from lib.metrics import ConfusionMatrix
        self.class_names = list(class_names)
        self.every = max(1, every)
        self.writer = writer
        self.confusion = ConfusionMatrix(len(self.class_names), device)

    def after_step(self, trainer):
        for pred, labels in trainer.step_preds:
            self.confusion.update(pred, labels)
        if trainer.iteration % self.every and trainer.iteration != trainer.max_iter:
            return
        from lib.metrics import compute_scores
        self.confusion.all_reduce()
        scores = compute_scores(self.confusion.valid(), "standard", self.class_names)
        self.confusion.reset()
        if is_main() and self.writer is not None:
            for key, value in (("mIoU", scores.miou), ("mAcc", scores.macc), ("allAcc", scores.allacc)):
                if not math.isnan(value):
                    self.writer.add_scalar(f"train/{key}", value, trainer.iteration)


def _miou(scores) -> float:
    """The score ranked by validation; -1 when nothing was scored (mIoU None)."""
    return scores["mIoU"] if scores["mIoU"] is not None else -1.0


class ValidationHook(HookBase):
    """Calls `validate() -> scores dict` every `every` steps and at the last step; keeps the best.

    `scores` is the evaluator's dict (mIoU, mAcc, allAcc, per_class, convention ...). Sets
    `trainer.new_best` so the checkpoint hook that follows writes `best`.
    """

    def __init__(self, validate, every: int, writer):
        self.validate = validate
        self.every = every
        self.writer = writer
        self.best = None  # scores dict of the best validation so far
        self.best_iteration = 0
        self.last = None

    def after_step(self, trainer):
        trainer.new_best = False
        due = self.every > 0 and trainer.iteration % self.every == 0
        if not (due or trainer.iteration == trainer.max_iter):
            return
        scores = self.validate()
        self.last = scores
        miou = _miou(scores)
        if self.best is None or miou > _miou(self.best):
            self.best, self.best_iteration = scores, trainer.iteration
            trainer.new_best = True
        if is_main():
            log.info("validation at iter %d: mIoU=%.4f mAcc=%.4f allAcc=%.4f (best %.4f at %d)",
                     trainer.iteration, miou, scores["mAcc"] or 0.0, scores["allAcc"] or 0.0,
                     self.best["mIoU"] or 0.0, self.best_iteration)
            if self.writer is not None:
                for key in ("mIoU", "mAcc", "allAcc"):
                    if scores[key] is not None:
                        self.writer.add_scalar(f"val/{key}", scores[key], trainer.iteration)
                for name, entry in scores["per_class"].items():
                    if entry["iou"] is not None:
                        self.writer.add_scalar(f"val_iou/{name}", entry["iou"], trainer.iteration)


class CheckpointHook(HookBase):
    """Writes `last` every `every` steps and at the end, `best` after a new best validation.

    `save(name)` is called on every rank (it gathers per-rank RNG states); rank 0 writes
    <run>/<name>.pth atomically.
    """

    def __init__(self, save, every: int):
        self.save = save
        self.every = every

    def after_step(self, trainer):
        if getattr(trainer, "new_best", False):
            self.save("best")
        due = self.every > 0 and trainer.iteration % self.every == 0
        if due or trainer.iteration == trainer.max_iter:
            self.save("last")


class StopAtHook(HookBase):
    """Ends the run after iteration `stop_at` as if it had been killed there (train.stop_at)."""

    def __init__(self, stop_at: int):
        self.stop_at = stop_at

    def after_step(self, trainer):
        if trainer.iteration >= self.stop_at:
            trainer.stop_reason = f"train.stop_at={self.stop_at} reached"

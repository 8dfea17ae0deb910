"""The built-in hooks (names for `train.hooks`): logging, train_metrics, validation, checkpoint,
stop_at, tensorboard, pointcloud (off unless listed). See lib/engine/hookbase.py for the base class, registry and order.

Hooks exchange values through `trainer.storage` only: per-step objects ("step_info",
"step_preds", "new_best", "val_scores", "meshes") and scalars (put_scalar; "scalars" in reads/writes), which
the tensorboard hook, the one owner of the SummaryWriter, flushes at the end of each step.
Only rank 0 writes files; hooks that run collectives (validation, loss averaging) run on every
rank in the same order.
"""
import json
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from lib.engine.dist import all_reduce_mean, is_main
from lib.engine.hookbase import HookBase, register_hook
# the colours every picture shares (the dataset palette; unlabelled points grey)
from lib.export.colours import UNLABELLED as IGNORED_COLOUR, class_colours  # noqa: F401

log = logging.getLogger("voxseg")


@dataclass
class HookEnv:
    """What built-in hooks are built from (`cls.build(env)`)."""
    cfg: object  # the whole Config
    class_names: list
    device: torch.device
    validate: Callable = None  # () -> evaluator score dict
    save: Callable = None  # (name) -> writes <run>/<name>.pth; every rank calls it
    run_dir: object = None
    preview: Callable = None  # () -> (scene, points [P, 3] m, pred [P], labels [P]): validation scene 0
    palette: object = None  # [K, 3] uint8 class colours (the dataset meta's)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory in MiB since the last reset (NaN on the CPU, where torch keeps no count)."""
    if device.type != "cuda":
        return math.nan
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def log_due(trainer, every: int) -> bool:
    return trainer.iteration % max(1, every) == 0 or trainer.iteration == trainer.max_iter


def console_text(scalars: dict) -> str:
    """The console / log.txt line of a step's scalars: `name=value` each, except that scalars named
    per block (`model/<name>/<block>`: CodedVTR logs 2 values for each of 12 blocks) are summed up
    as `name=mean [min, max] over N blocks`; TensorBoard keeps every block's value. NaNs are left out."""
    groups: dict = {}
    for key, value in scalars.items():
        if math.isnan(value):
            continue
        name = key.removeprefix("train/")
        head = name.rsplit("/", 1)[0] if name.count("/") >= 2 else name
        groups.setdefault(head, []).append((name, value))
    fields = []
    for head, items in groups.items():
        if len(items) == 1:
            fields.append(f"{items[0][0]}={items[0][1]:.4g}")
            continue
        values = [v for _, v in items]
        lo, hi, mean = min(values), max(values), sum(values) / len(values)
        spread = f" [{lo:.4g}, {hi:.4g}]" if hi > lo else ""
        fields.append(f"{head}={mean:.4g}{spread} over {len(values)} blocks")
    return " ".join(fields)


@register_hook
class LoggingHook(HookBase):
    """Every `every` steps: the step's values, averaged over ranks, as scalars (train/loss, train/lr,
    train/data_time, train/step_time, train/grad_norm, train/peak_memory_mb, loss/<name> for every
    named loss, model/<name> for every model log) and a text log line; a tqdm bar on rank 0."""

    name = "logging"
    reads = ("step_info",)
    writes = ("scalars",)

    def __init__(self, every: int, progress: bool):
        self.every = max(1, every)
        self.progress = progress
        self.bar = None

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.cfg.train.log_every, env.cfg.train.progress)

    def before_train(self, trainer):
        if self.progress and is_main():
            from tqdm import tqdm
            # leave=True: closing ends the bar's line, so an error printed after it stands alone
            self.bar = tqdm(total=trainer.max_iter, initial=trainer.iteration, desc="train",
                            dynamic_ncols=True, leave=True)

    def after_step(self, trainer):
        info = trainer.storage.get("step_info")
        if info["skipped"]:
            log.warning("iteration %d: non-finite loss or gradient, step skipped (%d in a row)",
                        trainer.iteration, trainer.bad_steps)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}")
        if not log_due(trainer, self.every):
            return
        scalars = {"train/loss": all_reduce_mean(info["loss"]), "train/lr": info["lr"]}
        scalars.update({f"loss/{k}": all_reduce_mean(v) for k, v in info["losses"].items()})
        scalars.update({f"model/{k}": all_reduce_mean(v) for k, v in info["logs"].items()})
        for key in ("data_time", "step_time"):
            scalars[f"train/{key}"] = all_reduce_mean(info[key])
        scalars["train/grad_norm"] = info["grad_norm"]  # equal on every rank (all-reduced gradients)
        scalars["train/peak_memory_mb"] = peak_memory_mb(trainer.device)
        for name, value in scalars.items():
            trainer.storage.put_scalar(name, value)
        if is_main():
            log.info("iter %d/%d %s", trainer.iteration, trainer.max_iter, console_text(scalars))

    def after_train(self, trainer):
        if self.bar is not None:
            self.bar.close()


@register_hook
class TrainMetricsHook(HookBase):
    """Voxel-level mIoU / mAcc / allAcc of the training batches, accumulated over `every` steps,
    summed over ranks, published as train/mIoU etc. (voxels, not original points: augmentation
    changes the points, so this is a progress signal, not a benchmark number)."""

    name = "train_metrics"
    reads = ("step_preds",)
    writes = ("scalars",)

    def __init__(self, class_names: list, every: int, device):
        from lib.metrics import ConfusionMatrix
        self.class_names = list(class_names)
        self.every = max(1, every)
        self.confusion = ConfusionMatrix(len(self.class_names), device)

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.class_names, env.cfg.train.log_every, env.device)

    def after_step(self, trainer):
        for pred, labels in trainer.storage.get("step_preds", ()):
            self.confusion.update(pred, labels)
        if not log_due(trainer, self.every):
            return
        from lib.metrics import compute_scores
        self.confusion.all_reduce()
        scores = compute_scores(self.confusion.valid(), "standard", self.class_names)
        self.confusion.reset()
        for key, value in (("mIoU", scores.miou), ("mAcc", scores.macc), ("allAcc", scores.allacc)):
            trainer.storage.put_scalar(f"train/{key}", value)


def _miou(scores) -> float:
    """The score ranked by validation; -1 when nothing was scored (mIoU None)."""
    return scores["mIoU"] if scores["mIoU"] is not None else -1.0


@register_hook
class ValidationHook(HookBase):
    """Calls `validate() -> scores dict` every `every` steps and at the last step; keeps the best.

    `scores` is the evaluator's dict (mIoU, mAcc, allAcc, per_class, convention ...). Publishes
    "new_best" (bool) every step, "val_scores" on validation steps, and val/*, val_iou/* scalars.
    State (checkpointed): the best scores and their iteration.
    """

    name = "validation"
    writes = ("new_best", "val_scores", "scalars")

    def __init__(self, validate, every: int):
        self.validate = validate
        self.every = every
        self.best = None  # scores dict of the best validation so far
        self.best_iteration = 0
        self.last, self.last_iteration = None, 0  # the latest validation (summary.json's final_metrics)

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.validate, env.cfg.train.val_every)

    def after_step(self, trainer):
        storage = trainer.storage
        storage.put("new_best", False)
        due = self.every > 0 and trainer.iteration % self.every == 0
        if not (due or trainer.iteration == trainer.max_iter):
            return
        scores = self.validate()
        self.last, self.last_iteration = scores, trainer.iteration
        storage.put("val_scores", scores)
        miou = _miou(scores)
        if self.best is None or miou > _miou(self.best):
            self.best, self.best_iteration = scores, trainer.iteration
            storage.put("new_best", True)
        for key in ("mIoU", "mAcc", "allAcc"):
            if scores[key] is not None:
                storage.put_scalar(f"val/{key}", scores[key])
        for name, entry in scores["per_class"].items():
            if entry["iou"] is not None:
                storage.put_scalar(f"val_iou/{name}", entry["iou"])
        if is_main():
            log.info("validation at iter %d: mIoU=%.4f mAcc=%.4f allAcc=%.4f (best %.4f at %d)",
                     trainer.iteration, miou, scores["mAcc"] or 0.0, scores["allAcc"] or 0.0,
                     self.best["mIoU"] or 0.0, self.best_iteration)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_iteration": self.best_iteration}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_iteration = state.get("best"), int(state.get("best_iteration", 0))


class NonFiniteWeightsError(RuntimeError):
    """The model's weights hold NaN/inf: nothing is saved over the last good checkpoint."""


@register_hook
class CheckpointHook(HookBase):
    """Writes `last` every `every` steps and at the end, `best` when validation published
    "new_best" in this step. `save(name)` runs on every rank (it gathers per-rank RNG states);
    rank 0 writes <run>/<name>.pth atomically. Weights holding NaN/inf are never saved."""

    name = "checkpoint"
    reads = ("new_best",)

    def __init__(self, save, every: int):
        self.save = save
        self.every = every

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.save, env.cfg.train.ckpt_every)

    def after_step(self, trainer):
        best = bool(trainer.storage.get("new_best", False))
        last = (self.every > 0 and trainer.iteration % self.every == 0) or trainer.iteration == trainer.max_iter
        if not (best or last):
            return
        bad = [n for n, p in trainer.model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteWeightsError(f"iteration {trainer.iteration}: model weights hold NaN/inf "
                                        f"(first: {bad[0]}); not saving a checkpoint")
        if best:
            self.save("best")
        if last:
            self.save("last")


@register_hook
class StopAtHook(HookBase):
    """Ends the run after iteration `stop_at` as if it had been killed there (train.stop_at; 0: off)."""

    name = "stop_at"

    def __init__(self, stop_at: int):
        self.stop_at = stop_at

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.cfg.train.stop_at)

    def after_step(self, trainer):
        if self.stop_at > 0 and trainer.iteration >= self.stop_at:
            trainer.request_stop(f"train.stop_at={self.stop_at} reached")


PREVIEW_POINTS = 50_000  # at most this many points per view (every k-th): the event file stays small


@register_hook
class PointCloudHook(HookBase):
    """At each validation, rank 0 predicts the first validation scene with the validated model and
    publishes two coloured point clouds in "meshes" for the tensorboard hook: "pointcloud/prediction"
    and "pointcloud/ground_truth" (original points, coloured by the dataset palette; every k-th
    point when a scene has more than PREVIEW_POINTS). Off unless `train.hooks` lists it."""

    name = "pointcloud"
    reads = ("val_scores",)
    writes = ("meshes",)

    def __init__(self, preview, palette):
        self.preview, self.palette = preview, palette

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.preview, env.palette)

    def after_step(self, trainer):
        if trainer.storage.get("val_scores") is None or not is_main():
            return
        scene, points, pred, labels = self.preview()
        step = -(-len(points) // PREVIEW_POINTS)
        points = np.asarray(points, dtype=np.float32)[::step]
        trainer.storage.put("meshes", {
            "pointcloud/prediction": (points, class_colours(np.asarray(pred)[::step], self.palette)),
            "pointcloud/ground_truth": (points, class_colours(np.asarray(labels)[::step], self.palette))})
        log.info("pointcloud: validation scene %s at iteration %d in TensorBoard", scene, trainer.iteration)


def open_records(path, start: int):
    """<run>/scalars.jsonl opened for writing from iteration `start` on: the lines of iterations
    after `start` (written by a run killed past its last checkpoint, or an earlier run in the same
    folder when `start` is 0) are dropped, so the file is this run's history only."""
    kept = []
    if start > 0 and path.is_file():
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["iteration"]) <= start:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
    records = open(path, "w")
    records.writelines(kept)
    records.flush()
    return records


@register_hook
class TensorBoardHook(HookBase):
    """The one TensorBoard writer (rank 0, <run>/tensorboard): after each step it writes every
    finite scalar published in that step, and the point clouds in "meshes" ({tag: (vertices
    [P, 3] float32, colours [P, 3] uint8)}) with add_mesh. Closed in after_train, which runs on
    every exit path.

    The same scalars also go to <run>/scalars.jsonl, one line per step that published any:
    {"iteration": i, "<name>": value, ...} (appended, flushed per line). TensorBoard event files
    are write-only for us (tensorboardX has no reader), and the run report (lib/report) reads its
    curves from this file. A run starting at iteration 0 starts the file anew; a resumed one keeps
    the lines up to its checkpoint's iteration and appends from there."""

    name = "tensorboard"
    reads = ("scalars", "meshes")

    def __init__(self, logdir, records=None):
        self.logdir = logdir
        self.records_path = records
        self.writer = None
        self.records = None

    @classmethod
    def build(cls, env: HookEnv):
        return cls(env.run_dir / "tensorboard", env.run_dir / "scalars.jsonl")

    def before_train(self, trainer):
        if is_main():
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(str(self.logdir))
            if self.records_path is not None:
                self.records = open_records(self.records_path, trainer.iteration)

    def after_step(self, trainer):
        if self.writer is None:
            return
        finite = {name: float(value) for name, value in trainer.storage.latest_at(trainer.iteration).items()
                  if math.isfinite(value)}
        for name, value in finite.items():
            self.writer.add_scalar(name, value, trainer.iteration)
        if self.records is not None and finite:
            self.records.write(json.dumps({"iteration": trainer.iteration} | finite) + "\n")
            self.records.flush()
        for tag, (vertices, colours) in trainer.storage.get("meshes", {}).items():
            self.writer.add_mesh(tag, vertices=torch.as_tensor(vertices)[None], colors=torch.as_tensor(colours)[None],
                                 global_step=trainer.iteration)

    def after_train(self, trainer):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.records is not None:
            self.records.close()
            self.records = None


# The memory hook (lib/engine/memory_hook.py, built on lib.profiler); importing it registers "memory".
import lib.engine.memory_hook  # noqa: E402,F401  (after the built-in hooks: no import cycle)

"""Schema of the `train` and `dist` sections (owned by the trainer).

Units: learning rates are absolute (not scaled by batch size); iterations count optimizer steps
(one step = `accum_steps` forward/backward passes of `data.batch_size` scenes on every process).
"""
from dataclasses import dataclass, field
from typing import Literal, Union


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # torch.optim class to use
    lr: float = 0.1  # peak learning rate (after warm-up)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # SGD Nesterov momentum (needs momentum > 0)
    weight_decay: float = 1e-4  # L2 (sgd, adam) or decoupled (adamw) weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW betas
    no_decay_norm_bias: bool = False  # exclude 1-D parameters (norm weights, biases) from weight decay


@dataclass
class SchedulerConfig:
    name: Literal["poly", "step", "cosine", "onecycle", "constant"] = "poly"  # shape after warm-up
    warmup_iters: int = 0  # linear warm-up length in iterations (used when warmup_ratio is 0)
    warmup_ratio: float = 0.0  # warm-up length as a fraction of all iterations (wins when > 0)
    warmup_start_factor: float = 0.01  # lr factor at iteration 0 of the warm-up
    power: float = 0.9  # poly: factor = (1 - t/T) ** power
    milestones: list[int] = field(default_factory=list)  # step: iterations where lr is multiplied by gamma
    gamma: float = 0.1  # step: multiplier at each milestone
    min_lr_factor: float = 0.0  # cosine/poly/onecycle: final lr as a fraction of the peak lr
    onecycle_pct_start: float = 0.3  # onecycle: fraction of iterations spent rising to the peak
    onecycle_div_factor: float = 25.0  # onecycle: initial lr = peak / div_factor


@dataclass
class EmaConfig:
    enabled: bool = False  # keep an exponential moving average of the weights, evaluate with it
    decay: float = 0.999  # per-step decay of the average
    warmup: bool = True  # use min(decay, (1+t)/(10+t)) so early averages are not stuck at init


@dataclass
class LossConfig:
    ce_weight: float = 1.0  # weight of cross-entropy in the total loss
    lovasz_weight: float = 0.0  # weight of the Lovász-softmax loss
    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 1)
    class_weights: list[float] = field(default_factory=list)  # per-class CE weights; empty = uniform

    __removed_keys__ = {"aux_weight": "was removed: weight each named loss a model returns with "
                                      "train.loss_weights.<name> (default 1.0)"}


# The built-in hooks in their default order (lib/engine/hooks.py; the engine orders them by what
# each reads and writes, see lib/engine/hookbase.py).
DEFAULT_HOOKS = ["logging", "train_metrics", "validation", "checkpoint", "stop_at", "tensorboard"]


@dataclass
class TrainConfig:
    iterations: int = 1000  # optimizer steps; used when epochs is 0
    epochs: int = 0  # if > 0, train this many passes over the training set instead of `iterations`
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # optimizer settings
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)  # learning-rate schedule
    amp: Literal["none", "fp16", "bf16"] = "none"  # autocast dtype; bf16 on CUDA and CPU, fp16 on CUDA only (fp32 elsewhere)
    accum_steps: int = 1  # forward/backward passes summed into one optimizer step
    clip_grad_norm: float = 0.0  # max global gradient L2 norm; 0 disables clipping
    ema: EmaConfig = field(default_factory=EmaConfig)  # weight averaging
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP (CUDA only)
    max_bad_steps: int = 5  # stop after this many consecutive non-finite losses
    loss: LossConfig = field(default_factory=LossConfig)  # loss terms and weights
    loss_weights: dict[str, float] = field(default_factory=dict)  # weight of each named loss a model returns (default 1.0)
    hooks: list[str] = field(default_factory=lambda: list(DEFAULT_HOOKS))  # training hooks by name (lib/engine/hooks.py)
    val_every: int = 500  # validate every N iterations (and at the end); 0 = only at the end
    log_every: int = 20  # write scalars every N iterations
    ckpt_every: int = 500  # write the `last` checkpoint every N iterations (and at the end)
    test_split: str = "val"  # dataset split that --mode test predicts (and scores when it has labels)
    stop_at: int = 0  # end the run after this iteration as if killed (for resume tests); 0 = off
    progress: bool = True  # tqdm bar on rank 0
    # torch intra-op threads per process; auto = the cores left to a process once its data workers
    # run (lib/engine/cpu_threads.py, logged at start-up); 0 = torch default (one per core)
    cpu_threads: Union[int, Literal["auto"]] = "auto"


@dataclass
class DistConfig:
    nproc: int = 1  # processes on this node (main.py launches them through torch.distributed.run)
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto = nccl on CUDA, gloo on CPU
    master_port: int = 0  # rendezvous port for --nproc launches; 0 = pick a free one
    find_unused_parameters: bool = False  # DDP option for models with branches unused in a step
    timeout_s: int = 1800  # collective timeout in seconds

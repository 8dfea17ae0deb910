"""The recipe's precision (`train.amp`), one rule for training, validation and `--mode test`, so
the validation logged while training is what test mode scores on the saved weights."""
import contextlib
import logging

import torch

log = logging.getLogger("voxseg")

NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def amp_dtype(amp: str, device: torch.device, warn: bool = True):
    """The autocast dtype of `train.amp` on `device`, or None (fp32). bf16 runs on CUDA and the
    CPU; fp16 needs CUDA (its GradScaler), elsewhere it falls back to fp32 (with a warning)."""
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type == "cuda":
            return torch.float16
        if warn:
            log.warning("train.amp=fp16 needs CUDA; running in fp32 on %s (bf16 works there)", device.type)
    return None


def precision_name(amp: str, device: torch.device) -> str:
    """'fp32' | 'bf16' | 'fp16': what forwards run at on `device` (recorded in summary.json / metrics.json)."""
    return NAMES[amp_dtype(amp, device, warn=False)]


def autocast(amp: str, device: torch.device, warn: bool = False):
    """The autocast context of `train.amp` on `device` (a no-op context in fp32)."""
    dtype = amp_dtype(amp, device, warn)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)

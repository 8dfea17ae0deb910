"""MemoryHook: the trainer hook logging memory every iteration (registered as "memory").

Scalars (MiB), published through the trainer's EventStorage (or get_event_storage()):
- CUDA: memory/allocated_mib (torch.cuda.memory_allocated after the step), memory/peak_mib
  (max_memory_allocated during the step; the peak is reset after every step), memory/reserved_mib
  (held by the caching allocator).
- every device: memory/saved_mib, the activations autograd kept for backward during the step
  (saved-tensor hooks, each storage once, trainer.model's parameters and buffers left out:
  lib.profiler.saved), memory/rss_mib and
  memory/rss_peak_mib (the process's resident set now and its high-water mark; on the CPU this is
  the closest view of allocator use, since PyTorch keeps no CPU allocator counters).
"""
import resource

import torch

from lib.engine.hookbase import HookBase, register_hook
from lib.engine.storage import get_event_storage
from lib.profiler.saved import SavedTensorTracker
from lib.units import MIB


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def rss_peak_bytes() -> int:
    """High-water mark of the resident set (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_rss_high_water() -> bool:
    """Restart the kernel's resident-set high-water mark (VmHWM) from the current resident set, so
    `rss_high_water_bytes` measures from now (Linux: /proc/self/clear_refs). False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_high_water_bytes() -> int:
    """VmHWM of this process (Linux /proc/self/status; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_peak_bytes()


@register_hook
class MemoryHook(HookBase):
    """Logs allocated / peak memory per iteration (module docstring). `every`: log every N steps.
    In a recipe: `train.hooks: [..., memory]` (logged every `train.log_every` steps)."""

    name = "memory"
    writes = ("scalars",)

    @classmethod
    def build(cls, env):
        return cls(env.cfg.train.log_every)

    def __init__(self, every: int = 1):
        self.every = max(1, int(every))
        self.saved = SavedTensorTracker()
        self.last = {}  # the scalars of the latest logged step

    def before_train(self, trainer):
        device = getattr(trainer, "device", torch.device("cpu"))
        self.cuda = torch.device(device).type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        model = getattr(trainer, "model", None)
        if model is not None:
            self.saved.exclude_tensors([*model.parameters(), *model.buffers()])
        self.saved.__enter__()

    def after_step(self, trainer):
        if trainer.iteration % self.every == 0:
            values = {"memory/saved_mib": self.saved.total / MIB, "memory/rss_mib": rss_bytes() / MIB,
                      "memory/rss_peak_mib": rss_peak_bytes() / MIB}
            if self.cuda:
                values |= {"memory/allocated_mib": torch.cuda.memory_allocated(trainer.device) / MIB,
                           "memory/peak_mib": torch.cuda.max_memory_allocated(trainer.device) / MIB,
                           "memory/reserved_mib": torch.cuda.memory_reserved(trainer.device) / MIB}
            self.last = values
            storage = getattr(trainer, "storage", None)
            if storage is None:
                storage = get_event_storage()
            if storage is not None:
                for name, value in values.items():
                    storage.put_scalar(name, value)
        self.saved.reset()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)

    def after_train(self, trainer):
        self.saved.__exit__(None, None, None)

"""Activations autograd keeps for backward, counted per module while they are saved.

torch.autograd.graph.saved_tensors_hooks routes every tensor an op saves for its backward through
`pack`; the tracker counts the bytes of its storage once per storage (a tensor saved by two ops, or a
view of a tensor already saved, adds nothing), credits them to the module running at that moment,
and wraps the tensor in a holder that lives exactly as long as autograd keeps it (the graph is
freed after backward), so `live()` lists what is still held.
"""
import weakref
from collections import defaultdict

import torch


def storage_key(t: torch.Tensor):
    """(device, address) of the storage under `t`; None for tensors without one (meta, sparse)."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return (str(t.device), ptr) if ptr else None


def storage_bytes(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size()


class SavedTensor:
    """A saved tensor as autograd holds it while a tracker is open."""
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


# PyTorch applies only the innermost saved_tensors_hooks pair, so nested trackers (a profiler inside
# an oom_guard, the training hook inside one) share one pair that hands every saved tensor to all.
_OPEN = []
_HOOKS = []


def _pack(t):
    holder = SavedTensor(t)
    for tracker in _OPEN:
        tracker.account(t, holder)
    return holder


def _unpack(holder):
    return holder.tensor


class SavedTensorTracker:
    """Context manager counting the bytes saved for backward inside it.

    Args:
        owner: callable -> name credited with a tensor saved now (e.g. the running module).
        exclude: tensors whose storages are not activations (parameters, buffers); never counted.
    After (or during) the block: `bytes` {owner: bytes}, `total`, `live()` -> [(owner, tensor)].
    `reset()` starts a new count (a training hook calls it every step).
    """

    def __init__(self, owner=lambda: "(all)", exclude=()):
        self.owner = owner
        self.exclude = set()
        self.exclude_tensors(exclude)
        self.bytes = defaultdict(int)
        self._seen = set()
        self._live = weakref.WeakKeyDictionary()  # holder -> owner, gone when autograd frees it

    def exclude_tensors(self, tensors) -> None:
        """Never count the storages of `tensors` (parameters and buffers are not activations)."""
        self.exclude |= {k for k in map(storage_key, tensors) if k is not None}

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def reset(self) -> None:
        self.bytes.clear()
        self._seen.clear()

    def new_pass(self) -> None:
        """Count storages again from here on (a freed storage's address is reused by the next pass)."""
        self._seen.clear()

    def live(self) -> list:
        return [(owner, holder.tensor) for holder, owner in list(self._live.items())]

    def account(self, t, holder) -> None:
        owner = self.owner()
        key = storage_key(t)
        if key is None or (key not in self._seen and key not in self.exclude):
            if key is not None:
                self._seen.add(key)
            self.bytes[owner] += storage_bytes(t)
        self._live[holder] = owner

    def __enter__(self):
        if not _OPEN:
            hooks = torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
            hooks.__enter__()
            _HOOKS.append(hooks)
        _OPEN.append(self)
        return self

    def __exit__(self, *exc):
        _OPEN.remove(self)
        if not _OPEN:
            _HOOKS.pop().__exit__(*exc)
        return False

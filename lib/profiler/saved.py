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
    """A saved tensor as autograd holds it while the tracker is open."""
    __slots__ = ("tensor", "owner", "__weakref__")

    def __init__(self, tensor, owner):
        self.tensor, self.owner = tensor, owner


class SavedTensorTracker:
    """Context manager counting the bytes saved for backward inside it.

    Args:
        owner: callable -> name credited with a tensor saved now (e.g. the running module).
        exclude: tensors whose storages are not activations (parameters, buffers); never counted.
    After (or during) the block: `bytes` {owner: bytes}, `total`, `live()` -> [SavedTensor].
    `reset()` starts a new count (a training hook calls it every step).
    """

    def __init__(self, owner=lambda: "(all)", exclude=()):
        self.owner = owner
        self.exclude = set()
        self.exclude_tensors(exclude)
        self.bytes = defaultdict(int)
        self._seen = set()
        self._live = weakref.WeakSet()
        self._hooks = None

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
        return list(self._live)

    def _pack(self, t):
        owner = self.owner()
        key = storage_key(t)
        if key is None or (key not in self._seen and key not in self.exclude):
            if key is not None:
                self._seen.add(key)
            self.bytes[owner] += storage_bytes(t)
        holder = SavedTensor(t, owner)
        self._live.add(holder)
        return holder

    @staticmethod
    def _unpack(holder):
        return holder.tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False

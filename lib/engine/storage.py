"""One place where the trainer and its hooks publish and read named values (detectron2's
EventStorage is the model): scalars with their iteration, and per-step objects.

Scalars (`put_scalar`) keep a history; `latest()` is what a writer hook flushes. Objects (`put`)
are values for other hooks in the same step, e.g. "step_preds" or "new_best"; `clear_step()` drops
them at the start of each step. `get_event_storage()` gives the storage of the running trainer to
code that has no trainer handle (a model, a profiler hook).
"""
import contextlib

_CURRENT = []


class EventStorage:
    def __init__(self, start_iter: int = 0):
        self.iteration = start_iter
        self._history = {}  # name -> list of (iteration, value)
        self._latest = {}  # name -> (value, iteration)
        self._objects = {}

    def put_scalar(self, name: str, value, iteration: int | None = None) -> None:
        value = float(value.detach().float().item() if hasattr(value, "detach") else value)
        it = self.iteration if iteration is None else iteration
        self._history.setdefault(name, []).append((it, value))
        self._latest[name] = (value, it)

    def put_scalars(self, **values) -> None:
        for name, value in values.items():
            self.put_scalar(name, value)

    def latest(self) -> dict:
        """{name: (value, iteration)} of the most recent value of every scalar."""
        return dict(self._latest)

    def latest_at(self, iteration: int) -> dict:
        """{name: value} of the scalars put at `iteration` (what a writer flushes after a step)."""
        return {name: value for name, (value, it) in self._latest.items() if it == iteration}

    def history(self, name: str) -> list:
        """[(iteration, value), ...] of scalar `name` (empty if never put)."""
        return list(self._history.get(name, ()))

    def put(self, name: str, obj) -> None:
        self._objects[name] = obj

    def get(self, name: str, default=None):
        return self._objects.get(name, default)

    def clear_step(self) -> None:
        self._objects.clear()

    @contextlib.contextmanager
    def activated(self):
        """Make this the storage `get_event_storage()` returns inside the block."""
        _CURRENT.append(self)
        try:
            yield self
        finally:
            _CURRENT.pop()


def get_event_storage() -> EventStorage | None:
    """The storage of the trainer running now, or None outside training."""
    return _CURRENT[-1] if _CURRENT else None

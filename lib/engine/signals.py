"""SIGTERM handled like SIGINT: an exception in the main thread, so every `finally` on the way out
runs (the trainer's after_train hooks flush and close the TensorBoard writer) before the process
exits. Without it SIGTERM (sent by schedulers, `kill`, and torchrun to every worker when one
fails) ends the process at once with 143 and leaves buffered events unwritten."""
import contextlib
import os
import signal

_held = {"depth": 0, "signum": None}  # deferred() blocks open, and a SIGTERM held meanwhile


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM. A BaseException like KeyboardInterrupt, so that no
    `except Exception` on the way out swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def install_sigterm_handler() -> None:
    """Make SIGTERM raise Terminated in this process (call once, from the main thread).

    Processes forked from this one (DataLoader workers) inherit the handler; there it restores the
    default action and re-sends the signal, so a worker still dies at once as before."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if _held["depth"]:
            _held["signum"] = signum
            return
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def deferred():
    """A SIGTERM that arrives inside this block is held, and raised as Terminated when the block
    ends: what the block writes (a checkpoint) is completed first instead of being torn by the
    exception (torch.save's zip writer fails with an error of its own and hides the signal)."""
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if not _held["depth"] and _held["signum"] is not None:
            signum, _held["signum"] = _held["signum"], None
            raise Terminated(signum)

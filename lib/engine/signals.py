"""SIGTERM (sent by schedulers, `kill`, and torchrun to every worker when one fails) ends a run the
way Ctrl-C does, but at a safe point: the handler only records the signal, and the code that can
stop cleanly asks `check_signal()`, which raises `Terminated` there. main.py catches it, names the
last checkpoint and exits 128 + the signal number (143), after every hook's `finally` has run (the
TensorBoard writer flushed).

Why not raise from the handler (as before): Python runs a signal handler at whatever bytecode the
main thread is at. Inside a garbage-collector callback, a weakref callback (WeakKeyDictionary's
`remove`) or a `__del__`, an exception cannot propagate: Python prints "Exception ignored in ..."
and carries on, and the signal was lost (issue 23: training went on). A raise in the middle of a
checkpoint write tore the file. Recording is safe everywhere.

Safe points: the top of each training iteration (lib/engine/trainer.py; agreed over ranks, so
every process stops at the same iteration), each batch of a validation and each scene of
`--mode test` (lib/engine/inference.py, lib/engine/modes/evaluate.py), and main.py once the run
returns (a signal that came after the last safe point still stops with 143). A step in progress
finishes first: a SIGTERM waits for at most one training step or one validation batch.
"""
import os
import signal

_pending = {"signum": None}  # the signal recorded by the handler, not acted on yet


class Terminated(BaseException):
    """Raised at a safe point after SIGTERM. A BaseException like KeyboardInterrupt, so that no
    `except Exception` on the way out swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def install_sigterm_handler() -> None:
    """Make SIGTERM record itself in this process (call from the main thread). A signal already
    recorded stays recorded.

    Processes forked from this one (DataLoader workers) inherit the handler; there it restores the
    default action and re-sends the signal, so a worker still dies at once as before."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _pending["signum"] = signum  # only this: see the module docstring

    signal.signal(signal.SIGTERM, handler)


def take_signal():
    """The recorded signal number (None when none), forgetting it."""
    signum, _pending["signum"] = _pending["signum"], None
    return signum


def check_signal(agree: bool = False) -> None:
    """Raise Terminated if a SIGTERM was recorded. `agree`: a collective (call it on every rank at
    the same point): raise on every rank when any rank has one, so all stop at the same place."""
    signum = _pending["signum"]
    if agree:
        from lib.engine.dist import all_reduce_max, is_dist
        if is_dist():
            signum = int(all_reduce_max(float(signum or 0))) or None
    if signum is not None:
        _pending["signum"] = None
        raise Terminated(signum)

"""SIGTERM raises Terminated in the process that installed the handler, held until the end of a
deferred() block (a checkpoint being written); a forked child (a DataLoader worker) still dies of
the signal at once."""
import os
import signal
import time

import pytest

from lib.engine.signals import Terminated, deferred, install_sigterm_handler


@pytest.fixture
def sigterm_handler():
    previous = signal.getsignal(signal.SIGTERM)
    install_sigterm_handler()
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_raises_in_the_main_thread(sigterm_handler):
    with pytest.raises(Terminated) as err:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; never reached
    assert err.value.signum == signal.SIGTERM and str(err.value) == "stopped by SIGTERM"


def test_a_forked_child_dies_of_sigterm_as_before(sigterm_handler):
    pid = os.fork()
    if pid == 0:  # the child: no exception machinery, just the signal's default action
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os._exit(3)  # reached only if the handler raised instead of re-sending the signal
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_a_sigterm_inside_deferred_waits_for_the_block(sigterm_handler, tmp_path):
    """The signal lands in the middle of a checkpoint write: the file is written whole, then
    Terminated is raised."""
    import torch

    from lib.engine.checkpoint import atomic_save

    path = tmp_path / "last.pth"
    finished = []
    with pytest.raises(Terminated):
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and held the signal
            atomic_save({"weights": torch.arange(1000)}, path)
            finished.append(True)
    assert finished and torch.equal(torch.load(path)["weights"], torch.arange(1000))
    with pytest.raises(Terminated):  # and nothing stays held afterwards: the next signal raises at once
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

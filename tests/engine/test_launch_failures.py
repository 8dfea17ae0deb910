"""The --nproc launcher's one line for a failed worker: the root failure, not the SIGTERMs the agent
sends the survivors, and a surviving rank's lost-peer error told as an effect."""
import signal
from types import SimpleNamespace

from lib.engine.dist import peer_failure, root_failure


def _failure(exitcode, timestamp, pid):
    return SimpleNamespace(exitcode=exitcode, timestamp=timestamp, pid=pid)


def test_the_killed_rank_is_the_root_even_when_a_sigterm_was_recorded_first():
    failures = {0: _failure(-signal.SIGTERM, 10, 100), 1: _failure(-signal.SIGKILL, 11, 101)}
    assert root_failure(failures, 2) == ("rank 1 of 2 (pid 101) was killed by SIGKILL", 128 + 9)


def test_a_crashed_rank_reports_its_exit_code():
    failures = {0: _failure(1, 5, 100), 1: _failure(-signal.SIGTERM, 6, 101)}
    assert root_failure(failures, 2) == ("rank 0 of 2 (pid 100) exited with code 1", 1)


def test_lost_peer_is_recognised_only_inside_a_multi_process_run(monkeypatch):
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:18067: "
                        "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert peer_failure(gloo) is None  # not under torchrun: a plain bug keeps its traceback
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = peer_failure(gloo)
    assert line.startswith("rank 0 lost its peers mid-collective (Read error [127.0.0.1]:18067: Connection reset")
    assert peer_failure(RuntimeError("shape mismatch")) is None

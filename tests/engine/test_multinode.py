"""Two torchrun "nodes" on 127.0.0.1 (c10d rendezvous, --nnodes=2, one gloo process each) train and
test through main.py's launch path exactly as one process does: the same weights after training
(per-node batch 1 = one process with batch 2) and the same confusion matrix in test mode."""
import json
import os
import subprocess
import sys
import uuid

import torch

from lib.engine.dist import free_port
from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "engine" / "standin_main.py"
TIMEOUT = 120


def _one_process(*args):
    out = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]


# Failures of the rendezvous itself (a port taken between free_port() and the bind, both agents racing
# to host the store on one machine) are the test harness's, not the code's: those get one more try.
_RENDEZVOUS_TROUBLE = ("RendezvousError", "RendezvousConnectionError", "Address already in use",
                       "RendezvousTimeoutError", "Connection refused")


def _two_nodes(*args):
    """_launch_two_nodes, tried again once when the failure is in the rendezvous (see above)."""
    for attempt in (1, 2):
        failures = _launch_two_nodes(*args)
        if not failures:
            return
        trouble = any(mark in err for _, err in failures for mark in _RENDEZVOUS_TROUBLE)
        if attempt == 2 or not trouble:
            node, err = failures[0]
            raise AssertionError(f"node {node}: {err[-3000:]}")


def _launch_two_nodes(*args):
    """The same command on node 0 and node 1, joined by torchrun's c10d rendezvous on one port.
    Returns [(node, stderr)] of the nodes that failed."""
    port, run_id = free_port(), uuid.uuid4().hex[:8]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node-rank={node}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
               f"--rdzv_id={run_id}", "--local-addr=127.0.0.1", "--max-restarts=0",
               str(SCRIPT), *map(str, args)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(node, err) for node, (p, (_, err)) in enumerate(zip(procs, results)) if p.returncode != 0]


def test_two_nodes_train_and_test_like_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process("--mode", "train", "--output-dir", one, "data.batch_size=2", "train.iterations=3")
    _two_nodes("--mode", "train", "--output-dir", two, "data.batch_size=1", "train.iterations=3")
    w1 = torch.load(one / "last.pth", weights_only=True)
    w2 = torch.load(two / "last.pth", weights_only=True)
    assert w2["trainer"]["world_size"] == 2 and len(w2["trainer"]["rng"]) == 2
    for name, value in w1["model"].items():
        assert torch.allclose(value, w2["model"][name], atol=1e-6), name

    _one_process("--mode", "test", "--output-dir", one / "test", "--weights", one / "last.pth")
    _two_nodes("--mode", "test", "--output-dir", two / "test", "--weights", one / "last.pth")
    m1 = json.loads((one / "test" / "metrics.json").read_text())
    m2 = json.loads((two / "test" / "metrics.json").read_text())
    assert m1["confusion_matrix"] == m2["confusion_matrix"]
    assert sum(map(sum, m1["confusion_matrix"])) == 4 * 39 * 2  # 4 val scenes, every point counted once
    # and every score derived from it (NaN-safe: compared as text)
    assert json.dumps(m1, sort_keys=True) == json.dumps(m2, sort_keys=True)

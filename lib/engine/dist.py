"""Process-group helpers: rank/world from torchrun's environment, init with NCCL (CUDA) or gloo
(CPU), scalar all-reduces that are no-ops in a single process, and the --nproc launcher."""
import datetime
import os
import signal
import socket

import torch
import torch.distributed as dist

from lib.errors import UserError
from lib.model_contract import state_buffer_names


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun / torch.distributed.run."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(preference: str) -> torch.device:
    """auto: this process's CUDA device (LOCAL_RANK) when CUDA exists, else the CPU."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but torch sees no CUDA device "
                           "(use device=cpu or install a CUDA build of torch)")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(dist_cfg, device: torch.device) -> None:
    """Join the process group torchrun described in the environment (no-op for world size 1)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1 or is_dist():
        return
    backend = dist_cfg.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError("dist.backend=nccl needs CUDA devices; use dist.backend=gloo on CPU")
    kwargs = {"device_id": device} if backend == "nccl" else {}
    timeout = datetime.timedelta(seconds=dist_cfg.timeout_s)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restart > 0:
        # A group restarted by torchrun (--max-restarts) meets in the agent's store, which keeps the
        # keys of the group before it: the ranks then read their dead predecessors' addresses
        # ("Gloo connectFullMesh failed ... Connection refused"). Each attempt gets its own keys.
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        kwargs.update(store=dist.PrefixStore(f"voxseg/attempt_{restart}", store), rank=rank, world_size=world)
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def _scalar_reduce(value: float, op) -> float:
    if not is_dist():
        return float(value)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return float(t.item())


def all_reduce_max(value: float) -> float:
    """Maximum of a python number over ranks (every rank must call)."""
    return _scalar_reduce(value, dist.ReduceOp.MAX)


def all_reduce_mean(value: float) -> float:
    """Mean of a python number over ranks (every rank must call)."""
    return _scalar_reduce(value, dist.ReduceOp.SUM) / get_world_size()


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def average_buffers(*modules) -> None:
    """Make every rank's buffers of `modules` equal (every rank must call, same modules in the
    same order): floating buffers (BatchNorm running statistics, an EMA copy's) become their mean
    over ranks, integer ones (num_batches_tracked) and those a module declares as state
    (`state_buffers`, lib/model_contract.py: a mean of two ranks' rows of a codebook's input memory
    is an input neither saw) rank 0's. Parameters are left alone: DDP keeps them equal. Averaging
    rather than taking rank 0's uses every rank's share of the data, as one process seeing the
    whole batch would. A no-op in a single process."""
    if not is_dist():
        return
    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    world = get_world_size()
    for module in modules:
        state = state_buffer_names(module)
        for name, buf in module.named_buffers():
            work = buf.to(device_type) if buf.device.type != device_type else buf
            if buf.is_floating_point() and name not in state:
                work = work.double() if work.dtype != torch.float64 else work.clone()
                dist.all_reduce(work, op=dist.ReduceOp.SUM)
                work = work / world
            else:
                work = work.clone()
                dist.broadcast(work, src=0)
            buf.copy_(work.to(buf.device, buf.dtype))


def broadcast_object(obj):
    """Rank 0's python object on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerFailedError(UserError):
    """A worker of a --nproc launch died or failed; str() names the rank and how (one line).
    `exitcode` is the exit code the launcher should return (128 + signal for a killed worker)."""

    def __init__(self, message: str, exitcode: int):
        super().__init__(message)
        self.exitcode = exitcode


def root_failure(failures: dict, world: int) -> tuple[str, int]:
    """(one-line description, exit code) of the worker failure that ended a launch.

    failures: global rank -> torch.distributed.elastic ProcessFailure. The agent stops the
    surviving workers with SIGTERM once one fails, so those are effects, not the cause: the
    earliest failure that is not such a SIGTERM is the root (the earliest of all otherwise)."""
    def caused_by_agent(f):
        return f.exitcode == -signal.SIGTERM

    rank = min(failures, key=lambda r: (caused_by_agent(failures[r]), failures[r].timestamp))
    failure = failures[rank]
    if failure.exitcode < 0:
        name = signal.Signals(-failure.exitcode).name
        return f"rank {rank} of {world} (pid {failure.pid}) was killed by {name}", 128 - failure.exitcode
    return f"rank {rank} of {world} (pid {failure.pid}) exited with code {failure.exitcode}", failure.exitcode


def peer_failure(exc: BaseException):
    """One line when `exc` is what a collective raises in a rank of a multi-process run after
    another rank vanished (gloo: connection reset / closed by peer; NCCL: DistBackendError),
    else None. That rank's error is an effect: the launcher names the rank that failed."""
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return None
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(exc)
    if isinstance(exc, backend_error) or (isinstance(exc, RuntimeError) and any(
            m in text for m in ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                                "gloo/transport"))):
        reason = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
        return f"rank {os.environ.get('RANK', '?')} lost its peers mid-collective ({reason.split('] ', 1)[-1][:120]})"
    return None


def launch_local(script: str, script_args: list, nproc: int, master_port: int = 0) -> int:
    """Run `script script_args` in `nproc` processes on this machine through torch.distributed.run
    (what `torchrun --standalone --nproc_per_node=N` does). Returns 0 when every worker succeeds,
    the workers' code when they failed with a user error (exit 2: each printed its own line), and
    raises WorkerFailedError naming the root failure otherwise (instead of torch's ChildFailedError
    report of every rank, about 40 lines)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    port = master_port or free_port()
    args = get_args_parser().parse_args([
        f"--nproc_per_node={nproc}", "--nnodes=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}", script, *script_args])
    try:
        run(args)
    except ChildFailedError as exc:
        message, code = root_failure(exc.failures, nproc)
        if code == 2:  # a UserError in the workers: each already printed its one line
            return 2
        raise WorkerFailedError(message, code) from None
    return 0

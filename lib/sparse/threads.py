"""One thread pool per process for the sparse core's split work (the torch engine's chunks, the C++
kernels' head ranges): torch ops and ctypes calls release the GIL, so Python threads run them side
by side, meeting once per call instead of once per op."""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool = {"pid": None, "workers": 0, "executor": None}


def executor(workers: int) -> ThreadPoolExecutor:
    """The process's pool, with at least `workers` threads: made anew when it has fewer, or in a
    forked child (which inherits the pool object but none of its threads)."""
    with _lock:
        if _pool["workers"] < workers or _pool["pid"] != os.getpid():
            if _pool["executor"] is not None and _pool["pid"] == os.getpid():
                _pool["executor"].shutdown(wait=False)
            _pool.update(pid=os.getpid(), workers=workers,
                         executor=ThreadPoolExecutor(workers, thread_name_prefix="voxseg-sparse"))
        return _pool["executor"]

"""CPU kernels in C++, compiled on first use with the machine's C++ compiler and loaded with ctypes.

No PyTorch headers and no build step at install: each kernel is one self-contained .cpp file in
this folder, built in about a second into a per-user cache
(VOXSEG_NATIVE_CACHE, default $XDG_CACHE_HOME/voxseg/native or ~/.cache/voxseg/native), keyed by the
source, the compiler, its flags and this CPU's features (the build targets -march=native), so a
changed file or another machine never loads a stale library. Builds are written under a temporary
name and renamed, so processes starting together (DDP ranks, test workers) cannot load a half-written
file.

Callers fall back to their tensor-op code when `load` returns None (no compiler, a failed build),
after one warning that gives the reason; `reason(name)` repeats it.
"""
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .. import threads

_HERE = Path(__file__).resolve().parent
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
_lock = threading.Lock()
_loaded = {}    # name -> ctypes.CDLL or None
_reasons = {}   # name -> why it is None
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    if os.environ.get("VOXSEG_NATIVE_CACHE"):
        return Path(os.environ["VOXSEG_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voxseg" / "native"


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _compiler():
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    return cxx if cxx and shutil.which(cxx) else None


def _build(name: str) -> Path:
    """The library of kernel `name` (built if its cache entry is missing); raises RuntimeError
    with the compiler's message on failure."""
    source = _HERE / f"{name}.cpp"
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source.read_text(), cxx, version, " ".join(FLAGS), platform.machine(),
                                    _cpu_features()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cxx, *FLAGS, "-o", tmp, str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{cxx} failed on {source}: {tail}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(name: str, abi: int):
    """The ctypes library of kernel `name` whose `voxseg_<name>_abi()` returns `abi`, or None
    (reason(name) says why); built and loaded once per process."""
    with _lock:
        if name not in _loaded:
            try:
                lib = ctypes.CDLL(str(_build(name)))
                found = getattr(lib, f"voxseg_{name}_abi")()
                if found != abi:
                    raise RuntimeError(f"{name} kernel ABI {found}, expected {abi}")
                _loaded[name] = lib
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                _loaded[name], _reasons[name] = None, str(err)
                log.warning("native kernel %s unavailable, using tensor ops instead: %s", name, err)
        return _loaded[name]


def reason(name: str) -> str:
    """Why `load(name)` gave None ('' when it did not, or was not called)."""
    return _reasons.get(name, "")


def run_split(fn, total: int, parts: int, *args):
    """fn(lo, hi, *args) over `parts` contiguous ranges [lo, hi) that cut range(total), run side by
    side on the sparse core's thread pool (lib.sparse.threads; ctypes releases the GIL in a call)."""
    parts = max(1, min(parts, total))
    if parts == 1:
        fn(0, total, *args)
        return
    pool = threads.executor(parts)
    cuts = [total * t // parts for t in range(parts + 1)]
    jobs = [pool.submit(fn, lo, hi, *args) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
    for job in jobs:
        job.result()


MODES = ("auto", "native", "torch")  # what a kernel's switch variable may say


def mode(variable: str) -> str:
    """The value of a kernel's switch variable (VOXSEG_CONV_KERNEL, VOXSEG_MIXING_KERNEL): auto
    (default: the kernel where it builds, else tensor ops), native (the kernel or an error), torch."""
    m = os.environ.get(variable, "auto")
    if m not in MODES:
        raise ValueError(f"{variable} must be one of {', '.join(MODES)}, got {m!r}")
    return m


def active(name: str, abi: int, variable: str, device, dtype, dtypes) -> bool:
    """Whether kernel `name` runs an op on `device` in `dtype`: CPU, one of `dtypes`, the switch not
    `torch`, and the library loaded (RuntimeError under `native` when it is not)."""
    m = mode(variable)
    if m == "torch" or device.type != "cpu" or dtype not in dtypes:
        return False
    if load(name, abi) is None:
        if m == "native":
            raise RuntimeError(f"{variable}=native but the kernel is unavailable: {reason(name)}")
        return False
    return True

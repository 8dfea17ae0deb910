"""Keep freed large arrays in the process heap (glibc), so the next scene's arrays reuse its pages.

By default glibc serves blocks above 128 KiB with fresh mmap'd pages and unmaps them on free, so
every array of every scene page-faults in again; on the VMs this project runs on that cost about
as much as the voxelization itself (scripts/bench_data.py: about 2x on a 150k-point scene).
mallopt raises the mmap threshold to 32 MiB (glibc's maximum) and the trim threshold to 512 MiB:
a loading process then keeps up to that much freed memory for reuse.
"""
import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
_done = False


def retain_freed_memory() -> bool:
    """Tune glibc once per process; returns whether it applied (False off glibc, e.g. musl, macOS)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = libc.mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1 and libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
    except (OSError, AttributeError):
        return False
    _done = applied
    return applied

"""The memory profiler: where every byte of a forward/backward goes, how many voxels fit, what blew up.

- MemoryProfiler (report.py): context manager around any forward/backward -> per-module report.
- run_profile_mode (mode.py): `python main.py --config X --mode profile [--budget 24GB]`.
- MemoryHook (hook.py): trainer hook logging allocated / peak memory per iteration.
- oom_guard (oom.py): writes a live-tensor report when a block runs out of memory, then re-raises.
- PointsModel, measure_points_model, resolve_auto_limit (fit.py): bytes = base + per_voxel x N.
"""
from lib.profiler.report import MemoryProfiler, format_report, static_bytes
from lib.profiler.units import MIB, parse_bytes

__all__ = ["MIB", "MemoryProfiler", "format_report", "parse_bytes", "static_bytes"]

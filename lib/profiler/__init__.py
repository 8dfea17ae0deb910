"""The memory profiler: where every byte of a forward/backward goes, how many voxels fit, what blew up.

- MemoryProfiler (report.py): context manager around any forward/backward -> per-module report.
- run_profile_mode (mode.py): `python main.py --config X --mode profile [--budget 24GB]`.
- lib.profiler.hook.MemoryHook: trainer hook logging allocated / peak memory per iteration.
- oom_guard (oom.py): writes a live-tensor report when a block runs out of memory, then re-raises.
- PointsModel, measure_points_model, resolve_auto_limit (fit.py): bytes = base + per_voxel x N.
"""
from lib.profiler.fit import PointsModel, measure_points_model, resolve_auto_limit
from lib.profiler.mode import run_profile_mode
from lib.profiler.oom import oom_guard
from lib.profiler.report import MemoryProfiler, format_report, static_bytes
from lib.units import MIB, parse_bytes

# MemoryHook (lib.profiler.hook) is not imported here: it needs lib.engine.trainer, and the engine's
# hook registry imports it by path.
__all__ = ["MIB", "MemoryProfiler", "PointsModel", "format_report", "measure_points_model", "oom_guard",
           "parse_bytes", "resolve_auto_limit", "run_profile_mode", "static_bytes"]

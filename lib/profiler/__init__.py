"""The memory profiler: where every byte of a forward/backward goes, how many voxels fit, what blew up.

- MemoryProfiler (report.py): context manager around any forward/backward -> per-module report.
- oom_guard (oom.py): writes a live-tensor report when a block runs out of memory, then re-raises.
- PointsModel, measure_points_model (fit.py): bytes = base + per_voxel x N.

The engine uses the profiler, never the other way round: `--mode profile`
(lib/engine/modes/profile.py), the "memory" hook (lib/engine/memory_hook.py) and
`data.limit_numpoints: auto` (lib/engine/auto_limit.py) are built on these pieces; nothing here
imports lib.engine.
"""
from lib.profiler.fit import PointsModel, measure_points_model
from lib.profiler.oom import oom_guard
from lib.profiler.report import MemoryProfiler, format_report, static_bytes
from lib.units import MIB, parse_bytes

__all__ = ["MIB", "MemoryProfiler", "PointsModel", "format_report", "measure_points_model", "oom_guard",
           "parse_bytes", "static_bytes"]

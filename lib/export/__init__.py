"""Prediction export keyed by format: `ply`, `scannet`, `semantickitti`."""
from lib.export.benchmark import kitti_frame, write_scannet, write_semantickitti
from lib.export.exporter import WRITERS, PredictionExporter, get_writer
from lib.export.ply import write_ply

__all__ = ["WRITERS", "PredictionExporter", "get_writer", "kitti_frame", "write_ply", "write_scannet",
           "write_semantickitti"]

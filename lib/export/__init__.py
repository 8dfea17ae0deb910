"""Prediction export keyed by format: `ply` here, plus the dataset's own benchmark format
(DatasetMeta.benchmark, written by DatasetMeta.benchmark_writer)."""
from lib.export.benchmark import class_to_raw
from lib.export.exporter import PredictionExporter, get_writer
from lib.export.ply import write_ply

__all__ = ["PredictionExporter", "class_to_raw", "get_writer", "write_ply"]

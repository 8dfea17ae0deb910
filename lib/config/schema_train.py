"""Schema of the `train` and `dist` sections (owned by the trainer)."""
from dataclasses import dataclass


@dataclass
class TrainConfig:
    iterations: int = 1000  # optimizer steps


@dataclass
class DistConfig:
    nproc: int = 1  # processes on this node

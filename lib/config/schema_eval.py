"""Schema of the `eval`, `export` and `profile` sections (owned by evaluation/export)."""
from dataclasses import dataclass


@dataclass
class EvalConfig:
    convention: str = "auto"  # auto | standard | scannet | semantickitti


@dataclass
class ExportConfig:
    ply: bool = True  # write a coloured PLY per scene


@dataclass
class ProfileConfig:
    iterations: int = 3  # measured forward/backward passes

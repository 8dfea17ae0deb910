"""The root of the typed config schema; each section lives in the file of the part that owns it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .schema_data import DataConfig
from .schema_eval import EvalConfig, ExportConfig, PredictConfig, ProfileConfig
from .schema_train import DistConfig, TrainConfig


@dataclass
class ModelConfig:
    name: str = "Res16UNet14A"  # a class registered in models/ (e.g. Res16UNet34C, MinkUNet34C)
    args: dict[str, Any] = field(default_factory=dict)  # constructor arguments, checked by models.build_model


@dataclass
class Config:
    seed: int = 0  # seeds python, numpy and torch; data streams derive from it
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    # sparse-conv engine: auto or a registered name (lib/sparse/engines), checked with a suggestion
    # when the run starts (main.py) and when the first layer resolves it
    engine: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    dist: DistConfig = field(default_factory=DistConfig)

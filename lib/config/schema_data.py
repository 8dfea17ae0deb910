"""Schema of the `data` section (owned by the data pipeline)."""
from dataclasses import dataclass


@dataclass
class DataConfig:
    dataset: str = "scannet"  # which dataset module reads the data

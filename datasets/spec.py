"""The one protocol every dataset implements (see docs/ARCHITECTURE.md, "How to add a dataset").

A dataset is a `DatasetSpec` subclass registered with `datasets.registry.register_dataset`. The
class attributes say what the dataset is; the methods read its raw files, describe it to the rest
of the pipeline (DatasetMeta), write benchmark files and generate synthetic raw scenes. Only
`list_raw_scenes` and `read_raw_scene` are required; the rest have working defaults.
"""
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.meta import DatasetMeta


class DatasetSpec:
    """Attributes:
    name: the registry key (`data.dataset`, `scripts/preprocess.py NAME`).
    class_names: the K class names; labels are class indices 0..K-1 or lib.IGNORE_INDEX.
    palette: K RGB colours (0..255).
    raw_ids: the official id of each class written to benchmark files (empty: none).
    convention: evaluation convention (lib.metrics: 'nan_absent' | 'zero_absent').
    benchmark: name of the benchmark format written by `write_benchmark` (None: no benchmark).
    default_splits: split name -> split tags of `list_raw_scenes` (data.splits overrides).
    default_features / available_features: per-voxel inputs (datasets/voxel_dataset.py FEATURE_CHANNELS).
    """

    name: str = ""
    class_names: tuple = ()
    palette: tuple = ()
    raw_ids: tuple = ()
    convention: str = "nan_absent"
    benchmark: Optional[str] = None
    default_splits: dict = {}
    default_features: tuple = ("ones",)
    available_features: frozenset = frozenset()

    # --- raw files -> preprocessed scenes (datasets/preprocessing.py) ---
    def list_raw_scenes(self, raw_root: Path) -> list[tuple[str, str, object]]:
        """(scene id, split tag, location) of every raw scene; `location` is handed back to
        read_raw_scene. Raises DataFormatError when the layout is wrong."""
        raise NotImplementedError

    def read_raw_scene(self, scene_id: str, split: str, location, strict: bool = True) -> tuple[dict, dict]:
        """(arrays, manifest record) of one scene. arrays: name -> array stored as .npy (coord float32
        [P, 3], label int16 [P], optional color uint8 [P, 3], normal float32 [P, 3]); the record holds
        at least 'split' and 'points'. Bad input raises DataFormatError (one line naming the file);
        with strict=False the scene is skipped and counted, or a reader may repair what it can."""
        raise NotImplementedError

    def raw_inputs(self, scene_id: str, split: str, location) -> list[Path]:
        """The files read_raw_scene reads for this scene (a file that may be absent, such as an
        optional label file, is listed too). A re-run of preprocessing reuses a finished scene only
        when these files' sizes and modification times are those recorded when it was written.
        Default: `location` itself when it is a file, every file under it when it is a folder."""
        location = Path(location)
        if location.is_dir():
            return sorted(p for p in location.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [location]

    def unlabelled_splits(self, raw_root: Path) -> set:
        """Split tags whose scenes come without labels (default: the tags of the 'test' split).
        Preprocessing warns about, and lists under 'unlabelled', scenes of the other splits that
        have not one labelled point (they would train on all-ignore points, loss 0)."""
        return set(self.default_splits.get("test", ()))

    def describe(self, raw_root: Path) -> dict:
        """Fields added to the manifest at preprocessing (at least 'class_names')."""
        return {"class_names": list(self.class_names)}

    # --- preprocessed scenes -> dataset (datasets/build.py) ---
    def features(self, manifest: dict) -> tuple[list[str], set[str]]:
        """(default feature names, available feature names) of the preprocessed data."""
        return list(self.default_features), set(self.available_features)

    def scene_info(self, manifest: dict, scene_ids: list[str]) -> dict[str, dict]:
        """scene id -> what write_benchmark needs about the scene."""
        return {s: {} for s in scene_ids}

    def build_meta(self, manifest: dict, in_channels: int, scene_ids: list[str]) -> DatasetMeta:
        names = list(manifest.get("class_names") or self.class_names)
        return DatasetMeta(name=self.name, class_names=names, in_channels=in_channels,
                           palette=np.array(self.palette, dtype=np.uint8).reshape(-1, 3),
                           raw_ids=np.array(self.raw_ids, dtype=np.int64), benchmark=self.benchmark,
                           convention=self.convention, scene_info=self.scene_info(manifest, scene_ids),
                           benchmark_writer=self.write_benchmark if self.benchmark else None)

    def make_dataset(self, root: Path, manifest: dict, scene_ids: list[str], meta: DatasetMeta, cfg,
                     features: list[str], augment: bool, seed: int, rank: int):
        """The torch Dataset over the preprocessed scenes (default: the stored .npy arrays)."""
        from datasets.stored_dataset import StoredSceneDataset

        return StoredSceneDataset(root, manifest, scene_ids, meta, cfg, features, augment=augment, seed=seed,
                                  rank=rank)

    # --- predictions -> official files (lib/export calls meta.benchmark_writer) ---
    def write_benchmark(self, out_dir: Path, scene: str, points: np.ndarray, pred: np.ndarray, meta: DatasetMeta,
                        labels: Optional[np.ndarray] = None) -> Path:
        """Write one scene's predictions (class index per original point) as official files."""
        raise NotImplementedError(f"dataset '{self.name}' has no benchmark format")

    # --- synthetic raw scenes (data.synthetic=true) ---
    def generate_synthetic(self, out_dir: Path, num_scenes: int, seed: int = 0, **size_kwargs) -> Path:
        """Write `num_scenes` deterministic synthetic scenes in this dataset's raw layout."""
        raise ValueError(f"dataset '{self.name}' has no synthetic generator (set data.synthetic=false)")

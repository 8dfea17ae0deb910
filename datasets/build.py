"""`build_dataset`: config + split name -> dataset with `meta`, generating synthetic data on demand."""
import warnings
from pathlib import Path

from datasets import store
from datasets.errors import DataFormatError, DatasetRootError
from datasets.preprocessing import preprocess
from datasets.registry import get_dataset
from datasets.voxel_dataset import check_features
from lib.config.schema_data import DataConfig


def synthetic_root(cfg: DataConfig) -> Path:
    """Generate (once) `cfg.synthetic_scenes` synthetic raw scenes and preprocess them; returns the
    preprocessed folder inside cfg.cache_dir. Both steps skip work already done."""
    import fcntl

    from datasets.synthetic import GENERATOR_VERSION

    name = f"{cfg.dataset}-{cfg.synthetic_scenes}-seed{cfg.synthetic_seed}-gen{GENERATOR_VERSION}"
    cache = Path(cfg.cache_dir) / name
    processed = cache / "processed"
    if (processed / store.MANIFEST).is_file():
        return processed
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # DDP ranks: one generates, the others wait and reuse
        if not (processed / store.MANIFEST).is_file():
            from datasets.synthetic import generate

            generate(cfg.dataset, cache / "raw", cfg.synthetic_scenes, cfg.synthetic_seed)
            preprocess(cfg.dataset, cache / "raw", processed, workers=1, strict=cfg.strict, progress=False)
    return processed


def _split_tags(cfg: DataConfig, spec, split: str) -> set[str]:
    splits = cfg.splits or spec.default_splits
    if split not in splits:
        raise ValueError(f"data.splits: no split '{split}' for {cfg.dataset} (has {', '.join(splits)})")
    tags = splits[split]
    tags = [tags] if isinstance(tags, (str, int)) else tags
    # SemanticKITTI sequences may be written as numbers in YAML (8 -> "08")
    return {f"{t:02d}" if isinstance(t, int) else str(t) for t in tags}


def build_dataset(cfg: DataConfig, split: str, seed: int = 0, rank: int = 0):
    """Dataset of `split` with attribute `meta` (datasets.meta.DatasetMeta).

    seed/rank feed the per-item random streams (see datasets/voxel_dataset.py). Raises
    UnknownDatasetError (a ConfigError) for an unregistered cfg.dataset, DatasetRootError when
    cfg.root does not exist (and cfg.synthetic is off).
    """
    spec = get_dataset(cfg.dataset)
    root = synthetic_root(cfg) if cfg.synthetic else Path(cfg.root)
    if not root.is_dir():
        raw = cfg.raw_root or "RAW"
        raise DatasetRootError(f"data root {root} does not exist; create it with: python -m scripts.preprocess "
                               f"{cfg.dataset} --input {raw} --output {root} (or set data.synthetic=true)")
    manifest = store.read_manifest(root)
    if manifest["dataset"] != cfg.dataset:
        raise DataFormatError(root / store.MANIFEST, f"holds dataset '{manifest['dataset']}', config asks for '{cfg.dataset}'")
    skipped = manifest.get("skipped", {})
    if skipped:
        first = next(iter(skipped.items()))
        message = f"{len(skipped)} scene(s) were skipped as bad input at preprocessing, first {first[0]}: {first[1]}"
        if cfg.strict:
            raise DataFormatError(root / store.MANIFEST, f"{message} (set data.strict=false to train without them)")
        warnings.warn(f"{root / store.MANIFEST}: {message}")
    tags = _split_tags(cfg, spec, split)
    scene_ids = [s for s, r in manifest["scenes"].items() if r["split"] in tags]
    if not scene_ids:
        raise DataFormatError(root / store.MANIFEST, f"no scenes in split '{split}' (split tags {sorted(tags)})")
    default_features, available = spec.features(manifest)
    features = cfg.features or default_features
    in_channels = check_features(features, available, cfg.dataset)
    meta = spec.build_meta(manifest, in_channels, scene_ids)
    return spec.make_dataset(root, manifest, scene_ids, meta, cfg, features, augment=split in cfg.augment_splits,
                             seed=seed, rank=rank)

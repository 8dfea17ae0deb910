"""The model card: what applying a trained model to a new scan needs, saved in every checkpoint
(entry "card") so that `--mode predict --weights W` needs nothing else.

card = {"version": 1,
        "model": {"name", "args"}, "in_channels", "num_classes",
        "dataset": name it was trained on, "class_names", "palette" [[r, g, b]] per class,
        "raw_ids" [K] (official / classes.yaml id per class, written in label files), "label_values"
        [[values]] per class (what labels in a raw file mean), "label_field", "ignore_index",
        "convention", "benchmark",
        "voxel_size" (metres), "features" (names in channel order), "feature_scaling" {name: how},
        "quantization", and "columns" (names of a plain table's columns, or None)}
Plain containers only (checkpoints load with weights_only=True).
"""
from lib import IGNORE_INDEX
from lib.engine.checkpoint import CheckpointError

CARD_VERSION = 1
CARD_KEYS = ("model", "in_channels", "num_classes", "dataset", "class_names", "palette", "raw_ids",
             "label_values", "label_field", "ignore_index", "convention", "benchmark", "voxel_size", "features",
             "feature_scaling", "quantization")


def build_card(cfg, meta, dataset) -> dict:
    """The card of a model trained under `cfg` on `dataset` (its `meta`; `dataset.input_features()`
    when it has one, else the recipe's data.features)."""
    inputs = dataset.input_features() if hasattr(dataset, "input_features") else \
        {"features": list(cfg.data.features or []), "scaling": {}, "quantization": "mean"}
    return {"version": CARD_VERSION,
            "model": {"name": cfg.model.name, "args": dict(cfg.model.args)},
            "in_channels": int(meta.in_channels), "num_classes": int(meta.num_classes),
            "dataset": meta.name, "class_names": list(meta.class_names),
            "palette": [list(map(int, c)) for c in meta.palette],
            "raw_ids": [int(v) for v in meta.raw_ids],
            "label_values": meta.values_of_classes() if hasattr(meta, "values_of_classes") else None,
            "label_field": getattr(meta, "label_field", "label"), "columns": getattr(meta, "columns", None),
            "ignore_index": IGNORE_INDEX,
            "convention": meta.convention, "benchmark": meta.benchmark,
            "voxel_size": float(cfg.data.voxel_size), "features": inputs["features"],
            "feature_scaling": inputs["scaling"], "quantization": inputs.get("quantization", "mean")}


def check_card(card, path) -> dict:
    """`card` if it is a complete card, else CheckpointError naming `path` and what is missing."""
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: the checkpoint has no model card (written before voxseg saved one): pass "
                              "--config <the recipe it was trained with> to predict with it")
    missing = [k for k in CARD_KEYS if k not in card]
    if missing or int(card.get("version", 0)) > CARD_VERSION:
        raise CheckpointError(f"{path}: unreadable model card (missing {', '.join(missing) or 'nothing'}, version "
                              f"{card.get('version')}): pass --config <the recipe it was trained with>")
    return card

"""Raw official layout -> preprocessed folder (see datasets/store.py), run once per dataset.

Scenes are processed in parallel worker processes; a scene whose folder is already complete is
reused, so a re-run (or a run after a kill) only does the missing scenes. When `strict` is False a
scene with bad input is skipped and listed with its one-line reason under "skipped" in the manifest.
Scenes of labelled splits (all but the dataset's default test split) without a single labelled point
are listed under "unlabelled" and warned about: they would train on all-ignore points with loss 0.
"""
import multiprocessing
import sys
import warnings
from pathlib import Path

from datasets import s3dis, scannet, semantickitti, store
from datasets.errors import DataFormatError

MODULES = {"scannet": scannet, "s3dis": s3dis, "semantickitti": semantickitti}


def dataset_module(name: str):
    if name not in MODULES:
        raise ValueError(f"unknown dataset '{name}' (choose from {', '.join(MODULES)})")
    return MODULES[name]


def _process_one(job):
    name, scene_id, split, folder, out, strict = job
    module = MODULES[name]
    try:
        if name == "s3dis":
            arrays, record = module.read_raw_scene(scene_id, split, folder, strict)
        else:
            arrays, record = module.read_raw_scene(scene_id, split, folder)
        store.write_scene(out, scene_id, arrays, record)
        return scene_id, record, None
    except DataFormatError as exc:
        if strict:
            raise
        return scene_id, None, str(exc)


def _class_names(name: str) -> list[str]:
    return semantickitti.class_names() if name == "semantickitti" else list(MODULES[name].CLASS_NAMES)


def preprocess(name: str, raw_root, out, workers: int = 1, strict: bool = True, progress: bool = True) -> dict:
    """Preprocess dataset `name` from `raw_root` into `out`; returns the manifest written to
    out/manifest.json. Raises DataFormatError (strict) on the first bad scene."""
    from tqdm import tqdm

    module = dataset_module(name)
    raw_root, out = Path(raw_root).resolve(), Path(out)
    scenes = module.list_raw_scenes(raw_root)
    out.mkdir(parents=True, exist_ok=True)
    store.remove_stale_tmp(out)
    records, todo = {}, []
    for scene_id, split, folder in scenes:
        record = store.finished_record(out, scene_id)
        if record is None:
            todo.append((name, scene_id, split, folder, out, strict))
        else:
            records[scene_id] = dict(record, split=split)
    skipped = {}
    bar = tqdm(total=len(todo), desc=f"preprocess {name}", unit="scene", disable=not progress, file=sys.stderr)
    if workers > 1 and len(todo) > 1:
        with multiprocessing.Pool(min(workers, len(todo))) as pool:
            results = list(_track(pool.imap_unordered(_process_one, todo), bar))
    else:
        results = list(_track(map(_process_one, todo), bar))
    bar.close()
    for scene_id, record, error in results:
        if error is None:
            records[scene_id] = record
        else:
            skipped[scene_id] = error
    class_names = _class_names(name)
    test_tags = set(module.DEFAULT_SPLITS.get("test", ()))
    unlabelled = sorted(k for k, r in records.items() if r["split"] not in test_tags and not sum(r["class_counts"]))
    if unlabelled:
        warnings.warn(f"{out / store.MANIFEST}: {len(unlabelled)} scene(s) of labelled splits have no labelled "
                      f"point (listed under 'unlabelled'), first {unlabelled[0]}")
    manifest = {"dataset": name, "num_classes": len(class_names), "class_names": class_names,
                "raw_root": str(raw_root), "scenes": {k: records[k] for k in sorted(records)},
                "skipped": {k: skipped[k] for k in sorted(skipped)}, "unlabelled": unlabelled}
    store.write_json_atomic(out / store.MANIFEST, manifest)
    return manifest


def _track(results, bar):
    for result in results:
        bar.update(1)
        yield result

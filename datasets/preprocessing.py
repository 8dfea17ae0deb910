"""Raw official layout -> preprocessed folder (see datasets/store.py), run once per dataset.

Scenes are processed in parallel worker processes; a scene whose folder is already complete is
reused when its raw files (`DatasetSpec.raw_inputs`) have the sizes and modification times recorded
when it was written, so a re-run (or a run after a kill) only does the missing scenes and those
whose raw files changed since (counted under "reuse" in the manifest: reused, redone, new). When `strict` is False a
scene with bad input is skipped and listed with its one-line reason under "skipped" in the manifest.
Scenes of labelled splits (all but the spec's `unlabelled_splits`) without a single labelled point
are listed under "unlabelled" and warned about: they would train on all-ignore points with loss 0.
"""
import multiprocessing
import sys
import warnings
from pathlib import Path

from datasets import store
from datasets.errors import DataFormatError
from datasets.registry import get_dataset
from lib.io import ensure_writable_dir, remove_stale_temporaries


def _process_one(job):
    spec, scene_id, split, location, out, strict, inputs = job
    try:
        arrays, record = spec.read_raw_scene(scene_id, split, location, strict)
        record["inputs"] = inputs
        store.write_scene(out, scene_id, arrays, record)
        return scene_id, record, None
    except DataFormatError as exc:
        if strict:
            raise
        return scene_id, None, str(exc)


def preprocess(name: str, raw_root, out, workers: int = 1, strict: bool = True, progress: bool = True) -> dict:
    """Preprocess registered dataset `name` from `raw_root` into `out`; returns the manifest written
    to out/manifest.json. Raises DataFormatError (strict) on the first bad scene."""
    from tqdm import tqdm

    spec = get_dataset(name)
    raw_root, out = Path(raw_root).resolve(), Path(out)
    scenes = spec.list_raw_scenes(raw_root)
    description = spec.describe(raw_root)
    ensure_writable_dir(out, "--output")
    store.remove_stale_tmp(out)
    remove_stale_temporaries(out)  # a manifest write cut short (lib.io)
    records, todo, reuse = {}, [], {"reused": 0, "redone": 0, "new": 0}
    for scene_id, split, folder in scenes:
        record = store.finished_record(out, scene_id)
        inputs = store.inputs_fingerprint(spec.raw_inputs(scene_id, split, folder))
        if record is not None and record.get("inputs") == inputs:
            reuse["reused"] += 1
            records[scene_id] = dict(record, split=split)
        else:  # new, or its raw files changed since it was written (or it predates fingerprints)
            reuse["redone" if record is not None else "new"] += 1
            todo.append((spec, scene_id, split, folder, out, strict, inputs))
    skipped = {}
    # The bar is closed on every exit (its last frame ends its line), so an error the caller prints
    # stands alone on the last line.
    with tqdm(total=len(todo), desc=f"preprocess {name}", unit="scene", disable=not progress,
              file=sys.stderr) as bar:
        if workers > 1 and len(todo) > 1:
            with multiprocessing.Pool(min(workers, len(todo))) as pool:
                results = list(_track(pool.imap_unordered(_process_one, todo), bar))
        else:
            results = list(_track(map(_process_one, todo), bar))
    for scene_id, record, error in results:
        if error is None:
            records[scene_id] = record
        else:
            skipped[scene_id] = error
    test_tags = spec.unlabelled_splits(raw_root)
    unlabelled = sorted(k for k, r in records.items()  # a record without class_counts: not known
                        if r["split"] not in test_tags and "class_counts" in r and not sum(r["class_counts"]))
    if unlabelled:
        warnings.warn(f"{out / store.MANIFEST}: {len(unlabelled)} scene(s) of labelled splits have no labelled "
                      f"point (listed under 'unlabelled'), first {unlabelled[0]}")
    manifest = {"dataset": name, "num_classes": len(description["class_names"]), **description,
                "raw_root": str(raw_root), "scenes": {k: records[k] for k in sorted(records)},
                "skipped": {k: skipped[k] for k in sorted(skipped)}, "unlabelled": unlabelled, "reuse": reuse}
    store.write_json_atomic(out / store.MANIFEST, manifest)
    return manifest


def _track(results, bar):
    for result in results:
        bar.update(1)
        yield result

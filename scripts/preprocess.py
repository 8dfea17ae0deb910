"""Preprocess a raw dataset layout once: python -m scripts.preprocess DATASET --input RAW --output OUT
[--workers N] [--no-strict]. DATASET is a registered name (scannet, s3dis, semantickitti, folder, ...).
Writes OUT/manifest.json (see datasets/store.py)."""
import argparse
import os
import sys

from datasets.preprocessing import preprocess
from datasets.registry import dataset_names, get_dataset
from lib.errors import UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.preprocess", description=__doc__.split(":")[0])
    parser.add_argument("dataset", help=f"registered dataset: {', '.join(dataset_names())}")
    parser.add_argument("--input", required=True, help="raw data in the official layout")
    parser.add_argument("--output", required=True, help="preprocessed data folder (data.root)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="skip bad scenes (listed in the manifest) instead of stopping")
    args = parser.parse_args(argv)
    try:
        get_dataset(args.dataset, key="DATASET")
        manifest = preprocess(args.dataset, args.input, args.output, workers=args.workers, strict=args.strict)
    except UserError as exc:  # bad input, unknown dataset, disk full: one line naming the file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scenes = manifest["scenes"].values()
    repairs = sum(len(r.get("repairs", [])) for r in scenes)
    dropped = sum(r.get("dropped_lines", 0) for r in scenes)
    reuse = manifest["reuse"]
    print(f"{args.output}: {len(manifest['scenes'])} scenes, {sum(r['points'] for r in scenes)} points, "
          f"{len(manifest['skipped'])} skipped, {repairs} repaired lines, {dropped} dropped lines; "
          f"{reuse['new']} new, {reuse['redone']} redone (raw files changed), {reuse['reused']} reused")
    for scene_id, reason in manifest["skipped"].items():
        print(f"skipped {scene_id}: {reason}")
    for record in scenes:
        for line in record.get("repairs", []):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

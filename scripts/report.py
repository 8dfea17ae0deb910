"""The run report of one or several run folders, as one self-contained HTML page.

    python -m scripts.report outputs/demo/test1 --out report.html              # one run
    python -m scripts.report outputs/a/test outputs/b/test --out compare.html  # side by side

Test and predict runs write <run>/report.html themselves; this rewrites it for any runs (older ones,
train or profile folders, a comparison). Options bound what the file stores (see README "The run report").
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python scripts/report.py` too

from lib.report.html import write_report  # noqa: E402
from lib.report.scenes import MAX_POINTS_PER_PAGE, MAX_POINTS_PER_SCENE, MAX_SCENES_PER_RUN  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (--output-dir of train/test/predict runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the page to write (default: <run>/report.html for one run, report.html for several)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--max-points", type=int, default=MAX_POINTS_PER_SCENE,
                        help=f"points stored per scene at most (default {MAX_POINTS_PER_SCENE:,})")
    parser.add_argument("--page-points", type=int, default=MAX_POINTS_PER_PAGE,
                        help=f"points stored on the page at most, shared by its scenes (default {MAX_POINTS_PER_PAGE:,})")
    parser.add_argument("--max-scenes", type=int, default=MAX_SCENES_PER_RUN,
                        help=f"scenes shown per run (default {MAX_SCENES_PER_RUN})")
    args = parser.parse_args(argv)
    out = args.out or (args.runs[0] / "report.html" if len(args.runs) == 1 else Path("report.html"))
    try:
        path = write_report(args.runs, out, args.title, args.max_points, args.page_points, args.max_scenes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render a point-cloud PLY (an exported prediction, or any x/y/z PLY) to a PNG, or view it.

    python scripts/visualize.py outputs/run/predictions/ply/scene0000_00.ply --out scene.png
    python scripts/visualize.py scene.ply --color error --out errors.png   # green right, red wrong, grey unlabelled
    python scripts/visualize.py scene.ply --show                            # interactive Open3D window

Headless rendering uses matplotlib (a 3-D scatter of at most --max-points points, with a title naming
the scene and colour mode and a legend of the classes shown: names and colours from the PLY header's
`class <id> <r> <g> <b> <name>` comments that exports carry) or, with --renderer open3d, Open3D's
offscreen renderer (pip install open3d; it needs libusb-1.0-0 and EGL).

Colours (lib/export/colours.py, shared with the PLY export and TensorBoard): every class view (rgb of
an export, label, pred) uses the dataset palette the export stored, points without a class are grey
("unlabelled" in the legend), and the error view separates right (green), wrong (red) and
unlabelled (grey) points. A PLY without class comments (not an export) falls back to a 20-colour map.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: lib lives at the root
from lib.export.colours import RIGHT, STATES, UNLABELLED, WRONG  # noqa: E402

GREY = np.array(UNLABELLED) / 255.0
RED = np.array(WRONG) / 255.0
GREEN = np.array(RIGHT) / 255.0


def read_classes(path: Path) -> dict[int, tuple[str, np.ndarray]]:
    """Class id -> (name, float RGB in [0, 1]) from the header comments of an exported PLY ({} if none)."""
    from plyfile import PlyData

    classes = {}
    for comment in PlyData.read(str(path)).comments:
        parts = comment.split(maxsplit=5)
        if len(parts) == 6 and parts[0] == "class":
            classes[int(parts[1])] = (parts[5], np.array([int(v) for v in parts[2:5]]) / 255.0)
    return classes


def read_cloud(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """xyz float [P, 3] and every other vertex property of the PLY at `path`."""
    from plyfile import PlyData

    if not path.is_file():
        raise SystemExit(f"{path}: file not found")
    try:
        vertex = PlyData.read(str(path))["vertex"].data
    except Exception as exc:  # plyfile raises several types for damaged files
        raise SystemExit(f"{path}: not a readable PLY with a vertex element ({type(exc).__name__}: {exc})")
    names = vertex.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise SystemExit(f"{path}: vertex has no x, y, z (has {', '.join(names)})")
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    return xyz, {n: np.asarray(vertex[n]) for n in names if n not in ("x", "y", "z")}


def error_states(fields: dict[str, np.ndarray]) -> np.ndarray:
    """Error state per point (lib.export.colours: 0 right, 1 wrong, 2 unlabelled) from the export's
    `error` and `label` fields; without `label`, unlabelled points count as right."""
    wrong = fields["error"] > 0
    states = np.where(wrong, 1, 0)
    if "label" in fields:
        states[fields["label"].astype(np.int64) < 0] = 2  # the ignore label
    return states


def class_colour_of(k: int, classes: dict) -> np.ndarray:
    """float RGB of class id `k`: the export's palette (header), else the 20-colour map; grey for
    an id that is not a class (the ignore label)."""
    if classes:
        return classes[k][1] if k in classes else GREY
    return _class_table()[k % 20] if k >= 0 else GREY


def colours(path: Path, fields: dict[str, np.ndarray], mode: str, classes: dict | None = None) -> np.ndarray:
    """float RGB [P, 3] in [0, 1] for a colour mode: rgb | error | label | pred. `classes`:
    read_classes(path) (read here when None)."""
    if mode == "rgb":
        if not {"red", "green", "blue"} <= set(fields):
            raise SystemExit(f"{path}: no red/green/blue fields; use --color label, pred or error")
        return np.stack([fields["red"], fields["green"], fields["blue"]], axis=1) / 255.0
    if mode not in fields:
        raise SystemExit(f"{path}: no '{mode}' field for --color {mode} (has {', '.join(fields)})")
    if mode == "error":
        return np.array([GREEN, RED, GREY])[error_states(fields)]
    classes = read_classes(path) if classes is None else classes
    values = fields[mode].astype(np.int64)
    ids = np.unique(values)
    table = np.array([class_colour_of(int(k), classes) for k in ids]).reshape(-1, 3)
    return table[np.searchsorted(ids, values)]


def _class_table() -> np.ndarray:
    import matplotlib

    return matplotlib.colormaps["tab20"](np.arange(20))[:, :3]


def legend_entries(fields: dict[str, np.ndarray], mode: str, classes: dict) -> list[tuple[str, np.ndarray]]:
    """(text, float RGB) per legend entry of a colour mode, classes in id order, only those present.

    rgb on an export: each predicted class in its palette colour (the colour the exporter stored);
    label / pred: each class in the same palette colour (the 20-colour map without a header), and
    "unlabelled" (grey) where points have no class; error: right, wrong and unlabelled, where present.
    Names come from `classes` (read_classes), else "class <id>". A PLY with plain colours and no
    `pred` has none.
    """
    if mode == "error":  # only the states present, like the classes
        present = set(np.unique(error_states(fields)).tolist())
        colour = {0: GREEN, 1: RED, 2: GREY}
        labelled = "label" in fields  # without it unlabelled points cannot be told from right ones
        return [(name if labelled or s else "right or unlabelled", colour[s]) for s, name, _ in STATES if s in present]
    field = "pred" if mode == "rgb" else mode
    if field not in fields:
        return []
    entries, unlabelled = [], False
    for k in np.unique(fields[field].astype(np.int64)).tolist():
        if k < 0 or (classes and k not in classes):
            unlabelled = True
            continue
        name, palette_rgb = classes.get(k, (f"class {k}", None))
        if mode == "rgb" and palette_rgb is None:  # no header: the colour the points of that class carry
            first = int(np.flatnonzero(fields["pred"] == k)[0])
            palette_rgb = np.array([fields[c][first] for c in ("red", "green", "blue")]) / 255.0
        entries.append((name, palette_rgb if palette_rgb is not None else class_colour_of(k, classes)))
    if unlabelled and mode != "rgb":
        entries.append(("unlabelled", GREY))
    return entries


def figure(xyz: np.ndarray, rgb: np.ndarray, size: tuple[int, int], max_points: int, elev: float, azim: float,
           point_size: float, title: str = "", legend: list = ()):
    """The matplotlib figure of a render: the scatter, `title` on top, `legend` [(text, rgb)] at the right."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if len(xyz) > max_points:  # a fixed seed keeps renders of the same file identical
        keep = np.random.default_rng(0).choice(len(xyz), max_points, replace=False)
        xyz, rgb = xyz[keep], rgb[keep]
    dpi = 100
    fig = plt.figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    ax = fig.add_subplot(projection="3d")
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=rgb, s=point_size, marker="o", linewidths=0,
               depthshade=False)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    ax.set_box_aspect(np.maximum(hi - lo, 1e-6))  # metres on every axis, no stretching
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    if title:
        fig.suptitle(title)
    if legend:
        fig.legend(handles=[Patch(facecolor=tuple(c), edgecolor="none", label=t) for t, c in legend],
                   loc="center right", fontsize="small", frameon=False)
    return fig


def render_matplotlib(xyz: np.ndarray, rgb: np.ndarray, out: Path, size: tuple[int, int], max_points: int,
                      elev: float, azim: float, point_size: float, title: str = "", legend: list = ()) -> None:
    import matplotlib.pyplot as plt

    fig = figure(xyz, rgb, size, max_points, elev, azim, point_size, title, legend)
    fig.savefig(out, dpi=fig.dpi)
    plt.close(fig)


def _open3d():
    try:
        import open3d
    except (ImportError, OSError) as exc:
        raise SystemExit(f"open3d is not importable ({exc}): pip install open3d "
                         "(and apt-get install -y libusb-1.0-0)")
    return open3d


def _cloud(o3d, xyz, rgb):
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    pcd.colors = o3d.utility.Vector3dVector(rgb)
    return pcd


def render_open3d(xyz: np.ndarray, rgb: np.ndarray, out: Path, size: tuple[int, int], point_size: float) -> None:
    o3d = _open3d()
    try:
        renderer = o3d.visualization.rendering.OffscreenRenderer(*size)
    except Exception as exc:  # no EGL / GPU context on this machine
        raise SystemExit(f"open3d offscreen rendering unavailable ({exc}); use --renderer matplotlib")
    material = o3d.visualization.rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = point_size
    renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
    renderer.scene.add_geometry("cloud", _cloud(o3d, xyz, rgb), material)
    centre, extent = xyz.mean(axis=0), float(np.ptp(xyz, axis=0).max())
    eye = centre + np.array([-0.8, -0.8, 0.9]) * extent
    renderer.setup_camera(60.0, centre, eye, [0.0, 0.0, 1.0])
    o3d.io.write_image(str(out), renderer.render_to_image())


def show_open3d(xyz: np.ndarray, rgb: np.ndarray, title: str) -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise SystemExit("--show needs a display (DISPLAY is unset); render a PNG with --out instead")
    o3d = _open3d()
    o3d.visualization.draw_geometries([_cloud(o3d, xyz, rgb)], window_name=title)


def title_of(path: Path, mode: str) -> str:
    return f"{path.stem} - colour: {mode}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ply", type=Path, help="PLY with vertex x, y, z (and red/green/blue, pred, label, error)")
    p.add_argument("--out", type=Path, help="PNG to write (default: the PLY's name with .png)")
    p.add_argument("--color", default="rgb", choices=("rgb", "error", "label", "pred"),
                   help="rgb: stored colours (the predicted class in exports); label / pred: class ids in "
                        "the export's palette (grey: unlabelled); error: right green, wrong red, unlabelled grey")
    p.add_argument("--renderer", default="matplotlib", choices=("matplotlib", "open3d"))
    p.add_argument("--show", action="store_true", help="open an interactive Open3D viewer instead of a PNG")
    p.add_argument("--size", type=int, nargs=2, default=(1200, 900), metavar=("W", "H"), help="PNG pixels")
    p.add_argument("--max-points", type=int, default=200_000, help="matplotlib: random subset drawn")
    p.add_argument("--point-size", type=float, default=3.0, help="matplotlib: marker area (pt^2); open3d: pixels")
    p.add_argument("--elev", type=float, default=55.0, help="matplotlib: camera elevation, degrees")
    p.add_argument("--azim", type=float, default=-60.0, help="matplotlib: camera azimuth, degrees")
    args = p.parse_args(argv)

    xyz, fields = read_cloud(args.ply)
    if len(xyz) == 0:
        raise SystemExit(f"{args.ply}: no vertices")
    classes = read_classes(args.ply)
    rgb = colours(args.ply, fields, args.color, classes)
    if args.show:
        show_open3d(xyz, rgb, args.ply.name)
        return 0
    out = args.out or args.ply.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.renderer == "open3d":
        render_open3d(xyz, rgb, out, tuple(args.size), args.point_size)
    else:
        legend = legend_entries(fields, args.color, classes)
        render_matplotlib(xyz, rgb, out, tuple(args.size), args.max_points, args.elev, args.azim, args.point_size,
                          title_of(args.ply, args.color), legend)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

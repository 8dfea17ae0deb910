"""Render a point-cloud PLY (an exported prediction, or any x/y/z PLY) to a PNG, or view it.

    python scripts/visualize.py outputs/run/predictions/ply/scene0000_00.ply --out scene.png
    python scripts/visualize.py scene.ply --color error --out errors.png   # red = wrong, grey = right
    python scripts/visualize.py scene.ply --show                            # interactive Open3D window

Headless rendering uses matplotlib (a 3-D scatter of at most --max-points points) or, with
--renderer open3d, Open3D's offscreen renderer (pip install open3d; it needs libusb-1.0-0 and EGL).
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

GREY = np.array([0.6, 0.6, 0.6])


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


def colours(path: Path, fields: dict[str, np.ndarray], mode: str) -> np.ndarray:
    """float RGB [P, 3] in [0, 1] for a colour mode: rgb | error | label | pred."""
    if mode == "rgb":
        if not {"red", "green", "blue"} <= set(fields):
            raise SystemExit(f"{path}: no red/green/blue fields; use --color label, pred or error")
        return np.stack([fields["red"], fields["green"], fields["blue"]], axis=1) / 255.0
    if mode not in fields:
        raise SystemExit(f"{path}: no '{mode}' field for --color {mode} (has {', '.join(fields)})")
    values = fields[mode].astype(np.int64)
    if mode == "error":
        return np.where(values[:, None] > 0, np.array([0.85, 0.1, 0.1]), GREY)
    import matplotlib

    table = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
    # class ids cycle through 20 distinct colours; a negative id (ignore) stays grey
    return np.where(values[:, None] >= 0, table[np.maximum(values, 0) % 20], GREY)


def render_matplotlib(xyz: np.ndarray, rgb: np.ndarray, out: Path, size: tuple[int, int], max_points: int,
                      elev: float, azim: float, point_size: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

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
    fig.savefig(out, dpi=dpi)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ply", type=Path, help="PLY with vertex x, y, z (and red/green/blue, pred, label, error)")
    p.add_argument("--out", type=Path, help="PNG to write (default: the PLY's name with .png)")
    p.add_argument("--color", default="rgb", choices=("rgb", "error", "label", "pred"),
                   help="rgb: stored colours (the predicted class in exports); error: wrong points red; "
                        "label / pred: class ids through a 20-colour map")
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
    rgb = colours(args.ply, fields, args.color)
    if args.show:
        show_open3d(xyz, rgb, args.ply.name)
        return 0
    out = args.out or args.ply.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.renderer == "open3d":
        render_open3d(xyz, rgb, out, tuple(args.size), args.point_size)
    else:
        render_matplotlib(xyz, rgb, out, tuple(args.size), args.max_points, args.elev, args.azim, args.point_size)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

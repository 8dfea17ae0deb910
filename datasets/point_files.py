"""Reading one point file of any common kind into named columns (for the folder dataset).

Supported: `.ply` (vertex element), `.npy` (a structured array with named fields, or a plain 2-D
numeric array), `.txt` / `.csv` (numbers separated by blanks / commas, `#` comments), and `.las` /
`.laz` through the optional package laspy (`pip install "laspy[lazrs]"`, imported only for these
files): x, y, z (scaled to metres, float64), red, green, blue (16-bit), intensity, classification. A plain
array or text file has no names: its columns are named by `columns` (classes.yaml), or by its
width when that is unambiguous (DEFAULT_COLUMNS). Names used downstream: x, y, z, red, green,
blue, nx, ny, nz and the label field; any other name is read and ignored.
A label can also come from a side file `<stem>.labels` (one integer per line, as Semantic3D ships).
"""
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.errors import DataFormatError, MissingPackageError
from datasets.ply_io import read_vertex_element

SUFFIXES = (".ply", ".npy", ".txt", ".csv", ".las", ".laz")
LABEL_SIDE_FILE = ".labels"
DEFAULT_COLUMNS = {3: ["x", "y", "z"], 4: ["x", "y", "z", "label"], 6: ["x", "y", "z", "red", "green", "blue"],
                   7: ["x", "y", "z", "red", "green", "blue", "label"],
                   10: ["x", "y", "z", "red", "green", "blue", "nx", "ny", "nz", "label"]}


def _ply_columns(path: Path) -> dict[str, np.ndarray]:
    data = read_vertex_element(path)
    return {name: np.asarray(data[name]) for name in data.dtype.names or ()}


def _named(path: Path, table: np.ndarray, columns: Optional[list[str]]) -> dict[str, np.ndarray]:
    if table.ndim != 2:
        raise DataFormatError(path, f"expected a table of points [P, C], got shape {table.shape}")
    names = columns or DEFAULT_COLUMNS.get(table.shape[1])
    if names is None:
        raise DataFormatError(path, f"{table.shape[1]} columns: name them with 'columns' in classes.yaml "
                                    f"(widths {', '.join(map(str, DEFAULT_COLUMNS))} have defaults)")
    if len(names) != table.shape[1]:
        raise DataFormatError(path, f"{table.shape[1]} columns but classes.yaml 'columns' names {len(names)}")
    return {name: table[:, i] for i, name in enumerate(names)}


def read_columns(path: Path, columns: Optional[list[str]] = None) -> dict[str, np.ndarray]:
    """Column name -> 1-D array [P] of the point file at `path`; DataFormatError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        data = _ply_columns(path)
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataFormatError(path, f"unreadable .npy ({' '.join(str(exc).split())})") from None
        if array.dtype.names:
            data = {name: np.asarray(array[name]).reshape(-1) for name in array.dtype.names}
        else:
            data = _named(path, array, columns)
    elif suffix in (".txt", ".csv"):
        try:
            table = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, comments="#", ndmin=2)
        except ValueError as exc:
            raise DataFormatError(path, f"not a table of numbers ({' '.join(str(exc).split())})") from None
        data = _named(path, table, columns)
    elif suffix in (".las", ".laz"):
        data = _las_columns(path)
    else:
        raise DataFormatError(path, f"unsupported point file type '{suffix}' (use {', '.join(SUFFIXES)})")
    return data


def _las_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        import laspy
    except ImportError:
        raise MissingPackageError(f"{path}: reading LAS/LAZ files needs laspy: pip install \"laspy[lazrs]\"") from None
    try:
        las = laspy.read(path)
    except Exception as exc:  # laspy raises its own LaspyException, or OSError / ValueError on a damaged file
        raise DataFormatError(path, f"unreadable LAS/LAZ ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:200]})") from None
    data = {"x": np.asarray(las.x, dtype=np.float64), "y": np.asarray(las.y, dtype=np.float64),
            "z": np.asarray(las.z, dtype=np.float64)}
    names = set(las.point_format.dimension_names)
    for name in ("red", "green", "blue", "intensity", "classification"):
        if name in names:
            data[name] = np.asarray(las[name])
    return data


def read_side_labels(path: Path) -> Optional[np.ndarray]:
    """int64 [P] from `<stem>.labels` beside the point file `path`, or None when there is none."""
    side = Path(path).with_suffix(LABEL_SIDE_FILE)
    if not side.is_file():
        return None
    try:
        return np.loadtxt(side, dtype=np.int64, comments="#", ndmin=1)
    except ValueError as exc:
        raise DataFormatError(side, f"not one integer per line ({' '.join(str(exc).split())})") from None

"""Reading vertex arrays from PLY files, with one-line errors for truncated, incomplete or
over-long files, and the conversions every reader shares: colours of any stored type to uint8, and
coordinates of any precision to float32 in a local frame (datasets/local_frame.py)."""
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError


def _extra_data(path: Path, ply, end: int) -> str:
    """'' when the file holds exactly the elements its header declares, else what is left over.
    `end`: the byte offset where the binary reader stopped (-1 for ascii files)."""
    declared = ", ".join(f"{len(e.data)} {e.name}" for e in ply.elements)
    if not ply.text:
        extra = path.stat().st_size - end
        return f"{extra} bytes after the {declared} the header declares" if extra > 0 else ""
    body = path.read_bytes().split(b"end_header", 1)[1]
    lines = sum(1 for line in body.splitlines() if line.strip())
    expected = sum(len(e.data) for e in ply.elements)  # ascii: one line per element row
    return f"{lines - expected} lines after the {declared} the header declares" if lines > expected else ""


def read_vertex_element(path: Path) -> np.ndarray:
    """The vertex element of the PLY at `path` as a structured array [P] (fields in their stored types).

    Raises DataFormatError when the file is missing, truncated, corrupt, has no vertex element, or
    holds more data than its header declares (the rest would be dropped without a word).
    """
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        with open(path, "rb") as f:
            ply = PlyData.read(f)
            end = -1 if f.closed else f.tell()  # plyfile closes the stream of ascii files
        vertex = ply["vertex"]
    except KeyError:
        raise DataFormatError(path, "PLY has no 'vertex' element") from None
    except Exception as exc:  # plyfile raises several types for damaged files
        detail = " ".join(str(exc).split())
        raise DataFormatError(path, f"truncated or corrupt PLY ({type(exc).__name__}: {detail})") from None
    extra = _extra_data(path, ply, end)
    if extra:
        raise DataFormatError(path, f"PLY holds more data than its header declares: {extra}")
    return vertex.data


def read_ply_vertices(path: Path, fields: list[str], optional: tuple = ()) -> dict[str, np.ndarray]:
    """Vertex properties `fields` (and those of `optional` the file has) of the PLY at `path`, each
    a 1-D array of length P, in their stored types. DataFormatError as read_vertex_element, or
    when a field is missing."""
    data = read_vertex_element(path)
    names = set(data.dtype.names or ())
    missing = [f for f in fields if f not in names]
    if missing:
        raise DataFormatError(path, f"PLY vertex lacks field(s) {', '.join(missing)} (has {', '.join(sorted(names))})")
    return {f: np.asarray(data[f]) for f in [*fields, *(o for o in optional if o in names)]}


def colors_to_uint8(columns: list[np.ndarray], path: Path, names: str = "red, green, blue") -> np.ndarray:
    """Colour columns of any stored type -> uint8 [P, len(columns)], by the type's scale:
    uchar as is; ushort (16-bit, 0..65535) / 257; float 0..1 * 255 (a float file whose values
    exceed 1 but stay within 0..255 is on the 0..255 scale and taken as is); other integer types
    must hold 0..255. Anything else (negative, too large, NaN) is a DataFormatError naming `path`."""
    values = np.stack(columns, axis=1)
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "u" and size == 1:
        return values
    if kind == "u" and size == 2:
        return np.rint(values / 257.0).astype(np.uint8)
    if kind == "f":
        if not np.isfinite(values).all() or (len(values) and (values.min() < 0 or values.max() > 255)):
            raise DataFormatError(path, f"colours ({names}, {values.dtype}) outside 0..1 / 0..255 or not finite")
        scale = 255.0 if len(values) == 0 or values.max() <= 1.0 else 1.0
        return np.rint(values * scale).astype(np.uint8)
    if kind in "iu" and (len(values) == 0 or (values.min() >= 0 and values.max() <= 255)):
        return values.astype(np.uint8)
    raise DataFormatError(path, f"colours ({names}) of type {values.dtype} outside 0..255")

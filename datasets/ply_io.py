"""Reading vertex arrays from PLY files, with one-line errors for truncated or incomplete files."""
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError


def read_ply_vertices(path: Path, fields: list[str]) -> dict[str, np.ndarray]:
    """Vertex properties `fields` of the PLY at `path`, each a 1-D array of length P.

    Raises DataFormatError when the file is missing, truncated or corrupt, or lacks a field.
    """
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
    except KeyError:
        raise DataFormatError(path, "PLY has no 'vertex' element") from None
    except Exception as exc:  # plyfile raises several types for damaged files
        detail = " ".join(str(exc).split())
        raise DataFormatError(path, f"truncated or corrupt PLY ({type(exc).__name__}: {detail})") from None
    names = set(vertex.data.dtype.names or ())
    missing = [f for f in fields if f not in names]
    if missing:
        raise DataFormatError(path, f"PLY vertex lacks field(s) {', '.join(missing)} (has {', '.join(sorted(names))})")
    return {f: np.asarray(vertex.data[f]) for f in fields}

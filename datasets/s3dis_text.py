"""Tolerant reading of S3DIS annotation files (`x y z r g b` per line).

The official release has damaged lines that break np.loadtxt: a junk byte inside a number
(Area_5/office_19 ceiling_1.txt, `103.0<byte>0000`) and an extra character on a line (Area_5/hallway_6).
A file that np.loadtxt reads is taken as is. Otherwise it is read line by line: a line that is not six
numbers is repaired by deleting every character that cannot be part of a number; if exactly six
numbers remain the repaired row is kept and reported. Anything else (and any colour outside 0..255)
is an unrepairable line: an error when strict, else dropped and counted. Rows are never guessed.
"""
import re
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError

_NOT_NUMERIC = re.compile(r"[^0-9eE+\-.]")
_SEPARATORS = re.compile(r"[ \t]+")  # only blanks and tabs: other control bytes are junk, not separators


def _floats(tokens: list[str]):
    if len(tokens) != 6:
        return None
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _parse_lines(path: Path, strict: bool) -> tuple[np.ndarray, list[str], int]:
    rows, repairs, dropped = [], [], 0
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        line = raw.decode("latin-1").strip(" \t\r")
        if not line:
            continue
        tokens = _SEPARATORS.split(line)
        values = _floats(tokens)
        if values is None:
            cleaned = [c for c in (_NOT_NUMERIC.sub("", t) for t in tokens) if c]
            values = _floats(cleaned)
            if values is None:
                if strict:
                    raise DataFormatError(path, f"line {number}: cannot parse or repair {line!r}")
                dropped += 1
                continue
            repairs.append(f"{path}:{number}: repaired {line!r} -> {' '.join(cleaned)!r}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 6), repairs, dropped


def read_annotation(path: Path, strict: bool = True) -> tuple[np.ndarray, list[str], int]:
    """Rows float64 [n, 6] (x, y, z metres; r, g, b 0..255), repair reports, dropped line count."""
    path = Path(path)
    try:
        rows = np.loadtxt(path, dtype=np.float64, comments=None, ndmin=2)
        if rows.size and rows.shape[1] != 6:
            raise ValueError("not six columns")
        rows, repairs, dropped = rows.reshape(-1, 6), [], 0
    except ValueError:
        rows, repairs, dropped = _parse_lines(path, strict)
    bad = ~np.isfinite(rows).all(axis=1) | (rows[:, 3:] < 0).any(axis=1) | (rows[:, 3:] > 255).any(axis=1)
    if bad.any():
        if strict:
            first = int(np.flatnonzero(bad)[0])
            raise DataFormatError(path, f"{int(bad.sum())} row(s) with NaN/inf or colours outside 0..255 "
                                        f"(first: data row {first + 1})")
        rows, dropped = rows[~bad], dropped + int(bad.sum())
    return rows, repairs, dropped

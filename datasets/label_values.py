"""The one rule for label values read from a file, shared by every reader whose format lets a
label field be float (ScanNet's labels.ply, the folder dataset's label column in .ply / .npy / .txt /
.csv). SemanticKITTI's .label words are uint32 and `<stem>.labels` side files are parsed as
integers, so neither can hold a fraction; S3DIS labels come from file names.

A label is an integer id. A file that stores ids in a float field (some exporters write ids as
float32) is accepted only where every value is exactly an integer; a value such as 3.999 is an
error naming the file, never truncated to 3, which would silently move points to another class.
"""
import numpy as np

from datasets.errors import DataFormatError


def integer_labels(raw, path, field: str = "label") -> np.ndarray:
    """Label values [P] of any numeric dtype -> int64 [P].

    Floats must be finite and integral (3.0 passes, 3.999 and NaN do not); the error names the file,
    the field, how many values are off and the first few of them."""
    raw = np.asarray(raw)
    if raw.dtype.kind in "iub":
        return raw.astype(np.int64)
    if raw.dtype.kind != "f":
        raise DataFormatError(path, f"label field '{field}' has non-numeric type {raw.dtype}")
    bad = ~np.isfinite(raw)
    bad[~bad] = raw[~bad] != np.round(raw[~bad])
    if bad.any():
        shown = ", ".join(f"{v:.6g}" for v in raw[bad][:3])
        raise DataFormatError(path, f"label field '{field}' holds {int(bad.sum())} non-integer value(s) "
                                    f"(e.g. {shown}); labels must be integer ids")
    return raw.astype(np.int64)

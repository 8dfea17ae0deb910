"""The colours of every picture of a scene: the dataset's palette for classes (renders, PLY,
TensorBoard point clouds) and three fixed colours for what no class owns, so that the same colour
means the same thing side by side (issue 23: label / pred renders used another colour map than
the PLY's colours).

All colours are uint8 RGB; `palette` is the dataset meta's [K, 3] table.
"""
import numpy as np

UNLABELLED = (128, 128, 128)  # a point without a ground-truth class (IGNORE_INDEX, unannotated)
RIGHT = (46, 160, 67)  # error view: a labelled point predicted right
WRONG = (217, 26, 26)  # error view: a labelled point predicted wrong

# error states, in legend order
STATE_RIGHT, STATE_WRONG, STATE_UNLABELLED = 0, 1, 2
STATES = ((STATE_RIGHT, "right", RIGHT), (STATE_WRONG, "wrong", WRONG), (STATE_UNLABELLED, "unlabelled", UNLABELLED))


def class_colours(ids, palette, outside=UNLABELLED) -> np.ndarray:
    """uint8 [P, 3]: palette[ids], and `outside` where an id is not a class (negative, the ignore
    label, >= K)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    known = (ids >= 0) & (ids < len(palette))
    out = np.empty((len(ids), 3), dtype=np.uint8)
    out[:] = outside
    out[known] = palette[ids[known]]
    return out


def error_states(pred, labels, num_classes: int) -> np.ndarray:
    """int8 [P]: STATE_RIGHT, STATE_WRONG, or STATE_UNLABELLED where `labels` holds no class."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    states = np.where(pred == labels, STATE_RIGHT, STATE_WRONG).astype(np.int8)
    states[(labels < 0) | (labels >= num_classes)] = STATE_UNLABELLED
    return states


def state_colours(states) -> np.ndarray:
    """uint8 [P, 3] of error states (error_states)."""
    table = np.array([colour for _, _, colour in STATES], dtype=np.uint8)
    return table[np.asarray(states, dtype=np.int64)]

"""What every benchmark writer needs: class indices -> official ids. The writers themselves belong to
the datasets (DatasetSpec.write_benchmark), which hand them over as DatasetMeta.benchmark_writer."""
import numpy as np


def class_to_raw(pred: np.ndarray, raw_ids: np.ndarray, where: str) -> np.ndarray:
    """Class indices [P] -> official ids [P] (raw_ids[pred]); a class outside [0, K) is an error."""
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    raw_ids = np.asarray(raw_ids).astype(np.int64)
    if raw_ids.size == 0:
        raise ValueError(f"{where}: the dataset meta has no raw_ids, so no official ids can be written")
    bad = (pred < 0) | (pred >= raw_ids.size)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} predictions outside [0, {raw_ids.size}) "
                         f"(first {int(pred[bad][0])}); benchmark files need a valid class per point")
    return raw_ids[pred]

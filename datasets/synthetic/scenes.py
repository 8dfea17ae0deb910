"""Which synthetic scene is which: its split and its own random stream, both fixed by its index.

A scene depends only on (seed, kind, index), never on how many scenes are generated, so a larger
set extends a smaller one and a re-run can skip scenes already on disk.
"""
import zlib

import numpy as np

# Split of scene i is SPLIT_CYCLE[i % 6]: any 3 consecutive scenes hold one of each split,
# 24 scenes give 16 train / 4 val / 4 test.
SPLIT_CYCLE = ("train", "val", "test", "train", "train", "train")


def split_of(index: int) -> str:
    return SPLIT_CYCLE[index % len(SPLIT_CYCLE)]


def scene_rng(seed: int, kind: str, *index: int) -> np.random.Generator:
    """Independent generator for one scene (or one world tile) of `kind`."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(kind.encode()), *index]))

"""Brute-force neighbourhoods for the attention-block tests: python dict lookups, no kernel maps."""
import torch

from tests.models.unet_helpers import random_cloud, sparse_input


def rows_by_coord(coords):
    """{(b, x, y, z): row} of an int [N, 4] coordinate tensor."""
    return {tuple(c): i for i, c in enumerate(coords.tolist())}


def brute_neighbors(coords, offsets):
    """[N, K] int64: row of c + offset (same batch) for each offset, -1 when empty (python loops)."""
    lookup = rows_by_coord(coords)
    table = []
    for b, x, y, z in coords.tolist():
        table.append([lookup.get((b, x + dx, y + dy, z + dz), -1) for dx, dy, dz in offsets])
    return torch.tensor(table, dtype=torch.int64)


def small_cloud(n=120, channels=8, extent=7, seed=0):
    """A SparseTensor of `n` random voxels in an extent^3 cube (dense enough that neighbourhoods are
    partly occupied), two batch items."""
    coords, feats = random_cloud(n // 2, batch_size=2, extent=extent, channels=channels, seed=seed)
    return sparse_input(coords, feats)

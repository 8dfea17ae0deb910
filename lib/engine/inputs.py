"""The model input built from a collated batch, by the model's declared `input_type`
(lib/model_contract.py): the one place train, validation, test (TTA) and the profiler get it from,
so a point backbone plugs in without touching the loops.

The batch keys read (docs/ARCHITECTURE.md, "Batch"): `coords` int32 [N, 4] (batch, x, y, z),
`feats` float32 [N, C], `offsets` int64 [B + 1], and for point models `point_coords` float32 [N, 3].
"""
import functools

from lib.model_contract import INPUT_TYPES


def make_input(batch: dict, device, input_type: str = "sparse", engine: str = "auto", voxel_size: float = 1.0):
    """The model input of `batch` on `device`.

    input_type "sparse": `lib.sparse.SparseTensor(feats, coords, engine=engine)`;
    "points": `lib.structure.PointBatch(coord=point_coords, grid_coord=coords[:, 1:], feat=feats,
    offset=offsets, voxel_size=voxel_size)` (rows = the batch's voxels in both cases).
    """
    feats = batch["feats"].to(device, non_blocking=True)
    coords = batch["coords"].to(device, non_blocking=True)
    if input_type == "sparse":
        from lib.sparse.tensor import SparseTensor
        return SparseTensor(feats, coords, engine=engine)
    if input_type == "points":
        from lib.structure import PointBatch
        if "point_coords" not in batch:
            raise KeyError("a point model needs batch['point_coords'] (float32 [N, 3]); this batch's collate "
                           "does not provide it (see docs/ARCHITECTURE.md, 'Batch')")
        return PointBatch(batch["point_coords"].to(device, non_blocking=True), coords[:, 1:].contiguous(), feats,
                          batch["offsets"].to(device, non_blocking=True), float(voxel_size))
    raise ValueError(f"unknown model input_type {input_type!r}; expected one of {INPUT_TYPES}")


class InputMaker:
    """`make_input` bound to a run's engine and voxel size: `maker(batch, device, input_type="sparse")`.

    `maker.for_model(model)` -> a `(batch, device)` callable for that model's declared input type,
    which is what the trainer, validation and test-time prediction take.
    """

    def __init__(self, engine: str = "auto", voxel_size: float = 1.0):
        self.engine, self.voxel_size = engine, float(voxel_size)

    def __call__(self, batch: dict, device, input_type: str = "sparse"):
        return make_input(batch, device, input_type, self.engine, self.voxel_size)

    def for_model(self, model):
        from lib.model_contract import input_type
        return functools.partial(self, input_type=input_type(model))


def for_model(make, model):
    """A `(batch, device)` input function for `model` from a run's `make_input`: an `InputMaker`
    binds the model's input type; any other callable (tests' plain tensors) is used as it is."""
    return make.for_model(model) if hasattr(make, "for_model") else make


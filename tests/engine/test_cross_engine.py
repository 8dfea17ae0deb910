"""A checkpoint written after training on the torch engine, read back weights-only, evaluates on
every other installed engine with the same logits (one weight layout for all engines); the
sparse BatchNorm converts to SyncBatchNorm."""
import pytest
import torch

from lib.config.schema import ModelConfig
from lib.engine.checkpoint import atomic_save, load_checkpoint, model_state
from lib.sparse.engines import why_not
from lib.sparse.tensor import SparseTensor


def cloud(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, 24, (n, 3), generator=g), dim=0).int()
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
    return coords, torch.rand(len(coords), 3, generator=g)


@pytest.mark.parametrize("engine", ["spconv", "minkowski", "torchsparse"])
def test_torch_trained_checkpoint_evaluates_on_other_engines(tmp_path, engine):
    reason = why_not(engine, torch.device("cpu"), training=False)
    if reason:
        pytest.skip(f"engine {engine} unavailable here: {reason}")
    import models
    torch.manual_seed(0)
    model = models.build_model(ModelConfig(name="Res16UNet14A"), 3, 5)
    coords, feats = cloud()
    labels = (coords[:, 1] % 5).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):  # a little training, so BN statistics and weights are no longer the init
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(SparseTensor(feats, coords, engine="torch")), labels).backward()
        opt.step()
    atomic_save({"model": model.state_dict(), "iteration": 2}, tmp_path / "last.pth")

    restored = models.build_model(ModelConfig(name="Res16UNet14A"), 3, 5)
    restored.load_state_dict(model_state(load_checkpoint(tmp_path / "last.pth")))
    model.eval(), restored.eval()
    with torch.no_grad():
        reference = model(SparseTensor(feats, coords, engine="torch"))
        other = restored(SparseTensor(feats, coords, engine=engine))
    assert torch.allclose(reference, other, atol=1e-4, rtol=1e-4)


def test_sparse_batchnorm_converts_to_syncbn():
    # train.sync_bn relies on torch's converter finding the BatchNorm inside lib.sparse.nn.BatchNorm.
    import models
    model = models.build_model(ModelConfig(name="Res16UNet14A"), 3, 5)
    plain = sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert plain > 0
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == plain
    assert not any(type(m) is torch.nn.BatchNorm1d for m in converted.modules())

"""The EMA averages statistics and copies state: a schedule's temperature and a codebook's
bookkeeping are the model's own at every step, never a lagging mean of past values."""
import pytest
import torch

from lib.engine.ema import ModelEMA
from lib.model_contract import notify_progress, state_buffer_names
from models.codedvtr import CodedVTRBlock
from models.vq import VectorQuantizer

T_START, T_END, ITERS = 2.0, 0.1, 8


class _Both(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = CodedVTRBlock(8, 8, heads=2, t_start=T_START, t_end=T_END)
        self.vq = VectorQuantizer(4, 3, reset_every=3, memory=8)


def test_the_ema_copy_runs_at_the_schedules_temperature_at_every_step():
    torch.manual_seed(0)
    model = _Both().train()
    assert state_buffer_names(model) == {"block.temperature", "vq.usage", "vq.recent"}
    ema = ModelEMA(model, decay=0.9, warmup=False)
    for it in range(ITERS):
        notify_progress(model, it, ITERS)  # the trainer's order: progress, the step, the EMA update
        model.vq(torch.randn(5, 3))
        ema.update(model)
        p = it / (ITERS - 1)
        want = T_START ** (1 - p) * T_END ** p
        assert float(model.block.temperature) == pytest.approx(want, rel=1e-6)
        assert torch.equal(ema.module.block.temperature, model.block.temperature), it
        assert torch.equal(ema.module.vq.recent, model.vq.recent), it
        assert torch.equal(ema.module.vq.usage, model.vq.usage), it
    # weights and statistics are still averaged: a moved codebook is followed a tenth of the way
    before = ema.module.vq.codebook.clone()
    with torch.no_grad():
        model.vq.codebook.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.vq.codebook, before + 0.1 * (model.vq.codebook - before), atol=1e-6)

"""Vector quantiser: nearest code, identity straight-through gradient, losses, usage, dead-code reset."""
import math

import pytest
import torch

from models.vq import VectorQuantizer, VQAttentionBlock
from tests.models.attention_helpers import small_cloud


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_snaps_to_the_nearest_code_and_the_losses_match_their_definition(norm):
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3, norm=norm, w_codebook=0.5, w_commit=2.0)
    e = torch.randn(40, 3)
    z, index, losses, logs = vq(e)
    dist = [[(a - c).abs().sum().item() if norm == "l1" else (a - c).pow(2).sum().item()
             for c in vq.codebook.detach()] for a in e]
    expected = torch.tensor([min(range(5), key=lambda m: row[m]) for row in dist])
    assert torch.equal(index, expected)
    torch.testing.assert_close(z.detach(), vq.codebook.detach()[expected])
    mean_dist = torch.tensor([row[m] for row, m in zip(dist, expected.tolist())]).mean()
    torch.testing.assert_close(losses["vq_codebook"].detach(), 0.5 * mean_dist)
    torch.testing.assert_close(losses["vq_commit"].detach(), 2.0 * mean_dist)
    counts = torch.bincount(expected, minlength=5).float() / 40
    entropy = -sum(p * math.log(p) for p in counts.tolist() if p > 0)
    assert float(logs["vq_perplexity"]) == pytest.approx(math.exp(entropy), rel=1e-5)
    assert float(logs["vq_dead_codes"]) == int((counts == 0).sum())


def test_straight_through_gradient_is_the_identity_and_each_loss_reaches_its_side():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 6)
    e = torch.randn(10, 6, requires_grad=True)
    z, _, losses, _ = vq(e)
    upstream = torch.randn(10, 6)
    (e_grad,) = torch.autograd.grad((z * upstream).sum(), e)
    torch.testing.assert_close(e_grad, upstream)
    code_grad, e_grad = torch.autograd.grad(losses["vq_codebook"], [vq.codebook, e], allow_unused=True)
    assert code_grad.abs().max() > 0 and e_grad is None
    code_grad, e_grad = torch.autograd.grad(losses["vq_commit"], [vq.codebook, e], allow_unused=True)
    assert code_grad is None and e_grad.abs().max() > 0


def test_dead_codes_are_redrawn_from_recent_inputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(3, 2, reset_every=2, memory=8).train()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [-100.0, 50.0]]))
    e = torch.randn(6, 2) * 0.1
    vq(e)
    vq.on_train_progress(1, 0.5)  # not a reset step: nothing moves
    assert vq.codebook[1].tolist() == [100.0, 100.0]
    vq.on_train_progress(2, 1.0)
    recent = {tuple(r) for r in e.tolist()}
    assert tuple(vq.codebook[1].tolist()) in recent and tuple(vq.codebook[2].tolist()) in recent
    assert vq.codebook[0].tolist() == [0.0, 0.0] and float(vq.usage.sum()) == 0


def test_attention_block_returns_named_losses_and_logs_and_trains_its_codebook():
    torch.manual_seed(0)
    block = VQAttentionBlock(8, 8, heads=2, num_codes=4).train()
    out = block(small_cloud(n=80))
    losses, logs = block.pop_aux()
    assert set(losses) == {"vq_codebook", "vq_commit"} and set(logs) == {"vq_perplexity", "vq_dead_codes"}
    (out.feats.square().sum() + sum(losses.values())).backward()
    assert block.quantizer.codebook.grad.abs().max() > 0
    assert block.to_logits.weight.grad.abs().max() > 0  # through the straight-through estimator
    assert block.value.weight.grad.abs().max() > 0
    assert block.pop_aux() == ({}, {})


class _CodebookNet(torch.nn.Module):
    """Linear -> VectorQuantizer -> Linear; four of its six codes start far from every input (dead)."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = torch.nn.Linear(4, 2), torch.nn.Linear(2, 3)
        self.vq = VectorQuantizer(6, 2, reset_every=3, memory=16)
        with torch.no_grad():
            self.vq.codebook[2:] = 1000.0 + torch.arange(8.0).view(4, 2)

    def forward(self, x):
        z, _, losses, _ = self.vq(self.inp(x))
        return {"logits": self.out(z), "losses": losses}


def _train_steps(model, step_model, optimizer, steps, gen, scale=1.0, at_step=None, drift=0.0):
    """Steps of a trainer's shape; the inputs move by `drift` every 3 steps (one reset period), so
    codes drawn at one reset fall out of use by the next."""
    from lib.model_contract import notify_step_end
    from models.contract import notify_progress, parse_output

    for it in range(steps):
        if at_step is not None:
            at_step(it)
        notify_progress(step_model, it, steps, optimizer)
        out = parse_output(step_model(torch.randn(32, 4, generator=gen) * scale + drift * (it // 3)))
        loss = out.logits.square().mean() + sum(out.losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        notify_step_end(step_model)  # as the trainer: the step's counts merged before any checkpoint


def _vq_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from lib.engine.dist import average_buffers

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = _CodebookNet()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        torch.manual_seed(100 + rank)  # each rank its own random stream, as seed + rank in the engine
        synced, resets = {}, []
        reset = model.vq.on_train_progress

        def logged_reset(iteration, progress):  # the rows each reset replaced, per iteration
            changed = reset(iteration, progress)
            if changed:
                resets.append((iteration, changed[model.vq.codebook].tolist()))
            return changed

        model.vq.on_train_progress = logged_reset

        def validation_sync(it):
            if it == 7:  # as before a validation: buffers made equal over ranks
                synced["before"] = model.vq.recent.clone()
                average_buffers(model)
                synced["after"] = model.vq.recent.clone()

        # each rank its own data (different scales: different codes used, different memories)
        _train_steps(model, ddp, optimizer, 13, torch.Generator().manual_seed(rank), 1.0 + 2 * rank,
                     validation_sync, drift=10.0)
        adam = optimizer.state[model.vq.codebook]
        torch.save({"params": {k: v.detach().clone() for k, v in model.named_parameters()},
                    "usage": model.vq.usage.clone(), "resets": resets,
                    "adam": {k: adam[k].clone() for k in ("exp_avg", "exp_avg_sq")}, **synced},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_different_data_keep_one_codebook_through_resets(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_vq_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["params"]["vq.codebook"] < 500).all()  # the far codes were all re-drawn
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
    assert len(r0["resets"]) >= 2 and r0["resets"] == r1["resets"]  # several resets, the same rows
    for name, value in r0["adam"].items():
        assert torch.equal(value, r1["adam"][name]), name
    # the counts of the step after the last reset (iteration 12), both ranks' 32 rows, on both ranks
    assert torch.equal(r0["usage"], r1["usage"]) and float(r0["usage"].sum()) == 64
    # the memory of recent inputs is rank 0's on both ranks after the sync, not a blend of the two
    assert not torch.equal(r0["before"], r1["before"])
    assert torch.equal(r1["after"], r0["before"]) and torch.equal(r0["after"], r0["before"])


def test_a_reset_clears_the_optimizer_state_of_the_new_rows_only():
    from models.contract import notify_progress

    torch.manual_seed(0)
    model = _CodebookNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    _train_steps(model, model, optimizer, 3, gen)  # iterations 0, 1, 2: no reset yet
    book = optimizer.state[model.vq.codebook]
    dead = (model.vq.codebook[:, 0] > 500).nonzero().flatten()  # the far codes: never chosen
    assert len(dead)
    for key in ("exp_avg", "exp_avg_sq"):  # as if every row had moved before the last reset
        book[key].fill_(1.0)
    notify_progress(model, 3, 10, optimizer)  # iteration 3: the reset
    for key in ("exp_avg", "exp_avg_sq"):
        assert (book[key][dead] == 0).all(), key
        alive = torch.ones(6, dtype=torch.bool)
        alive[dead] = False
        assert (book[key][alive] == 1).all(), key

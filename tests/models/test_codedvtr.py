"""CodedVTR / discrete attention block against brute-force sums, its gradients, schedule and guidance."""
import math

import pytest
import torch

from lib.sparse.nn import neighbor_table
from models.codedvtr import CodedVTRBlock, DiscreteAttentionBlock, make_region
from tests.models.attention_helpers import brute_neighbors, small_cloud


def attend(block, h):
    """The block's attention alone, h [N, planes] -> (y [N, C'], alpha [N, H, D]), from its parts."""
    tables = [neighbor_table(h, r) for r in block.regions]
    alpha = block.mixing(h, tables)
    return block.mix(block.value(h), alpha, tables), alpha


def _block(**kw):
    torch.manual_seed(0)
    args = dict(heads=2, value_expansion=1, dilations=[1, 2], shapes=["cube", "plane_xy"])
    args.update(kw)
    return CodedVTRBlock(8, 8, **args)


def _brute_attend(block, h):
    """(s [N, H, D], y [N, C']) by python loops over brute-force neighbours."""
    v = block.value(h).feats
    n, heads = len(h), block.heads
    s = torch.zeros(n, heads, len(block.regions))
    y = torch.zeros(n, block.inner)
    group = block.inner // heads
    tables = [brute_neighbors(h.coords, r.offsets) for r in block.regions]
    for d, (conv, element, table) in enumerate(zip(block.choice_convs, block.codebook, tables)):
        weight = element.weight
        q = conv(h).feats
        for i in range(n):
            for k, j in enumerate(table[i].tolist()):
                if j >= 0:
                    for hd in range(heads):
                        s[i, hd, d] += (weight[k, hd * group:(hd + 1) * group] * q[j, hd]).sum()
    rho = torch.stack([(t >= 0).float().mean(1) for t in tables], 1)
    # the density prior by hand: local density = the 3x3x3 cube at the smallest dilation (1 here)
    local = (brute_neighbors(h.coords, make_region("cube", 3, 1).offsets) >= 0).float().mean(1)
    rank = torch.tensor([-1.0 if max(map(max, r.offsets)) == 1 else 1.0 for r in block.regions])  # dilation 1, 2
    prior = (rho + (1 / 3 - local)[:, None] * rank) / block.density_tau
    alpha = torch.softmax(s / block.temperature + prior.unsqueeze(1), 2)
    for d, (element, table) in enumerate(zip(block.codebook, tables)):
        weight = element.weight
        for i in range(n):
            for k, j in enumerate(table[i].tolist()):
                if j >= 0:
                    y[i] += alpha[i, :, d].repeat_interleave(group) * weight[k] * v[j]
    return s, y


@pytest.mark.parametrize("aggregate", ["fused", "depthwise"])
def test_soft_block_matches_brute_force_sums(aggregate):
    block = _block(aggregate=aggregate).eval()
    h = small_cloud(n=60)
    with torch.no_grad():
        s_ref, y_ref = _brute_attend(block, h)
        tables = [neighbor_table(h, r) for r in block.regions]
        s = block.choice_logits(h, tables)
        y, _ = attend(block, h)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)


def test_regions_are_the_masked_supports():
    assert len(make_region("cube", 3, 2)) == 27 and len(make_region("plane_xy", 3, 1)) == 9
    assert len(make_region("cross", 3, 1)) == 7
    assert all(o[2] == 0 for o in make_region("plane_xy", 3, 2).offsets)
    custom = make_region([[1, 0, 0], [0, 0, 1]], 3, 2)
    assert set(custom.offsets) == {(0, 0, 0), (2, 0, 0), (0, 0, 2)}
    with pytest.raises(ValueError, match="shape"):
        make_region("sphere", 3, 1)


@pytest.mark.parametrize("detach", [True, False])
def test_gradients_reach_queries_values_codebook_but_not_through_the_choice_when_detached(detach):
    block = _block(detach_codebook_in_choice=detach).train()
    h = small_cloud(n=80)
    tables = [neighbor_table(h, r) for r in block.regions]
    block.choice_logits(h, tables).square().sum().backward()
    codebook_grad = [e.weight.grad for e in block.codebook]
    if detach:
        assert all(g is None or g.abs().max() == 0 for g in codebook_grad)
    else:
        assert all(g is not None and g.abs().max() > 0 for g in codebook_grad)
    assert all(c.weight.grad.abs().max() > 0 for c in block.choice_convs)
    block.zero_grad(set_to_none=True)
    out = block(h)
    out.feats.square().sum().backward()
    assert all(e.weight.grad.abs().max() > 0 for e in block.codebook)  # through the output
    assert all(c.weight.grad.abs().max() > 0 for c in block.choice_convs)  # queries, via alpha
    assert block.value[0][0].weight.grad.abs().max() > 0              # values


def test_temperature_follows_the_geometric_schedule_and_lives_in_the_state_dict():
    block = _block(t_start=4.0, t_end=0.25)
    assert float(block.temperature) == 4.0
    block.on_train_progress(0, 0.0)
    assert float(block.temperature) == pytest.approx(4.0)
    block.on_train_progress(50, 0.5)
    assert float(block.temperature) == pytest.approx(1.0)  # sqrt(4 * 0.25)
    block.on_train_progress(75, 0.75)
    assert float(block.temperature) == pytest.approx(4.0 ** 0.25 * 0.25 ** 0.75)
    block.on_train_progress(100, 1.0)
    assert float(block.temperature) == pytest.approx(0.25)
    fresh = _block(t_start=4.0, t_end=0.25)
    fresh.load_state_dict(block.state_dict())
    assert float(fresh.temperature) == pytest.approx(0.25)  # evaluation needs no iteration count


def test_density_guidance_changes_the_weights_when_only_occupancy_changes():
    # Zero choice convolutions: s = 0 whatever the features, so alpha depends on occupancy alone.
    block = _block(dilations=[1, 3], shapes=["cube"]).eval()
    for conv in block.choice_convs:
        torch.nn.init.zeros_(conv.weight)
    from tests.models.unet_helpers import sparse_input
    centre = [0, 10, 10, 10]
    near = [[0, 10 + dx, 10 + dy, 10] for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
    far = [[0, 10 + dx, 10 + dy, 10] for dx in (-3, 0, 3) for dy in (-3, 0, 3) if (dx, dy) != (0, 0)]
    alphas = []
    for others in (near, far):
        coords = torch.tensor([centre] + others, dtype=torch.int32)
        h = sparse_input(coords, torch.ones(len(coords), 8))
        with torch.no_grad():
            _, alpha = attend(block, h)
        alphas.append(alpha[0, 0])
        rho = torch.tensor([9 / 27, 1 / 27]) if others is near else torch.tensor([1 / 27, 9 / 27])
        # local density: the d=1 cube's occupancy; the tilt (1/3 - local) * rank, rank [-1, +1]
        tilt = (1 / 3 - rho[0]) * torch.tensor([-1.0, 1.0])
        torch.testing.assert_close(alpha[0, 0], torch.softmax((rho + tilt) / block.density_tau, 0))
    assert alphas[0][0] > 0.8 and alphas[1][1] > 0.8  # dense near -> small dilation, and back
    block.density_guidance = False
    with torch.no_grad():
        _, alpha = attend(block, h)
    torch.testing.assert_close(alpha[0, 0], torch.full((2,), 0.5))


def test_hard_choice_is_one_hot_forward_and_soft_backward():
    block = _block(choice="hard_st").train()
    h = small_cloud(n=80)
    y, alpha = attend(block, h)
    # one-hot up to rounding (hard + soft - soft.detach())
    torch.testing.assert_close(alpha.detach(), alpha.detach().round(), rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha.detach().sum(2), torch.ones_like(alpha[..., 0]))
    assert len(alpha.detach().round().argmax(2).unique()) > 1  # voxels do not all pick one element
    y.square().sum().backward()
    assert all(c.weight.grad.abs().max() > 0 for c in block.choice_convs)


def test_gumbel_samples_one_hot_in_training_and_takes_the_argmax_in_evaluation():
    block = _block(choice="gumbel", t_start=2.0, t_end=0.1).train()
    h = small_cloud(n=80)
    torch.manual_seed(1)
    _, alpha = attend(block, h)
    torch.testing.assert_close(alpha.detach(), alpha.detach().round(), rtol=0, atol=1e-6)
    alpha.sum().backward()  # straight-through: the relaxed sample carries the gradient
    block.eval()
    with torch.no_grad():
        _, a1 = attend(block, h)
        _, a2 = attend(block, h)
    assert torch.equal(a1, a2)


def test_discrete_block_defaults_are_m_patterns_on_one_cube():
    block = DiscreteAttentionBlock(8, 8, heads=2)
    assert block.choice == "hard_st" and len(block.regions) == 4
    assert len({r for r in block.regions}) == 1


def test_diversity_loss_matches_its_definition_and_is_named():
    block = _block(diversity=True, dilations=[1, 2], shapes=["cube"])
    roots = [torch.softmax(e.weight.detach(), 0).sqrt() for e in block.codebook]
    expected = ((roots[0] @ roots[1].t() - torch.eye(27)) ** 2).sum()
    torch.testing.assert_close(block.diversity_loss().detach(), expected)
    block(small_cloud(n=60))
    losses, logs = block.pop_aux()
    assert set(losses) == {"diversity"} and "choice_entropy" in logs
    with pytest.raises(ValueError, match="equal size"):
        _block(diversity=True, dilations=[1], shapes=["cube", "cross"])


def test_bad_settings_fail_with_one_line():
    with pytest.raises(ValueError, match="heads"):
        CodedVTRBlock(8, 8, heads=3, value_expansion=1)
    with pytest.raises(ValueError, match="choice"):
        CodedVTRBlock(8, 8, heads=2, choice="top1")
    assert math.isfinite(float(_block().temperature))


def test_fused_and_depthwise_aggregation_agree_in_value_and_gradients():
    h = small_cloud(n=80)
    results = []
    for aggregate in ("fused", "depthwise"):
        block = _block(aggregate=aggregate).train()
        feats = h.feats.clone().requires_grad_(True)
        out = block(h.replace(feats)).feats
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), [feats.grad] + [p.grad for p in block.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _guided_choice(coords, dilations=(2, 1, 3)):
    """alpha [D] of voxel row 0 with zero choice convolutions: the density prior alone, per element."""
    from tests.models.unet_helpers import sparse_input

    block = _block(dilations=list(dilations), shapes=["cube"]).eval()
    for conv in block.choice_convs:
        torch.nn.init.zeros_(conv.weight)
    h = sparse_input(torch.tensor(coords, dtype=torch.int32), torch.ones(len(coords), 8))
    with torch.no_grad():
        _, alpha = attend(block, h)
    order = sorted(range(len(dilations)), key=lambda d: dilations[d])
    return alpha[0, 0][order]  # by dilation, smallest first


def test_density_guidance_follows_the_paper_on_built_neighbourhoods():
    """Dense neighbourhoods choose small dilations, sparse ones bigger (Zhao et al.): a voxel inside a
    solid 9^3 block, the middle of a thin line, an isolated voxel; and a flat surface stays neutral."""
    centre = [0, 20, 20, 20]
    r = range(-4, 5)
    block = [centre] + [[0, 20 + x, 20 + y, 20 + z] for x in r for y in r for z in r if (x, y, z) != (0, 0, 0)]
    line = [centre] + [[0, 20 + x, 20, 20] for x in r if x]
    isolated = [centre, [0, 40, 40, 40]]
    plane = [centre] + [[0, 20 + x, 20 + y, 20] for x in r for y in r if (x, y) != (0, 0)]
    dense = _guided_choice(block)
    assert dense[0] > dense[1] > dense[2] and dense[0] > 0.9  # dilation 1 > 2 > 3
    for sparse in (_guided_choice(line), _guided_choice(isolated)):
        assert sparse[0] < sparse[1] < sparse[2]
    torch.testing.assert_close(_guided_choice(plane), torch.full((3,), 1 / 3))  # every cube 9 of 27

"""VTR block: vector attention against a brute-force loop, chunked == naive, gradients."""
import pytest
import torch

from lib.sparse.nn import neighbor_table
from models.vtr import VTRBlock
from tests.models.attention_helpers import brute_neighbors, small_cloud


def _brute_attention(block, feats, coords):
    """Vector attention by python loops over brute-force neighbours: [N, C]."""
    q, k, v = block.qkv(feats).chunk(3, 1)
    pe = block.position_encoding()
    table = brute_neighbors(coords, block.region.offsets)
    group = feats.shape[1] // block.heads
    out = torch.zeros_like(feats)
    for i in range(len(feats)):
        ks = [kk for kk, j in enumerate(table[i].tolist()) if j >= 0]
        js = [table[i, kk].item() for kk in ks]
        logits = torch.stack([block.weight_mlp(q[i] - k[j] + pe[kk]) for kk, j in zip(ks, js)])  # [n_i, H]
        attn = torch.softmax(logits, 0)
        for a, kk, j in zip(attn, ks, js):
            out[i] += a.repeat_interleave(group) * (v[j] + pe[kk])
    return out


@pytest.mark.parametrize("pe", ["table", "mlp"])
@pytest.mark.parametrize("dilation", [1, 2])
def test_vector_attention_matches_brute_force(pe, dilation):
    torch.manual_seed(0)
    block = VTRBlock(8, 8, heads=2, pe=pe, dilation=dilation, chunk_rows=16).eval()
    if pe == "table":
        torch.nn.init.normal_(block.pe_table)  # not the small init, so the PE terms matter
    h = small_cloud(n=50)
    with torch.no_grad():
        got = block.attend(h.feats, neighbor_table(h, block.region))
        ref = _brute_attention(block, h.feats, h.coords)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_chunked_and_naive_agree_in_value_and_gradients():
    torch.manual_seed(0)
    chunked = VTRBlock(8, 16, heads=4, chunk_rows=7).train()
    naive = VTRBlock(8, 16, heads=4, gather="naive").train()
    naive.load_state_dict(chunked.state_dict())
    h = small_cloud(n=90)
    outs, grads = [], []
    for block in (chunked, naive):
        feats = h.feats.clone().requires_grad_(True)
        out = block(h.replace(feats)).feats
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([feats.grad] + [p.grad for p in block.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    # float32 sums in different orders; the value bias's true gradient is 0 (train-mode BN follows),
    # so what remains there is cancellation noise: an absolute tolerance of 1e-4.
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # Queries, keys, values and the position table all learn.
    assert chunked.qkv.weight.grad.abs().max() > 0 and chunked.pe_table.grad.abs().max() > 0


def test_empty_neighbours_take_no_part():
    # An isolated voxel attends only to itself: y = v_i + PE_centre whatever the other weights.
    torch.manual_seed(0)
    block = VTRBlock(4, 4, heads=2).eval()
    from tests.models.unet_helpers import sparse_input
    coords = torch.tensor([[0, 0, 0, 0], [0, 5, 5, 5]], dtype=torch.int32)
    h = sparse_input(coords, torch.randn(2, 4))
    with torch.no_grad():
        y = block.attend(h.feats, neighbor_table(h, block.region))
        v = block.qkv(h.feats).chunk(3, 1)[2]
    torch.testing.assert_close(y, v + block.pe_table[13])


def test_bad_settings_fail_with_one_line():
    with pytest.raises(ValueError, match="heads"):
        VTRBlock(8, 8, heads=3)
    with pytest.raises(ValueError, match="pe"):
        VTRBlock(8, 8, heads=2, pe="sine")


def test_attention_under_cpu_bf16_autocast_stays_close_to_fp32():
    # The AMP path of a CUDA run, exercised with CPU autocast (the attention part: no sparse conv,
    # whose torch-engine kernel does not run under CPU autocast yet).
    torch.manual_seed(0)
    block = VTRBlock(16, 16, heads=4).train()
    h = small_cloud(n=90, channels=16)
    nbr = neighbor_table(h, block.region)
    reference = block.attend(h.feats, nbr).detach()
    feats = h.feats.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block.attend(feats, nbr)
    low.float().square().sum().backward()
    assert torch.isfinite(feats.grad).all() and block.qkv.weight.grad.abs().max() > 0
    assert (low.float() - reference).abs().mean() < 0.02 * reference.abs().mean()

"""The transformer U-Nets: build from recipes, output contract, stable state_dict, engines."""
import pytest
import torch

import models
from lib.config import load_config
from lib.sparse.engines import why_not
from models.contract import notify_progress, parse_output
from models.transformer_unet import CodedVTRUNet, DiscreteAttnUNet, TransformerUNet, VQAttnUNet, VTRUNet
from tests.models.unet_helpers import random_cloud, sparse_input

TINY = dict(init_dim=8, planes=[8, 16, 16, 16, 16, 16, 8, 8], layers=[1, 1, 1, 1, 1, 1, 1, 1],
            block_args={"codedvtr": {"heads": 2, "t_start": 2.0, "t_end": 0.5}, "discrete": {"heads": 2},
                        "vtr": {"heads": 2}, "vq": {"heads": 2, "num_codes": 4}})
NETS = [CodedVTRUNet, VTRUNet, DiscreteAttnUNet, VQAttnUNet]


def _tiny(cls, **kw):
    torch.manual_seed(0)
    return cls(in_channels=3, num_classes=5, **{**TINY, **kw})


@pytest.mark.parametrize("cls", NETS, ids=lambda c: c.__name__)
def test_state_dict_is_stable_across_batches_and_the_output_follows_the_contract(cls):
    model = _tiny(cls).train()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for seed, n in ((1, 150), (2, 260)):
        coords, feats = random_cloud(n, batch_size=2, extent=20, seed=seed)
        out = parse_output(model(sparse_input(coords, feats)))
        assert out.logits.shape == (2 * n, 5)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
        assert all(v.ndim == 0 for v in out.losses.values()) and all(v.ndim == 0 for v in out.logs.values())
    if cls is VQAttnUNet:
        assert set(out.losses) == {"vq_codebook", "vq_commit"}
        assert any(k.startswith("vq_perplexity/") for k in out.logs)


def test_progress_reaches_every_block_temperature():
    model = _tiny(CodedVTRUNet)
    notify_progress(model, 9, 10)
    temps = [float(m.temperature) for m in model.modules() if hasattr(m, "temperature")]
    assert len(temps) == 6 and all(t == pytest.approx(0.5) for t in temps)


def test_stage_blocks_and_per_stage_args_are_honoured():
    model = _tiny(TransformerUNet, stage_blocks=["basic", "vtr", "codedvtr", "vq", "discrete", "basic", "vtr",
                                                 "basic"],
                  stage_block_args=[None, {"heads": 4}, None, None, None, None, None, None])
    kinds = [type(stage[0]).__name__ for stage in list(model.encoders) + list(model.decoders)]
    assert kinds == ["BasicBlock", "VTRBlock", "CodedVTRBlock", "VQAttentionBlock", "DiscreteAttentionBlock",
                     "BasicBlock", "VTRBlock", "BasicBlock"]
    assert model.encoders[1][0].heads == 4 and model.decoders[2][0].heads == 2


@pytest.mark.parametrize("args, message", [
    ({"block_args": {"codedvtr": {"head": 2}}}, "block_args.codedvtr.head: CodedVTRBlock has no such argument; did you mean 'heads'"),
    ({"block_args": {"codedvtr": {"heads": "8"}}}, "block_args.codedvtr.heads: expected int"),
    ({"stage_blocks": ["basic"] * 7}, "stage_blocks: needs 8 entries"),
    ({"stage_blocks": ["basic"] * 7 + ["codedvrt"]}, "unknown block 'codedvrt'"),
])
def test_bad_block_args_fail_naming_the_key(args, message):
    cfg = load_config("demo_tr.yaml", [])
    cfg.model.args.update(args)
    with pytest.raises(models.ModelConfigError, match=message.replace("(", r"\(")):
        models.build_model(cfg.model, 3, 5)


def test_codedvtr_network_has_the_release_shape():
    cfg = load_config("scannet_tr.yaml", [])
    model = models.build_model(cfg.model, 6, 20)
    kinds = [type(stage[0]).__name__ for stage in list(model.encoders) + list(model.decoders)]
    assert kinds == ["BasicBlock"] + ["CodedVTRBlock"] * 6 + ["BasicBlock"]
    assert all(len(stage) == 2 for stage in list(model.encoders) + list(model.decoders))
    # Ours for 6 input channels and 20 classes; the release: 6,742,884 (CodedVTRUNet docstring says why).
    assert sum(p.numel() for p in model.parameters()) == 6_702_900


@pytest.fixture(scope="module", params=[CodedVTRUNet, VTRUNet, DiscreteAttnUNet, VQAttnUNet],
                ids=lambda c: c.__name__)
def trained(request):
    """A tiny net after two torch-engine training steps (so the checkpoint is not the init), its
    state_dict and reference eval logits on a fresh cloud."""
    model = _tiny(request.param)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for seed in (3, 4):
        coords, feats = random_cloud(200, batch_size=2, extent=20, seed=seed)
        parse_output(model(sparse_input(coords, feats))).logits.square().mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    coords, feats = random_cloud(250, batch_size=2, extent=20, seed=5)
    with torch.no_grad():
        reference = parse_output(model(sparse_input(coords, feats, engine="torch"))).logits
    return request.param, model.state_dict(), coords, feats, reference


@pytest.mark.parametrize("engine", ["spconv", "minkowski", "torchsparse"])
def test_a_checkpoint_gives_the_same_logits_on_every_engine(engine, trained):
    reason = why_not(engine, "cpu", training=False)
    if reason is not None:
        pytest.skip(f"engine {engine!r} cannot run inference on CPU here: {reason}")
    cls, state, coords, feats, reference = trained
    fresh = _tiny(cls)
    fresh.load_state_dict(state)
    with torch.no_grad():
        out = parse_output(fresh.eval()(sparse_input(coords, feats, engine=engine))).logits
    spread = reference.std(0).mean().item()
    assert spread > 1e-4
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-3 * spread)


def test_a_checkpoint_reloads_to_the_same_logits_on_the_torch_engine(trained):
    cls, state, coords, feats, reference = trained
    fresh = _tiny(cls, block_args={k: dict(v, **({"t_start": 5.0} if k == "codedvtr" else {}))
                                   for k, v in TINY["block_args"].items()})
    fresh.load_state_dict(state)  # the temperature buffer comes with the weights
    with torch.no_grad():
        out = parse_output(fresh.eval()(sparse_input(coords, feats, engine="torch"))).logits
    torch.testing.assert_close(out, reference)


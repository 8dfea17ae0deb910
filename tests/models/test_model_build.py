"""build_model: lookup by class name, argument checks and their messages, published model sizes."""
from types import SimpleNamespace

import pytest
import torch

from lib.config import ConfigError, ModelConfig
from models import MODELS, ModelConfigError, build_model
from models.build import check_model_args
from models.res16unet import Res16UNet14A, Res16UNet34C

PUBLISHED_VARIANTS = [
    "Res16UNet14", "Res16UNet14A", "Res16UNet14B", "Res16UNet14C", "Res16UNet14D",
    "Res16UNet18", "Res16UNet18A", "Res16UNet18B", "Res16UNet18D",
    "Res16UNet34", "Res16UNet34A", "Res16UNet34B", "Res16UNet34C",
    "Res16UNet50", "Res16UNet101", "MinkUNet34C",
]


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _on_meta(name, **args):
    # Shapes only, no memory or init time: enough to count parameters of the big variants.
    with torch.device("meta"):
        return build_model(ModelConfig(name=name, args=args), in_channels=3, num_classes=20)


def test_builds_by_class_name_with_recipe_args():
    cfg = ModelConfig(name="Res16UNet14A", args={"bn_momentum": 0.05, "conv1_kernel_size": 5, "dropout": 0.1})
    model = build_model(cfg, in_channels=4, num_classes=7)
    assert type(model) is Res16UNet14A
    assert model.dropout.module.p == pytest.approx(0.1)
    assert model.classifier.module.bias.shape == (7,)


def test_recipe_args_reach_every_layer():
    cfg = ModelConfig(name="Res16UNet14A", args={"bn_momentum": 0.3, "conv1_kernel_size": 5})
    model = build_model(cfg, in_channels=4, num_classes=7)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)}
    assert momenta == {0.3}
    assert model.stem[0].weight.shape == (5 ** 3, 4, 32)  # [K, Cin, Cout]


def test_accepts_any_object_with_name_and_args():
    model = build_model(SimpleNamespace(name="Res16UNet14A", args=None), in_channels=3, num_classes=2)
    assert type(model) is Res16UNet14A


@pytest.mark.parametrize("name", PUBLISHED_VARIANTS)
def test_every_published_variant_is_registered_and_builds(name):
    assert name in MODELS
    model = _on_meta(name)
    assert model.classifier.module.bias.shape == (20,)


def test_minkunet34c_is_res16unet34c():
    assert MODELS["MinkUNet34C"] is Res16UNet34C


def _published_res16unet34c_params(in_ch: int = 3, classes: int = 20) -> int:
    """Parameter count of Res16UNet34C worked out layer by layer from the published table
    (MinkowskiEngine's Res16UNet34C, "4D Spatio-Temporal ConvNets"): stem width 32, stage widths
    (32, 64, 128, 256 | 256, 128, 96, 96), BasicBlocks per stage (2, 3, 4, 6 | 2, 2, 2, 2), k2s2
    down / transposed-up convolutions each followed by BN, decoder stages fed the up output
    concatenated with the matching encoder output, a linear classifier with bias. Convolutions have
    no bias; a BN has 2 parameters per channel (running statistics are buffers)."""
    def conv(k, cin, cout):
        return k ** 3 * cin * cout

    def bn(c):
        return 2 * c

    def block(cin, cout):  # two 3x3x3 conv + BN; a 1x1 conv + BN shortcut when the width changes
        shortcut = cin * cout + bn(cout) if cin != cout else 0
        return conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout) + shortcut

    def stage(cin, cout, blocks):
        return block(cin, cout) + (blocks - 1) * block(cout, cout)

    total = conv(3, in_ch, 32) + bn(32)                        # stem, k3 (stride 1), width 32
    total += conv(2, 32, 32) + bn(32) + stage(32, 32, 2)       # -> stride 2
    total += conv(2, 32, 32) + bn(32) + stage(32, 64, 3)       # -> stride 4
    total += conv(2, 64, 64) + bn(64) + stage(64, 128, 4)      # -> stride 8
    total += conv(2, 128, 128) + bn(128) + stage(128, 256, 6)  # -> stride 16
    total += conv(2, 256, 256) + bn(256) + stage(256 + 128, 256, 2)  # up to 8, cat stride-8 encoder
    total += conv(2, 256, 128) + bn(128) + stage(128 + 64, 128, 2)  # up to 4, cat stride-4 encoder
    total += conv(2, 128, 96) + bn(96) + stage(96 + 32, 96, 2)      # up to 2, cat stride-2 encoder
    total += conv(2, 96, 96) + bn(96) + stage(96 + 32, 96, 2)       # up to 1, cat the stem
    return total + 96 * classes + classes                      # classifier


def test_res16unet34c_has_the_published_parameter_count():
    # MinkUNet34C / Res16UNet34C (3 input channels, 20 ScanNet classes) is quoted as 37.8M parameters
    expected = _published_res16unet34c_params()
    assert round(expected / 1e6, 1) == 37.8  # the arithmetic above agrees with the quoted figure
    assert _n_params(_on_meta("Res16UNet34C")) == expected
    # the input width only enters the stem
    with torch.device("meta"):
        other = build_model(ModelConfig(name="Res16UNet34C"), in_channels=4, num_classes=13)
    assert _n_params(other) == _published_res16unet34c_params(4, 13)


def test_bigger_variants_have_more_parameters():
    sizes = {name: _n_params(_on_meta(name)) for name in ("Res16UNet14A", "Res16UNet18A", "Res16UNet34C",
                                                          "Res16UNet101")}
    assert sizes["Res16UNet14A"] < sizes["Res16UNet18A"] < sizes["Res16UNet34C"] < sizes["Res16UNet101"]


def test_unknown_model_lists_the_closest_names():
    with pytest.raises(ModelConfigError, match=r"unknown model 'Res16UNet34c'.*Res16UNet34C"):
        build_model(ModelConfig(name="Res16UNet34c"), in_channels=3, num_classes=20)


def test_unknown_arg_names_it_and_the_closest_valid_one():
    cfg = ModelConfig(name="Res16UNet14A", args={"bn_momentun": 0.1})
    with pytest.raises(ModelConfigError, match=r"model\.args\.bn_momentun: .*did you mean 'bn_momentum'"):
        build_model(cfg, in_channels=3, num_classes=20)


@pytest.mark.parametrize("key,value,expected", [
    ("conv1_kernel_size", 3.0, "int"),
    ("conv1_kernel_size", True, "int"),
    ("dropout", "0.5", "float"),
    ("bn_momentum", None, "float"),
])
def test_wrong_type_names_the_arg_and_the_expected_type(key, value, expected):
    cfg = ModelConfig(name="Res16UNet14A", args={key: value})
    with pytest.raises(ModelConfigError, match=rf"model\.args\.{key}: expected {expected}, got"):
        build_model(cfg, in_channels=3, num_classes=20)


def test_an_int_is_a_valid_float():
    # YAML reads `dropout: 0` as an int.
    model = build_model(ModelConfig(name="Res16UNet14A", args={"dropout": 0}), in_channels=3, num_classes=2)
    assert model.dropout.module.p == 0


def test_dataset_supplied_args_are_refused_in_the_recipe():
    cfg = ModelConfig(name="Res16UNet14A", args={"num_classes": 13})
    with pytest.raises(ModelConfigError, match=r"model\.args\.num_classes: set by the dataset"):
        build_model(cfg, in_channels=3, num_classes=20)


def test_model_errors_are_config_errors():
    # main.py reports every ConfigError as one line; model-section errors must be among them.
    assert issubclass(ModelConfigError, ConfigError)


def test_bad_values_of_the_right_type_are_refused():
    with pytest.raises(ValueError, match="conv1_kernel_size must be a positive odd int, got 4"):
        build_model(ModelConfig(name="Res16UNet14A", args={"conv1_kernel_size": 4}), 3, 20)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        build_model(ModelConfig(name="Res16UNet14A", args={"dropout": 1.5}), 3, 20)


class _Declared:
    """Stands in for a future model whose constructor uses the other supported annotations."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widths: tuple[int, ...] = (8,),
                 norm: str | None = None):
        pass


def test_required_args_must_be_given():
    with pytest.raises(ModelConfigError, match=r"model\.args: _Declared needs depth"):
        check_model_args(_Declared, {})


@pytest.mark.parametrize("args", [
    {"depth": 2, "widths": [8, 16]},  # YAML gives a list where a tuple is declared
    {"depth": 2, "widths": (8,), "norm": None},
    {"depth": 2, "norm": "bn"},
])
def test_sequences_and_optionals_that_fit(args):
    check_model_args(_Declared, args)


@pytest.mark.parametrize("args,message", [
    ({"depth": 2, "widths": [8, 1.5]}, r"model\.args\.widths: expected tuple\[int, \.\.\.\], got list"),
    ({"depth": 2, "widths": 8}, r"model\.args\.widths: expected tuple"),
    ({"depth": 2, "norm": 3}, r"model\.args\.norm: expected str \| None, got int 3"),
])
def test_sequences_and_optionals_that_do_not_fit(args, message):
    with pytest.raises(ModelConfigError, match=message):
        check_model_args(_Declared, args)

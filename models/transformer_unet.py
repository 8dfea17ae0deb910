"""Res16UNet-shaped networks whose stages use attention blocks, chosen stage by stage.

Same stem, k2s2 down/up convolutions, skips and classifier as models/res16unet.py; each of the 8
stages (4 encoder, 4 decoder) takes its own block kind and block args:
    basic     models.blocks.BasicBlock
    codedvtr  models.codedvtr.CodedVTRBlock
    discrete  models.codedvtr.DiscreteAttentionBlock
    vtr       models.vtr.VTRBlock
    vq        models.vq.VQAttentionBlock
Block args: `block_args` {kind: {arg: value}} applies to every stage of that kind, and
`stage_block_args` (8 dicts, or null) overrides per stage. Every key is checked against the block's
constructor at build time. The forward returns {"logits", "losses", "logs"} (models/contract.py):
losses of equal name are summed over blocks, logs are named "<name>/<module path>".
"""
import inspect
import typing

import torch.nn as nn

from models.blocks import BasicBlock
from models.build import ModelConfigError, closest_name, register_model, value_fits
from models.codedvtr import CodedVTRBlock, DiscreteAttentionBlock
from models.res16unet import Res16UNetBase
from models.vq import VQAttentionBlock
from models.vtr import VTRBlock

BLOCKS = {"basic": BasicBlock, "codedvtr": CodedVTRBlock, "discrete": DiscreteAttentionBlock,
          "vtr": VTRBlock, "vq": VQAttentionBlock}
_SET_BY_NET = ("inplanes", "planes", "bn_momentum")


def block_signature_args(kind):
    """The args a recipe may set for block `kind`: {name: inspect.Parameter}."""
    params = inspect.signature(BLOCKS[kind].__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and n not in _SET_BY_NET}


def check_block_args(kind, args, where):
    """Raise ModelConfigError naming `where`.<key> unless every key is an arg of block `kind`."""
    if kind not in BLOCKS:
        hint = closest_name(str(kind), BLOCKS)
        raise ModelConfigError(f"{where}: unknown block {kind!r}; known: {', '.join(BLOCKS)}"
                               + (f" (closest: {hint[0]!r})" if hint else ""))
    if not isinstance(args, dict):
        raise ModelConfigError(f"{where}: expected a dict of block args, got {type(args).__name__}")
    allowed = block_signature_args(kind)
    hints = typing.get_type_hints(BLOCKS[kind].__init__)
    for key, value in args.items():
        if key not in allowed:
            hint = closest_name(key, allowed)
            raise ModelConfigError(f"{where}.{key}: {BLOCKS[kind].__name__} has no such argument"
                                   + (f"; did you mean {hint[0]!r}?" if hint else ""))
        annotation = hints.get(key, inspect.Parameter.empty)
        if not value_fits(value, annotation):
            raise ModelConfigError(f"{where}.{key}: expected {getattr(annotation, '__name__', annotation)}, "
                                   f"got {type(value).__name__} {value!r}")


class TransformerUNet(Res16UNetBase):
    """Res16UNet shape with a block kind and block args per stage.

    Args (beyond Res16UNetBase's in_channels, num_classes, bn_momentum, conv1_kernel_size, dropout):
        planes: 8 stage widths; layers: 8 block counts; init_dim: stem width.
        stage_blocks: 8 block kinds (BLOCKS); null = the class default STAGE_BLOCKS.
        block_args: {kind: {arg: value}} for every stage of that kind.
        stage_block_args: 8 dicts (or null) overriding block_args stage by stage.
    """

    STAGE_BLOCKS = ("basic",) * 8

    def __init__(self, in_channels: int, num_classes: int, planes: list = (24, 48, 96, 192, 96, 96, 72, 72),
                 layers: list = (2, 2, 2, 2, 2, 2, 2, 2), init_dim: int = 32, stage_blocks: list = None,
                 block_args: dict = None, stage_block_args: list = None, bn_momentum: float = 0.02,
                 conv1_kernel_size: int = 3, dropout: float = 0.0):
        stage_blocks = list(self.STAGE_BLOCKS if stage_blocks is None else stage_blocks)
        stage_block_args = [None] * 8 if stage_block_args is None else list(stage_block_args)
        for name, value in (("planes", planes), ("layers", layers), ("stage_blocks", stage_blocks),
                            ("stage_block_args", stage_block_args)):
            if len(value) != 8:
                raise ModelConfigError(f"model.args.{name}: needs 8 entries (4 encoder + 4 decoder stages), "
                                       f"got {len(value)}")
        block_args = dict(block_args or {})
        for kind, args in block_args.items():
            check_block_args(kind, args, f"model.args.block_args.{kind}")
        self.stage_specs = []
        for i, (kind, extra) in enumerate(zip(stage_blocks, stage_block_args)):
            args = dict(block_args.get(kind, {}))
            if extra:
                check_block_args(kind, extra, f"model.args.stage_block_args[{i}]")
                args.update(extra)
            check_block_args(kind, {}, f"model.args.stage_blocks[{i}]")
            self.stage_specs.append((kind, args))
        self.PLANES, self.LAYERS, self.INIT_DIM = tuple(planes), tuple(layers), init_dim
        super().__init__(in_channels, num_classes, bn_momentum, conv1_kernel_size, dropout)

    def _make_stage(self, index, inplanes, planes, blocks, bn_momentum):
        kind, args = self.stage_specs[index]
        block = BLOCKS[kind]
        layers = [block(inplanes if b == 0 else planes, planes, bn_momentum=bn_momentum, **args)
                  for b in range(blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        logits = super().forward(x)
        losses, logs = {}, {}
        for name, module in self.named_modules():
            pop = getattr(module, "pop_aux", None)
            if module is not self and callable(pop):
                block_losses, block_logs = pop()
                for key, value in block_losses.items():
                    losses[key] = losses[key] + value if key in losses else value
                logs.update({f"{key}/{name}": value.detach() for key, value in block_logs.items()})
        return {"logits": logits, "losses": losses, "logs": logs}


@register_model
class CodedVTRUNet(TransformerUNet):
    """The CodedVTR network of Zhao et al. (CVPR 2022): planes [24,48,96,192,96,96,72,72], 2 blocks per
    stage, BasicBlocks in the first and last stage, CodedVTR blocks in stages 2-7.

    Parameters for 6 input channels and 20 classes (scannet_tr.yaml): 6,702,900, against the release's
    6,742,884 (-39,984, 0.6%). A 5^3 stem (conv1_kernel_size: 5, MinkowskiEngine's indoor example)
    accounts for 18,816 of it (6,721,716); the rest sits in layers the release never published (its
    lib/ folder is missing), so it cannot be placed exactly. Per CodedVTR block ours holds: value
    3^3 conv + BN, 1x1 to C' + BN, D choice convs [K, planes, H], D codebook weights [K, C'], the
    1x1 output + BN, and when widths differ a 1x1 input projection + BN and a plain 1x1 shortcut.
    """

    STAGE_BLOCKS = ("basic",) + ("codedvtr",) * 6 + ("basic",)


@register_model
class VTRUNet(TransformerUNet):
    """The same network with Point-Transformer-style VTR blocks in stages 2-7."""

    STAGE_BLOCKS = ("basic",) + ("vtr",) * 6 + ("basic",)


@register_model
class DiscreteAttnUNet(TransformerUNet):
    """The same network with discrete attention blocks (hard choice among M patterns) in stages 2-7."""

    STAGE_BLOCKS = ("basic",) + ("discrete",) * 6 + ("basic",)


@register_model
class VQAttnUNet(TransformerUNet):
    """The same network with vector-quantised attention blocks in stages 2-7."""

    STAGE_BLOCKS = ("basic",) + ("vq",) * 6 + ("basic",)

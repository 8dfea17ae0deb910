"""Res16UNet / MinkUNet family: a sparse residual U-Net over four k2s2 levels (tensor stride 1..16).

Shape as described in Choy et al., "4D Spatio-Temporal ConvNets" (CVPR 2019) and the public
MinkowskiEngine recipes:

    stem      SubMConv(k=conv1_kernel_size) in_channels -> INIT_DIM, BN, ReLU         stride 1
    enc i     DownConv3d k2s2 (channels kept), BN, ReLU, LAYERS[i] blocks -> PLANES[i]  stride 2,4,8,16
    dec i     UpConv3d k2s2 -> PLANES[4+i], BN, ReLU, cat(skip at that stride),
              LAYERS[4+i] blocks -> PLANES[4+i]                                        stride 8,4,2,1
    head      Dropout(dropout), Linear(PLANES[7] * expansion -> num_classes, with bias)

Skips are the stem output (stride 1) and the outputs of encoder stages 1-3 (strides 2, 4, 8).
Variants differ only in the block type, LAYERS (blocks per stage) and PLANES (stage widths); the
published figures are kept so parameter counts match the public models (Res16UNet34C with 3 input
channels and 20 classes: 37,846,644 parameters, the ~37.8M quoted for MinkUNet34C).
"""
import math

import torch.nn as nn

from lib.sparse import nn as snn
from models.blocks import BasicBlock, Bottleneck, make_stage
from models.build import register_alias, register_model


def _conv_bn_relu(conv, channels, bn_momentum):
    return nn.Sequential(conv, snn.BatchNorm(channels, momentum=bn_momentum), snn.ReLU())


class Res16UNetBase(nn.Module):
    """Sparse residual U-Net. Subclasses set BLOCK, LAYERS (8 ints) and PLANES (8 ints).

    Args:
        in_channels: features per input voxel.
        num_classes: logits per voxel.
        bn_momentum: BatchNorm running-statistics momentum (torch convention, weight of the new
            batch). 0.02 is the value of the public ScanNet recipes.
        conv1_kernel_size: odd kernel of the stem convolution. 3 (default) as in the
            SpatioTemporalSegmentation recipes; MinkowskiEngine's indoor MinkUNet example uses 5.
        dropout: probability of zeroing a feature right before the classifier (0 = none).
    """

    BLOCK = BasicBlock
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)
    PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
    INIT_DIM = 32

    def __init__(self, in_channels: int, num_classes: int, bn_momentum: float = 0.02,
                 conv1_kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        if conv1_kernel_size < 1 or conv1_kernel_size % 2 == 0:
            raise ValueError(f"conv1_kernel_size must be a positive odd int, got {conv1_kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        layers, planes = self.LAYERS, self.PLANES
        exp = self.BLOCK.expansion

        self.stem = _conv_bn_relu(
            snn.SubMConv3d(in_channels, self.INIT_DIM, kernel_size=conv1_kernel_size),
            self.INIT_DIM, bn_momentum)

        self.downs, self.encoders = nn.ModuleList(), nn.ModuleList()
        skip_channels = [self.INIT_DIM]
        inplanes = self.INIT_DIM
        for i in range(4):
            self.downs.append(_conv_bn_relu(snn.DownConv3d(inplanes, inplanes), inplanes, bn_momentum))
            self.encoders.append(self._make_stage(i, inplanes, planes[i], layers[i], bn_momentum))
            inplanes = planes[i] * exp
            skip_channels.append(inplanes)

        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for i in range(4, 8):
            self.ups.append(_conv_bn_relu(snn.UpConv3d(inplanes, planes[i]), planes[i], bn_momentum))
            # The skip at the stride this decoder stage reaches: encoder 3, 2, 1, then the stem.
            cat_channels = planes[i] + skip_channels[7 - i]
            self.decoders.append(self._make_stage(i, cat_channels, planes[i], layers[i], bn_momentum))
            inplanes = planes[i] * exp

        self.dropout = snn.Dropout(dropout)
        self.classifier = snn.Linear(inplanes, num_classes, bias=True)
        self._init_conv_weights()

    def _make_stage(self, index, inplanes, planes, blocks, bn_momentum):
        """Stage `index` (0-3 encoder, 4-7 decoder): `blocks` blocks of self.BLOCK. Subclasses may
        choose the block per stage; every block must output planes * self.BLOCK.expansion channels."""
        return make_stage(self.BLOCK, inplanes, planes, blocks, bn_momentum)

    def _init_conv_weights(self):
        # Kaiming-normal (fan_out, ReLU gain) as in the public MinkowskiEngine ResNet recipes, in
        # place of the layers' uniform(+-1/sqrt(fan_in)) default. Weight layout [K, Cin, Cout].
        for m in self.modules():
            if isinstance(m, (snn.SubMConv3d, snn.DownConv3d, snn.UpConv3d)):
                volume, _, cout = m.weight.shape
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (volume * cout)))

    def forward(self, x):
        """x: SparseTensor, feats [N, in_channels], stride 1 -> logits [N, num_classes], rows as x."""
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} was built for {self.in_channels} input channels "
                             f"per voxel, got features of shape {tuple(x.feats.shape)}")
        out = self.stem(x)
        skips = [out]
        for down, encoder in zip(self.downs, self.encoders):
            out = encoder(down(out))
            skips.append(out)
        skips.pop()  # the stride-16 output is the bottom of the U, not a skip
        for up, decoder in zip(self.ups, self.decoders):
            out = decoder(snn.cat(up(out), skips.pop()))
        return self.classifier(self.dropout(out)).feats


@register_model
class Res16UNet14(Res16UNetBase):
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)


@register_model
class Res16UNet14A(Res16UNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


@register_model
class Res16UNet14B(Res16UNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 128, 128)


@register_model
class Res16UNet14C(Res16UNet14):
    PLANES = (32, 64, 128, 256, 192, 192, 128, 128)


@register_model
class Res16UNet14D(Res16UNet14):
    PLANES = (32, 64, 128, 256, 384, 384, 384, 384)


@register_model
class Res16UNet18(Res16UNetBase):
    LAYERS = (2, 2, 2, 2, 2, 2, 2, 2)


@register_model
class Res16UNet18A(Res16UNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


@register_model
class Res16UNet18B(Res16UNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 128, 128)


@register_model
class Res16UNet18D(Res16UNet18):
    PLANES = (32, 64, 128, 256, 384, 384, 384, 384)


@register_model
class Res16UNet34(Res16UNetBase):
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


@register_model
class Res16UNet34A(Res16UNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 64)


@register_model
class Res16UNet34B(Res16UNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 32)


@register_model
class Res16UNet34C(Res16UNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 96, 96)


@register_model
class Res16UNet50(Res16UNetBase):
    BLOCK = Bottleneck
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


@register_model
class Res16UNet101(Res16UNetBase):
    BLOCK = Bottleneck
    LAYERS = (2, 3, 4, 23, 2, 2, 2, 2)


# MinkowskiEngine's examples call the same network MinkUNet34C.
register_alias("MinkUNet34C", Res16UNet34C)
MinkUNet34C = Res16UNet34C

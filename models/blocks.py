"""Residual blocks of the Res16UNet family (ResNet BasicBlock / Bottleneck on sparse voxels).

Every block maps a SparseTensor with `inplanes` channels to one with `planes * expansion` channels
on the same coordinates (submanifold convolutions only: no block changes the voxel set).
"""
import torch.nn as nn

from lib.sparse import nn as snn


def projection_shortcut(inplanes, outplanes, bn_momentum):
    """1x1 projection + BN on the skip path when the channel count changes, else None (identity)."""
    if inplanes == outplanes:
        return None
    return nn.Sequential(snn.Linear(inplanes, outplanes, bias=False),
                         snn.BatchNorm(outplanes, momentum=bn_momentum))


class BasicBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN, plus the shortcut, then ReLU. Output channels: `planes`."""

    expansion = 1

    def __init__(self, inplanes, planes, bn_momentum=0.1):
        super().__init__()
        self.conv1 = snn.SubMConv3d(inplanes, planes, kernel_size=3)
        self.norm1 = snn.BatchNorm(planes, momentum=bn_momentum)
        self.conv2 = snn.SubMConv3d(planes, planes, kernel_size=3)
        self.norm2 = snn.BatchNorm(planes, momentum=bn_momentum)
        self.relu = snn.ReLU()
        self.shortcut = projection_shortcut(inplanes, planes, bn_momentum)

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out.replace(out.feats + skip.feats))


class Bottleneck(nn.Module):
    """1x1 reduce - 3x3 - 1x1 expand (each with BN), plus the shortcut, then ReLU.

    Output channels: `planes * 4`.
    """

    expansion = 4

    def __init__(self, inplanes, planes, bn_momentum=0.1):
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = snn.Linear(inplanes, planes, bias=False)
        self.norm1 = snn.BatchNorm(planes, momentum=bn_momentum)
        self.conv2 = snn.SubMConv3d(planes, planes, kernel_size=3)
        self.norm2 = snn.BatchNorm(planes, momentum=bn_momentum)
        self.conv3 = snn.Linear(planes, outplanes, bias=False)
        self.norm3 = snn.BatchNorm(outplanes, momentum=bn_momentum)
        self.relu = snn.ReLU()
        self.shortcut = projection_shortcut(inplanes, outplanes, bn_momentum)

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out.replace(out.feats + skip.feats))


def make_stage(block, inplanes, planes, blocks, bn_momentum):
    """`blocks` blocks in sequence, the first taking `inplanes` channels. Returns nn.Sequential."""
    layers = [block(inplanes, planes, bn_momentum=bn_momentum)]
    layers += [block(planes * block.expansion, planes, bn_momentum=bn_momentum) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)

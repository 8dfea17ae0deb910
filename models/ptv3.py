"""A serialized-attention backbone in the style of Point Transformer V3 (Wu et al., CVPR 2024).

Points are ordered along space-filling curves (lib.pointops.serialize); each block attends inside
fixed-size patches of one order (torch scaled_dot_product_attention: flash / memory-efficient
kernels where the device has them); the orders are shuffled per forward in training and taken in
turn by the blocks. Conditional positional encoding is a submanifold 3x3x3 convolution of
lib.sparse (any engine). Grid pooling (stride 2, max of projected features) and unpooling
(projected skip + projected parent) make the U-Net. Published base sizes are the defaults:
enc depths [2,2,2,6,2], channels [32,64,128,256,512], heads [2,4,8,16,32], patch 1024,
dec depths [2,2,2,2], dec channels [64,64,128,256], heads [4,4,8,16], MLP ratio 4, drop path 0.3.
"""
import torch
import torch.nn.functional as F
from torch import nn

from lib.pointops import ORDERS, grid_cluster, patch_partition, segment_max, segment_mean, serialize
from lib.pointops.grid import offset_to_batch
from lib.sparse import SparseTensor
from lib.sparse import nn as spnn
from lib.structure import PointBatch
from models.build import register_model


class Level:
    """The points of one resolution: coord [N, 3] metres, grid int [N, 3], offset [B + 1], the
    SparseTensor the positional convolutions share (kernel maps built once), and the orders."""

    def __init__(self, coord, grid, offset, orders, engine):
        self.coord, self.grid, self.offset = coord, grid, offset
        batch = offset_to_batch(offset)
        coords = torch.cat([batch.to(torch.int32)[:, None], grid.to(torch.int32)], 1)
        self.sparse = SparseTensor(coord.new_zeros(len(coord), 1), coords, engine=engine)
        _, self.order, self.inverse = serialize(grid, batch, orders)


def drop_path(x: torch.Tensor, p: float, training: bool, batch: torch.Tensor) -> torch.Tensor:
    """Stochastic depth per scene: zero a residual branch for whole scenes with probability p."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(int(batch.max()) + 1, device=x.device) >= p
    return x * (keep[batch].to(x.dtype) / (1.0 - p))[:, None]


class SerializedAttention(nn.Module):
    """Multi-head self-attention inside patches of `patch_size` points along one order."""

    def __init__(self, channels: int, heads: int, patch_size: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads, self.patch_size = heads, patch_size
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, feat: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, offset: torch.Tensor):
        """feat [N, C]; order/inverse int64 [N] (one curve); offset [B + 1]. Returns [N, C]."""
        n, c = feat.shape
        patches = patch_partition(offset, self.patch_size)
        qkv = self.qkv(feat)[order]  # serialized: scenes stay contiguous along any order
        outs = []
        if len(patches.full):
            outs.append(self._attend(qkv[patches.full], None))
        if len(patches.small):
            outs.append(self._attend(qkv[patches.small], patches.small_mask))
        out = torch.cat([o.reshape(-1, c) for o in outs])[patches.owner]
        return self.proj(out[inverse])

    def _attend(self, qkv: torch.Tensor, mask):
        p, w, _ = qkv.shape  # [patches, width, 3C]
        q, k, v = qkv.view(p, w, 3, self.heads, qkv.shape[2] // (3 * self.heads)).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return out.transpose(1, 2).reshape(p, w, -1)


class Block(nn.Module):
    """x += CPE(x); x += attn(LN(x)); x += MLP(LN(x)) (pre-norm, stochastic depth)."""

    def __init__(self, channels: int, heads: int, patch_size: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.cpe = spnn.SubMConv3d(channels, channels, 3, bias=True)
        self.cpe_out = nn.Sequential(nn.Linear(channels, channels), nn.LayerNorm(channels))
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = SerializedAttention(channels, heads, patch_size)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.drop_path = drop_path

    def forward(self, feat: torch.Tensor, level: Level, which: int) -> torch.Tensor:
        feat = feat + self.cpe_out(self.cpe(level.sparse.replace(feat)).feats)
        batch = level.sparse.coords[:, 0].long()
        a = self.attn(self.norm1(feat), level.order[which], level.inverse[which], level.offset)
        feat = feat + drop_path(a, self.drop_path, self.training, batch)
        return feat + drop_path(self.mlp(self.norm2(feat)), self.drop_path, self.training, batch)


def _proj(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.GELU())


class GridPool(nn.Module):
    """Stride-2 grid pooling: max of the projected features of each 2x2x2 cell, mean coordinates."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Linear(cin, cout)
        self.post = nn.Sequential(nn.BatchNorm1d(cout), nn.GELU())

    def forward(self, feat, level: Level, orders, engine):
        clusters = grid_cluster(level.grid, level.offset, 2)
        m = len(clusters.grid_coord)
        pooled = self.post(segment_max(self.proj(feat), clusters.cluster, m))
        coarse = Level(segment_mean(level.coord, clusters.cluster, m), clusters.grid_coord, clusters.offset,
                       orders, engine)
        return pooled, coarse, clusters.cluster


class GridUnpool(nn.Module):
    """Back onto the finer points: proj(skip) + proj(coarse)[cluster]."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.proj, self.proj_skip = _proj(cin, cout), _proj(cskip, cout)

    def forward(self, coarse, skip, cluster):
        return self.proj_skip(skip) + self.proj(coarse)[cluster]


@register_model
class PTv3(nn.Module):
    """Serialized-attention U-Net on a PointBatch; logits [N, num_classes] in input row order.

    orders: curves from lib.pointops.ORDERS; shuffle_orders: permute them per training forward.
    bn_momentum: of the BatchNorms of stem, pooling and unpooling (torch convention).
    engine: the lib.sparse engine of the positional convolutions ("auto": fastest on the device).
    """

    input_type = "points"

    def __init__(self, in_channels: int, num_classes: int,
                 enc_depths: tuple[int, ...] = (2, 2, 2, 6, 2), enc_channels: tuple[int, ...] = (32, 64, 128, 256, 512),
                 enc_heads: tuple[int, ...] = (2, 4, 8, 16, 32), dec_depths: tuple[int, ...] = (2, 2, 2, 2),
                 dec_channels: tuple[int, ...] = (64, 64, 128, 256), dec_heads: tuple[int, ...] = (4, 4, 8, 16),
                 patch_size: int = 1024, orders: tuple[str, ...] = ORDERS, shuffle_orders: bool = True,
                 mlp_ratio: float = 4.0, drop_path: float = 0.3, stem_kernel: int = 5, bn_momentum: float = 0.1,
                 engine: str = "auto"):
        super().__init__()
        stages = len(enc_depths)
        if not (len(enc_channels) == len(enc_heads) == stages and len(dec_depths) == len(dec_channels)
                == len(dec_heads) == stages - 1):
            raise ValueError("PTv3: enc_* need one entry per stage, dec_* one fewer")
        for o in orders:
            if o not in ORDERS:
                raise ValueError(f"PTv3: unknown order {o!r}; expected some of {ORDERS}")
        self.orders, self.shuffle_orders, self.engine = tuple(orders), shuffle_orders, engine
        self.stem = spnn.SubMConv3d(in_channels, enc_channels[0], stem_kernel)
        self.stem_post = nn.Sequential(nn.BatchNorm1d(enc_channels[0]), nn.GELU())
        rates = torch.linspace(0, drop_path, sum(enc_depths)).tolist()
        self.pools, self.enc = nn.ModuleList(), nn.ModuleList()
        for s in range(stages):
            if s:
                self.pools.append(GridPool(enc_channels[s - 1], enc_channels[s]))
            first = sum(enc_depths[:s])
            self.enc.append(nn.ModuleList(Block(enc_channels[s], enc_heads[s], patch_size, mlp_ratio, rates[first + i])
                                          for i in range(enc_depths[s])))
        rates = torch.linspace(0, drop_path, sum(dec_depths)).tolist()
        self.unpools, self.dec = nn.ModuleList(), nn.ModuleList()
        for s in range(stages - 1):
            coarse = enc_channels[-1] if s == stages - 2 else dec_channels[s + 1]
            self.unpools.append(GridUnpool(coarse, enc_channels[s], dec_channels[s]))
            first = sum(dec_depths[:s])
            self.dec.append(nn.ModuleList(Block(dec_channels[s], dec_heads[s], patch_size, mlp_ratio, rates[first + i])
                                          for i in range(dec_depths[s])))
        self.head = nn.Linear(dec_channels[0], num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = bn_momentum

    def forward(self, points: PointBatch) -> torch.Tensor:
        orders = list(self.orders)
        if self.training and self.shuffle_orders:  # torch's RNG: seeded by the engine
            orders = [orders[i] for i in torch.randperm(len(orders)).tolist()]
        level = Level(points.coord, points.grid_coord, points.offset, orders, self.engine)
        feat = self.stem_post(self.stem(level.sparse.replace(points.feat)).feats)
        levels, feats, clusters = [], [], []
        for s, blocks in enumerate(self.enc):
            if s:
                feat, level, cluster = self.pools[s - 1](feat, level, orders, self.engine)
                clusters.append(cluster)
            for i, block in enumerate(blocks):
                feat = block(feat, level, i % len(orders))
            levels.append(level)
            feats.append(feat)
        for s in reversed(range(len(self.dec))):
            feat = self.unpools[s](feat, feats[s], clusters[s])
            for i, block in enumerate(self.dec[s]):
                feat = block(feat, levels[s], i % len(orders))
        return self.head(feat)

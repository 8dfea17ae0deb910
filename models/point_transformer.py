"""Point Transformer (Zhao et al., ICCV 2021): vector self-attention over the k nearest points.

Layer: y_i = sum_j softmax_j(gamma(phi(x_i) - psi(x_j) + delta_ij)) * (alpha(x_j) + delta_ij),
delta_ij = theta(p_i - p_j) (two-layer position MLP), gamma an MLP whose weights are shared by
groups of `share_planes` channels (as in the authors' segmentation network).
Transition down samples the points by grid clustering (the cell doubles per level; on surface
scans this keeps about a quarter of the points, the paper's stride 4) instead of farthest-point
sampling, then max-pools an MLP of [p_j - p_i, x_j] over the k nearest finer points; transition
up interpolates the coarser features (inverse distance, k = 3) and adds the projected skip (the
authors' extra global-feature branch at the coarsest level is left out).
Published ScanNet/S3DIS layout (defaults): depths [1,2,3,5,2], channels [32,64,128,256,512], k 16,
one block per decoder level.
"""
import torch
from torch import nn

from lib.pointops import grid_cluster, interpolate, knn, segment_mean
from lib.structure import PointBatch
from models.build import register_model


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(c), nn.ReLU(inplace=True))


class PointTransformerLayer(nn.Module):
    """Vector attention of every point over its neighbours idx [N, k]."""

    def __init__(self, channels: int, share_planes: int = 8):
        super().__init__()
        if channels % share_planes:
            raise ValueError(f"channels {channels} not divisible by share_planes {share_planes}")
        self.share = share_planes
        self.q, self.k, self.v = (nn.Linear(channels, channels) for _ in range(3))
        self.pos = nn.Sequential(nn.Linear(3, 3), _bn_relu(3), nn.Linear(3, channels))
        mid = channels // share_planes
        self.weight = nn.Sequential(_bn_relu(channels), nn.Linear(channels, mid), _bn_relu(mid), nn.Linear(mid, mid))

    def forward(self, coord: torch.Tensor, feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """coord [N, 3], feat [N, C], idx int64 [N, k] -> [N, C]."""
        n, k = idx.shape
        c = feat.shape[1]
        q, key, v = self.q(feat), self.k(feat), self.v(feat)
        delta = self.pos((coord[idx] - coord[:, None]).reshape(-1, 3)).view(n, k, c)
        w = self.weight((q[:, None] - key[idx] + delta).reshape(-1, c)).view(n, k, -1).softmax(dim=1)
        value = (v[idx] + delta).view(n, k, self.share, c // self.share)
        return (value * w[:, :, None, :]).sum(1).reshape(n, c)


class PointTransformerBlock(nn.Module):
    """Residual bottleneck: Linear-BN-ReLU, PT layer-BN-ReLU, Linear-BN, + input, ReLU."""

    def __init__(self, channels: int, share_planes: int = 8):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(channels, channels, bias=False), _bn_relu(channels)
        self.attn, self.bn2 = PointTransformerLayer(channels, share_planes), _bn_relu(channels)
        self.fc3, self.bn3 = nn.Linear(channels, channels, bias=False), nn.BatchNorm1d(channels)

    def forward(self, coord, feat, idx):
        out = self.bn1(self.fc1(feat))
        out = self.bn2(self.attn(coord, out, idx))
        return torch.relu(self.bn3(self.fc3(out)) + feat)


class TransitionDown(nn.Module):
    """Grid-sample the points (cell x2), max-pool MLP([p_j - p_i, x_j]) over the k nearest finer points."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Linear(3 + cin, cout, bias=False), _bn_relu(cout))

    def forward(self, coord, grid, offset, feat):
        clusters = grid_cluster(grid, offset, 2)
        new_coord = segment_mean(coord, clusters.cluster, len(clusters.grid_coord))
        idx, _ = knn(coord, offset, self.k, new_coord, clusters.offset)
        n, k = idx.shape
        grouped = torch.cat([coord[idx] - new_coord[:, None], feat[idx]], 2).reshape(n * k, -1)
        new_feat = self.mlp(grouped).view(n, k, -1).max(dim=1).values
        return new_coord, clusters.grid_coord, clusters.offset, new_feat


class TransitionUp(nn.Module):
    """fine features = proj(skip) + interpolate(proj(coarse)) (inverse distance, k = 3)."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(cin, cout), _bn_relu(cout))
        self.proj_skip = nn.Sequential(nn.Linear(cskip, cout), _bn_relu(cout))

    def forward(self, coarse, fine_skip):
        (c_coord, c_offset, c_feat), (f_coord, f_offset, f_feat) = coarse, fine_skip
        up = interpolate(c_coord, c_offset, self.proj(c_feat), f_coord, f_offset, k=3)
        return self.proj_skip(f_feat) + up


@register_model
class PointTransformer(nn.Module):
    """Point Transformer segmentation U-Net on a PointBatch; logits [N, num_classes] in input order.

    bn_momentum: of every BatchNorm (torch convention: weight of the new batch statistics).
    """

    input_type = "points"

    def __init__(self, in_channels: int, num_classes: int, depths: tuple[int, ...] = (1, 2, 3, 5, 2),
                 channels: tuple[int, ...] = (32, 64, 128, 256, 512), dec_depths: tuple[int, ...] = (1, 1, 1, 1),
                 k: int = 16, share_planes: int = 8, bn_momentum: float = 0.1):
        super().__init__()
        if len(depths) != len(channels) or len(dec_depths) != len(channels) - 1:
            raise ValueError("PointTransformer: depths/channels need one entry per level, dec_depths one fewer")
        self.k = k
        self.stem = nn.Sequential(nn.Linear(in_channels, channels[0], bias=False), _bn_relu(channels[0]))
        self.down = nn.ModuleList(TransitionDown(channels[i - 1], channels[i], k) for i in range(1, len(channels)))
        self.enc = nn.ModuleList(nn.ModuleList(PointTransformerBlock(c, share_planes) for _ in range(d))
                                 for c, d in zip(channels, depths))
        self.up = nn.ModuleList(TransitionUp(channels[i + 1], channels[i], channels[i])
                                for i in range(len(channels) - 1))
        self.dec = nn.ModuleList(nn.ModuleList(PointTransformerBlock(channels[i], share_planes) for _ in range(d))
                                 for i, d in enumerate(dec_depths))
        self.head = nn.Sequential(nn.Linear(channels[0], channels[0]), _bn_relu(channels[0]),
                                  nn.Linear(channels[0], num_classes))
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = bn_momentum

    def forward(self, points: PointBatch) -> torch.Tensor:
        coord, grid, offset = points.coord, points.grid_coord, points.offset
        feat = self.stem(points.feat)
        levels = []
        for i, blocks in enumerate(self.enc):
            if i:
                coord, grid, offset, feat = self.down[i - 1](coord, grid, offset, feat)
            idx, _ = knn(coord, offset, self.k)  # shared by the level's blocks and its decoder
            for block in blocks:
                feat = block(coord, feat, idx)
            levels.append((coord, offset, feat, idx))
        for i in reversed(range(len(self.dec))):
            f_coord, f_offset, f_feat, f_idx = levels[i]
            feat = self.up[i]((coord, offset, feat), (f_coord, f_offset, f_feat))
            coord, offset = f_coord, f_offset
            for block in self.dec[i]:
                feat = block(coord, feat, f_idx)
        return self.head(feat)

"""Voxel transformer (VTR) block: Point-Transformer-style vector attention over the kernel-map
neighbourhood of each voxel (the baseline of CodedVTR; the method: docs/CODEDVTR.md).

For voxel i and its occupied neighbours j = i + o_k (k over the region's K offsets):
    q = Wq x, k = Wk x, v = Wv x                      (x after the block's input Linear-BN-ReLU)
    a[i,k,h] = softmax_k( MLP(q_i - k_j + PE_k) )[h]   over occupied neighbours only, per head h
    y_i[c]   = sum_k a[i,k,head(c)] (v_j[c] + PE_k[c])
PE_k encodes the relative position p_ij = o_k (a learned [K, C] table, or an MLP of the offset
in kernel steps). The logits are computed chunk by chunk by lib.sparse.neighborhood.pair_scores
(recomputed in backward) and the sum by neighborhood_aggregate, so peak memory holds [N, K, H]
but never [N, K, C]. `gather="naive"` computes the same thing with gathered [N, K, C] tensors (the
reference and memory baseline of scripts/bench_blocks.py).
"""
import torch
from torch import nn

from lib.sparse import nn as snn
from lib.sparse.neighborhood import masked_softmax, neighborhood_aggregate, pair_scores
from lib.sparse.nn import neighbor_table
from lib.sparse.regions import KernelRegion
from models.blocks import projection_shortcut

PE_KINDS = ("table", "mlp")
GATHERS = ("chunked", "naive")


class VTRBlock(nn.Module):
    """Vector-attention residual block: SparseTensor [N, inplanes] -> [N, planes], same coordinates.

    Layout (Point Transformer): Linear-BN-ReLU, attention, BN-ReLU, Linear-BN, + shortcut, ReLU;
    the shortcut is a 1x1 projection + BN when inplanes != planes.

    Args:
        heads: channel groups sharing one attention weight per neighbour; must divide planes.
        kernel_size, dilation: the neighbourhood is the cube of that size and dilation.
        pe: 'table' (a learned vector per offset) or 'mlp' (Linear-ReLU-Linear of the offset).
        chunk_rows: voxels per chunk of the pair logits (bounds their peak memory).
        gather: 'chunked' (default) or 'naive' ([N, K, C] gathers; reference only).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, bn_momentum: float = 0.1, heads: int = 8,
                 kernel_size: int = 3, dilation: int = 1, pe: str = "table", chunk_rows: int = 8192,
                 gather: str = "chunked"):
        super().__init__()
        if heads < 1 or planes % heads:
            raise ValueError(f"heads={heads} must divide planes={planes}")
        if pe not in PE_KINDS:
            raise ValueError(f"pe must be one of {PE_KINDS}, got {pe!r}")
        if gather not in GATHERS:
            raise ValueError(f"gather must be one of {GATHERS}, got {gather!r}")
        self.heads, self.chunk_rows, self.gather, self.pe_kind = heads, chunk_rows, gather, pe
        self.region = KernelRegion.cube(kernel_size=kernel_size, dilation=dilation)
        volume = len(self.region)
        self.lin_in = nn.Sequential(snn.Linear(inplanes, planes, bias=False),
                                    snn.BatchNorm(planes, momentum=bn_momentum), snn.ReLU(inplace=True))
        self.qkv = nn.Linear(planes, 3 * planes)
        if pe == "table":
            self.pe_table = nn.Parameter(torch.randn(volume, planes) * 0.02)
        else:
            self.pe_mlp = nn.Sequential(nn.Linear(3, planes), nn.ReLU(), nn.Linear(planes, planes))
            # Offsets in kernel steps (the dilation factored out), a fixed input of the PE MLP.
            steps = self.region.offsets_tensor("cpu").float() / dilation
            self.register_buffer("pe_offsets", steps, persistent=False)
        self.weight_mlp = nn.Sequential(nn.Linear(planes, heads), nn.ReLU(), nn.Linear(heads, heads))
        self.norm_attn = nn.Sequential(snn.BatchNorm(planes, momentum=bn_momentum), snn.ReLU(inplace=True))
        self.lin_out = nn.Sequential(snn.Linear(planes, planes, bias=False),
                                     snn.BatchNorm(planes, momentum=bn_momentum))
        self.shortcut = projection_shortcut(inplanes, planes, bn_momentum)
        self.relu = snn.ReLU()

    def position_encoding(self) -> torch.Tensor:
        """PE [K, planes], one vector per offset of the region."""
        return self.pe_table if self.pe_kind == "table" else self.pe_mlp(self.pe_offsets)

    def attend(self, feats: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        """Vector attention of features [N, C] over the neighbour table nbr [N, K] -> [N, C]."""
        n, c = feats.shape
        q, k, v = self.qkv(feats).chunk(3, 1)
        pe = self.position_encoding()
        if self.gather == "naive":
            return self._attend_naive(q, k, v, pe, nbr)

        def score_fn(q_rows, k_gathered, valid):
            return self.weight_mlp(q_rows.unsqueeze(1) - k_gathered + pe)

        attn = masked_softmax(pair_scores(score_fn, q, k, nbr, self.chunk_rows), nbr)  # [N, K, H]
        y = neighborhood_aggregate(v, nbr, attn, None)
        # sum_k a[i,k,h] PE[k,c]: a [N, K, H] against PE [K, H, C/H], no [N, K, C] needed.
        pe_term = torch.einsum("nkh,khc->nhc", attn, pe.view(len(pe), self.heads, -1))
        return y + pe_term.reshape(n, c)

    def _attend_naive(self, q, k, v, pe, nbr):
        valid = nbr >= 0
        rows = nbr.clamp(min=0)
        logits = self.weight_mlp(q.unsqueeze(1) - k[rows] + pe)  # [N, K, H]
        attn = torch.softmax(logits.masked_fill(~valid.unsqueeze(2), float("-inf")), 1)
        values = (v[rows] + pe) * valid.unsqueeze(2)  # [N, K, C]
        attn = attn.repeat_interleave(v.shape[1] // self.heads, 2)
        return (attn * values).sum(1)

    def forward(self, x):
        h = self.lin_in(x)
        y = self.attend(h.feats, neighbor_table(h, self.region))
        out = self.lin_out(self.norm_attn(h.replace(y)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out.replace(out.feats + skip.feats))

"""CodedVTR block: codebook-based sparse voxel attention with geometric guidance (Zhao et al., CVPR 2022),
and its discrete variant (one hard choice per voxel and head). The method: docs/CODEDVTR.md.

For voxel i, head h (a contiguous group of C'/H channels) and codebook element d (a depthwise
weight W_d [K_d, C'] over the offsets of its own support region R_d):
    q_d    = SubMConv_{R_d}(x)                        [N, H]   one scalar per head, no bias
    s[i,h,d] = sum_k sum_{c in h} W_d[k,c] q_d[i + o_k, h]       (W_d detached here if asked)
    rho[i,d] = occupied offsets of R_d around i / |R_d|          (density, centre included)
    prior[i,d] = (rho[i,d] + (rho_ref - rho_i) z_d) / tau        (density guidance, see density_prior)
    alpha[i,h,:] = softmax_d(s[i,h,:] / T + prior[i,:])          = softmax(s/T) * softmax(prior), renormalised
    y[i,c] = sum_d alpha[i,head(c),d] sum_k W_d[k,c] v[i + o_k, c]   (empty neighbours give 0)
    out    = ConvBNReLU1x1(y) + residual                         (no activation after the sum)
The value's BatchNorm + ReLU, the D products, their mixing and the output layer's 1x1 projection
run as one lib.sparse.mixing.mixed_depthwise, tile by tile, so no [N, K, C'] tensor, no element's
[N, C'] product and neither v nor y [N, C'] is ever whole. Choice modes (`choice`):
    soft     alpha as above (CodedVTR);
    hard_st  forward one-hot argmax_d alpha, backward through the soft alpha (straight-through);
    gumbel   training: one-hot of a Gumbel-softmax sample, softmax((log pi + g) / T) with
             pi = softmax_d(s + rho/tau), straight-through; evaluation: one-hot argmax pi.
T follows T_start^(1-p) * T_end^p over training progress p (a buffer, so evaluation needs no
iteration count).
"""
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from lib.sparse import nn as snn
from lib.sparse.mixing import mixed_depthwise
from lib.sparse.norm_relu import NormReLU
from lib.sparse.neighborhood import neighborhood_aggregate
from lib.sparse.nn import neighbor_table, occupancy
from lib.sparse.regions import KernelRegion
from models.recompute import bn_relu_then, conv_bn_relu_then

CHOICES = ("soft", "hard_st", "gumbel")
AGGREGATES = ("fused", "depthwise")
SHAPES = ("cube", "cross", "plane_xy", "plane_xz", "plane_yz")


def make_region(shape, kernel_size: int, dilation: int) -> KernelRegion:
    """The support of one codebook element.

    shape: one of SHAPES, or a list of [dx, dy, dz] offsets in kernel steps (scaled by `dilation`;
    the centre is added when missing, so every voxel sees itself).
    """
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"codebook shape {shape!r} is not one of {SHAPES} or a list of [dx, dy, dz] offsets")
        if shape == "cube":
            return KernelRegion.cube(kernel_size=kernel_size, dilation=dilation)
        if shape == "cross":
            return KernelRegion.cross(kernel_size=kernel_size, dilation=dilation)
        return KernelRegion.plane(axes=shape[-2:], kernel_size=kernel_size, dilation=dilation)
    offsets = [tuple(int(v) * dilation for v in o) for o in shape]
    if not offsets or any(len(o) != 3 for o in offsets):
        raise ValueError(f"codebook shape {shape!r}: a custom shape is a non-empty list of [dx, dy, dz]")
    if (0, 0, 0) not in offsets:
        offsets.insert(0, (0, 0, 0))
    return KernelRegion.custom(offsets)


def _conv_bn_relu(conv, channels, bn_momentum):
    # In place: BatchNorm keeps its input, not its output, for backward, so ReLU may overwrite it
    # (one [N, C] activation less per ConvBNReLU).
    return nn.Sequential(conv, snn.BatchNorm(channels, momentum=bn_momentum), snn.ReLU(inplace=True))


def _one_hot_of_max(t: torch.Tensor) -> torch.Tensor:
    """One-hot [N, H, D] of the largest entry along D (the first on ties), laid out like t. Not
    F.one_hot(t.argmax(2)): on CPU, argmax over the middle axis of t's [N, D, H] memory took ~8x
    longer than max(2), and one_hot's int64 [N, H, D] plus its cast as long again."""
    return torch.zeros_like(t).scatter_(2, t.max(2).indices.unsqueeze(2), 1.0)


def geometric_temperature(t_start: float, t_end: float, progress: float) -> float:
    """T_start^(1 - p) * T_end^p: geometric interpolation over training progress p in [0, 1]."""
    p = min(1.0, max(0.0, progress))
    return t_start ** (1.0 - p) * t_end ** p


class CodedVTRBlock(nn.Module):
    """Codebook attention block: SparseTensor [N, inplanes] -> [N, planes], same coordinates.

    Args:
        inplanes, planes: input / output channels; when they differ the input goes through a 1x1
            ConvBNReLU to `planes` and the residual is a plain 1x1 convolution (no BN).
        bn_momentum: BatchNorm momentum (torch convention).
        heads: H, channel groups of the value path; must divide C'.
        value_expansion: C' = value_expansion * planes (the release: 2).
        kernel_size: edge of each element's cube before its shape mask (3).
        dilations, shapes: the codebook is the grid dilations x shapes (D = len * len elements,
            dilation-major); the release: dilations (2, 1, 3), shapes ("cube",).
        choice: 'soft' | 'hard_st' | 'gumbel' (module docstring).
        t_start, t_end: temperature schedule ends (the release: 1, 1).
        density_guidance: multiply the density prior (density_prior) into alpha.
        density_tau: prior temperature (0.1-0.2 in the paper's description).
        detach_codebook_in_choice: W_d gets no gradient through the choice logits (as in the release).
        diversity: return the diversity regulariser as loss 'diversity' (needs two elements of
            equal support size).
        aggregate: 'fused' (lib.sparse.mixing.mixed_depthwise: the D products, their mixing and
            the output projection tile by tile, nothing [N, C'] kept) or 'depthwise' (the engine's depthwise
            convolution per element, then the per-head weights; keeps D x [N, C'] for backward).
    """

    expansion = 1
    # the schedule's temperature is state: the EMA copies it and ranks keep rank 0's (lib/model_contract.py)
    state_buffers = ("temperature",)

    def __init__(self, inplanes: int, planes: int, bn_momentum: float = 0.1, heads: int = 8,
                 value_expansion: int = 2, kernel_size: int = 3, dilations: list = (2, 1, 3), shapes: list = ("cube",),
                 choice: str = "soft", t_start: float = 1.0, t_end: float = 1.0,
                 density_guidance: bool = True, density_tau: float = 0.15,
                 detach_codebook_in_choice: bool = True, diversity: bool = False, aggregate: str = "fused"):
        super().__init__()
        inner = value_expansion * planes
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        if heads < 1 or inner % heads:
            raise ValueError(f"heads={heads} must divide the value width {inner} (value_expansion * planes)")
        if t_start <= 0 or t_end <= 0 or density_tau <= 0:
            raise ValueError(f"t_start, t_end and density_tau must be > 0, got {t_start}, {t_end}, {density_tau}")
        if not dilations or not shapes:
            raise ValueError("dilations and shapes must each name at least one entry")
        self.heads, self.inner, self.choice, self.aggregate = heads, inner, choice, aggregate
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.density_guidance, self.density_tau = density_guidance, float(density_tau)
        self.detach_codebook_in_choice = detach_codebook_in_choice
        self.regions = [make_region(s, kernel_size, d) for d, s in itertools.product(dilations, shapes)]
        # density guidance: the local density is the occupancy of the cube at the smallest dilation,
        # a flat surface (kernel_size^2 of kernel_size^3 offsets) the neutral density, and each
        # element's dilation ranked in [-1, 1] (smallest -1, largest +1)
        ranks = sorted(set(int(d) for d in dilations))
        self.local_region = KernelRegion.cube(kernel_size=kernel_size, dilation=ranks[0])
        self.density_ref = 1.0 / kernel_size
        self.dilation_rank = tuple(2.0 * ranks.index(int(d)) / (len(ranks) - 1) - 1.0 if len(ranks) > 1 else 0.0
                                   for d, _ in itertools.product(dilations, shapes))

        self.proj = None if inplanes == planes else _conv_bn_relu(snn.Linear(inplanes, planes, bias=False),
                                                                  planes, bn_momentum)
        self.shortcut = None if inplanes == planes else snn.Linear(inplanes, planes, bias=False)
        self.value = nn.Sequential(
            _conv_bn_relu(snn.SubMConv3d(planes, planes, kernel_size=3), planes, bn_momentum),
            _conv_bn_relu(snn.Linear(planes, inner, bias=False), inner, bn_momentum))
        self.choice_convs = nn.ModuleList(snn.SubMConv3d(planes, heads, region=r) for r in self.regions)
        self.by_region = {}  # support -> the elements on it, which share one choice convolution
        for d, region in enumerate(self.regions):
            self.by_region.setdefault(region, []).append(d)
        # Element d's weight W_d [K_d, C'] is codebook[d].weight (uniform +-1/sqrt(K_d) at init).
        self.codebook = nn.ModuleList(snn.DepthwiseConv3d(inner, region=r) for r in self.regions)
        self.out = _conv_bn_relu(snn.Linear(inner, planes, bias=False), planes, bn_momentum)
        self.diversity_pairs = [(a, b) for a, b in itertools.combinations(range(len(self.regions)), 2)
                                if len(self.regions[a]) == len(self.regions[b])] if diversity else None
        if diversity and not self.diversity_pairs:
            raise ValueError("diversity=True needs two codebook elements with supports of equal size")
        self.register_buffer("temperature", torch.tensor(self.t_start))
        self._aux = {}

    def on_train_progress(self, iteration: int, progress: float):
        self.temperature.fill_(geometric_temperature(self.t_start, self.t_end, progress))

    def density(self, tables) -> torch.Tensor:
        """rho [N, D]: occupied fraction of each element's support around each voxel."""
        return torch.stack([occupancy(t) for t in tables], 1)

    def density_prior(self, h, tables) -> torch.Tensor:
        """Prior logits [N, D] over the elements from the occupancy around each voxel of h, after the
        paper: voxels in dense neighbourhoods choose small dilations, those in sparse ones bigger.
            prior[i,d] = (rho[i,d] + (rho_ref - rho_i) * z_d) / tau
        rho[i,d] (`density`) favours the elements whose support the neighbourhood fills (which shape
        fits); rho_i is the local density, the occupied fraction of the kernel_size^3 cube at the
        smallest dilation; rho_ref = 1 / kernel_size, a flat surface's share of that cube; z_d the
        rank of element d's dilation in [-1, 1]. So a neighbourhood denser than a flat surface (a
        solid block) tilts towards small dilations and a sparser one (a thin line, an isolated
        voxel) towards large ones; on a flat surface only the fit counts. (The fit term alone is
        blind to this: a solid block or a line fills every dilation's cube equally.)"""
        rho = self.density(tables)
        local = occupancy(neighbor_table(h, self.local_region))
        rank = torch.tensor(self.dilation_rank, dtype=rho.dtype, device=rho.device)
        return (rho + (self.density_ref - local).unsqueeze(1) * rank) / self.density_tau

    def choice_conv_weights(self) -> list:
        """Per support of self.by_region, its elements' choice convolution weights side by side
        [K, C, len(ds) * H]: elements on one support (the discrete block's patterns) share one
        convolution and one aggregation."""
        return [torch.cat([self.choice_convs[d].weight for d in ds], 2) for ds in self.by_region.values()]

    def choice_logits(self, h, tables, qs=None) -> torch.Tensor:
        """s [N, H, D] from the per-element convolutions q_d of h and the head-summed codebook
        weights. qs: the convolutions' outputs [N, len(ds) * H] per support of self.by_region when
        already computed (forward runs them with the value's 3x3 conv)."""
        heads = self.heads
        if qs is None:
            qs = snn.subm_conv_many(h, self.choice_conv_weights(), list(self.by_region))
        per_element = [None] * len(self.regions)
        for ds, q in zip(self.by_region.values(), qs):
            head_sums = []
            for d in ds:
                weight = self.codebook[d].weight
                if self.detach_codebook_in_choice:
                    weight = weight.detach()
                head_sums.append(weight.view(len(weight), heads, -1).sum(2))  # [K, H]
            s = neighborhood_aggregate(q, tables[ds[0]], q.new_ones(1, 1, 1), torch.cat(head_sums, 1))
            for j, d in enumerate(ds):
                per_element[d] = s[:, j * heads:(j + 1) * heads]
        return torch.stack(per_element, 1).transpose(1, 2)  # [N, D, H] in memory (see mixing_weights)

    def mixing_weights(self, s: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """alpha [N, H, D] from choice logits s [N, H, D] and prior logits [N, D] (density_prior, or None)."""
        prior = 0.0 if prior is None else prior.unsqueeze(1)
        if self.choice == "gumbel":
            log_pi = torch.log_softmax(s + prior, 2)
            if not self.training:
                return _one_hot_of_max(log_pi)
            return F.gumbel_softmax(log_pi, tau=float(self.temperature), hard=True, dim=2)
        # softmax over the short D axis in the middle of [N, D, H] memory (vectorised along H):
        # over a last axis of size D it is several times slower on CPU
        soft = torch.softmax((s / self.temperature + prior).transpose(1, 2), 1).transpose(1, 2)
        if self.choice == "soft":
            return soft
        hard = _one_hot_of_max(soft)
        return hard + soft - soft.detach()

    def diversity_loss(self) -> torch.Tensor:
        """sum over equal-size pairs of ||sqrt(softmax_K W_a) sqrt(softmax_K W_b)^T - I||^2."""
        roots = [torch.softmax(element.weight, 0).sqrt() for element in self.codebook]
        total = 0.0
        for a, b in self.diversity_pairs:
            gram = roots[a] @ roots[b].t()
            total = total + (gram - torch.eye(len(gram), device=gram.device, dtype=gram.dtype)).pow(2).sum()
        return total

    def mix(self, v, alpha: torch.Tensor, tables) -> torch.Tensor:
        """y [N, C'] = sum_d alpha[:, head, d] * (W_d depthwise v), v a SparseTensor [N, C']."""
        if self.aggregate == "fused":
            return mixed_depthwise(v.feats, alpha.transpose(1, 2), [e.weight for e in self.codebook], tables)
        y = 0
        for d, element in enumerate(self.codebook):  # the engine's depthwise conv, then the head weight
            z = element(v).feats.view(len(v), self.heads, -1)
            y = y + (z * alpha[:, :, d:d + 1]).reshape(len(v), -1)
        return y

    def mixing(self, h, tables, qs=None) -> torch.Tensor:
        """alpha [N, H, D] of h [N, planes] over the elements' neighbour tables (qs: see choice_logits)."""
        prior = self.density_prior(h, tables) if self.density_guidance else None
        return self.mixing_weights(self.choice_logits(h, tables, qs), prior)

    def forward(self, x):
        h = x if self.proj is None else self.proj(x)
        tables = [neighbor_table(h, r) for r in self.regions]
        skip = x if self.shortcut is None else self.shortcut(x)
        conv3, expand = self.value
        if self.aggregate == "fused":
            # the value's 3x3 conv and the choice convolutions all read h: one op, so h's gradient
            # from them is one buffer (lib.sparse.nn.subm_conv_many)
            value_conv = conv3[0]
            convs = snn.subm_conv_many(h, [value_conv.weight, *self.choice_conv_weights()],
                                       [value_conv.region, *self.by_region])
            alpha = self.mixing(h, tables, convs[1:])
            del convs[1:]
            # one op from the value's BN input to the output layer's 1x1 projection: v's BatchNorm +
            # ReLU applied to each gathered piece, the mixing and the projection tile by tile, so
            # neither v nor y [N, C'] ever exists whole; the 3x3 conv's activation is recomputed in
            # backward from its BN input (models.recompute), not stored
            weights = [e.weight for e in self.codebook]
            linear, norm, _ = expand

            def project(t):
                return h.replace(mixed_depthwise(linear(t).feats, alpha.transpose(1, 2), weights, tables,
                                                 out_weight=self.out[0].module.weight,
                                                 norm=NormReLU.of(norm.module)))

            # popped, so that without grad the 3x3 conv's output goes as soon as its BN has read it
            pre_out, _ = bn_relu_then(conv3, h.replace(value_conv._finish(convs.pop())), project)
            # the residual added in place: the ReLU's saved output is recomputed from the BN input
            # in backward, so nothing reads the activation before the addition
            out, _ = bn_relu_then(self.out, pre_out, lambda t: t.feats.add_(skip.feats))
        else:
            alpha = self.mixing(h, tables)
            (y, _), _ = conv_bn_relu_then(conv3, h, lambda t: conv_bn_relu_then(
                expand, t, lambda v: self.mix(v, alpha, tables)))
            out = self.out(h.replace(y)).feats + skip.feats
        usage = alpha.detach().mean((0, 1))
        self._aux = {"losses": {"diversity": self.diversity_loss()} if self.diversity_pairs else {},
                     "logs": {"choice_entropy": -(usage * usage.clamp_min(1e-12).log()).sum(),
                              "temperature": self.temperature.detach().clone()}}
        return h.replace(out)

    def pop_aux(self):
        """(losses, logs) of the last forward pass, then forgets them (they hold the graph)."""
        aux, self._aux = self._aux, {}
        return aux.get("losses", {}), aux.get("logs", {})


class DiscreteAttentionBlock(CodedVTRBlock):
    """Discrete attention: each voxel and head picks one of M learned, input-independent patterns.

    A CodedVTRBlock whose defaults are M = 4 elements on the same 3x3x3 cube and a hard
    straight-through choice; `choice: gumbel` anneals a Gumbel-softmax instead, `choice: soft` is
    the continuous relaxation (CodedVTR's mixing).
    """

    def __init__(self, inplanes: int, planes: int, bn_momentum: float = 0.1, heads: int = 8,
                 value_expansion: int = 2, kernel_size: int = 3, dilations: list = (1, 1, 1, 1), shapes: list = ("cube",),
                 choice: str = "hard_st", t_start: float = 1.0, t_end: float = 1.0,
                 density_guidance: bool = False, density_tau: float = 0.15,
                 detach_codebook_in_choice: bool = True, diversity: bool = False, aggregate: str = "fused"):
        super().__init__(inplanes, planes, bn_momentum, heads, value_expansion, kernel_size, dilations, shapes,
                         choice, t_start, t_end, density_guidance, density_tau, detach_codebook_in_choice,
                         diversity, aggregate)

"""Vector-quantised codebook attention (VQ-VAE style; the discrete step before CodedVTR).

VectorQuantizer snaps each input vector e [dim] to its nearest code c (L1 or L2 distance), passes
the gradient straight through (dz/de = identity) and returns the two VQ-VAE losses, each summed over
the rows and divided by their count N:
    vq_codebook = w_codebook * sum_i |sg(e_i) - c_i|     (moves the codes; sg = stop-gradient)
    vq_commit   = w_commit   * sum_i |e_i - sg(c_i)|     (keeps e near its code)
where |.| is the L1 norm ('l1') or the squared L2 norm ('l2', VQ-VAE's convention).
Usage is logged as perplexity (exp of the entropy of the batch's code histogram) and dead codes
(codes no row chose in this batch). With `reset_every > 0`, codes no row chose since the last reset
are re-drawn from recent inputs kept in a ring buffer (a known cure for codebook collapse).
Under DDP the ranks stay one model: each step's code counts are summed over ranks into `usage` at
the end of the step (so every rank holds the same counts, and a checkpoint has them), rank 0 alone
draws the new rows from its own memory and broadcasts them, and the trainer clears those rows'
optimizer state (lib/model_contract.py).

VQAttentionBlock predicts per voxel and head a logit vector over the K neighbour offsets, snaps it
to the codebook (so every voxel uses one of M prototype attention maps per head), takes the
softmax over the occupied neighbours and sums the values with those weights.
"""
import torch
import torch.distributed as dist
from torch import nn

from lib.sparse import nn as snn
from lib.sparse.neighborhood import masked_softmax, neighborhood_aggregate
from lib.sparse.nn import neighbor_table
from lib.sparse.regions import KernelRegion
from models.blocks import projection_shortcut

NORMS = ("l1", "l2")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _collective(t: torch.Tensor, op: str) -> torch.Tensor:
    """t summed over ranks ('sum') or rank 0's t ('broadcast'); gloo works on CPU copies."""
    work = t.cpu() if dist.get_backend() == "gloo" and t.device.type != "cpu" else t.clone()
    if op == "sum":
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
    else:
        dist.broadcast(work, src=0)
    return work.to(t.device)


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with straight-through gradient, VQ losses and usage statistics.

    Args:
        num_codes, dim: codebook size M and vector length.
        norm: 'l1' or 'l2' (distance for the nearest code and for both losses).
        w_codebook, w_commit: loss weights (the fork used 0.5e-3 and 1e-3 with L1).
        reset_every: every this many training iterations, re-draw unused codes from recent inputs
            (0 = never).
        memory: rows kept in the ring buffer of recent inputs.
    """

    # bookkeeping, not statistics: the EMA copies them, and ranks keep rank 0's rather than a mean
    # of unrelated rows (lib/model_contract.py)
    state_buffers = ("usage", "recent")

    def __init__(self, num_codes: int, dim: int, norm: str = "l2", w_codebook: float = 1.0,
                 w_commit: float = 0.25, reset_every: int = 0, memory: int = 4096):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if num_codes < 1 or dim < 1 or memory < 1 or reset_every < 0:
            raise ValueError(f"num_codes, dim, memory must be >= 1 and reset_every >= 0, got "
                             f"{num_codes}, {dim}, {memory}, {reset_every}")
        self.norm, self.w_codebook, self.w_commit, self.reset_every = norm, w_codebook, w_commit, reset_every
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))
        # Codes chosen since the last reset; recent inputs (ring buffer) and how many were written.
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("recent", torch.zeros(memory, dim))
        self.register_buffer("recent_count", torch.zeros((), dtype=torch.long))
        # this rank's counts since the last step end: a plain attribute, as DDP overwrites
        # buffers with rank 0's at every forward
        self._pending = None

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b
        return diff.abs().sum(-1) if self.norm == "l1" else diff.pow(2).sum(-1)

    def forward(self, e: torch.Tensor):
        """e [N, dim] -> (z [N, dim] (forward: codes; backward: identity to e), index [N] int64,
        losses {vq_codebook, vq_commit}, logs {vq_perplexity, vq_dead_codes})."""
        with torch.no_grad():
            index = torch.cdist(e.detach().float(), self.codebook.float(), p=1.0 if self.norm == "l1" else 2.0
                                ).argmin(1)
        code = self.codebook[index]
        losses = {"vq_codebook": self.w_codebook * self._distance(e.detach(), code).mean(),
                  "vq_commit": self.w_commit * self._distance(e, code.detach()).mean()}
        z = e + (code - e).detach()
        counts = torch.bincount(index, minlength=len(self.codebook)).float()
        p = counts / counts.sum().clamp_min(1.0)
        logs = {"vq_perplexity": torch.exp(-(p * p.clamp_min(1e-12).log()).sum()),
                "vq_dead_codes": (counts == 0).sum().float()}
        if self.training:
            self._remember(e.detach(), counts)
        return z, index, losses, logs

    @torch.no_grad()
    def _remember(self, e, counts):
        self._pending = counts if self._pending is None else self._pending + counts
        memory = len(self.recent)
        take = e[torch.randperm(len(e), device=e.device)[:memory]].to(self.recent.dtype)
        slots = (self.recent_count + torch.arange(len(take), device=e.device)) % memory
        self.recent[slots] = take
        self.recent_count += len(take)

    @torch.no_grad()
    def on_train_step_end(self):
        """Add the counts of the forwards since the last call to `usage`, summed over ranks under
        DDP when codes are reset (a collective: the trainer calls it on every rank after each step)."""
        pending, self._pending = self._pending, None
        if pending is None:
            pending = torch.zeros_like(self.usage)
        if self.reset_every > 0 and _distributed():
            pending = _collective(pending, "sum")
        self.usage += pending

    @torch.no_grad()
    def on_train_progress(self, iteration: int, progress: float):
        """Re-draws the codes unused since the last reset every `reset_every` iterations; returns
        {codebook: rows} when it replaced rows (their optimizer state is then cleared), else None."""
        if self._pending is not None:  # forwards outside the trainer's loop count too
            self.on_train_step_end()
        if self.reset_every <= 0 or iteration == 0 or iteration % self.reset_every:
            return None
        # rank 0 decides and draws; the others take its rows (usage is equal on every rank, but the
        # memory of recent inputs and the random streams are each rank's own)
        fresh, dead = self.codebook.detach().clone(), self.usage == 0
        filled = int(min(self.recent_count.item(), len(self.recent)))
        if not filled:
            dead = torch.zeros_like(dead)
        rows = dead.nonzero().flatten()
        if len(rows) and (not _distributed() or dist.get_rank() == 0):
            pick = torch.randint(filled, (len(rows),), device=self.recent.device)
            fresh[rows] = self.recent[pick].to(fresh.dtype)
        if _distributed():
            dead = _collective(dead.to(torch.uint8), "broadcast").bool()
            fresh = _collective(fresh, "broadcast")
            rows = dead.nonzero().flatten()
        self.codebook[rows] = fresh[rows]
        self.usage.zero_()
        return {self.codebook: rows} if len(rows) else None


class VQAttentionBlock(nn.Module):
    """Residual block with vector-quantised attention maps: [N, inplanes] -> [N, planes].

    Layout: Linear-BN-ReLU in; attention logits e [N, H, K] = Linear of a 3x3x3 ConvBNReLU context;
    e snapped to the codebook (M codes of length K, shared by the heads); attention =
    softmax of the code over occupied neighbours; y = sum_k a[i,k,head(c)] v[i + o_k, c];
    BN-ReLU, Linear-BN, + shortcut (1x1 + BN when widths differ), ReLU.

    Args: heads (must divide planes), kernel_size / dilation of the neighbourhood, num_codes, and the
    quantiser's vq_norm, vq_codebook_weight, vq_commit_weight, vq_reset_every, vq_memory.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, bn_momentum: float = 0.1, heads: int = 8,
                 kernel_size: int = 3, dilation: int = 1, num_codes: int = 16, vq_norm: str = "l1",
                 vq_codebook_weight: float = 0.5e-3, vq_commit_weight: float = 1e-3, vq_reset_every: int = 0,
                 vq_memory: int = 4096):
        super().__init__()
        if heads < 1 or planes % heads:
            raise ValueError(f"heads={heads} must divide planes={planes}")
        self.heads = heads
        self.region = KernelRegion.cube(kernel_size=kernel_size, dilation=dilation)
        volume = len(self.region)
        self.lin_in = nn.Sequential(snn.Linear(inplanes, planes, bias=False),
                                    snn.BatchNorm(planes, momentum=bn_momentum), snn.ReLU(inplace=True))
        self.context = nn.Sequential(snn.SubMConv3d(planes, planes, kernel_size=3),
                                     snn.BatchNorm(planes, momentum=bn_momentum), snn.ReLU(inplace=True))
        self.to_logits = nn.Linear(planes, heads * volume)
        self.value = nn.Linear(planes, planes)
        self.quantizer = VectorQuantizer(num_codes, volume, vq_norm, vq_codebook_weight, vq_commit_weight,
                                         vq_reset_every, vq_memory)
        self.norm_attn = nn.Sequential(snn.BatchNorm(planes, momentum=bn_momentum), snn.ReLU(inplace=True))
        self.lin_out = nn.Sequential(snn.Linear(planes, planes, bias=False),
                                     snn.BatchNorm(planes, momentum=bn_momentum))
        self.shortcut = projection_shortcut(inplanes, planes, bn_momentum)
        self.relu = snn.ReLU()
        self._aux = {}

    def forward(self, x):
        h = self.lin_in(x)
        nbr = neighbor_table(h, self.region)
        n, volume = nbr.shape
        e = self.to_logits(self.context(h).feats).view(n * self.heads, volume)
        z, _, losses, logs = self.quantizer(e)
        scores = z.view(n, self.heads, volume).transpose(1, 2)  # [N, K, H]
        attn = masked_softmax(scores, nbr)  # it masks the empty neighbours itself
        y = neighborhood_aggregate(self.value(h.feats), nbr, attn, None)
        out = self.lin_out(self.norm_attn(h.replace(y)))
        skip = x if self.shortcut is None else self.shortcut(x)
        self._aux = {"losses": losses, "logs": logs}
        return self.relu(out.replace(out.feats + skip.feats))

    def pop_aux(self):
        """(losses, logs) of the last forward pass, then forgets them (they hold the graph)."""
        aux, self._aux = self._aux, {}
        return aux.get("losses", {}), aux.get("logs", {})

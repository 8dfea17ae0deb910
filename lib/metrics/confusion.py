"""A confusion matrix accumulated on the device of the predictions, with a DDP all-reduce.

Layout: `matrix` int64 [K + 1, K + 1], rows = ground truth, columns = prediction. Index K is the
"void" slot: a ground-truth label outside [0, K) (lib.IGNORE_INDEX, or an id the dataset could not
map) lands in row K, a prediction outside [0, K) in column K. Row K is kept only as a count of the
skipped points; every convention drops it. Column K on a valid row is a miss for that class.
"""
import torch


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs of per-point class indices.

    Args:
        num_classes: K, the number of valid classes.
        device: where the matrix lives; `update` moves its inputs there (a no-op when the
            predictions already live on this device, the normal case).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Adds the points of one scene (or batch).

        Args:
            pred: int [P] predicted class index per point (a tensor, or a numpy array).
            target: int [P] ground-truth class index per point (IGNORE_INDEX where unknown).
        """
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(
                f"ConfusionMatrix.update: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        k = self.num_classes
        pred = pred.reshape(-1).to(self.device, torch.int64)
        target = target.reshape(-1).to(self.device, torch.int64)
        # One bincount over the flattened (row, column) index keeps everything on the device.
        pred = torch.where((pred >= 0) & (pred < k), pred, k)
        target = torch.where((target >= 0) & (target < k), target, k)
        counts = torch.bincount(target * (k + 1) + pred, minlength=(k + 1) ** 2)
        self.matrix += counts.view(k + 1, k + 1)

    def all_reduce(self) -> None:
        """Sums the matrix over all processes when torch.distributed is initialised (no-op otherwise).

        Every rank must call it. With NCCL the matrix must live on this rank's CUDA device.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def valid(self) -> torch.Tensor:
        """int64 [K, K + 1] on the CPU: the rows of valid ground truth (column K = invalid prediction)."""
        return self.matrix[: self.num_classes].cpu()

    def ignore_first_layout(self) -> torch.Tensor:
        """int64 [K + 1, K + 1] on the CPU with index 0 = ignore, class c at c + 1 (np_ioueval's order).

        Rows are ground truth, columns prediction (np_ioueval stores the transpose). The ignore
        row is zero because points whose ground truth is ignore are dropped.
        """
        k = self.num_classes
        order = torch.cat([torch.tensor([k]), torch.arange(k)])
        out = self.matrix.cpu()[order][:, order].clone()
        out[0] = 0
        return out

    @property
    def skipped(self) -> int:
        """Points whose ground truth was outside [0, K) and were therefore not scored."""
        return int(self.matrix[self.num_classes].sum())

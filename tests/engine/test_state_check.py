"""check_state_dict names the first missing, unexpected and mis-shaped keys in one line."""
import pytest
import torch
from torch import nn

from lib.engine.checkpoint import CheckpointError
from lib.engine.state_check import check_state_dict


def _net(classes=3, extra=False):
    layers = [nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes)]
    if extra:
        layers.append(nn.Linear(classes, classes))
    return nn.Sequential(*layers)


def test_matching_weights_pass():
    check_state_dict(_net(), _net().state_dict(), "w.pth")


def test_mismatches_are_named():
    with pytest.raises(CheckpointError) as err:
        check_state_dict(_net(), _net(classes=5).state_dict(), "w.pth")
    assert str(err.value) == ("w.pth: weights do not fit Sequential (another model or class count?): "
                              "2 shape mismatch(es): 2.weight (5, 8) vs model (3, 8), 2.bias (5,) vs model (3,)")
    with pytest.raises(CheckpointError, match=r"2 unexpected key\(s\): 3.weight, 3.bias$"):
        check_state_dict(_net(), _net(extra=True).state_dict(), "w.pth")
    with pytest.raises(CheckpointError, match=r"2 missing key\(s\): 3.weight, 3.bias$"):
        check_state_dict(_net(extra=True), _net().state_dict(), "w.pth")
    state = {f"k{i}": torch.zeros(1) for i in range(5)}
    with pytest.raises(CheckpointError, match=r"5 unexpected key\(s\): k0, k1, k2 \(\+2 more\)"):
        check_state_dict(_net(), {**_net().state_dict(), **state}, "w.pth")

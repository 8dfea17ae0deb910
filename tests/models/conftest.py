"""Fixtures of the model tests."""
import pytest
import torch

from tests.models.unet_helpers import TinyUNet


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyUNet(in_channels=3, num_classes=5)

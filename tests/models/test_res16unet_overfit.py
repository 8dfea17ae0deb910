"""A narrow Res16UNet memorises the labels of one small cloud on CPU: the layers learn together."""
import torch

from tests.models.unet_helpers import random_cloud, sparse_input


def test_tiny_unet_overfits_a_tiny_cloud(tiny_model):
    # Labels depend on position (octant of the cube) and on the features, so the network must use
    # both its convolutions and its input channels to fit them.
    coords, feats = random_cloud(300, extent=20, seed=6)
    xyz = coords[:, 1:]
    labels = ((xyz[:, 0] >= 10).long() * 2 + (xyz[:, 2] >= 10).long() + (feats[:, 0] > 0).long()) % 5
    opt = torch.optim.Adam(tiny_model.parameters(), lr=3e-2)
    tiny_model.train()
    losses = []
    for _ in range(24):
        opt.zero_grad()
        logits = tiny_model(sparse_input(coords, feats))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    # Measured on the last training pass: eval-mode BN statistics lag behind after 24 steps.
    assert (logits.argmax(1) == labels).float().mean() > 0.95

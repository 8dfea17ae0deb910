"""A narrow Res16UNet memorises the labels of one small cloud on CPU: the layers learn together."""
import torch

from tests.models.unet_helpers import random_cloud, sparse_input


def test_tiny_unet_overfits_a_tiny_cloud(tiny_model):
    # Labels depend on position (octant of the cube) and on the features, so the network must use
    # both its convolutions and its input channels to fit them.
    coords, feats = random_cloud(600, extent=20, seed=6)
    xyz = coords[:, 1:].float()
    labels = ((xyz[:, 0] >= 10).long() * 2 + (xyz[:, 2] >= 10).long() + (feats[:, 0] > 0).long()) % 5
    opt = torch.optim.Adam(tiny_model.parameters(), lr=1e-2)
    tiny_model.train()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tiny_model(sparse_input(coords, feats)), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    tiny_model.eval()
    with torch.no_grad():
        accuracy = (tiny_model(sparse_input(coords, feats)).argmax(1) == labels).float().mean()
    assert accuracy > 0.95

"""The base recipe's loss and its ignore-label variant."""

from __future__ import annotations

import torch

from leanseg.training.losses import IgnoringDiceCE, deep_supervision_loss, dice_ce_loss


def test_without_ignored_voxels_the_ignoring_loss_is_the_base_loss() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=g)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=g).float()
    assert torch.allclose(IgnoringDiceCE(ignore=9)(logits, label), dice_ce_loss()(logits, label), atol=1e-5)


def test_ignored_voxels_teach_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, 8, generator=g, requires_grad=True)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=g).float()
    label[:, :, :4] = 3  # half of every image is not annotated
    loss = deep_supervision_loss(ignore=3)
    value = loss(logits, label)
    value.backward()
    assert torch.isfinite(value) and logits.grad[:, :, :4].abs().max() == 0 and logits.grad[:, :, 4:].abs().max() > 0
    other = logits.detach().clone()
    other[:, :, :4] = torch.randn(2, 3, 4, 8, 8, generator=g) * 10  # whatever the network says there
    assert torch.allclose(loss(other, label), value.detach(), atol=1e-6)


def test_region_targets_and_loss() -> None:
    from leanseg.training.losses import RegionDiceBCE, region_targets

    label = torch.tensor([0, 1, 2, 3]).reshape(1, 1, 4, 1, 1).float()
    t = region_targets(label, [(1, 2, 3), (2, 3), (3,)])  # BraTS: whole tumour, tumour core, enhancing
    assert t[0, :, :, 0, 0].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    loss = RegionDiceBCE([(1, 2, 3), (2, 3), (3,)])
    right = (t * 2 - 1) * 20  # confident and right everywhere
    assert loss(right, label) < 1e-3 < loss(-right, label)

"""The one normalisation of every family: InstanceNorm3d's function and state dict, in either memory layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import leanseg.models  # noqa: F401  (registers the families)
from leanseg.nn.norm import InstanceNorm, replace_instance_norms
from leanseg.registry import MODELS
from tests.models.test_models import STRIDES, model_case

LAYOUTS = {"ncdhw": torch.contiguous_format, "channels_last": torch.channels_last_3d}


def _pair(affine: bool) -> tuple[nn.InstanceNorm3d, InstanceNorm]:
    torch.manual_seed(0)
    ref = nn.InstanceNorm3d(6, affine=affine)
    if affine:
        ref.weight.data.uniform_(0.5, 1.5)
        ref.bias.data.normal_()
    new = InstanceNorm(6, affine=affine)
    new.load_state_dict(ref.state_dict())
    return ref, new


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_equals_instance_norm_3d_in_outputs_and_gradients(affine: bool, layout: str) -> None:
    ref, new = _pair(affine)
    x = torch.randn(2, 6, 5, 7, 4) * 3 + 1
    xa, xb = x.clone().requires_grad_(), x.contiguous(memory_format=LAYOUTS[layout]).requires_grad_()
    ya, yb = ref(xa), new(xb)
    torch.testing.assert_close(yb, ya, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-5, rtol=1e-5)
    for a, b in zip(ref.parameters(), new.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-5)


def test_instance_norm_keeps_the_dtype_instance_norm_3d_gives_under_bf16_autocast() -> None:
    ref, new = _pair(True)
    x = torch.randn(2, 6, 5, 7, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for layout in LAYOUTS.values():
            assert new(x.contiguous(memory_format=layout)).dtype == ref(x).dtype


def test_replace_instance_norms_swaps_monai_norms_keeping_their_parameters() -> None:
    from monai.networks.nets import UNet

    net = UNet(3, 1, 2, (4, 8), (2,), norm=("instance", {"affine": True}))
    for m in net.modules():
        if isinstance(m, nn.InstanceNorm3d):
            m.weight.data.uniform_(0.5, 1.5)
    before, x = {k: v.clone() for k, v in net.state_dict().items()}, torch.randn(1, 1, 8, 8, 8)
    out = net(x)
    replace_instance_norms(net)
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
    assert any(isinstance(m, InstanceNorm) for m in net.modules())
    assert net.state_dict().keys() == before.keys()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(net(x), out)


def test_replace_instance_norms_refuses_running_statistics() -> None:
    with pytest.raises(ValueError, match="running statistics"):
        replace_instance_norms(nn.Sequential(nn.InstanceNorm3d(4, track_running_stats=True)))


def _as_instance_norm_3d(module: nn.Module) -> nn.Module:
    """The network as it was built before the factory: every InstanceNorm back to nn.InstanceNorm3d."""
    for name, child in module.named_children():
        if isinstance(child, InstanceNorm):
            setattr(module, name, nn.InstanceNorm3d(child.num_features, eps=child.eps, affine=child.affine))
        else:
            _as_instance_norm_3d(child)
    return module


@pytest.mark.parametrize("name", MODELS.names())
def test_every_family_normalises_with_the_factory_and_loads_instance_norm_3d_checkpoints(name: str) -> None:
    """No family keeps an InstanceNorm3d or another norm; a state dict of the InstanceNorm3d-built network (every
    checkpoint written before the factory) loads strictly and predicts the same numbers."""
    import copy

    torch.manual_seed(0)
    cfg, shape, _ = model_case(name)
    net = MODELS.create(name, 2, 3, cfg, features=(8, 16, 32), strides=STRIDES).eval()
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm)]
    assert norms and all(isinstance(m, InstanceNorm) for m in norms), name
    old = _as_instance_norm_3d(copy.deepcopy(net))
    for m in old.modules():
        if isinstance(m, nn.InstanceNorm3d) and m.affine:
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    net.load_state_dict(old.state_dict(), strict=True)
    x = torch.randn(*shape)
    with torch.no_grad():
        a, b = old(x), net(x)
    a, b = (a["logits"], b["logits"]) if isinstance(a, dict) else (a, b)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)

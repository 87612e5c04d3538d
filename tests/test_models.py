import pytest
import torch

import leanseg.models  # noqa: F401  (registers the families)
from leanseg.config import ModelConfig
from leanseg.registry import MODELS

STRIDES = ((1, 1, 1), (2, 2, 1), (2, 2, 2))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model(name: str) -> None:
    torch.manual_seed(0)
    net = MODELS.create(name, 2, 3, ModelConfig(name=name, deep_supervision=False), features=(4, 8, 16), strides=STRIDES)
    assert tuple(net.divisor) == (4, 4, 2)
    x = torch.randn(2, 2, 16, 12, 6, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3, 16, 12, 6) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_deep_supervision_outputs_in_training_only() -> None:
    net = MODELS.create(
        "resunet", 1, 2, ModelConfig(deep_supervision=True), features=(4, 8, 16, 32), strides=((1, 1, 1),) + ((2, 2, 2),) * 3
    )
    x = torch.randn(2, 1, 16, 16, 16)
    outs = net.train()(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]
    assert net.eval()(x).shape == (2, 2, 16, 16, 16)

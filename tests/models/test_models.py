import pytest
import torch

import leanseg.models  # noqa: F401  (registers the families)
from leanseg.config import ModelConfig
from leanseg.errors import LeansegError
from leanseg.models.unet import ResidualUNet
from leanseg.registry import MODELS

STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2))


# LowRes (own objective, divisor, two-stage inference) and the searched nas_unet (built from a search) have their own tests
@pytest.mark.parametrize("name", [n for n in MODELS.names() if n not in ("lowres", "nas_unet")])
def test_every_registered_model(name: str) -> None:
    torch.manual_seed(0)
    net = MODELS.create(name, 2, 3, ModelConfig(name=name, deep_supervision=False), features=(8, 16, 32), strides=STRIDES)
    assert tuple(net.divisor) == (4, 4, 4)
    x = torch.randn(2, 2, 16, 12, 8, requires_grad=True)
    y = net.train()(x)
    assert y.shape == (2, 3, 16, 12, 8) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 3, 16, 12, 8)


@pytest.mark.parametrize("name", ["resunet", "monai_unet"])
def test_anisotropic_strides(name: str) -> None:
    net = MODELS.create(
        name, 1, 2, ModelConfig(name=name, deep_supervision=False), features=(4, 8, 16), strides=((1, 1, 1), (2, 2, 1), (2, 2, 2))
    )
    assert tuple(net.divisor) == (4, 4, 2)
    assert net(torch.randn(2, 1, 8, 8, 6)).shape == (2, 2, 8, 8, 6)


def test_invertible_models_refuse_anisotropic_pooling() -> None:
    with pytest.raises(LeansegError, match="pools by 2 on every axis"):
        MODELS.create("fully_invres", 1, 2, ModelConfig(name="fully_invres"), features=(8, 16), strides=((1, 1, 1), (2, 2, 1)))


def test_deep_supervision_outputs_in_training_only() -> None:
    net = MODELS.create(
        "resunet", 1, 2, ModelConfig(deep_supervision=True), features=(4, 8, 16, 32), strides=((1, 1, 1),) + ((2, 2, 2),) * 3
    )
    x = torch.randn(2, 1, 16, 16, 16)
    outs = net.train()(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 16, 16), (8, 8, 8), (4, 4, 4)]
    assert net.eval()(x).shape == (2, 2, 16, 16, 16)


def test_gradient_checkpointing_gives_the_same_gradients_for_less_memory() -> None:
    from tests.models.test_invertible import saved_bytes

    torch.manual_seed(0)
    plain = ResidualUNet(1, 2, (4, 8, 16), STRIDES, blocks_per_stage=2).double()
    ckpt = ResidualUNet(1, 2, (4, 8, 16), STRIDES, blocks_per_stage=2, gradient_checkpointing=True).double()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 16, 16, 16, dtype=torch.float64)
    b_plain, y_plain = saved_bytes(lambda: plain(x))
    b_ckpt, y_ckpt = saved_bytes(lambda: ckpt(x))
    assert torch.allclose(y_plain, y_ckpt)
    y_plain.square().mean().backward()
    y_ckpt.square().mean().backward()
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-10), n
    assert b_ckpt < 0.5 * b_plain


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_refuses_an_unknown_setting_naming_the_valid_ones(name: str) -> None:
    from leanseg.models.factory import check_settings

    with pytest.raises(LeansegError, match=r"drop_prop.*valid keys are \["):  # a misspelt drop_prob is no longer ignored
        check_settings(ModelConfig(name=name, extra={"drop_prop": 0.3}))
    check_settings(ModelConfig(name=name))  # no options: every setting has its default


def test_a_setting_of_the_wrong_type_is_refused_and_a_good_one_reaches_the_model() -> None:
    cfg = ModelConfig(name="deeplab3d_r18", extra={"drop_prob": "high"})
    with pytest.raises(LeansegError, match="drop_prob"):
        MODELS.create("deeplab3d_r18", 1, 2, cfg, features=(8, 16, 32), strides=STRIDES)
    net = MODELS.create(
        "deeplab3d_r18", 1, 2, ModelConfig(name="deeplab3d_r18", extra={"drop_prob": 0.25}), features=(8, 16, 32), strides=STRIDES
    )
    assert net.drop_prob == 0.25


def test_build_model_refuses_a_factory_that_breaks_the_model_contract() -> None:
    from leanseg.models import build_model
    from leanseg.plan import Plan

    plan = Plan((1.0,) * 3, (16,) * 3, STRIDES, (4, 8, 16), "zscore", None, (16,) * 3, "RAS", True, 1, 2, {0: "bg", 1: "fg"})

    @MODELS.register("not_a_segmentation_model")
    def bad(*a, **k):
        return torch.nn.Conv3d(1, 2, 1)

    try:
        with pytest.raises(TypeError, match="not a leanseg.models.protocol.SegmentationModel"):
            build_model(ModelConfig(name="not_a_segmentation_model"), plan)
    finally:
        MODELS._factories.pop("not_a_segmentation_model")

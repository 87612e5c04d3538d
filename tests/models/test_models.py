import pytest
import torch

import leanseg.models  # noqa: F401  (registers the families)
from leanseg.config import ModelConfig
from leanseg.errors import LeansegError
from leanseg.models.unet import ResidualUNet
from leanseg.registry import MODELS

STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2))


def model_case(name: str) -> tuple[ModelConfig, tuple[int, ...], tuple[int, int, int]]:
    """What each registered model needs for the test below: its config, an input batch shape, the divisor it must report."""
    if name == "lowres":  # stage two (stage one frozen); sizes a multiple of 2 x its 1/8 resolution
        extra = {"stage": 2, "low_features": [4, 8, 8, 8], "detail_features": [4, 4, 4, 4]}
        return ModelConfig(name=name, deep_supervision=False, extra=extra), (2, 2, 32, 32, 16), (16, 16, 16)
    if name == "nas_unet":  # the first child of a small space, as a search writes it into model.extra
        from leanseg.models.nas_space import arch_to_json, architecture_space

        space = architecture_space((40, 40, 32), (1.0, 1.0, 1.0), 2, 3, num_stages=3, base_features=4)
        arch = space.largest()
        extra = {"arch": arch_to_json(arch), "space": space.to_dict()}
        return ModelConfig(name=name, deep_supervision=False, extra=extra), (2, 2, *space.patch_size(arch)), (4, 4, 4)
    return ModelConfig(name=name, deep_supervision=False), (2, 2, 16, 12, 8), (4, 4, 4)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model(name: str) -> None:
    """Every family: the divisor it reports, a training pass whose loss (its own where it has one) reaches every
    trainable weight and the input, and an inference pass of the right shape."""
    from leanseg.models.protocol import SegmentationModel

    torch.manual_seed(0)
    cfg, shape, divisor = model_case(name)
    net = MODELS.create(name, 2, 3, cfg, features=(8, 16, 32), strides=STRIDES)
    assert isinstance(net, SegmentationModel) and tuple(net.divisor) == divisor
    assert all(s % d == 0 for s, d in zip(shape[2:], divisor))
    x = torch.randn(*shape, requires_grad=True)
    out = net.train()(x)
    if net.has_own_loss:
        loss = net.training_loss(out, torch.randint(0, 3, (shape[0], 1, *shape[2:])).float())
    else:
        assert out.shape == (shape[0], 3, *shape[2:]) and torch.isfinite(out).all()
        loss = out.square().mean()
    assert torch.isfinite(loss)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    trainable = [p for p in net.parameters() if p.requires_grad]
    reached = sum(p.numel() for p in trainable if p.grad is not None)
    # a searched child holds the whole supernet; exactly its own share of the weights is trained
    assert reached == (net.child_parameters(net.arch) if name == "nas_unet" else sum(p.numel() for p in trainable)) > 0
    with torch.no_grad():
        y = net.eval()(x)
    assert y.shape == (shape[0], 3, *shape[2:]) and torch.isfinite(y).all()


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


def test_decoder_convs_sets_the_layers_per_decoder_stage() -> None:
    cfgs = {n: ModelConfig(extra={"decoder_convs": n}) for n in (1, 2)}
    nets = {n: MODELS.create("resunet", 1, 2, c, features=(4, 8, 16), strides=((1, 1, 1), (2, 2, 2), (2, 2, 2))) for n, c in cfgs.items()}
    assert [len(d) for d in nets[1].decoder] == [1, 1] and [len(d) for d in nets[2].decoder] == [2, 2]
    x = torch.randn(1, 1, 16, 16, 16)
    assert nets[1].eval()(x).shape == nets[2].eval()(x).shape == (1, 2, 16, 16, 16)
    assert sum(p.numel() for p in nets[1].parameters()) < sum(p.numel() for p in nets[2].parameters())


def test_resunet_vae_regularises_training_only_and_the_segmentation_is_unchanged() -> None:
    strides = ((1, 1, 1), (2, 2, 2), (2, 2, 1))
    torch.manual_seed(0)
    plain = MODELS.create("resunet", 1, 2, ModelConfig(deep_supervision=True), features=(4, 8, 16), strides=strides)
    torch.manual_seed(0)
    vae = MODELS.create("resunet", 1, 2, ModelConfig(deep_supervision=True, extra={"vae": True}), features=(4, 8, 16), strides=strides)
    x = torch.randn(2, 1, 16, 16, 8)
    out = vae.train()(x)
    assert [tuple(o.shape) for o in out["logits"]] == [tuple(o.shape) for o in plain.train()(x)]  # deep supervision kept
    assert out["aux_loss"].ndim == 0 and out["aux_loss"] > 0
    out["aux_loss"].backward()
    assert vae.encoder[0][0].conv1[0].weight.grad.abs().sum() > 0  # the regulariser reaches the shared encoder
    assert all(p.grad is None for p in vae.heads.parameters())  # and not the segmentation heads
    segmentation = {k: v for k, v in vae.state_dict().items() if not k.startswith("vae.")}
    assert segmentation.keys() == plain.state_dict().keys()
    plain.load_state_dict(segmentation)
    assert torch.equal(vae.eval()(x), plain.eval()(x))  # at inference the branch costs nothing


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

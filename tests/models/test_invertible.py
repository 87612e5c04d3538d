import pytest
import torch

import leanseg.models  # noqa: F401  (registers the families)
from leanseg.bench import saved_for_backward as saved_bytes
from leanseg.config import ModelConfig
from leanseg.errors import LeansegError
from leanseg.models.invertible_unet import FullyInvertibleUNet, PartiallyInvertibleUNet
from leanseg.nn.invertible import (
    ChannelMixing,
    Inverse,
    InvertibleChain,
    OrthogonalSqueeze,
    coupling_block,
    haar_matrix,
    invertible_stage,
    squeeze3d,
    unsqueeze3d,
)
from leanseg.registry import MODELS


def test_coupling_inverse_restores_the_input() -> None:
    torch.manual_seed(0)
    block = coupling_block(8).double()
    x = torch.randn(2, 8, 6, 6, 6, dtype=torch.float64)
    assert torch.allclose(block.inverse(block(x)), x, atol=1e-10)
    chain = invertible_stage(8, 4).float()
    xf = x.float()
    with torch.no_grad():
        assert torch.allclose(chain.inverse(chain(xf)), xf, atol=1e-4)


def test_squeeze_is_an_invertible_permutation() -> None:
    x = torch.randn(1, 3, 4, 6, 8)
    s = squeeze3d(x)
    assert s.shape == (1, 24, 2, 3, 4) and torch.equal(unsqueeze3d(s), x)
    assert torch.equal(torch.sort(s.flatten()).values, torch.sort(x.flatten()).values)
    assert torch.equal(s[0, :8, 0, 0, 0], x[0, 0, :2, :2, :2].flatten())  # one 2x2x2 cell -> 8 channels


def test_gradients_equal_plain_autograd_in_float64() -> None:
    torch.manual_seed(0)
    saving = invertible_stage(6, 3, memory_saving=True).double()
    plain = InvertibleChain([b for b in saving.blocks], memory_saving=False)  # same weights
    x = torch.randn(2, 6, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 6, 5, 5, 5, dtype=torch.float64)
    (saving(x) * w).sum().backward()
    gx = x.grad.clone()
    g_saving = [p.grad.clone() for p in saving.parameters()]
    saving.zero_grad()
    x.grad = None
    (plain(x) * w).sum().backward()
    assert torch.allclose(gx, x.grad, atol=1e-9)
    for a, p in zip(g_saving, plain.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-9)


def test_activation_memory_does_not_grow_with_depth() -> None:
    x = torch.randn(1, 8, 12, 12, 12, requires_grad=True)
    saving = {d: saved_bytes(lambda d=d: invertible_stage(8, d)(x))[0] for d in (1, 2, 4, 8)}
    plain = {d: saved_bytes(lambda d=d: invertible_stage(8, d, memory_saving=False)(x))[0] for d in (1, 2, 4, 8)}
    assert saving[1] == saving[8]  # only the chain's output is kept
    assert plain[8] > 6 * plain[1]  # plain autograd keeps every block's activations
    assert saving[8] < plain[1]


@pytest.mark.parametrize("cls", [PartiallyInvertibleUNet, FullyInvertibleUNet])
def test_models_train_and_fully_invres_core_is_a_bijection(cls) -> None:
    torch.manual_seed(0)
    net = cls(2, 3, features=(8, 16, 32), depth=2, vae=True)
    x = torch.randn(2, 2, 16, 16, 8)
    out = net.train()(x)
    assert out["logits"].shape == (2, 3, 16, 16, 8) and out["aux_loss"].ndim == 0
    (out["logits"].mean() + out["aux_loss"]).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert net.eval()(x).shape == (2, 3, 16, 16, 8)
    if cls is FullyInvertibleUNet:
        with torch.no_grad():
            h = net.stem(x)
            assert torch.allclose(net.core_inverse(net.core(h)[0]), h, atol=1e-4)


def _squeeze_core(net: FullyInvertibleUNet, h: torch.Tensor) -> torch.Tensor:
    """The squeeze model's core as written before the resampling moved into the chains: pixel shuffles between them."""

    def couplings(stage: InvertibleChain, h: torch.Tensor) -> torch.Tensor:
        for block in stage.blocks:
            h = block(h)
        return h

    skips = []
    for i, stage in enumerate(net.enc):
        h = couplings(stage, h)
        if i < len(net.enc) - 1:
            keep = 3 * net.features[i] // 4
            skips.append(h[:, :keep])
            h = squeeze3d(h[:, keep:])
    for i in reversed(range(len(net.dec))):
        h = couplings(net.dec[i], torch.cat([skips[i], unsqueeze3d(h)], 1))
    return h


def test_squeeze_sampling_keeps_its_weights_keys_and_numbers() -> None:
    """``sampling: squeeze`` (the default) adds no weight, so checkpoints written before learned sampling load, and
    computes what the pixel shuffles between chains computed."""
    torch.manual_seed(0)
    net = FullyInvertibleUNet(1, 2, features=(8, 16, 32))
    assert not [k for k in net.state_dict() if any(s in k for s in ("pre", "post", "bottleneck_up", "mix"))]
    with torch.no_grad():
        h = net.stem(torch.randn(1, 1, 8, 8, 8))
        assert torch.equal(net.core(h)[0], _squeeze_core(net, h))


def _perturbed(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """``module`` with every weight moved off its initial value (orthogonal ones through their parametrisation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def test_learned_sampling_is_an_orthogonal_bijection_starting_at_haar_or_the_squeeze() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64)
    assert torch.equal(OrthogonalSqueeze(3, init="squeeze").double()(x), squeeze3d(x))
    haar = OrthogonalSqueeze(3).double()
    assert torch.allclose(haar(x)[:, ::8], squeeze3d(x).reshape(2, 3, 8, 2, 3, 4).sum(2) / 8**0.5)  # low-pass first
    assert torch.allclose(haar_matrix() @ haar_matrix().t(), torch.eye(8), atol=1e-6)
    for block, inp in ((_perturbed(OrthogonalSqueeze(3).double()), x), (_perturbed(ChannelMixing(3).double()), x)):
        w = block.weight
        assert torch.allclose(w @ w.transpose(-1, -2), torch.eye(w.shape[-1], dtype=w.dtype).expand_as(w), atol=1e-10)
        assert torch.allclose(block.inverse(block(inp)), inp, atol=1e-10) and not torch.allclose(
            block(inp), squeeze3d(inp) if block.weight.ndim == 3 else inp
        )
        up = Inverse(block)
        assert torch.allclose(up(block(inp)), inp, atol=1e-10)


def test_learned_sampling_gradients_equal_plain_autograd_and_hold_no_more() -> None:
    """A level's chain entered by the learned down-sampling, couplings after channel mixings, left by an up-sampling:
    the memory-saving backward gives plain autograd's gradients (float64) while holding only the chain's output."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)  # orthogonal to float64 rounding from the start (float32's Haar is not)
    try:
        saving = invertible_stage(16, 2, mixing=True, pre=OrthogonalSqueeze(2), post=Inverse(OrthogonalSqueeze(2)))
    finally:
        torch.set_default_dtype(torch.float32)
    saving = _perturbed(saving)
    plain = InvertibleChain(list(saving.blocks), memory_saving=False, pre=saving.pre, post=saving.post)  # same weights
    x = torch.randn(2, 2, 6, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 6, 6, 6, dtype=torch.float64)
    (saving(x) * w).sum().backward()
    gx, g_saving = x.grad.clone(), [p.grad.clone() for p in saving.parameters()]
    saving.zero_grad()
    x.grad = None
    (plain(x) * w).sum().backward()
    assert torch.allclose(gx, x.grad, atol=1e-9)
    assert len(g_saving) == len(list(plain.parameters())) > 0
    for a, p in zip(g_saving, plain.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-9)
    xf = x.detach().float().requires_grad_(True)
    held = saved_bytes(lambda: saving.float()(xf))[0]
    assert held == xf.numel() * 4  # the output alone: the resampling rebuilt its input like the couplings
    assert saved_bytes(lambda: plain.float()(xf))[0] > 8 * held


def test_learned_fully_invres_trains_in_bf16_and_holds_what_the_squeeze_model_holds() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16, requires_grad=True)
    held = {}
    for sampling in ("squeeze", "learned"):
        net = FullyInvertibleUNet(1, 2, features=(8, 16, 32), sampling=sampling).train()
        held[sampling] = saved_bytes(lambda net=net: net(x), parameters=False)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(x).float().square().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert held["learned"] <= 1.05 * held["squeeze"]
    plain = FullyInvertibleUNet(1, 2, features=(8, 16, 32), sampling="learned", memory_saving=False).train()
    assert saved_bytes(lambda: plain(x), parameters=False)[0] > 3 * held["learned"]


def test_sampling_setting_is_checked_before_any_work() -> None:
    cfg = ModelConfig(name="fully_invres", extra={"sampling": "learned"})
    net = MODELS.create("fully_invres", 1, 2, cfg, features=(8, 16), strides=((1, 1, 1), (2, 2, 2)))
    assert isinstance(net.enc[1].pre, OrthogonalSqueeze) and net.enc[0].blocks[0].mix is not None
    with pytest.raises(LeansegError, match="sampling of fully_invres must be one of squeeze, learned"):
        MODELS.settings("fully_invres", {"sampling": "haar"}, "model.extra")


def test_encoder_depths_add_couplings_per_level_and_keep_the_core_a_bijection() -> None:
    torch.manual_seed(0)
    net = FullyInvertibleUNet(1, 2, features=(8, 16, 32), encoder_depths=(1, 2, 3))
    assert [len(stage.blocks) for stage in net.enc] == [1, 2, 3] and [len(stage.blocks) for stage in net.dec] == [1, 1]
    shallow = FullyInvertibleUNet(1, 2, features=(8, 16, 32))
    extra = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in shallow.parameters())
    assert extra == sum(p.numel() for p in net.enc[1].blocks[1:].parameters()) + sum(p.numel() for p in net.enc[2].blocks[1:].parameters())
    with torch.no_grad():
        h = net.stem(torch.randn(1, 1, 8, 8, 8))
        assert torch.allclose(net.core_inverse(net.core(h)[0]), h, atol=1e-4)
    with pytest.raises(ValueError, match="encoder_depths"):
        FullyInvertibleUNet(1, 2, features=(8, 16, 32), encoder_depths=(1, 2))


def test_learned_sampling_exports_to_onnx_with_its_current_weights(tmp_path) -> None:
    """The tracer cannot export the orthogonal parametrisation's matrix_exp: ``leanseg export`` computes the weights
    once outside the trace, and ONNX Runtime then predicts what torch does."""
    import numpy as np
    import onnxruntime as ort

    from leanseg.export import export_part
    from leanseg.models.protocol import OnnxPart

    torch.manual_seed(0)
    net = _perturbed(FullyInvertibleUNet(1, 2, features=(8, 16), sampling="learned")).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    export_part(OnnxPart(net, (x,), ("image",), ("logits",)), tmp_path / "m.onnx")
    assert torch.nn.utils.parametrize.is_parametrized(net.enc[1].pre)  # the model is left as it was
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {"image": x.numpy()})[0]
    assert np.abs(got - net(x).detach().numpy()).max() < 1e-4

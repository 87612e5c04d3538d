import pytest
import torch

from leanseg.bench import saved_for_backward as saved_bytes
from leanseg.models.invertible_unet import FullyInvertibleUNet, PartiallyInvertibleUNet
from leanseg.nn.invertible import InvertibleChain, coupling_block, invertible_stage, squeeze3d, unsqueeze3d


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
            core = _core_forward(net, h)
            assert torch.allclose(net.core_inverse(core), h, atol=1e-4)


def _core_forward(net: FullyInvertibleUNet, h: torch.Tensor) -> torch.Tensor:
    skips = []
    for i, stage in enumerate(net.enc):
        h = stage(h)
        if i < len(net.enc) - 1:
            keep = 3 * net.features[i] // 4
            skips.append(h[:, :keep])
            h = squeeze3d(h[:, keep:])
    for i in reversed(range(len(net.dec))):
        h = net.dec[i](torch.cat([skips[i], unsqueeze3d(h)], 1))
    return h


def test_encoder_depths_add_couplings_per_level_and_keep_the_core_a_bijection() -> None:
    torch.manual_seed(0)
    net = FullyInvertibleUNet(1, 2, features=(8, 16, 32), encoder_depths=(1, 2, 3))
    assert [len(stage.blocks) for stage in net.enc] == [1, 2, 3] and [len(stage.blocks) for stage in net.dec] == [1, 1]
    shallow = FullyInvertibleUNet(1, 2, features=(8, 16, 32))
    extra = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in shallow.parameters())
    assert extra == sum(p.numel() for p in net.enc[1].blocks[1:].parameters()) + sum(p.numel() for p in net.enc[2].blocks[1:].parameters())
    with torch.no_grad():
        h = net.stem(torch.randn(1, 1, 8, 8, 8))
        assert torch.allclose(net.core_inverse(_core_forward(net, h)), h, atol=1e-4)
    with pytest.raises(ValueError, match="encoder_depths"):
        FullyInvertibleUNet(1, 2, features=(8, 16, 32), encoder_depths=(1, 2))

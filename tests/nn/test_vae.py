"""The VAE regulariser: its loss terms by hand, a decoder that mirrors the encoder and learns to reconstruct."""

import pytest
import torch

from leanseg.nn.vae import VAEBranch, vae_loss_terms


def test_vae_terms_by_hand() -> None:
    x = torch.zeros(1, 1, 2, 1, 1)
    recon = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1, 1)
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, 2.0]])
    l2, kl = vae_loss_terms(x, recon, mu, logvar)
    assert l2.item() == pytest.approx((1 + 9) / 2)
    # (mu^2 + e^logvar - logvar - 1): (1 + 1 - 0 - 1) = 1 and (0 + e^2 - 2 - 1), averaged
    assert kl.item() == pytest.approx((1 + (torch.e**2 - 3)) / 2)


def test_the_decoder_mirrors_the_encoder_and_learns_to_reconstruct() -> None:
    torch.manual_seed(0)
    features, strides = (4, 8, 16), ((1, 1, 1), (2, 2, 2), (2, 2, 1))
    branch = VAEBranch(features, strides, image_channels=2, latent=8)
    # one level per encoder transition, coarse to fine, each to the width of the level below
    assert [level[0][0].out_channels for level in branch.levels] == [8, 4]
    grid = torch.stack(torch.meshgrid(*(torch.linspace(-1, 1, n) for n in (16, 16, 8)), indexing="ij"))
    image = torch.exp(-4 * (grid**2).sum(0))[None, None].repeat(2, 2, 1, 1, 1)  # a smooth blob, two channels
    bottleneck = torch.nn.functional.avg_pool3d(image, (4, 4, 2)).repeat(1, 8, 1, 1, 1)
    recon, mu, logvar = branch(bottleneck, image.shape[2:])
    assert recon.shape == image.shape and mu.shape == logvar.shape == (2, 8)
    before = vae_loss_terms(image, recon, mu, logvar)[0].item()
    opt = torch.optim.Adam(branch.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        branch.regulariser(image, bottleneck).backward()
        opt.step()
    branch.eval()  # the mean of the latent: no sampling noise in the check
    after = vae_loss_terms(image, *branch(bottleneck, image.shape[2:]))[0].item()
    assert after < 0.2 * before

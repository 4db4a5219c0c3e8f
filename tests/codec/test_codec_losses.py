from __future__ import annotations

import torch

from musiclm_pytorch.codec.losses import (
    MultiScaleMelLoss,
    STFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)


def test_mel_loss_is_zero_on_identity_and_grows_with_noise():
    loss = MultiScaleMelLoss(sample_rate=16000, scales=(64, 256, 1024))
    wav = torch.sin(torch.arange(4096) * 0.05)[None, None] * 0.5
    assert loss(wav, wav).item() < 1e-6
    small, big = loss(wav + 0.01 * torch.randn_like(wav), wav), loss(wav + 0.2 * torch.randn_like(wav), wav)
    assert 0 < small.item() < big.item()


def test_discriminator_learns_to_separate():
    torch.manual_seed(0)
    disc = STFTDiscriminator(scales=(256, 512), channels=8)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    real = torch.sin(torch.arange(4096) * 0.05)[None, None].repeat(4, 1, 1) * 0.5
    fake = torch.randn(4, 1, 4096) * 0.3
    first = discriminator_hinge_loss(disc(real), disc(fake)).item()
    for _ in range(20):
        loss = discriminator_hinge_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    outs = disc(fake)
    assert len(outs) == 2 and all(len(feats) == 4 for _, feats in outs)
    assert generator_hinge_loss(outs).item() > 0
    assert feature_matching_loss(disc(real), disc(real)).item() < 1e-6

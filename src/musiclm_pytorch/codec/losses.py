"""Codec training losses and the multi-scale STFT discriminator (SoundStream §3.4, EnCodec §3.4).

- :class:`MultiScaleMelLoss`: L1 on mel spectrograms + L2 on log-mels at window sizes 2^6..2^11.
- :class:`STFTDiscriminator`: 2-D convolutions over the complex STFT (real and imaginary parts as
  channels) at several resolutions; returns logits and feature maps.
- hinge adversarial losses and feature matching (L1 between discriminator features, each divided
  by the mean magnitude of the real features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import MelSpectrogram


class MultiScaleMelLoss(nn.Module):
    def __init__(self, *, sample_rate: int, scales: Sequence[int] = (64, 128, 256, 512, 1024, 2048), n_mels: int = 64):
        super().__init__()
        self.mels = nn.ModuleList(
            MelSpectrogram(sample_rate=sample_rate, n_fft=n, hop_length=n // 4, n_mels=min(n_mels, n // 4), power=1.0)
            for n in scales
        )

    def forward(self, recon: Tensor, wav: Tensor) -> Tensor:
        recon, wav = recon.flatten(0, 1), wav.flatten(0, 1)  # [B, S]
        total = recon.new_zeros(())
        for mel in self.mels:
            a, b = mel(recon), mel(wav)
            total = total + (a - b).abs().mean() + (torch.log(a + 1e-5) - torch.log(b + 1e-5)).pow(2).mean().sqrt()
        return total / len(self.mels)


class _STFTScale(nn.Module):
    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        c = channels
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(2, c, (3, 9), padding=(1, 4)),
                nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4)),
                nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4)),
                nn.Conv2d(c, c, (3, 3), padding=(1, 1)),
            ]
        )
        self.out = nn.Conv2d(c, 1, (3, 3), padding=(1, 1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        window = torch.hann_window(self.n_fft, device=wav.device)
        spec = torch.stft(wav.flatten(0, 1), self.n_fft, self.n_fft // 4, window=window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, T, F]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class STFTDiscriminator(nn.Module):
    """Multi-resolution complex-STFT discriminator. ``wav [B, 1, S] -> [(logits, features)]`` per scale."""

    def __init__(self, *, scales: Sequence[int] = (512, 1024, 2048), channels: int = 32):
        super().__init__()
        self.scales = nn.ModuleList(_STFTScale(n, channels) for n in scales)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [scale(wav) for scale in self.scales]


def discriminator_hinge_loss(
    real: list[tuple[Tensor, list[Tensor]]], fake: list[tuple[Tensor, list[Tensor]]]
) -> Tensor:
    return sum((F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake)), torch.zeros(()))


def generator_hinge_loss(fake: list[tuple[Tensor, list[Tensor]]]) -> Tensor:
    return sum((F.relu(1 - f).mean() for f, _ in fake), torch.zeros(()))


def feature_matching_loss(real: list[tuple[Tensor, list[Tensor]]], fake: list[tuple[Tensor, list[Tensor]]]) -> Tensor:
    total, count = torch.zeros(()), 0
    for (_, rf), (_, ff) in zip(real, fake):
        for r, f in zip(rf, ff):
            total = total + (r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-8)
            count += 1
    return total / max(count, 1)

from __future__ import annotations

import pytest
import torch

from musiclm_pytorch import load, save
from musiclm_pytorch.codec import Codec, SoundStream


def _codec(**kw) -> SoundStream:
    args = dict(strides=(2, 4), channels=8, dim=16, num_quantizers=3, codebook_size=16, kmeans_init=False)
    args.update(kw)
    torch.manual_seed(0)
    return SoundStream(**args)


def test_interface_shapes_and_rates():
    codec = _codec()
    assert isinstance(codec, Codec)
    assert codec.hop == 8 and codec.frame_rate == 2000.0 and codec.bitrate() == 2000 * 3 * 4
    wav = torch.randn(2, 1, 100)
    codes = codec.encode(wav)
    assert codes.shape == (2, 3, 13) and codes.dtype == torch.long  # 100 samples right-padded to 104
    assert codec.decode(codes).shape == (2, 1, 104)
    assert codec.decode(codes[:, :1]).shape == (2, 1, 104)  # coarse levels alone decode
    assert codec.encode(wav, num_quantizers=2).shape == (2, 2, 13)


def test_causality():
    codec = _codec().eval()
    wav = torch.randn(1, 1, 256)
    changed = wav.clone()
    changed[..., 200:] += 1.0
    with torch.no_grad():
        a, b = (
            codec.decoder(codec._latents(wav).transpose(1, 2)),
            codec.decoder(codec._latents(changed).transpose(1, 2)),
        )
    # latents of frames that end before sample 200 do not see the change
    torch.testing.assert_close(codec._latents(wav)[:, :24], codec._latents(changed)[:, :24])
    assert a.shape == b.shape


def test_bad_codes_and_inputs():
    codec = _codec()
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        codec.decode(torch.full((1, 3, 4), 16))
    with pytest.raises(ValueError, match=r"\[B, Q <= 3, T\]"):
        codec.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer ids"):
        codec.decode(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"\[B, 1, S\]"):
        codec.encode(torch.randn(1, 2, 64))


def test_training_lowers_reconstruction_loss_and_round_trip(tmp_path):
    codec = _codec(kmeans_init=True).train()
    t = torch.arange(512) / 16000
    wav = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (220.0, 440.0, 880.0, 330.0)])[:, None] * 0.5
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        recon, _, commit = codec(wav)
        loss = (recon - wav).abs().mean() + 0.1 * commit
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append((recon - wav).abs().mean().item())
    assert losses[-1] < 0.5 * losses[0]
    codec.eval()
    loaded = load(save(codec, tmp_path / "codec.safetensors")).eval()
    codes = codec.encode(wav)
    assert torch.equal(loaded.encode(wav), codes)
    torch.testing.assert_close(loaded.decode(codes), codec.decode(codes))


def test_fewer_levels_decode_the_first_codebooks_only():
    codec = _codec().eval()
    idx = codec.encode(torch.randn(1, 1, 64)).transpose(1, 2)
    one = codec.rvq.get_output_from_indices(torch.nn.functional.pad(idx[..., :1], (0, 2), value=-1))
    torch.testing.assert_close(one, codec.rvq.layers[0].codebook[idx[..., 0]])

from __future__ import annotations

import math

import pytest
import torch

from musiclm_pytorch import load
from musiclm_pytorch.codec import Codec, SpectralCodec
from musiclm_pytorch.codec.spectral import griffin_lim


def _tones(n: int, seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """``[n, S]`` clips of two harmonic notes each (random pitches and brightness), with a short attack."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    clips = []
    for _ in range(n):
        f0 = float(110 * 2 ** (torch.randint(0, 36, (1,), generator=gen).item() / 12))
        decay = float(torch.rand(1, generator=gen)) * 0.6 + 0.2
        wav = sum(decay**k * torch.sin(2 * math.pi * f0 * (k + 1) * t) for k in range(8))
        clips.append(0.1 * wav * (1 - torch.exp(-t * 60)))
    return torch.stack(clips)


def test_griffin_lim_recovers_a_consistent_phase():
    wav = _tones(1, seconds=0.5)
    window = torch.hann_window(1280)
    stft = dict(n_fft=1280, hop_length=320, window=window, center=True, pad_mode="constant", return_complex=True)
    mag = torch.stft(wav, **stft).abs()  # the codec pads with zeros, as here
    error = []
    for iters in (0, 32):
        out = griffin_lim(mag, n_fft=1280, hop=320, window=window, iters=iters, length=wav.shape[-1])
        rebuilt = torch.stft(out, **stft).abs()
        error.append(float((rebuilt - mag).norm() / mag.norm()))  # spectral convergence
    assert error[1] < 0.05 < 0.4 < error[0]  # iterations make the phase consistent with the magnitudes


def test_fit_encode_decode_and_prefixes():
    codec = SpectralCodec(hop=320, dim=32, num_quantizers=4, codebook_size=16, gl_iters=16)
    assert isinstance(codec, Codec)
    for method in (codec.encode, codec.latents):
        with pytest.raises(RuntimeError, match="not fitted"):
            method(torch.zeros(1, 1, 3200))
    report = codec.fit(_tones(8), kmeans_iters=5)
    left = [report[f"variance_left_after_level{q + 1}"] for q in range(4)]
    assert report["variance_kept_by_projection"] > 0.9 and all(a > b for a, b in zip(left, left[1:]))
    wav = _tones(2, seed=1)[:, None, :-100]  # not a multiple of the hop: padded
    codes = codec.encode(wav)
    assert codes.shape == (2, 4, math.ceil(wav.shape[-1] / 320)) and codes.max() < 16
    latents = codec.latents(wav)  # unquantized: what encode codes, and decode_latents decodes
    assert latents.shape == (2, codes.shape[-1], 32) and torch.equal(codec.quantize_latents(latents), codes)
    out = codec.decode(codes)
    assert out.shape == (2, 1, codes.shape[-1] * 320)
    target = codec.log_magnitude(wav)
    errors = [float((codec.log_magnitude(codec.decode(codes[:, :q])) - target).abs().mean()) for q in (1, 4)]
    assert errors[1] < errors[0]  # any prefix decodes; more levels, closer magnitudes
    assert codec.bitrate() == 50 * 4 * 4


def test_save_load_round_trip(tmp_path):
    codec = SpectralCodec(hop=160, dim=16, num_quantizers=2, codebook_size=8, gl_iters=4)
    codec.fit(_tones(4), kmeans_iters=3)
    codec.save(tmp_path / "c.safetensors")
    again = load(tmp_path / "c.safetensors", expected=SpectralCodec)
    wav = _tones(1, seed=2)
    assert torch.equal(again.encode(wav), codec.encode(wav))
    assert torch.allclose(again.decode(codec.encode(wav)), codec.decode(codec.encode(wav)))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="n_fft >= 2 \\* hop"):
        SpectralCodec(hop=320, n_fft=400)
    codec = SpectralCodec(hop=320, dim=8, num_quantizers=2, codebook_size=64)
    with pytest.raises(ValueError, match="at least codebook_size=64 frames"):
        codec.fit(_tones(1, seconds=0.2))
    codec.fit(_tones(4), kmeans_iters=2)
    with pytest.raises(ValueError, match="codes must be in \\[0, 64\\)"):
        codec.decode(torch.full((1, 2, 5), 64))

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musiclm_pytorch import load, save
from musiclm_pytorch.codec import Codec, MDCTCodec
from musiclm_pytorch.codec.mdct import MDCT, mdct_basis
from musiclm_pytorch.evaluation.codec_eval import si_snr


def _codec(**kw) -> MDCTCodec:
    args = dict(hop=32, dim=8, width=16, depth=2, num_quantizers=3, codebook_size=16)
    args.update(kw)
    torch.manual_seed(0)
    return MDCTCodec(**args)


def _music(batch: int = 6, seconds: float = 0.5, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """Decaying harmonic notes at random pitches: tonal, like the corpus, and not a fixed tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wavs = []
    for _ in range(batch):
        wav = np.zeros_like(t)
        for start in np.arange(0, seconds, 0.125):
            f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
            env = np.where(t >= start, np.exp(-(t - start) * 12), 0.0)
            wav += sum(env * np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3))
        wavs.append(0.2 * wav / np.abs(wav).max())
    return torch.tensor(np.stack(wavs), dtype=torch.float32)[:, None]


def test_mdct_matches_the_textbook_formula_and_reconstructs_exactly():
    hop = 8
    x = torch.randn(2, 5 * hop, dtype=torch.float64)
    basis = mdct_basis(hop, torch.float64)
    # X[k] = sqrt(2/N) sum_n w[n] x[n] cos(pi/N (n + 1/2 + N/2)(k + 1/2)), over the frame [(t-1)N, (t+1)N)
    padded = torch.nn.functional.pad(x, (hop, hop)).numpy()
    n, k = np.arange(2 * hop), np.arange(hop)
    w = np.sin(np.pi / (2 * hop) * (n + 0.5))
    for t in range(5):
        frame = padded[0, t * hop : t * hop + 2 * hop]
        ref = np.sqrt(2 / hop) * (w * frame) @ np.cos(np.pi / hop * (n[:, None] + 0.5 + hop / 2) * (k + 0.5))
        np.testing.assert_allclose((torch.tensor(frame) @ basis).numpy(), ref, atol=1e-10)
    mdct = MDCT(hop).double()
    mdct.basis = basis
    coeffs = mdct.analysis(x)
    assert coeffs.shape == (2, 6, hop)  # one frame more than hops: the last hop is covered twice
    back = mdct.synthesis(coeffs)
    assert back.shape == x.shape
    torch.testing.assert_close(back, x)
    # orthonormal: the coefficients hold the waveform's energy
    torch.testing.assert_close(coeffs.pow(2).sum(), x.pow(2).sum())
    with pytest.raises(ValueError, match="multiple of the hop 8"):
        mdct.analysis(torch.randn(1, 20))


@pytest.mark.parametrize("hop", [8, 320])
def test_mdct_round_trip_is_exact_up_to_the_last_sample(hop):
    """Without quantization the decoded waveform is the input everywhere, its last hop included (the
    old framing left that hop's aliasing uncancelled: an error of order 1 there)."""
    x = torch.randn(3, 7 * hop, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mdct = MDCT(hop).double()
    back = mdct.synthesis(mdct.analysis(x))
    assert back.shape == x.shape
    err = (back - x).abs()
    assert err[:, -hop:].max() < 1e-6, f"last hop error {err[:, -hop:].max():.3g}"
    assert err.max() < 1e-6, f"max error {err.max():.3g}"
    # the frames split the signal: the last frame alone is what completes the last hop
    coeffs = mdct.analysis(x)
    coeffs[:, -1] = 0
    assert (mdct.synthesis(coeffs) - x)[:, -hop:].abs().max() > 1e-2


def test_codec_without_quantization_reconstructs_every_sample():
    """Projection of full rank (dim = hop) and zero-initialised networks: the codec's own analysis and
    synthesis path gives the waveform back exactly, to the last sample."""
    codec = _codec(hop=16, dim=16).double().eval()
    with torch.no_grad():
        codec.project.weight.copy_(torch.eye(16))
        codec.unproject.weight.copy_(torch.eye(16))
        wav = torch.randn(2, 1, 16 * 9, dtype=torch.float64)
        latents = codec._latents(wav)
        assert latents.shape == (2, 10, 16)
        back = codec._synthesize(latents)
    assert back.shape == wav.shape
    assert (back - wav).abs().max() < 1e-6


def test_interface_shapes_rates_and_bad_codes():
    codec = _codec()
    assert isinstance(codec, Codec)
    assert codec.frame_rate == 500.0 and codec.bitrate() == 500 * 3 * 4
    wav = torch.randn(2, 1, 100)
    codes = codec.encode(wav)
    # 100 samples right-padded to 128 = 4 hops: 5 frames (the last hop is covered twice) decode to 128
    assert codes.shape == (2, 3, 5) and codes.dtype == torch.long
    assert codec.decode(codes).shape == (2, 1, 128)
    assert codec.decode(codes[:, :1]).shape == (2, 1, 128)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        codec.decode(torch.full((1, 3, 5), 16))
    with pytest.raises(ValueError, match="integer ids"):
        codec.decode(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"\[B, 1, S\]"):
        codec.encode(torch.randn(1, 2, 64))
    with pytest.raises(ValueError, match="dim <= hop"):
        MDCTCodec(hop=8, dim=9)


def test_causal_over_frames():
    codec = _codec(depth=3).eval()
    wav = torch.randn(1, 1, 32 * 12)
    changed = wav.clone()
    changed[..., 32 * 8 :] += 1.0  # frame t covers [(t - 1) * 32, (t + 1) * 32): frames 0..7 see none of it
    with torch.no_grad():
        a, b = codec._latents(wav), codec._latents(changed)
        torch.testing.assert_close(a[:, :8], b[:, :8])
        assert not torch.allclose(a[:, 8], b[:, 8])
        ya, yb = codec._synthesize(a), codec._synthesize(b)
    torch.testing.assert_close(ya[..., : 32 * 7], yb[..., : 32 * 7])


def test_fit_init_makes_a_working_codec_before_any_training():
    music = _music(batch=16, seconds=1.0)
    codec = _codec(hop=64, dim=24, num_quantizers=4, codebook_size=64)
    with pytest.raises(ValueError, match="at least codebook_size=64 frames"):
        codec.fit_init(music[:1, :, :2048])
    report = codec.fit_init(music)
    assert report["energy_kept_by_projection"] > 0.8
    left = [report[f"latent_energy_left_after_level{q}"] for q in range(1, 5)]
    assert all(b < a for a, b in zip(left, left[1:])) and left[-1] < 0.5
    codec.eval()
    test = _music(batch=4, seconds=1.0, seed=1)
    codes = codec.encode(test)
    snr = [[si_snr(codec.decode(codes[:, :q])[i, 0], test[i, 0]) for i in range(4)] for q in (1, 4)]
    assert np.mean(snr[1]) > np.mean(snr[0]) + 2  # each level adds detail
    assert np.mean(snr[1]) > 3.0  # a waveform codec, not only a spectral one
    # an untrained codec (random projection, codebooks from the first batch) is far worse
    plain = _codec(hop=64, dim=24, num_quantizers=4, codebook_size=64).eval()
    plain.train()(music)  # k-means init on one batch, as SoundStream does
    plain.eval()
    raw = np.mean([si_snr(plain.decode(plain.encode(test))[i, 0], test[i, 0]) for i in range(4)])
    assert raw < np.mean(snr[1]) - 2


def test_fit_init_names_a_vector_quantize_version_that_keeps_its_codebooks_elsewhere(monkeypatch):
    codec = _codec(hop=64, dim=24, num_quantizers=2, codebook_size=16)
    layer = codec.rvq.layers[0]
    monkeypatch.delattr(type(layer._codebook), "init_embed_")
    with pytest.raises(RuntimeError, match=r"vector-quantize-pytorch [0-9.]+ keeps its codebooks differently.*~=1\.32"):
        codec.fit_init(_music(batch=4, seconds=1.0))


def test_training_lowers_the_loss_through_every_part_and_round_trips(tmp_path):
    from musiclm_pytorch.training.codec import snr_loss

    music = _music(batch=8, seconds=0.5)
    codec = _codec(hop=32, dim=16, num_quantizers=2, codebook_size=16, quantizer_dropout=False)  # no fit_init
    opt = torch.optim.Adam(codec.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        recon, codes, commit = codec.train()(music)
        loss = snr_loss(recon, music)
        opt.zero_grad()
        (loss + commit).backward()
        opt.step()
        losses.append(loss.item())
    assert codes.shape == (8, 2, 251) and recon.shape == music.shape  # 250 hops, one frame more
    assert np.mean(losses[:5]) > -1.0 and np.mean(losses[-5:]) < -4.0  # SNR from about 0 dB to over 4 dB
    codec.eval()
    loaded = load(save(codec, tmp_path / "codec.safetensors")).eval()
    assert isinstance(loaded, MDCTCodec)
    codes = codec.encode(music)
    assert torch.equal(loaded.encode(music), codes)
    torch.testing.assert_close(loaded.decode(codes), codec.decode(codes))


def test_snr_loss_is_minus_the_snr_in_db():
    from musiclm_pytorch.training.codec import snr_loss

    wav = torch.randn(2, 1, 1000)
    noise = torch.randn(2, 1, 1000)
    noise = noise / noise.norm(dim=-1, keepdim=True) * wav.norm(dim=-1, keepdim=True) * 10 ** (-10 / 20)
    assert snr_loss(wav + noise, wav).item() == pytest.approx(-10.0, abs=0.01)
    assert snr_loss(wav, wav).item() == pytest.approx(-40.0, abs=0.01)  # the floor
    assert math.isfinite(snr_loss(torch.zeros(1, 1, 10), torch.zeros(1, 1, 10)).item())

"""The beat grid from an onset curve, and the TokenLM that reads it."""

import librosa
import numpy as np
import pytest
import torch

from musiclm_pytorch.lm import TokenLM
from musiclm_pytorch.lm.transformer import SamplingConfig
from musiclm_pytorch.semantic.beat import beat_features, estimate_beat

FR = 25.0


def _pulses(bpm: float, phase: float, frames: int, seed: int = 0) -> np.ndarray:
    period = 60 * FR / bpm
    t = np.arange(frames)
    dist = np.abs(((t - phase) / period + 0.5) % 1 - 0.5) * period  # frames to the nearest beat
    rng = np.random.default_rng(seed)
    return np.exp(-0.5 * dist**2) + 0.2 * rng.random(frames)


@pytest.mark.parametrize("bpm, phase", [(131.0, 4.2), (72.5, 0.5), (180.0, 7.0)])
def test_period_and_phase_of_a_pulse_train(bpm, phase):
    period, got_phase, strength = estimate_beat(_pulses(bpm, phase, 250), FR)
    assert abs(60 * FR / period - bpm) / bpm < 0.005
    assert abs(got_phase - phase) < 0.5
    assert strength > 0.3
    _, _, noise = estimate_beat(np.random.default_rng(1).random(250), FR)
    assert noise < strength / 2


def test_tempo_of_librosa_clicks_through_librosa_onsets():
    sr, bpm = 16000, 128.0
    times = np.arange(0.3, 10.0, 60 / bpm)
    y = librosa.clicks(times=times, sr=sr, length=10 * sr)
    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=int(sr / FR))
    period, phase, _ = estimate_beat(onset, FR)
    assert abs(60 * FR / period - bpm) / bpm < 0.01
    assert abs(phase - 0.3 * FR) < 1.5  # librosa's onset frames lag a little


def test_estimate_beat_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="1-D curve of at least 4 frames"):
        estimate_beat(np.zeros((2, 10)), FR)
    with pytest.raises(ValueError, match="bpm_range"):
        estimate_beat(np.ones(10), FR, bpm_range=(100, 50))


def test_beat_features_are_in_phase_on_every_beat():
    period, phase = torch.tensor([12.5]), torch.tensor([3.0])
    on_beat = beat_features(3.0 + 12.5 * torch.arange(8) * 4, period, phase, harmonics=3)[0]  # every 4th beat
    assert on_beat.shape == (8, 8)
    assert torch.allclose(on_beat[:, :4], torch.zeros(8, 4), atol=1e-4)  # sines
    assert torch.allclose(on_beat[:, 4:], torch.ones(8, 4), atol=1e-4)  # cosines
    off = beat_features(torch.tensor([3.0 + 6.25]), period, phase, harmonics=3)[0, 0]
    assert off[4] == pytest.approx(-1.0, abs=1e-4)  # half a beat later: the beat's cosine is -1


def _lm(**kw) -> TokenLM:
    torch.manual_seed(0)
    return TokenLM(vocab_size=16, dim=32, depth=2, heads=2, dim_head=16, num_cond=2, cond_vocab=4, max_seq_len=64,
                   beat_harmonics=2, **kw).eval()  # fmt: skip


def test_generation_with_a_beat_grid_matches_the_forward_pass():
    lm = _lm()
    with torch.no_grad():  # a beat projection large enough to matter
        lm.beat_proj.weight.normal_(0, 2.0)
    cond = torch.tensor([[1, 2], [3, 0]])
    beat = torch.tensor([[6.0, 1.0], [0.0, 0.0]])  # the second row: tempo unknown
    prime = torch.tensor([[3, 4, 5], [1, 1, 2]])
    greedy = SamplingConfig(temperature=1.0, top_k=1, cfg_scale=2.0)
    out = lm.generate(steps=10, cond_ids=cond, prime=prime, sampling=greedy, beat=beat)
    with torch.no_grad():  # the same guided logits from one full forward pass, position by position
        cond_logits = lm(out, cond, beat=beat)
        null_logits = lm(out, None, beat=beat)
    guided = null_logits + 2.0 * (cond_logits - null_logits)
    assert torch.equal(guided[:, 3:].argmax(-1), out[:, 3:])
    moved = lm.generate(steps=10, cond_ids=cond, prime=prime, sampling=greedy, beat=beat + torch.tensor([0.0, 3.0]))
    assert not torch.equal(moved[0], out[0])  # the grid steers the ids
    unknown = lm.generate(steps=10, cond_ids=cond, prime=prime, sampling=greedy, beat=None)
    assert torch.equal(unknown[1], out[1])  # period 0 reads as no beat at all


def test_beat_errors_name_the_input():
    lm = _lm()
    with pytest.raises(ValueError, match=r"beat must be \[B, 2\]"):
        lm(torch.zeros(2, 5, dtype=torch.long), beat=torch.zeros(2, 3))
    plain = TokenLM(vocab_size=16, dim=32, depth=1, heads=2, dim_head=16, num_cond=0)
    with pytest.raises(ValueError, match="no beat_harmonics"):
        plain(torch.zeros(2, 5, dtype=torch.long), beat=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="beat_harmonics must be >= 0"):
        _lm(beat_drop_prob=1.0)


def test_the_beat_grid_is_learned_where_it_predicts():
    """Ids that are 1 on the beat and 0 elsewhere, at a random tempo and phase per row: an LM that reads the
    grid learns them; without the grid (every row unknown) the loss stays higher."""
    torch.manual_seed(0)
    lm = _lm(beat_drop_prob=0.0).train()
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)

    def batch(n=32, frames=48):
        period = 4 + 6 * torch.rand(n)
        phase = torch.rand(n) * period
        u = (torch.arange(frames)[None] - phase[:, None]) / period[:, None]
        ids = ((u - u.round()).abs() * period[:, None] < 0.5).long()
        return ids, torch.stack([period, phase], 1)

    for _ in range(150):
        ids, beat = batch()
        loss = lm.loss(ids, beat=beat)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    ids, beat = batch()
    with torch.no_grad():
        with_grid = lm.loss(ids, beat=beat).item()
        without = lm.loss(ids, beat=torch.zeros_like(beat)).item()
    assert with_grid < 0.5 * without, (with_grid, without)

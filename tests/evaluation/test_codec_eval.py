from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclm_pytorch.codec import SoundStream
from musiclm_pytorch.evaluation.codec_eval import evaluate_codec, log_mel_mae, si_snr


def test_si_snr_reference_values():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(16000)
    assert si_snr(3.0 * ref, ref) > 80  # scale-invariant: a gain is not an error
    noise = rng.standard_normal(16000)
    noise -= noise.mean()
    noise -= (noise @ (ref - ref.mean())) / ((ref - ref.mean()) @ (ref - ref.mean())) * (ref - ref.mean())
    noise *= np.linalg.norm(ref - ref.mean()) / np.linalg.norm(noise) / 10  # 20 dB below the signal
    assert si_snr(ref + noise, ref) == pytest.approx(20.0, abs=0.01)


def test_log_mel_mae_and_codec_report():
    wav = torch.sin(torch.arange(16000) * 0.07) * 0.5
    assert log_mel_mae(wav, wav, sample_rate=16000) == 0.0
    assert log_mel_mae(wav + 0.05 * torch.randn(16000), wav, sample_rate=16000) > 0.01
    torch.manual_seed(0)
    codec = SoundStream(strides=(2, 4), channels=8, dim=16, num_quantizers=4, codebook_size=16, kmeans_init=False)
    report = evaluate_codec(codec, [wav[:4000], wav[4000:8000]])
    assert set(report["per_levels"]) == {"1", "2", "4"}
    assert report["per_levels"]["4"]["bitrate_kbps"] == pytest.approx(2000 * 4 * 4 / 1000)

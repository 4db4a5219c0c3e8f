from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclm_pytorch.codec import SoundStream
from musiclm_pytorch.evaluation.codec_eval import (
    align,
    classic_round_trip,
    evaluate_classic,
    evaluate_codec,
    log_mel_mae,
    si_snr,
)


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


def test_alignment_recovers_a_delay():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(8000)
    late = np.concatenate([np.zeros(37), ref])[:8000]  # 37 samples late, as a codec's delay
    aligned, lag = align(late, ref, max_lag=100)
    assert lag == 37 and si_snr(aligned[:-37], ref[:-37]) > 80
    early, lag = align(ref[5:], ref, max_lag=100)
    assert lag == -5 and si_snr(early[5:], ref[5:]) > 80
    assert si_snr(late, ref) < 1  # unaligned, a delay of 37 samples ruins SI-SNR of white noise


@pytest.mark.parametrize("name", ["opus", "vorbis", "mp3"])
def test_classic_codecs_round_trip_with_a_measured_bitrate(name):
    t = np.arange(3 * 16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
    level = 0.5
    report = evaluate_classic([torch.from_numpy(x)], 16000, name, level)
    assert 4 < report["bitrate_kbps"] < 200
    assert report["si_snr_db"] > 10 and report["log_mel_mae"] < 0.3  # a clean tone survives every codec
    lowest = evaluate_classic([torch.from_numpy(x)], 16000, "opus", 1.0)
    if name == "opus":
        assert lowest["bitrate_kbps"] < report["bitrate_kbps"]


def test_classic_codec_errors():
    with pytest.raises(ValueError, match="unknown classic codec 'aac'"):
        classic_round_trip(np.zeros(1600, np.float32), 16000, "aac", 0.5)


class _FakeCodec:
    """Duck-typed codec: its "codes" are the waveform itself; ``silent`` decodes everything to zeros."""

    sample_rate, num_quantizers, codebook_size, frame_rate = 16000, 2, 16, 50.0

    def __init__(self, silent: bool):
        self.silent = silent

    def eval(self):
        return self

    def encode(self, wav):
        return wav

    def decode(self, codes):
        return torch.zeros_like(codes[:, :1]) if self.silent else codes[:, :1]


def test_fidelity_is_unchanged_by_a_lossless_codec_and_collapses_through_a_silent_one(tiny_mulan):
    from musiclm_pytorch.evaluation.codec_eval import evaluate_fidelity

    t = torch.arange(16000) / 16000
    wavs = [0.3 * torch.sin(2 * torch.pi * f * t) * (1 + torch.sin(2 * torch.pi * r * t)) for f, r in
            ((220, 2), (330, 5), (523, 1))]  # fmt: skip
    texts = ["slow piano in A minor", "fast guitar with drums", "a calm flute melody"]
    tags = [{"tonic": "A", "mode": "minor", "drums": False}, {"drums": True}, {"family": "pipe"}]
    torch.manual_seed(0)
    same = evaluate_fidelity(_FakeCodec(silent=False), wavs, texts, tags, mulan=tiny_mulan)
    assert same["clips"] == 3 and same["seconds"] == 1.0 and same["chance_r1"] == pytest.approx(1 / 3, abs=1e-4)
    assert set(same) == {"clips", "seconds", "chance_r1", "r1_group", "original", "codec_q1", "codec_q2", "paired",
                         "goals", "codes"}  # fmt: skip
    assert same["codec_q2"] == same["original"] and same["codec_q1"] == same["original"]
    # a lossless round trip: every paired difference is zero, no drumless clip flips, every goal met
    for name in ("codec_q1", "codec_q2"):
        diffs = {k: v for k, v in same["paired"][name].items() if k != "drum_flips"}
        assert diffs and all(d["mean"] == 0 and d["ci95"] in ([0, 0], None) for d in diffs.values())
        assert all(d["ci95"] is None for d in diffs.values() if d["n"] < 2)
        assert same["paired"][name]["drum_flips"]["flipped"] == 0
        assert all(g in (True, None) for g in same["goals"][name].values())
    assert same["codes"]["frames_per_second"] == 16000 and same["codes"]["encode_decode_seconds"] >= 0
    assert set(same["original"]["judge"]) == {
        "key",
        "key_tonic",
        "key_or_relative",
        "drums",
        "drums_yes",
        "drums_no",
        "drums_balanced",
        "family",
    }
    assert same["original"]["judge"]["drums"]["n"] == 2
    assert same["original"]["drum_flips"]["n"] == 1  # one clip is tagged drumless
    assert set(same["original"]["mulan_zero_shot"]) <= {"family", "drums", "tempo_class", "mode", "tonic"}
    gone = evaluate_fidelity(_FakeCodec(silent=True), wavs, texts, tags, mulan=tiny_mulan, levels=[2])
    # silence gives every clip one embedding: each caption scores the same against every clip
    assert gone["codec_q2"]["caption_r1"] == pytest.approx(1 / 3, abs=1e-4)
    assert gone["codec_q2"]["mcc"] == pytest.approx(gone["codec_q2"]["mcc_shuffled"], abs=1e-4)
    assert gone["original"] == same["original"]
    with pytest.raises(ValueError, match="at least 2 clips"):
        evaluate_fidelity(_FakeCodec(silent=False), wavs[:1], texts[:1], tags[:1], mulan=tiny_mulan)


def test_paired_difference_matches_numpy():
    from musiclm_pytorch.evaluation.codec_eval import paired_difference

    rng = np.random.default_rng(0)
    before = rng.random(200) < 0.7
    after = before & (rng.random(200) < 0.8)  # a round trip that loses some
    d = after.astype(float) - before.astype(float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(200)
    out = paired_difference(after, before)
    assert out["n"] == 200 and out["mean"] == pytest.approx(d.mean(), abs=1e-4) and out["mean"] < 0
    assert out["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-4)
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1, 0], [1])


def test_drum_flips_count_only_drumless_clips_heard_clean_before():
    from musiclm_pytorch.evaluation.codec_eval import paired_report

    original = {"judge": [{}] * 4, "drums_heard": [False, False, True, False], "drumless": [True, True, True, False],
                "mcc": [0.5] * 4}  # fmt: skip
    after = {"judge": [{}] * 4, "drums_heard": [True, False, True, True], "drumless": [True, True, True, False],
             "mcc": [0.4] * 4}  # fmt: skip
    flips = paired_report(after, original)["drum_flips"]
    # clip 2 had drums heard already, clip 3 is not drumless: 1 of the 2 others flipped
    assert (flips["flipped"], flips["n"], flips["rate"]) == (1, 2, 0.5)
    assert paired_report(after, original)["mcc"]["mean"] == pytest.approx(-0.1)


def test_high_band_flatness_tells_noise_from_partials():
    from musiclm_pytorch.evaluation.codec_eval import high_band_flatness

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    noise = torch.from_numpy(rng.standard_normal(16000)).float()
    partials = torch.from_numpy(sum(np.sin(2 * np.pi * 250 * k * t) / k for k in range(1, 30))).float()
    # white noise: the flatness of an exponential periodogram, exp(-Euler's gamma) = 0.56
    assert high_band_flatness(noise, 16000) == pytest.approx(0.56, abs=0.05)
    assert high_band_flatness(partials, 16000) < 0.05
    assert high_band_flatness(torch.zeros(16000), 16000) == pytest.approx(1.0)  # silence: no partials either


def test_code_statistics_entropy():
    from musiclm_pytorch.evaluation.codec_eval import code_statistics

    uniform = torch.arange(1024).reshape(1, 1, -1) % 16
    constant = torch.zeros(1, 1, 1024, dtype=torch.long)
    stats = code_statistics(_FakeCodec(silent=False), [torch.cat([uniform, constant], 1)], seconds=1024 / 50)
    assert stats["entropy_bits_per_level"] == [4.0, 0.0] and stats["codebook_used_per_level"] == [1.0, 0.0625]
    assert stats["frames_per_second"] == 50 and stats["kbps_all_levels"] == pytest.approx(50 * 2 * 4 / 1000)


def test_agreement_of_a_lossless_round_trip_is_total(tiny_mulan):
    from musiclm_pytorch.evaluation.codec_eval import evaluate_agreement

    t = torch.arange(16000) / 16000
    wavs = [0.3 * torch.sin(2 * torch.pi * f * t) for f in (220, 330)]
    out = evaluate_agreement(_FakeCodec(silent=False), wavs, mulan=tiny_mulan, levels=[2])
    assert out["clips"] == 2 and set(out["agreement"]) == {"codec_q2"}
    assert out["agreement"]["codec_q2"] == {k: 1.0 for k in ("family", "drums", "tempo_class", "key", "mulan_family")}
    with pytest.raises(ValueError, match="no clips"):
        evaluate_agreement(_FakeCodec(silent=False), [], mulan=tiny_mulan)

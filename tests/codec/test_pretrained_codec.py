"""EnCodec / DAC adapters, tested with tiny random-weight models saved to a temp dir (nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

from musiclm_pytorch.codec import Codec, PretrainedCodec

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    torch.manual_seed(0)
    # 16 kHz, hop 64 -> 250 Hz, 16-code books: 5 kbps = 5 levels, 10 kbps = 10 levels
    cfg = transformers.EncodecConfig(sampling_rate=16000, audio_channels=1, num_filters=4, upsampling_ratios=[8, 8],
                                     codebook_size=16, codebook_dim=8, hidden_size=8, num_lstm_layers=1,
                                     target_bandwidths=[5.0, 10.0], num_residual_layers=1)  # fmt: skip
    path = tmp_path_factory.mktemp("encodec")
    transformers.EncodecModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dac_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 4], decoder_hidden_size=8,
                                 n_codebooks=3, codebook_size=16, codebook_dim=4, hidden_size=16,
                                 sampling_rate=16000)  # fmt: skip
    path = tmp_path_factory.mktemp("dac")
    transformers.DacModel(cfg).save_pretrained(path)
    return path


def test_encodec_adapter_matches_the_model(encodec_dir):
    codec = PretrainedCodec(encodec_dir)
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.frame_rate, codec.codebook_size, codec.num_quantizers) == (16000, 250.0, 16, 10)
    wav = torch.randn(2, 1, 1600 - 10)  # not a multiple of the hop: padded to 25 frames
    codes = codec.encode(wav)
    assert codes.shape == (2, 10, 25) and codes.dtype == torch.long
    ref = transformers.EncodecModel.from_pretrained(encodec_dir).eval()
    want = ref.encode(torch.nn.functional.pad(wav, (0, 10)), bandwidth=10.0).audio_codes[0]
    assert torch.equal(codes, want)
    out = codec.decode(codes)
    assert out.shape == (2, 1, 1600)
    assert torch.allclose(out, ref.decode(want[None], [None]).audio_values, atol=1e-5)
    assert codec.decode(codes[:, :5]).shape == (2, 1, 1600)  # a prefix of the levels decodes
    low = PretrainedCodec(encodec_dir, bandwidth=5.0)
    assert low.num_quantizers == 5 and torch.equal(low.encode(wav), codes[:, :5])
    assert codec.bitrate() == pytest.approx(10_000)


def test_dac_adapter_matches_the_model(dac_dir):
    codec = PretrainedCodec(dac_dir, num_quantizers=2)
    assert isinstance(codec, Codec) and (codec.frame_rate, codec.num_quantizers) == (2000.0, 2)
    wav = torch.randn(1, 1, 800)
    codes = codec.encode(wav)
    ref = transformers.DacModel.from_pretrained(dac_dir).eval()
    assert codes.shape == (1, 2, 100) and torch.equal(codes, ref.encode(wav).audio_codes[:, :2])
    out = codec.decode(codes)
    assert out.shape == (1, 1, 800) and torch.isfinite(out).all()


def test_pretrained_codec_errors(encodec_dir, dac_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no pretrained codec at .*config.json"):
        PretrainedCodec(tmp_path / "nowhere")
    bert = tmp_path / "bert"
    bert_cfg = transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                                       vocab_size=10)  # fmt: skip
    transformers.BertModel(bert_cfg).save_pretrained(bert)
    with pytest.raises(ValueError, match="holds a 'bert' model; a pretrained codec must be one of"):
        PretrainedCodec(bert)
    with pytest.raises(ValueError, match=r"bandwidth 6.0 kbps is not one of this EnCodec's \[5.0, 10.0\]"):
        PretrainedCodec(encodec_dir, bandwidth=6.0)
    with pytest.raises(ValueError, match=r"num_quantizers must be in \[1, 3\]"):
        PretrainedCodec(dac_dir, num_quantizers=4)
    codec = PretrainedCodec(encodec_dir)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\), got \[0, 16\]"):
        codec.decode(torch.full((1, 2, 4), 16).index_fill_(2, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"codes must be \[B, Q <= 10, T\]"):
        codec.decode(torch.zeros(1, 11, 4, dtype=torch.long))
    chunked = tmp_path / "chunked"
    cfg = transformers.EncodecConfig.from_pretrained(encodec_dir)
    cfg.normalize = True
    transformers.EncodecModel(cfg).save_pretrained(chunked)
    with pytest.raises(ValueError, match="normalises/chunks its input"):
        PretrainedCodec(chunked)

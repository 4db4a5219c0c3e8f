"""The model that ships in the package (src/musiclm_pytorch/pretrained/musiclm_small): it loads with no
argument and no network, its components agree, and it makes audio from text that depends on the text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from musiclm_pytorch.pipeline import BUNDLE_FILES, DEFAULT_MODEL, MusicLM


@pytest.fixture(scope="module")
def shipped():
    if not DEFAULT_MODEL.is_dir():
        pytest.fail(f"the shipped model folder {DEFAULT_MODEL} is missing")
    return MusicLM.from_pretrained()


def test_the_shipped_folder_holds_one_copy_of_each_component_and_a_model_card():
    files = sorted(p.name for p in DEFAULT_MODEL.iterdir())
    expected = {BUNDLE_FILES[k] for k in ("conditioner", "semantic_tokenizer", "codec", "semantic_lm", "acoustic_lm",
                                          "prior")}  # fmt: skip
    assert set(files) == expected | {"README.md"}
    assert sum(p.stat().st_size for p in DEFAULT_MODEL.iterdir()) < 100 * 2**20  # the bound on git history


def test_shipped_model_generates_audio_that_follows_the_text(shipped):
    assert shipped.prior is not None and shipped.max_seconds() >= 10.0
    texts = ["a solo piano piece in C major", "a recording of drums and bass, fast"]
    out = shipped.generate(texts, seconds=2.0, generator=torch.Generator().manual_seed(0))
    assert out.wavs.shape == (2, 2 * shipped.sample_rate) and torch.isfinite(out.wavs).all()
    assert out.sample_rate == shipped.sample_rate == 16000 and torch.equal(out.audio, out.wavs[:, None])  # [B, C, S]
    assert float(out.wavs.abs().max()) > 1e-3  # not silence
    # the two prompts condition the stages differently: different neighbours, different audio
    cond, log_probs, latent, *_ = shipped.text_condition(texts)
    assert not torch.equal(cond[0], cond[1]) and not torch.allclose(latent[0], latent[1])
    assert not torch.allclose(out.wavs[0], out.wavs[1])


def test_from_pretrained_takes_a_dtype_as_transformers_does():
    bf16 = MusicLM.from_pretrained(dtype=torch.bfloat16)
    assert next(bf16.semantic_lm.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="int8 has no dtype"):
        MusicLM.from_pretrained(dtype=torch.float16)
    with pytest.raises(ValueError, match="lm_precision 'int8'"):
        MusicLM.from_pretrained(dtype=torch.bfloat16, lm_precision="int8")


def test_generate_cli_makes_many_texts_in_passes(tmp_path, capsys, monkeypatch):
    """More texts than one pass takes are generated a few at a time (memory is texts x candidates): one file
    and one score per text, in order."""
    import musiclm_pytorch.cli as cli

    monkeypatch.setattr(cli, "TEXTS_PER_PASS", 2)
    texts = ["calm piano", "fast drums", "sad strings"]
    assert cli.main([*["generate", *texts], "--seconds", "0.5", "--candidates", "2", "-o", str(tmp_path),
                     "--threads", "1"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["texts"] == texts and [Path(f).name for f in report["files"]] == ["00.wav", "01.wav", "02.wav"]
    assert [len(s) for s in report["mulan_scores"]] == [2, 2, 2]


def test_generate_cli_uses_the_shipped_model(tmp_path, capsys):
    from musiclm_pytorch.cli import main

    wav = tmp_path / "out.wav"
    assert main(["generate", "a slow sad piano piece in D minor", "--seconds", "1", "--candidates", "1",
                 "-o", str(wav), "--threads", "1"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(wav)] and wav.stat().st_size > 16000 * 2
    import numpy as np
    import soundfile as sf

    y, _ = sf.read(wav)
    assert abs(float(np.sqrt((y**2).mean())) - 0.1) < 0.01 or float(np.abs(y).max()) > 0.98  # -20 dBFS by default
    story = tmp_path / "story.wav"  # story mode: one piece whose segments follow their own texts
    assert main(["generate", "--story", "calm piano in C major:1.5", "fast drums and bass:1.5", "-o", str(story),
                 "--threads", "1", "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(story)] and [s["seconds"] for s in report["story"]] == [1.5, 1.5]
    assert abs(sf.info(story).duration - 3.0) < 0.05
    prompt = tmp_path / "prompt.wav"  # continuation: the file holds the prompt and then its continuation
    from musiclm_pytorch.audio import save_audio

    save_audio(prompt, 0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(32000) / 16000), 16000)
    cont = tmp_path / "cont.wav"
    assert main(["generate", "--continue", str(prompt), "--seconds", "1", "-o", str(cont), "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompt_seconds"] == 2.0 and report["continuation_seconds"] == 1.0
    assert abs(sf.info(cont).duration - 3.0) < 0.05
    melody = tmp_path / "hum.wav"  # melody conditioning: the hum's semantic ids, rendered in the text's style
    from musiclm_pytorch.evaluation.melody import whistled_melody

    save_audio(melody, whistled_melody(0, seconds=1.5), 16000)
    out = tmp_path / "melody.wav"
    assert main(["generate", "a solo violin piece", "--melody", str(melody), "--seconds", "10", "-o", str(out),
                 "--candidates", "1", "--threads", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    assert abs(sf.info(out).duration - 1.5) < 0.05  # the melody's length bounds the piece
    with pytest.raises(SystemExit) as exc:  # argparse refuses it before anything loads
        main(["generate", "x", "--seconds", "1", "-o", str(wav), "--level-dbfs", "3"])
    assert exc.value.code == 2 and "must be <= 0 dBFS or 'none', got 3" in capsys.readouterr().err

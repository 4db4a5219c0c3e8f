from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from musiclm_pytorch.cli import main


def test_demo_info_similarity(tmp_path, capsys):
    ckpt = tmp_path / "mulan.safetensors"
    assert main(["demo", "--steps", "5", "--quiet", "--threads", "1", "--out", str(ckpt)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["steps"] == 5 and report["checkpoint"] == str(ckpt)
    assert main(["info", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["component"] == "mulan"
    wav = tmp_path / "tone.wav"
    sf.write(wav, (0.3 * np.sin(np.arange(22050) * 0.1)).astype(np.float32), 22050)  # resampled to 16 kHz
    assert main(["similarity", "--checkpoint", str(ckpt), "--audio", str(wav), "--text", "a", "b c"]) == 0
    sims = json.loads(capsys.readouterr().out)["cosine"]
    assert np.asarray(sims).shape == (1, 2) and all(-1 <= s <= 1 for s in sims[0])


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and "no such file" in err and "Traceback" not in err


def test_data_synth_check_and_judge(tmp_path, capsys):
    import pytest

    pytest.importorskip("fluidsynth", reason="needs pyfluidsynth + apt fluidsynth (installed by .ci/run)")
    corpus = tmp_path / "corpus"
    argv = ["data", "synth", str(corpus), "--num-clips", "4", "--seconds", "4", "--workers", "1", "--quiet",
            "--soundfont", "TimGM6mb.sf2", "--val-fraction", "0", "--bach-fraction", "0"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"train": 4, "val": 0}
    assert main(["data", "check", str(corpus / "train.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["usable"] == 4
    # the manifest doubles as a prompts file: intended attributes = the rendered tags
    out = tmp_path / "report"
    assert main(["eval", "judge", "--prompts", str(corpus / "train.jsonl"), "--out", str(out), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 4 and {"drums", "family", "key", "tempo"} <= set(report["accuracy"])
    assert (out / "judge_accuracy.png").stat().st_size > 1000 and (out / "judge_report.json").is_file()


def test_eval_mulan_and_train_conditioning_cli(tiny_corpus, tmp_path, capsys):
    from musiclm_pytorch import build_mulan, save

    ckpt = save(build_mulan("tiny"), tmp_path / "mulan.safetensors")
    out = tmp_path / "eval"
    argv = ["eval", "mulan", "--checkpoint", str(ckpt), "--data", str(tiny_corpus / "val.jsonl"), "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 6 and "R@1" in report["text_to_audio"] and "family" in report["zero_shot"]
    assert (out / "similarity.png").stat().st_size > 1000
    argv = ["train", "conditioning", "--mulan", str(ckpt), "--data", str(tiny_corpus), "--out",
            str(tmp_path / "cond.safetensors"), "--num-quantizers", "2", "--codebook-size", "4", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert len(json.loads(capsys.readouterr().out)["val_text_audio_agreement"]["per_level"]) == 2


def test_stage_pipeline_cli(tiny_corpus, tmp_path, capsys):
    import torch
    import torch.nn.functional as F

    from musiclm_pytorch import MuLaNEmbedQuantizer, build_mulan, save
    from musiclm_pytorch.codec import SoundStream

    sem = tmp_path / "sem.safetensors"
    argv = ["train", "semantic-tokenizer", "--data", str(tiny_corpus), "--out", str(sem), "--vocab-size", "8",
            "--max-clips", "4", "--crop-seconds", "3"]  # fmt: skip
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["clips"] == 4
    cond = MuLaNEmbedQuantizer(build_mulan("tiny"), conditioning_dims=(), namespaces=(), num_quantizers=2,
                               codebook_size=4)  # fmt: skip
    cond.fit(F.normalize(torch.randn(32, 128), dim=-1))
    codec = SoundStream(strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False)
    save(cond, tmp_path / "cond.safetensors")
    save(codec, tmp_path / "codec.safetensors")
    tokens = tmp_path / "tokens"
    argv = ["data", "tokenize", "--conditioning", str(tmp_path / "cond.safetensors"), "--semantic", str(sem),
            "--codec", str(tmp_path / "codec.safetensors"), "--data", str(tiny_corpus), "--out", str(tokens),
            "--max-clips", "6", "--quiet"]  # fmt: skip
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["splits"]["train"] == 6
    argv = ["train", "stage", "--stage", "coarse", "--tokens", str(tokens), "--out", str(tmp_path / "coarse"),
            "--dim", "32", "--depth", "1", "--heads", "2", "--batch-size", "2", "--max-steps", "3", "--crop-seconds",
            "1", "--num-coarse", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "coarse" / "coarse.safetensors").is_file()


def test_eval_codec_beside_classic_codecs(tmp_path, capsys):
    import torch

    from musiclm_pytorch import save
    from musiclm_pytorch.codec import SoundStream

    folder = tmp_path / "music"
    folder.mkdir()
    t = np.arange(3 * 16000) / 16000
    for i, f0 in enumerate((220.0, 330.0, 440.0)):
        sf.write(folder / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    torch.manual_seed(0)
    codec = SoundStream(strides=(2, 4), channels=8, dim=16, num_quantizers=4, codebook_size=16, kmeans_init=False)
    ckpt = save(codec, tmp_path / "codec.safetensors")
    argv = ["eval", "codec", "--checkpoint", str(ckpt), "--data", str(folder), "--seconds", "2",
            "--classic", "opus:1.0", "mp3:0.5", "--out", str(tmp_path / "ce")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "ce" / "codec_eval.json").read_text())
    capsys.readouterr()
    assert report["clips"] == 3 and report["skipped"] == 1  # the broken file is skipped and counted
    assert [c["codec"] for c in report["classic"]] == ["opus", "mp3"]
    assert report["classic"][1]["si_snr_db"] > 10  # MP3 keeps a sine; an untrained codec does not
    assert report["codec"]["per_levels"]["4"]["si_snr_db"] < report["classic"][1]["si_snr_db"]
    assert main(["eval", "codec", "--data", str(folder), "--classic", "aac:1"]) == 2
    assert "unknown classic codec 'aac'" in capsys.readouterr().err


def test_eval_codec_fidelity_with_mulan(tmp_path, capsys, tiny_mulan):
    import torch

    from musiclm_pytorch import save
    from musiclm_pytorch.codec import MDCTCodec

    folder = tmp_path / "music"
    folder.mkdir()
    t = np.arange(2 * 16000) / 16000
    for i, (f0, caption) in enumerate(((220.0, "slow calm piano"), (330.0, "fast drums"), (440.0, "a flute"))):
        sf.write(folder / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 16000)
        (folder / f"clip{i}.json").write_text(json.dumps({"caption": caption, "tags": {"drums": i == 1}}))
    torch.manual_seed(0)
    codec = MDCTCodec(hop=32, dim=8, width=16, depth=1, num_quantizers=3, codebook_size=16)
    argv = ["eval", "codec", "--checkpoint", str(save(codec, tmp_path / "codec.safetensors")), "--data", str(folder),
            "--seconds", "1", "--classic", "--levels", "1", "3", "--mulan", str(save(tiny_mulan, tmp_path / "m.st")),
            "--out", str(tmp_path / "ce")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "ce" / "codec_eval.json").read_text())
    assert set(report["codec"]["per_levels"]) == {"1", "3"}
    fidelity = report["fidelity"]
    assert fidelity["clips"] == 3 and set(fidelity) >= {"original", "codec_q1", "codec_q3"}
    assert fidelity["original"]["judge"]["drums"]["n"] == 3
    capsys.readouterr()
    assert main(["eval", "codec", "--data", str(folder), "--classic", "--mulan", str(tmp_path / "m.st")]) == 2
    assert "--mulan measures what survives a codec" in capsys.readouterr().err

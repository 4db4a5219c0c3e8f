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

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

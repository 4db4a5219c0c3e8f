from __future__ import annotations

import json

import torch

from musiclm_pytorch.audio import save_audio
from musiclm_pytorch.cli import main


def test_eval_continuation_reports_agreement_ceiling_and_control(tmp_path, capsys):
    """Two 3 s clips of the shipped model's kind (pure tones a fifth apart) and a broken third: the
    report scores the continuations, the real next seconds and the shuffled control; the bad clip is
    skipped and named."""
    sr = 16000
    t = torch.arange(3 * sr) / sr
    rows = []
    for i, f in enumerate((220.0, 330.0)):
        save_audio(tmp_path / f"c{i}.wav", 0.3 * torch.sin(2 * torch.pi * f * t), sr)
        rows.append({"path": f"c{i}.wav", "caption": "a tone", "duration": 3.0})
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio")
    rows.append({"path": "bad.wav", "caption": "broken"})
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    argv = ["eval", "continuation", "--data", str(tmp_path / "val.jsonl"), "--clips", "3", "--prompt-seconds", "2",
            "--seconds", "1", "--threads", "1", "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "continuation.json").read_text())
    assert report["clips"] == 2 and len(report["skipped"]) == 1 and "bad.wav" in report["skipped"][0]
    for part in ("continuation", "real_next_seconds", "shuffled_prompt"):
        assert {"key_tonic", "tempo_class", "drums", "family"} <= set(report[part]), report[part]
        assert report[part]["key_tonic"]["n"] == 2
    # a pure tone's next second is the same tone: the judge reads the same tonic in it
    assert report["real_next_seconds"]["key_tonic"]["accuracy"] == 1.0
    capsys.readouterr()

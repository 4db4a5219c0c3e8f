"""The MuLaN trainer on 2 CPU processes (gloo) through torchrun, as `accelerate launch` would run it."""

from __future__ import annotations

import json
import subprocess

from musiclm_pytorch import MuLaN, load


def test_two_process_training_run(tiny_corpus, tmp_path, torchrun, free_port):
    out = tmp_path / "ddp"
    argv = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port), "-m", "musiclm_pytorch.cli",
            "train", "mulan",
            "--data", str(tiny_corpus), "--out", str(out), "--preset", "tiny", "--batch-size", "2", "--max-steps", "4",
            "--warmup-steps", "1", "--crop-seconds", "2", "--num-workers", "0", "--threads", "1", "--log-every", "1",
            "--eval-every", "4", "--eval-clips", "6", "--checkpoint-every", "2", "--no-progress"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4]  # one log line per step: only the main process writes
    assert any("val_t2a_R@1" in r for r in records)
    assert isinstance(load(out / "mulan.safetensors"), MuLaN)

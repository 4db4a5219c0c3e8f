"""Every generation path of the shipped model on one device: the check for a GPU (or any torch device).

Run by hand on the machine with the device: ``python benchmarks/device_check.py --device cuda``; prints
JSON with each path's wall time and fails (exit 1) if a path raises or returns audio that is not
finite, not the asked length, or not on the device. ``--device cpu`` runs the same checks here.
Paths: ``generate`` (1 and 4 candidates), ``generate_long`` (story of two texts past one window),
``generate_continuation``, melody conditioning, and the tensors each leaves on the device."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from musiclm_pytorch.evaluation.melody import whistled_melody
from musiclm_pytorch.pipeline import MusicLM


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mlm = MusicLM.from_pretrained(device=device)
    sr = mlm.sample_rate
    report: dict[str, object] = {"device": str(device), "torch": torch.__version__}
    failures: list[str] = []

    def check(name: str, fn, seconds: float) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            wav = fn()
        except Exception as e:  # noqa: BLE001 - a report of every path, not the first failure only
            failures.append(f"{name}: {type(e).__name__}: {e}")
            return None
        if device.type == "cuda":
            torch.cuda.synchronize()
        report[f"{name}_s"] = round(time.perf_counter() - t, 3)
        if wav.device.type != device.type:
            failures.append(f"{name}: audio on {wav.device}, not {device}")
        if not torch.isfinite(wav).all() or abs(wav.shape[-1] - seconds * sr) > sr // 50:
            failures.append(f"{name}: shape {tuple(wav.shape)} or non-finite audio for {seconds} s")
        return wav

    gen = torch.Generator(device).manual_seed(0)
    check("warm_up", lambda: mlm.generate(["warm up"], seconds=1.0, generator=gen).wavs, 1.0)
    check("generate_10s", lambda: mlm.generate(["a slow sad piano piece"], seconds=10.0, generator=gen).wavs, 10.0)
    check(
        "generate_10s_4_candidates",
        lambda: mlm.generate(["a fast rock song"], seconds=10.0, num_candidates=4, generator=gen).wavs,
        10.0,
    )
    story = check("story_16s", lambda: mlm.generate_long([("calm piano", 8.0), ("fast drums", 8.0)], generator=gen),
                  16.0)  # fmt: skip
    if story is not None:
        check("continuation_5s", lambda: mlm.generate_continuation(story[:sr * 4], sr, seconds=5.0, generator=gen),
              5.0)  # fmt: skip
    melody = torch.from_numpy(whistled_melody(0, seconds=5.0, sample_rate=sr))
    check("melody_5s", lambda: mlm.generate(["a violin piece"], seconds=5.0, melody=(melody, sr), generator=gen).wavs,
          5.0)  # fmt: skip
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

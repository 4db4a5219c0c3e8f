"""Seconds to make 10 s of audio with a frame-aligned acoustic stage and its codec (2 threads, batch 1,
guidance on: conditioned and null rows in one forward), median of 5 after a warm-up. Prints JSON.

    python benchmarks/acoustic_speed.py --stage runs/latent/latent.safetensors --codec runs/spectral/codec.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from musiclm_pytorch import load


def median_seconds(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--codec", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stage, codec = load(args.stage).eval(), load(args.codec).eval()
    semantic = torch.randint(stage.semantic_vocab, (1, int(args.seconds * 25)))
    cond = F.normalize(torch.randn(1, stage.cond_dim), dim=-1)
    out: dict[str, Any] = {"stage": args.stage, "seconds_of_music": args.seconds, "threads": args.threads}
    if hasattr(stage, "latent_dim"):
        latents = stage.generate(semantic, cond, cfg_scale=args.cfg_scale)
        out["stage_s"] = median_seconds(lambda: stage.generate(semantic, cond, cfg_scale=args.cfg_scale))
        out["codec_decode_s"] = median_seconds(lambda: codec.decode_latents(latents))
    else:
        codes = stage.generate(semantic, cond, cfg_scale=args.cfg_scale, steps=(8, 1))
        out["stage_s"] = median_seconds(lambda: stage.generate(semantic, cond, cfg_scale=args.cfg_scale, steps=(8, 1)))
        out["codec_decode_s"] = median_seconds(lambda: codec.decode(codes))
    out["total_s"] = round(out["stage_s"] + out["codec_decode_s"], 3)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()

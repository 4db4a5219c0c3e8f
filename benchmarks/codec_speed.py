"""Codec encode / decode speed for 10 s of audio on CPU, beside the reference SoundStream (ARCHITECTURE.md §5).

Usage::

    python benchmarks/codec_speed.py [--threads 1 2] [--repeats 5]

Reference (lucidrains audiolm-pytorch SoundStream, 16 kHz, strides 2/4/5/8, channels 32, 8 x 4096
lookup-free codes in 2 groups, windowed attention; 24.4M generator parameters; 1 thread, fp32):
tokenize 10 s in 1.2 s, decode in 1.4 s. Ours: the ``mdct`` preset (our default codec), the
SoundStream ``small`` preset, and a reference-size SoundStream (channels 32, latent 512, 8 x 1024
codes). One JSON line per case with seconds (median of ``--repeats``), the real-time factor
(seconds of compute per second of audio) and the parameter count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from musiclm_pytorch.training.codec import CODEC_PRESETS, build_codec

REFERENCE = {"encode": 1.2, "decode": 1.4}
CODEC_PRESETS["reference_size"] = dict(
    sample_rate=16000, strides=[2, 4, 5, 8], channels=32, dim=512, num_quantizers=8, codebook_size=1024
)  # fmt: skip
CONFIGS = ["mdct", "small", "reference_size"]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def run(name: str, threads: int, repeats: int, seconds: float = 10.0) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    codec = build_codec(name).eval()
    codec.train()(torch.randn(2, 1, 64000) * 0.1)  # initialise the codebooks (k-means on one batch)
    codec.eval()
    params = sum(p.numel() for p in codec.parameters()) / 1e6
    wav = torch.randn(1, 1, int(seconds * codec.sample_rate)) * 0.1
    codes = codec.encode(wav)
    rows = []
    for op, fn in (("encode", lambda: codec.encode(wav)), ("decode", lambda: codec.decode(codes))):
        sec = _median_seconds(fn, repeats)
        rows.append({"case": f"codec_{op}_10s", "config": name, "threads": threads, "seconds": round(sec, 3),
                     "rtf": round(sec / seconds, 4), "reference_seconds": REFERENCE[op],
                     "speedup": round(REFERENCE[op] / sec, 1), "parameters_M": round(params, 2)})  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    for threads in a.threads:
        for name in CONFIGS:
            for row in run(name, threads, a.repeats):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

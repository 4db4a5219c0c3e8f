"""MuLaN speed and memory on CPU: train steps and audio embedding, each case in its own process.

Usage::

    python benchmarks/mulan_speed.py                 # all cases, 2 threads, prints JSON lines
    python benchmarks/mulan_speed.py --threads 1 --cases embed_seed_10s

Peer figures (lucidrains musiclm-pytorch 0.2.8, 1 thread fp32, ../shared/ARCHITECTURE.md §5) are
printed beside ours. Peak RSS is the process's ``ru_maxrss`` (includes the model and torch itself).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PEER = {
    "train_seed_4x2s": {"peer_seconds": 20.3, "peer_peak_rss_gb": 5.2},
    "train_seed_4x10s": {"peer_seconds": None, "peer_peak_rss_gb": "> 24 (out of memory)"},
    "embed_seed_10s": {"peer_seconds": 46.0, "peer_peak_rss_gb": 12.3},
    "embed_base_10s": {"peer_seconds": None, "peer_peak_rss_gb": None},
    "train_seed_readme_toy": {"peer_seconds": 1.32, "peer_peak_rss_gb": None},
}


def _seed_mulan():
    from musiclm_pytorch import AudioSpectrogramTransformer, MuLaN, TextTransformer

    audio = AudioSpectrogramTransformer(
        dim=512, depth=6, heads=8, dim_head=64, spec_n_fft=128, spec_win_length=24, spec_aug_stretch_factor=0.8
    )
    text = TextTransformer(dim=512, depth=6, heads=8, dim_head=64)
    return MuLaN(audio_transformer=audio, text_transformer=text)


def run_case(name: str, dtype: str, repeats: int) -> dict:
    import torch

    from musiclm_pytorch import build_mulan

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    if name.startswith("train"):
        mulan = _seed_mulan().train()
        batch, seconds, tokens = {
            "train_seed_4x2s": (4, 2.0, 256),
            "train_seed_4x10s": (4, 10.0, 256),
            "train_seed_readme_toy": (2, 1024 / 16000, 256),
        }[name]
        wavs = torch.randn(batch, int(seconds * 16000))
        texts = torch.randint(0, 20000, (batch, tokens))
        opt = torch.optim.AdamW(mulan.parameters(), lr=1e-4)

        def step() -> None:
            with autocast:
                loss = mulan(wavs, texts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fn = step
    else:
        mulan = (_seed_mulan() if name == "embed_seed_10s" else build_mulan("base")).eval()
        wav = torch.randn(1, 160000)

        def embed() -> None:
            with torch.inference_mode(), autocast:
                mulan.get_audio_latents(wav)

        fn = embed
    fn()  # warm-up (allocator, oneDNN kernels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    extra = {}
    if name.startswith("embed") and dtype == "bf16":
        # accuracy of bf16 autocast: cosine between bf16 and fp32 latents of the same clips
        clips = torch.randn(4, 160000)
        with torch.inference_mode():
            ref = mulan.get_audio_latents(clips)
            with autocast:
                low = mulan.get_audio_latents(clips).float()
        extra["min_cosine_bf16_vs_fp32"] = round(float((ref * low).sum(-1).min()), 5)
    return {
        "case": name,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "seconds_median": sorted(times)[len(times) // 2],
        "seconds_all": [round(t, 3) for t in times],
        "peak_rss_gb": round(peak_gb, 2),
        **extra,
        **PEER[name],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(PEER))
    parser.add_argument("--dtypes", nargs="*", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.child[0], args.child[1], args.repeats)))
        return
    for case in args.cases:
        for dtype in args.dtypes:
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats)]
            out = subprocess.run([*cmd, "--child", case, dtype], capture_output=True, text=True)
            if out.returncode != 0:
                print(json.dumps({"case": case, "dtype": dtype, "error": out.stderr.strip()[-500:]}))
            else:
                print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

"""Wall time of the shipped model's text -> audio (benchmarks/RESULTS.md, "A first shipped model").

Run by hand: ``python benchmarks/generate_speed.py [--threads 2] [--model FOLDER]``; prints JSON. Times
``MusicLM.generate`` for 10 s of audio (1 and 4 candidates, float32 and int8 semantic LM) after a warm-up, and
each stage's share, against real time (10 s)."""

from __future__ import annotations

import argparse
import json
import time

import torch

from musiclm_pytorch.pipeline import MusicLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, object] = {"threads": args.threads, "seconds_of_audio": args.seconds, "model": args.model}
    t0 = time.perf_counter()
    MusicLM.from_pretrained(args.model)
    report["load_s"] = round(time.perf_counter() - t0, 2)
    for precision in ("float32", "int8"):
        mlm = MusicLM.from_pretrained(args.model, lm_precision=precision)
        mlm.generate(["warm up"], seconds=1.0)
        for n in (1, 4):
            times = []
            for r in range(args.repeats):
                t = time.perf_counter()
                mlm.generate(["a slow sad piano piece in D minor"], seconds=args.seconds, num_candidates=n,
                             generator=torch.Generator().manual_seed(r))  # fmt: skip
                times.append(time.perf_counter() - t)
            best = min(times)
            report[f"{precision}_candidates{n}_s"] = round(best, 2)
            report[f"{precision}_candidates{n}_x_realtime"] = round(args.seconds / best, 2)
    # the stages apart (float32, one candidate)
    mlm = MusicLM.from_pretrained(args.model)
    text = ["a slow sad piano piece in D minor"]
    t = time.perf_counter()
    tc = mlm.text_condition(text)
    cond, log_probs, latent, text_latent, controls, key_bias = tc[:6]
    report["stage_text_and_prior_s"] = round(time.perf_counter() - t, 3)
    from musiclm_pytorch.lm import SamplingConfig

    t = time.perf_counter()
    sem = mlm.semantic_lm.generate(steps=int(args.seconds * 25), cond_ids=cond, sampling=SamplingConfig(),
                                   prior_log_probs=log_probs, prior_mix=mlm.prior_mix(None),
                                   cond_latent=mlm.semantic_latent(tc), controls=controls,
                                   logit_bias=key_bias)  # fmt: skip
    report["stage_semantic_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    assert mlm.acoustic_lm is not None and latent is not None
    lat = mlm.acoustic_lm.generate(sem, latent, cfg_scale=mlm.default_cfg_scale[1])
    report["stage_acoustic_s"] = round(time.perf_counter() - t, 3)
    if mlm.prior is not None and mlm.prior.has_frames:  # real frames from the prior's bank (unit selection)
        t = time.perf_counter()
        lat = mlm.match_frames(text_latent, lat, semantic=sem)
        report["stage_frame_bank_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    mlm.codec.decode_latents(lat)  # type: ignore[attr-defined]
    report["stage_griffin_lim_s"] = round(time.perf_counter() - t, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

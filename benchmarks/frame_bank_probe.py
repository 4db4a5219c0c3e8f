"""Where do the drums go? Follows prompts through the frame bank of a retrieval prior.

For each prompt: the judge's drum probability on (a) each neighbour clip's bank window decoded as is
(what the bank can give), (b) the latent stage's prediction decoded without the bank, (c) the generated
audio (prediction matched to bank frames); and the matching's path: how many jumps, the mean run of
consecutive bank frames, and the share of frames taken from neighbours whose window the judge hears
drums in. Grouped by whether the prompt asks for drums.

    python benchmarks/frame_bank_probe.py --model DIR --prompts /work/data/synth10k/val.jsonl --num-prompts 24
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from musiclm_pytorch.evaluation.guidance import load_prompts
from musiclm_pytorch.evaluation.judge import Judge
from musiclm_pytorch.lm import prior as prior_module
from musiclm_pytorch.pipeline import load_musiclm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--num-prompts", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--continuity", type=float, default=None, help="override the prior's jump cost")
    ap.add_argument("--out", default=None, help="JSON report path")
    args = ap.parse_args()
    torch.set_num_threads(2)

    model = load_musiclm(args.model)
    prior, codec, judge = model.prior, model.codec, Judge()
    if prior is None or not prior.has_frames:
        raise SystemExit(f"{args.model}: its retrieval prior has no frame bank")
    if args.continuity is not None:
        prior.frame_continuity = args.continuity
    prompts = load_prompts(args.prompts, args.num_prompts, seed=args.seed)

    captured: dict[str, Any] = {}
    select_units = prior_module.select_units

    def spy_select(cost: torch.Tensor, run: int, jump: float) -> torch.Tensor:
        captured["path"] = select_units(cost, run, jump)
        return captured["path"]

    prior_module.select_units = spy_select  # type: ignore[assignment]
    match = model.match_frames

    def spy_match(text: torch.Tensor, predicted: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        captured["predicted"] = predicted.clone()
        return match(text, predicted, *a, **kw)

    model.match_frames = spy_match  # type: ignore[method-assign]

    def drum_prob(wav: torch.Tensor) -> float:
        return float(judge.predict(wav.float().numpy(), codec.sample_rate)["drums_prob"])

    rows = []
    for i, p in enumerate(prompts):
        captured.clear()
        out = model.generate([p["text"]], seconds=args.seconds, generator=torch.Generator().manual_seed(args.seed + i))
        text = model.text_condition([p["text"]]).text
        idx = prior.neighbours(text)[0]  # [K]
        f = prior.frame_codes.shape[1]
        window_p = []
        for j in idx.tolist():
            lat = codec.latents_from_codes(prior.frame_codes[j].long().T[None]).float()  # [1, F, L]
            window_p.append(drum_prob(codec.decode_latents(lat)[0, 0]))
        row: dict[str, Any] = {
            "text": p["text"],
            "drums_asked": p["tags"].get("drums"),
            "neighbour_window_drums_prob": window_p,
            "prediction_drums_prob": drum_prob(codec.decode_latents(captured["predicted"].float())[0, 0]),
            "generated_drums_prob": drum_prob(out.wavs[0]),
        }
        if "path" in captured:
            path = captured["path"][0]
            jumps = int((path[1:] != path[:-1] + 1).sum())
            clip = (path // f).tolist()
            drummed = [window_p[c] >= 0.5 for c in clip]
            row.update(jumps=jumps, mean_run=len(path) / (jumps + 1), share_from_drum_windows=float(np.mean(drummed)))
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "text"}))

    summary: dict[str, Any] = {}
    for asked in (True, False):
        group = [r for r in rows if r["drums_asked"] is asked]
        if not group:
            continue
        s = {
            "n": len(group),
            "neighbour_windows_with_drums": float(
                np.mean([np.mean([q >= 0.5 for q in r["neighbour_window_drums_prob"]]) for r in group])
            ),  # fmt: skip
            "prediction_heard_drums": float(np.mean([r["prediction_drums_prob"] >= 0.5 for r in group])),
            "generated_heard_drums": float(np.mean([r["generated_drums_prob"] >= 0.5 for r in group])),
        }
        if "jumps" in group[0]:
            s.update(mean_jumps=float(np.mean([r["jumps"] for r in group])),
                     mean_run=float(np.mean([r["mean_run"] for r in group])),
                     share_from_drum_windows=float(np.mean([r["share_from_drum_windows"] for r in group])))  # fmt: skip
        summary[f"drums_asked_{asked}"] = s
    report = {"model": args.model, "num_prompts": len(rows), "seed": args.seed, "continuity": prior.frame_continuity,
              "summary": summary, "rows": rows}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()

"""Why the latent stage's reed and pipe are heard as other families: the judge's timbre features, stage against truth.

Validation clips of the given families, their true semantic ids; the shipped stage with the caption's conditioning
(through the prior), with the clip's own audio latent, with guidance 6, and with the beat grid, the movement gain or
the drums label taken away; the judge's family and its loudness rise / fall features (the mean positive and negative
frame-to-frame change of the RMS envelope over its mean) and the mean MFCC standard deviation over time (coefficients
1-9) of each version, beside the codec's 16-level round trip:

    python benchmarks/wind_envelope_probe.py --clips 24 --fams pipe reed
"""

from __future__ import annotations

import argparse
import collections

import torch
from family_loss_probe import true_latents, validation_clips

from musiclm_pytorch.evaluation.judge import Judge, extract


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--fams", nargs="+", default=["pipe", "reed"])
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ns = argparse.Namespace(model=None, tokens=args.tokens, data=args.data, threads=args.threads)
    model, val, matched = validation_clips(ns, 100_000)
    chosen = [(it, r) for it, r in zip(val, matched) if r["tags"]["family"] in args.fams][: args.clips]
    items, rows = [c[0] for c in chosen], [c[1] for c in chosen]
    stage = model.acoustic_lm
    assert stage is not None
    scale = model.guidance(None)[1]
    judge = Judge()
    texts = [r.get("full_caption") or r["caption"] for r in rows]
    cond = model.text_condition(texts).acoustic
    own = torch.stack([it["mulan"].float() for it in items])
    res: dict[str, dict] = collections.defaultdict(lambda: {"family": 0, "rise": [], "fall": [], "mfcc_std": [],
                                                            "heard": collections.Counter()})  # fmt: skip
    with torch.no_grad():
        for i in range(0, len(items), 12):
            part = items[i : i + 12]
            sem = torch.stack([it["semantic"].long() for it in part])
            c = cond[i : i + 12]
            rhythm = model.acoustic_beat(sem, None, c, source="ids")
            beat, drums = rhythm["beat"], rhythm["drums"]
            no_grid = beat.clone()
            no_grid[:, 0] = 0
            own_rhythm = model.acoustic_beat(sem, None, own[i : i + 12], source="ids")
            no_gain = stage._predict(sem, c, frames=None, cfg_scale=scale, beat=beat, drums=drums)
            made = {
                "shipped (caption)": stage.scale_movement(no_gain),  # what generate returns
                "own audio latent": stage.generate(sem, own[i : i + 12], cfg_scale=scale, beat=own_rhythm["beat"],
                                                   drums=own_rhythm["drums"]),
                "guidance 6": stage.generate(sem, c, cfg_scale=6.0, beat=beat, drums=drums),
                "no movement gain": no_gain,
                "no beat grid": stage.generate(sem, c, cfg_scale=scale, beat=no_grid, drums=drums),
                "drums label 0": stage.generate(sem, c, cfg_scale=scale, beat=beat, drums=torch.zeros_like(drums)),
            }  # fmt: skip
            made["codec round trip"] = true_latents(model, part, made["shipped (caption)"].shape[1])
            for name, lat in made.items():
                for w, row in zip(model.codec.decode_latents(lat)[:, 0], rows[i : i + 12]):  # type: ignore[attr-defined]
                    feats = extract(w.numpy(), model.sample_rate)
                    heard = judge.predict_features(feats)["family"]
                    timbre = feats["timbre_features"]
                    r = res[name]
                    r["family"] += heard == row["tags"]["family"]
                    r["heard"][heard] += 1
                    r["rise"].append(timbre[52])
                    r["fall"].append(timbre[53])
                    r["mfcc_std"].append(sum(timbre[21:30]) / 9)
    for name, r in res.items():
        n = len(r["rise"])
        print(f"{name:20s} family {r['family']}/{n}  rise {sum(r['rise']) / n:.4f}  fall {sum(r['fall']) / n:.4f}  "
              f"MFCC std 1-9 {sum(r['mfcc_std']) / n:.2f}  heard {dict(r['heard'].most_common(4))}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Which of the judge's timbre features cost the latent stage the instrument? A feature swap on the acoustic oracle.

The judge's family is a linear model over 54 timbre features (``evaluation.judge.timbre_features``: MFCC means and
standard deviations over time, spectral contrast, centroid, bandwidth, rolloff, flatness, zero crossings, and the
loudness envelope's mean rise and fall). For validation clips (the first ``--per-family`` of each family), the shipped
stage's output from the true semantic ids and the caption's conditioning through the shipped prior, and the codec's
round trip of the clip (the ceiling), are decoded and their features extracted once (cached in ``--cache``). Then, with
no further audio, each group of features of the stage's output is replaced by the round trip's and the judge asked
again: the family accuracy each swap gives says which part of the timbre the stage loses, per family.

    python benchmarks/family_feature_swap.py --per-family 12 --cache /work/runs/feature_swap.npz \
        --out benchmarks/results/family_feature_swap_val144.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from family_loss_probe import first_per_family, true_latents, validation_clips

from musiclm_pytorch.evaluation.judge import Judge, extract

GROUPS = {
    "mfcc_mean_0": [0], "mfcc_mean_1-4": list(range(1, 5)), "mfcc_mean_5-19": list(range(5, 20)),
    "mfcc_std_0": [20], "mfcc_std_1-4": list(range(21, 25)), "mfcc_std_5-19": list(range(25, 40)),
    "contrast": list(range(40, 47)), "centroid/bandwidth/rolloff": [47, 48, 49], "flatness/zcr": [50, 51],
    "loudness rise/fall": [52, 53],
}  # fmt: skip


def features(args: argparse.Namespace) -> dict[str, np.ndarray]:
    ns = argparse.Namespace(model=None, tokens=args.tokens, data=args.data, threads=args.threads)
    model, val, matched = validation_clips(ns, 100_000)
    items, rows, _ = first_per_family(val, matched, args.per_family)
    stage = model.acoustic_lm
    assert stage is not None
    scale = model.guidance(None)[1]
    cond = model.text_condition([r.get("full_caption") or r["caption"] for r in rows]).acoustic
    out: dict[str, list] = {"stage": [], "ceiling": []}
    with torch.no_grad():
        for i in range(0, len(items), 16):
            part = items[i : i + 16]
            sem = torch.stack([it["semantic"].long() for it in part])
            c = cond[i : i + 16]
            rhythm = model.acoustic_beat(sem, None, c, source="ids")
            made = {"stage": stage.generate(sem, c, cfg_scale=scale, beat=rhythm["beat"], drums=rhythm["drums"])}
            made["ceiling"] = true_latents(model, part, made["stage"].shape[1])
            for name, lat in made.items():
                for w in model.codec.decode_latents(lat)[:, 0]:  # type: ignore[attr-defined]
                    out[name].append(extract(w.numpy(), model.sample_rate)["timbre_features"])
            print(i + len(part), "clips", flush=True)
    return {"stage": np.asarray(out["stage"]), "ceiling": np.asarray(out["ceiling"]),
            "family": np.asarray([r["tags"]["family"] for r in rows])}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-family", type=int, default=12)
    ap.add_argument("--cache", required=True, help=".npz of the extracted features (made if missing)")
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cache = Path(args.cache)
    if not cache.is_file():
        np.savez(cache, **features(args))
    d = np.load(cache)
    stage, ceiling, fam = d["stage"], d["ceiling"], d["family"]
    model = Judge().family

    def acc(x: np.ndarray) -> tuple[float, dict[str, float]]:
        pred = np.asarray(model.classes)[model.proba(x).argmax(1)]
        per = {f: float((pred[fam == f] == f).mean()) for f in sorted(set(fam))}
        return float((pred == fam).mean()), per

    report: dict[str, dict] = {}
    for name, x in (("stage", stage), ("ceiling", ceiling)):
        report[name] = dict(zip(("family", "per_family"), acc(x)))
    for group, cols in GROUPS.items():
        x = stage.copy()
        x[:, cols] = ceiling[:, cols]
        report[f"stage, {group} from the ceiling"] = dict(zip(("family", "per_family"), acc(x)))
        x = ceiling.copy()
        x[:, cols] = stage[:, cols]
        report[f"ceiling, {group} from the stage"] = dict(zip(("family", "per_family"), acc(x)))
    z = (stage - ceiling) / model.scale  # the stage's offset in the judge's standardisation
    report["offset_sd_per_group"] = {g: round(float(np.abs(z[:, c]).mean()), 2) for g, c in GROUPS.items()}
    Path(args.out).write_text(json.dumps(report, indent=1))
    for k, v in report.items():
        if "family" in v:
            print(f"{k:48s} {v['family']:.3f}  " + " ".join(f"{f[:5]} {a:.2f}" for f, a in v["per_family"].items()))
    print(report["offset_sd_per_group"])


if __name__ == "__main__":
    main()

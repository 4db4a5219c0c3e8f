"""Which of the judge's timbre features lose the instrument: a feature transplant on the acoustic oracle.

The judge names a clip's instrument family with a linear classifier over 54 timbre features of its harmonic
part (``musiclm_pytorch.evaluation.judge.timbre_features``): 20 MFCC means (the spectral envelope), 20 MFCC
standard deviations over time (its movement), 7 spectral-contrast bands (how far partials stand above the floor
between them), centroid, bandwidth, rolloff, flatness, zero crossings, and the loudness envelope's rise and fall
(attacks and decays). For validation clips with their *true* semantic ids and the caption's conditioning (as
``family_loss_probe.py``: the shipped latent stage and guidance, its grid from the ids), this probe extracts those
features from the stage's audio, the codec round trip and the real clip, and scores the judge's family with one
group of the stage's features replaced by the round trip's or the real clip's (``transplant``), and with every
group but one replaced (``all_but``): the group whose transplant recovers most is where the stage loses it. It
also reports each group's mean standardised distance (the judge's own feature scaling) from the round trip, and
which families the judge hears in the stage's audio. ``--alphas`` repeats the stage's part with its movement gain
(``LatentAcousticLM.set_movement_gain``) raised to each power (0: none), with each group's mean signed standardised
difference from the round trip (negative: the stage's value is lower).

    python benchmarks/family_feature_probe.py --tokens /work/runs/tokens_spec --data /work/data/synth10k \
        --clips 96 --out benchmarks/results/family_feature_probe_val96.json
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from family_loss_probe import oracle_args, predict, true_latents, validation_clips  # benchmarks/ is on the path

from musiclm_pytorch.audio import load_audio
from musiclm_pytorch.evaluation.judge import Judge, extract

GROUPS = {"mfcc_mean": range(0, 20), "mfcc_std": range(20, 40), "contrast": range(40, 47), "centroid": [47],
          "bandwidth": [48], "rolloff": [49], "flatness": [50], "zero_crossings": [51],
          "attack_decay": [52, 53]}  # fmt: skip


def family_accuracy(judge: Judge, feats: np.ndarray, truth: list[str]) -> float:
    probs = judge.family.proba(feats)
    return float(np.mean([judge.family.classes[int(p.argmax())] == t for p, t in zip(probs, truth)]))


def main() -> None:
    ap = oracle_args(__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alphas", type=float, nargs="*", default=None,
                    help="powers of the stage's movement gain to compare (default: the stage as it is)")  # fmt: skip
    ap.add_argument("--bands", type=float, nargs="*", default=None,
                    help="also the movement gain fitted per modulation band (these inner edges in Hz) on 256 training "
                    "clips, for each nonzero alpha")  # fmt: skip
    args = ap.parse_args()
    model, val, matched = validation_clips(args, args.clips)
    scale = model.guidance(None)[1]
    val = [it for it, r in zip(val, matched) if "family" in r["tags"]]
    matched = [r for r in matched if "family" in r["tags"]]
    truth = [r["tags"]["family"] for r in matched]
    texts = [r.get("full_caption") or r["caption"] for r in matched]
    cond = model.text_condition(texts).acoustic
    judge = Judge()
    stage = model.acoustic_lm
    alphas = [stage.movement_gain_alpha] if args.alphas is None else args.alphas  # type: ignore[union-attr]
    raw = None
    if stage.movement_gain is not None and stage.movement_gain.ndim == 1:  # type: ignore[union-attr]
        raw = stage.movement_gain.double() ** (1 / stage.movement_gain_alpha)  # type: ignore[union-attr]
    # each version: (name, gain already raised to its power or None, modulation band edges)
    settings: list[tuple[str, torch.Tensor | None, list[float]]] = []
    for alpha in alphas:
        if alpha and raw is None:
            raise ValueError("--alphas: the model's latent stage has no movement gain (one per dimension) to raise")
        settings.append((f"stage_a{alpha:g}", None if not alpha else raw**alpha, []))
    if args.bands:
        train = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"][:256]
        for alpha in [a for a in alphas if a]:
            model.fit_movement_gain(train, alpha=alpha, bands_hz=args.bands)
            settings.append((f"bands_a{alpha:g}", stage.movement_gain.clone(), stage.movement_bands))  # type: ignore
    names = [n for n, _, _ in settings]
    feats: dict[str, list[list[float]]] = {**{n: [] for n in names}, "codec": [], "real": []}
    for i in range(0, len(val), 16):
        part = val[i : i + 16]
        made = {}
        for name, gain, bands in settings:
            stage.set_movement_gain(gain, 1.0, bands=bands or None)  # type: ignore[union-attr]
            made[name] = predict(model, part, cond[i : i + 16], scale)
        made["codec"] = true_latents(model, part, made[names[0]].shape[1])
        for name, latents in made.items():
            for w in model.codec.decode_latents(latents)[:, 0]:  # type: ignore[attr-defined]
                feats[name].append(extract(w.numpy(), model.sample_rate)["timbre_features"])
        n = model.codec.decode_latents(made["codec"][:1]).shape[-1]  # type: ignore[attr-defined]
        for r in matched[i : i + 16]:
            y = load_audio(r["path"], sample_rate=model.sample_rate)[0][:n]
            feats["real"].append(extract(y.numpy(), model.sample_rate)["timbre_features"])
        print(f"{i + len(part)} / {len(val)} clips", flush=True)
    f = {k: np.asarray(v) for k, v in feats.items()}
    report: dict[str, Any] = {"clips": len(val), "cfg_scale": scale,
                              "family": {k: family_accuracy(judge, v, truth) for k, v in f.items()},
                              "families_heard": {k: dict(Counter(judge.family.classes[int(p.argmax())]
                                                                 for p in judge.family.proba(v)).most_common())
                                                 for k, v in f.items()},
                              "families_asked": dict(Counter(truth).most_common()),
                              "transplant": {}, "all_but": {}, "distance_from_codec": {},
                              "signed_difference_from_codec": {}}  # fmt: skip
    for name in names:
        for key in ("transplant", "all_but", "distance_from_codec", "signed_difference_from_codec"):
            report[key][name] = {}
        for source in ("codec", "real"):
            report["transplant"][name][source], report["all_but"][name][source] = {}, {}
            for group, idx in GROUPS.items():
                idx = list(idx)
                one = f[name].copy()
                one[:, idx] = f[source][:, idx]
                rest = f[source].copy()
                rest[:, idx] = f[name][:, idx]
                report["transplant"][name][source][group] = family_accuracy(judge, one, truth)
                report["all_but"][name][source][group] = family_accuracy(judge, rest, truth)
        for group, idx in GROUPS.items():
            idx = list(idx)
            d = (f[name][:, idx] - f["codec"][:, idx]) / judge.family.scale[idx]
            report["distance_from_codec"][name][group] = float(np.abs(d).mean())
            report["signed_difference_from_codec"][name][group] = float(d.mean())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

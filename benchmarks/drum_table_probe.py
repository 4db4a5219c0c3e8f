"""Acoustic oracle: the latent stage's drums row of its beat table scaled up, on drum and drumless clips.

The beat table holds the mean residual per (drums label, beat-phase bin) over training clips, so, like the rest of
a mean regression, it is smaller than any one clip's hits. This probe scales the drums row (label 1) by each ``k``
(the drumless and unknown rows as they are) and scores the judge on validation clips with their *true* semantic
ids and the caption's conditioning (as ``family_loss_probe.py``), 40 that ask for drums and 40 that do not, among
the first 200.

    python benchmarks/drum_table_probe.py --tokens /work/runs/tokens_spec --data /work/data/synth10k --scales 1 2 \
        --out benchmarks/results/drum_table_probe_val80.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from family_loss_probe import oracle_args, predict, validation_clips  # benchmarks/ is on the path

from musiclm_pytorch.evaluation.judge import Judge, accuracy, score


def main() -> None:
    ap = oracle_args(__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--pool", type=int, default=200, help="choose among the first POOL validation clips")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--whole-table", action="store_true", help="scale every row (drumless and unknown too)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    model, val, matched = validation_clips(args, args.pool)
    stage, scale = model.acoustic_lm, model.guidance(None)[1]
    chosen = [i for i, r in enumerate(matched) if r["tags"].get("drums") is True][: args.per_class]
    chosen += [i for i, r in enumerate(matched) if r["tags"].get("drums") is False][: args.per_class]
    items, tags = [val[i] for i in chosen], [matched[i]["tags"] for i in chosen]
    cond = model.text_condition([matched[i].get("full_caption") or matched[i]["caption"] for i in chosen]).acoustic
    table = stage.beat_table.detach().clone()  # type: ignore[union-attr]
    judge = Judge()
    report: dict[str, dict[str, float]] = {}
    for k in args.scales:
        with torch.no_grad():
            stage.beat_table.copy_(table)  # type: ignore[union-attr]
            rows_scaled = stage.beat_table if args.whole_table else stage.beat_table[1]  # type: ignore[union-attr]
            rows_scaled.mul_(k)
        scores = []
        for i in range(0, len(items), 16):
            latents = predict(model, items[i : i + 16], cond[i : i + 16], scale)
            for w, t in zip(model.codec.decode_latents(latents)[:, 0], tags[i : i + 16]):  # type: ignore[attr-defined]
                scores.append(score(judge.predict(w.numpy(), model.sample_rate), t))
        acc = accuracy(scores)
        kept = ("drums_yes", "drums_no", "drums_balanced", "family", "key_tonic", "tempo_class")
        report[f"{k:g}"] = {a: acc[a]["accuracy"] for a in kept if a in acc}
        print(k, report[f"{k:g}"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"clips": len(items), "cfg_scale": scale, "scales": report}, indent=1))


if __name__ == "__main__":
    main()

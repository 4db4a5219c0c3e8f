"""Where the latent stage loses the instrument: its clip mean, or its movement over time?

The judge hears the caption's instrument family in 0.65 of real test clips and in 0.59 of their codec round
trips, but in only 0.35 of the latent stage's renders of the clips' *true* semantic ids (RESULTS.md, the acoustic
oracle): the stage, not the semantic LM, loses most of it. The stage regresses the conditional mean of each
frame's latent, so two things can go: the clip's mean spectrum (the instrument's colour, which the conditioning
should carry) and the frames' movement around it (attacks, decays, vibrato: the mean of many possible movements
is a flatter one). This probe renders, for validation clips with their true ids, the stage's prediction ``P``
and three repairs of it made with the clip's *true* latents ``X`` (codec frames), and judges each:

- ``mean``: ``P - mean_t(P) + mean_t(X)``, the true clip-mean latent, the prediction's movement;
- ``movement``: ``mean_t(P) + (P - mean_t(P)) * std_t(X) / std_t(P)`` per latent dimension, the prediction's mean
  with the true amount of movement (the prediction's own shape of it);
- ``both``; and ``movement_fixed``: the movement scaled by one ratio per latent dimension fitted on training clips
  (the median over them of ``std_t(X) / std_t(P)``), a repair generation can apply without the true latents.

Conditioning: the clip's own MuLaN audio latent (``own``) and what generation gives from the caption
(``MusicLM.text_condition``: the retrieval prior's neighbours, ``text``), the shipped guidance scale.

    python benchmarks/family_loss_probe.py --tokens /work/runs/tokens_spec --data /work/data/synth10k --clips 96 \
        --out benchmarks/results/family_loss_probe_val96.json
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

import torch

from musiclm_pytorch import MusicLM
from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.judge import Judge, accuracy, score


@torch.no_grad()
def predict(model: MusicLM, items: list[dict[str, Any]], cond: torch.Tensor, scale: float) -> torch.Tensor:
    """The stage's latents ``[B, T, L]`` for the items' true ids with conditioning ``cond [B, C]``, its beat grid
    from the ids and its drums label read from ``cond``, as the oracle gives them."""
    stage = model.acoustic_lm
    semantic = torch.stack([it["semantic"].long() for it in items])
    rhythm = model.acoustic_beat(semantic, None, cond, source="ids")
    return stage.generate(semantic, cond, cfg_scale=scale, generator=torch.Generator().manual_seed(0),
                          beat=rhythm.get("beat"), drums=rhythm.get("drums"))  # fmt: skip


def true_latents(model: MusicLM, items: list[dict[str, Any]], frames: int) -> torch.Tensor:
    codes = torch.stack([it["codes"][:, :frames].long() for it in items])
    return model.codec.latents_from_codes(codes)  # type: ignore[attr-defined]


def oracle_args(description: str) -> argparse.ArgumentParser:
    """The arguments the acoustic-oracle probes share: model, tokens, corpus, threads, output."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--tokens", required=True, help="tokens folder (train.pt, val.pt) made with the model's codec")
    ap.add_argument("--data", required=True, help="the corpus folder the tokens were made from (its val.jsonl)")
    ap.add_argument("--out", required=True)
    return ap


def validation_clips(
    args: argparse.Namespace, count: int
) -> tuple[MusicLM, list[dict[str, Any]], list[dict[str, Any]]]:
    """``(model, items, rows)``: the model (``args.threads`` threads), the first ``count`` tokenized validation clips
    and each one's manifest row (tags, captions), matched by the audio path."""
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model) if args.model else MusicLM.from_pretrained()
    rows, _ = manifest_rows(Path(args.data) / "val.jsonl", require_caption=False)
    by_path = {str(Path(r["path"]).resolve()): r for r in rows}
    val = torch.load(Path(args.tokens) / "val.pt", weights_only=False)["items"][:count]
    return model, val, [by_path[str(Path(it["path"]).resolve())] for it in val]


def first_per_family(
    items: list[dict[str, Any]], rows: list[dict[str, Any]], per_family: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], collections.Counter]:
    """``(items, rows, clips per family)``: the first ``per_family`` clips of each family, in their order."""
    count: collections.Counter = collections.Counter()
    kept = []
    for it, r in zip(items, rows):
        if count[r["tags"]["family"]] < per_family:
            count[r["tags"]["family"]] += 1
            kept.append((it, r))
    return [k[0] for k in kept], [k[1] for k in kept], count


def main() -> None:
    ap = oracle_args(__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--fit-clips", type=int, default=256, help="training clips for movement_fixed's ratios")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model, val, matched = validation_clips(args, args.clips)
    scale = model.guidance(None)[1]
    train = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"][: args.fit_clips]
    tags = [r["tags"] for r in matched]
    texts = [r.get("full_caption") or r["caption"] for r in matched]

    # movement ratios per latent dimension, fitted on training clips (own conditioning, as training saw them)
    ratios = []
    for i in range(0, len(train), 16):
        part = train[i : i + 16]
        p = predict(model, part, torch.stack([it["mulan"].float() for it in part]), scale)
        x = true_latents(model, part, p.shape[1])
        ratios.append(x.std(1) / p.std(1).clamp_min(1e-6))
    fixed = torch.cat(ratios).median(0).values  # [L]

    judge = Judge()
    conds = {"own": torch.stack([it["mulan"].float() for it in val]), "text": model.text_condition(texts).acoustic}
    report: dict[str, Any] = {"clips": len(val), "cfg_scale": scale, "movement_ratio_fixed": fixed.tolist(),
                              "versions": {}}  # fmt: skip
    versions: dict[str, list[dict[str, bool]]] = {}
    std_ratio: dict[str, list[float]] = {}
    for i in range(0, len(val), 16):
        part, part_tags = val[i : i + 16], tags[i : i + 16]
        made: dict[str, torch.Tensor] = {}
        x = None
        for name, cond in conds.items():
            p = predict(model, part, cond[i : i + 16], scale)
            x = true_latents(model, part, p.shape[1]) if x is None else x
            pm, xm = p.mean(1, keepdim=True), x.mean(1, keepdim=True)
            gain = x.std(1, keepdim=True) / p.std(1, keepdim=True).clamp_min(1e-6)
            made[f"{name}_prediction"] = p
            made[f"{name}_mean"] = p - pm + xm
            made[f"{name}_movement"] = pm + (p - pm) * gain
            made[f"{name}_both"] = xm + (p - pm) * gain
            made[f"{name}_movement_fixed"] = pm + (p - pm) * fixed
            std_ratio.setdefault(name, []).extend((p.std(1) / x.std(1).clamp_min(1e-6)).mean(1).tolist())
        assert x is not None
        made["codec_ceiling"] = x
        for name, latents in made.items():
            wavs = model.codec.decode_latents(latents)[:, 0]  # type: ignore[attr-defined]
            for w, t in zip(wavs, part_tags):
                versions.setdefault(name, []).append(score(judge.predict(w.numpy(), model.sample_rate), t))
        print(f"{i + len(part)} / {len(val)} clips", flush=True)
    for name, scores in versions.items():
        kept = ("family", "key_tonic", "tempo_class", "drums_balanced", "drums")
        report["versions"][name] = {k: v["accuracy"] for k, v in accuracy(scores).items() if k in kept}
    report["prediction_std_over_true"] = {k: round(sum(v) / len(v), 4) for k, v in std_ratio.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "movement_ratio_fixed"}, indent=1))


if __name__ == "__main__":
    main()

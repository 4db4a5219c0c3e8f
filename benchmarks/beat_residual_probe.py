"""Where the latent stage loses the drums: the residual it leaves, by beat phase and drums label.

The latent acoustic stage regresses the codec latents, so it predicts their conditional mean: a drum hit
whose frame it cannot pin down is averaged away. If the hits sit at a fixed phase of the beat grid that the
ids imply (``semantic.beat.grid_of_ids``, the grid the semantic LM reads), the residual the stage leaves
(true latents - prediction), averaged per (drums label, beat-phase bin), holds the missing transients.

This probe measures, on the training tokens, that table; on validation clips, how much of the residual it
explains (frame L1), and renders the stage's prediction with and without the table added for clips with and
without drums (true ids, the clip's own audio latent as conditioning), judged by the independent judge.

    python benchmarks/beat_residual_probe.py --model MODEL_WITH_A_STAGE_WITHOUT_BEAT \
        --tokens /work/runs/tokens_spec --manifest /work/data/synth10k/val.jsonl --train-clips 800 --clips 96
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musiclm_pytorch.evaluation.judge import Judge, score
from musiclm_pytorch.pipeline import load_musiclm
from musiclm_pytorch.semantic.beat import grid_of_ids


def phase_bins(frames: int, ratio: int, period: float, phase: float, bins: int, beats: int) -> torch.Tensor:
    """``[frames]`` bin of each codec frame's position in a cycle of ``beats`` beats (``bins`` per cycle)."""
    t = torch.arange(frames, dtype=torch.float64) / ratio  # in semantic frames
    u = ((t - phase) / period) % beats / beats
    return (u * bins).long().clamp(max=bins - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--manifest", required=True, help="the validation manifest (tags of the val tokens' clips)")
    ap.add_argument("--train-clips", type=int, default=800)
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--beats", type=int, default=1, help="cycle length in beats (1: per beat; 4: a bar of 4)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--centered", action="store_true", help="add only the phase-varying part of the table")
    ap.add_argument("--cfg-scale", type=float, default=3.0)
    ap.add_argument("--out", default="benchmarks/results/beat_residual_probe.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    m = load_musiclm(args.model)
    stage, codec, tok = m.acoustic_lm.float().eval(), m.codec.eval(), m.semantic_tokenizer
    if getattr(stage, "beat_bins", 0):
        raise SystemExit(
            "this probe measures what a stage that reads no beat leaves: give a model whose latent stage "
            "has no beat_bins (the one shipped before: git show 9240bd6:src/musiclm_pytorch/pretrained/"
            "musiclm_small/acoustic_lm.safetensors)"
        )
    reader = m.control_reader()
    ratio = stage.ratio
    root = Path(args.tokens)

    def residuals(items: list[dict], desc: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, tuple]]:
        out = []
        for i in tqdm(range(0, len(items), 16), desc=desc):
            part = items[i : i + 16]
            sem = torch.stack([it["semantic"].long() for it in part])
            lat = torch.stack([it["mulan"].float() for it in part])
            codes = torch.stack([it["codes"].long() for it in part])
            with torch.no_grad():
                true = codec.latents_from_codes(codes)
                pred = stage.generate(sem, lat, frames=true.shape[1], cfg_scale=args.cfg_scale)
            drums = reader.read(lat)[:, 1]
            for j, it in enumerate(part):
                grid = grid_of_ids(tok, it["semantic"])
                out.append((true[j], pred[j], sem[j], int(drums[j]), grid))
        return out

    train = torch.load(root / "train.pt", weights_only=False)["items"][: args.train_clips]
    fitted = residuals(train, "train residuals")
    dim = fitted[0][0].shape[-1]
    sums = torch.zeros(2, args.bins, dim)
    counts = torch.zeros(2, args.bins)
    for true, pred, _, drums, (period, phase) in fitted:
        b = phase_bins(len(true), ratio, period, phase, args.bins, args.beats)
        sums[drums].index_add_(0, b, (true - pred).float())
        counts[drums] += torch.bincount(b, minlength=args.bins).float()
    table = sums / counts.clamp(min=1)[..., None]
    if args.centered:  # only what varies with the beat phase: each label's constant shift removed
        table = table - (sums.sum(1) / counts.sum(1).clamp(min=1)[..., None])[:, None]
    # the table's spread over phase (what varies with the beat) against its mean over phase (a constant shift)
    spread = (table - table.mean(1, keepdim=True)).norm(dim=-1).mean(1)
    basis = codec.basis.float()  # [F, L]: latent -> log-magnitude deviation
    # log-magnitude of each bin's table row, summed over the top half of the spectrum (broadband transients)
    logmag = table @ basis.T  # [2, bins, F]
    upper = logmag[..., logmag.shape[-1] // 2 :].mean(-1)

    val = torch.load(root / "val.pt", weights_only=False)["items"]
    rows = {Path(json.loads(line)["path"]).stem: json.loads(line) for line in open(args.manifest)}
    val = [it for it in val if Path(it["path"]).stem in rows]
    yes = [it for it in val if rows[Path(it["path"]).stem]["tags"]["drums"]][: args.clips // 2]
    no = [it for it in val if not rows[Path(it["path"]).stem]["tags"]["drums"]][: args.clips - len(yes)]
    chosen = yes + no
    held = residuals(chosen, "val residuals")
    l1 = {"prediction": 0.0, **{f"table_x{s:g}": 0.0 for s in args.scales}}
    judge = Judge()
    names = ["codec_ceiling", "prediction", *[f"table_x{s:g}" for s in args.scales]]
    judged: dict[str, list[dict]] = {k: [] for k in names}
    for it, (true, pred, _, drums, (period, phase)) in zip(tqdm(chosen, desc="render + judge"), held):
        b = phase_bins(len(true), ratio, period, phase, args.bins, args.beats)
        tags = rows[Path(it["path"]).stem]["tags"]
        intended = {"drums": bool(tags["drums"])}
        versions = {"codec_ceiling": true, "prediction": pred}
        l1["prediction"] += float((true - pred).abs().mean())
        for s in args.scales:
            versions[f"table_x{s:g}"] = pred + s * table[drums][b]
            l1[f"table_x{s:g}"] += float((true - versions[f"table_x{s:g}"]).abs().mean())
        for name, lat in versions.items():
            with torch.no_grad():
                audio = codec.decode_latents(lat[None].float())[0, 0].numpy()
            judged[name].append(score(judge.predict(audio, codec.sample_rate), intended))
    report = {
        "args": vars(args),
        "train_clips": len(fitted),
        "drums_label_share_train": float(np.mean([f[3] for f in fitted])),
        "table_phase_spread": {"no_drums": float(spread[0]), "drums": float(spread[1])},
        "table_upper_band_logmag_by_bin": {
            "no_drums": [round(float(x), 3) for x in upper[0]],
            "drums": [round(float(x), 3) for x in upper[1]],
        },
        "val_clips": len(chosen),
        "val_drum_clips": len(yes),
        "val_frame_l1": {k: round(v / len(chosen), 4) for k, v in l1.items()},
        "judge": {},
    }
    asked = [i < len(yes) for i in range(len(chosen))]
    for name, scores in judged.items():
        y = [s["drums"] for s, a in zip(scores, asked) if a]
        n = [s["drums"] for s, a in zip(scores, asked) if not a]
        report["judge"][name] = {
            "drums_where_asked": round(float(np.mean(y)), 3),
            "none_where_not": round(float(np.mean(n)), 3),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "args"}, indent=1))


if __name__ == "__main__":
    main()

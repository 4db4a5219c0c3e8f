"""How well does the retrieval prior's tempo match what a caption asks for? (sixteenth/seventeenth sessions)

A beat-reading semantic LM gets its tempo from the text when it names a BPM, else from the retrieval
prior: the beat periods of the caption's nearest training clips. This scores ways of pooling those
periods against the validation clips' tags (the tempo each was rendered at): the tempo class (slow /
medium / fast), and the BPM within 4 % (exact, and allowing an octave). It also says how often each
training clip's period read from its own ids (what `train retrieval-prior --beat-from` keeps) sits at the
rendered tempo, at twice it, or at half.

    python benchmarks/prior_tempo.py --model /work/runs/model_beat --tokens /work/runs/tokens_spec \\
        --train-manifest /work/data/synth10k/train.jsonl --val-manifest /work/data/synth10k/val.jsonl \\
        --out benchmarks/results/prior_tempo_val400.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.data.tags import tempo_class
from musiclm_pytorch.pipeline import MusicLM


def scores(estimate: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Tempo class agreement and BPM within 4 % (exact, any octave) of ``estimate [N]`` against ``truth [N]``."""
    est, tru = estimate.tolist(), truth.tolist()
    n = len(tru)
    return {
        "class": round(sum(tempo_class(e) == tempo_class(t) for e, t in zip(est, tru)) / n, 3),
        "within_4pct": round(sum(abs(e - t) <= 0.04 * t for e, t in zip(est, tru)) / n, 3),
        "within_4pct_any_octave": round(
            sum(any(abs(e - f * t) <= 0.04 * f * t for f in (0.5, 1, 2)) for e, t in zip(est, tru)) / n, 3
        ),
    }


def class_vote(bpm: torch.Tensor) -> torch.Tensor:
    """Per row of neighbour BPMs ``[B, K]``: the median BPM of the tempo class most neighbours share."""
    out = []
    for row in bpm.tolist():
        classes = [tempo_class(b) for b in row]
        win = max(set(classes), key=lambda c: (classes.count(c), -classes.index(c)))
        out.append(float(torch.tensor([b for b, c in zip(row, classes) if c == win]).median()))
    return torch.tensor(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model folder whose retrieval prior keeps beat periods")
    ap.add_argument("--tokens", type=Path, required=True, help="the tokens folder the prior was built from")
    ap.add_argument("--train-manifest", required=True, help="the manifest of those training clips (their tags)")
    ap.add_argument("--val-manifest", required=True, help="validation rows: captions and the tempo they ask for")
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ml = MusicLM.from_pretrained(args.model)
    prior = ml.prior
    if prior is None or not prior.has_beats:
        raise SystemExit(f"{args.model}: its retrieval prior keeps no beat periods (train retrieval-prior --beat-from)")
    rate = float(ml.semantic_tokenizer.frame_rate)
    val, _ = manifest_rows(args.val_manifest)
    val = val[: args.clips]
    texts = [r.get("full_caption") or r["captions"][0] for r in val]
    truth = torch.tensor([float(r["tags"]["tempo_bpm"]) for r in val])
    with torch.no_grad():
        text = torch.cat([ml.conditioner.mulan.get_text_latents(raw_texts=texts[i : i + 50])
                          for i in range(0, len(texts), 50)])  # fmt: skip
    items = torch.load(args.tokens / "train.pt", weights_only=False)["items"][: len(prior.periods)]
    rows, _ = manifest_rows(args.train_manifest, require_caption=False)
    by_path = {str(Path(r["path"]).resolve()): float(r["tags"]["tempo_bpm"]) for r in rows}
    bank_tags = torch.tensor([by_path[str(Path(it["path"]).resolve())] for it in items])
    bank_ids = 60 * rate / prior.periods
    ratio = bank_ids / bank_tags
    report: dict = {
        "val_clips": len(val),
        "bank_clips": len(items),
        "bank_ids_period_vs_rendered_tempo": {
            name: round(float(((ratio > lo) & (ratio < hi)).float().mean()), 3)
            for name, lo, hi in (("same", 0.96, 1.04), ("double", 1.92, 2.08), ("half", 0.48, 0.52))
        },
        "pooled": {},
    }
    sims = F.normalize(text, dim=-1) @ prior.latents.T
    for k in (8, 16, 32):
        near = sims.topk(k, dim=-1).indices
        ids_bpm, tag_bpm = bank_ids[near], bank_tags[near]
        report["pooled"][f"k{k}"] = {
            "ids_median_period": scores(60 * rate / prior.periods[near].median(1).values, truth),
            "ids_class_vote": scores(class_vote(ids_bpm), truth),
            "tags_median": scores(tag_bpm.median(1).values, truth),
            "tags_class_vote": scores(class_vote(tag_bpm), truth),
        }
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

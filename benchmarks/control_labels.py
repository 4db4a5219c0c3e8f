"""Can a text's key and drums reach the semantic LM as explicit labels? (eighteenth session)

A semantic LM could read the key (24 classes) and drums (yes / no) of its clip as labels, the way it reads the
beat grid. Trained from audio alone, the labels must come from the clip's audio: here MuLaN's zero-shot reading
of the clip's audio latent (prompt ensembles, as `eval mulan`). At generation they would come from the text:
the zero-shot reading of the retrieval prior's latent (the mean audio latent of the text's nearest training
clips), or a vote of those neighbours' own labels. This scores each source against the tags: the training
clips' labels against their rendered key and drums, and the generation-time labels against what validation
captions ask for.

    python benchmarks/control_labels.py --model src/musiclm_pytorch/pretrained/musiclm_small \\
        --tokens /work/runs/tokens_spec --train-manifest /work/data/synth10k/train.jsonl \\
        --val-manifest /work/data/synth10k/val_generated.jsonl --out benchmarks/results/control_labels_valgen400.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.data.tags import PITCH_CLASSES
from musiclm_pytorch.lm.controls import ControlReader, key_index
from musiclm_pytorch.pipeline import MusicLM


def accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return round(float((pred == truth).float().mean()), 3)


def summary(key: torch.Tensor, drums: torch.Tensor, true_key: torch.Tensor, true_drums: torch.Tensor) -> dict:
    return {
        "key": accuracy(key, true_key),
        "tonic": accuracy(key % 12, true_key % 12),
        "mode": accuracy(key // 12, true_key // 12),
        "drums": accuracy(drums, true_drums),
        "drums_where_asked": accuracy(drums[true_drums == 1], true_drums[true_drums == 1]),
    }


def vote(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Per row of neighbour labels ``[B, K]``: the most frequent (ties to the nearest neighbour's)."""
    counts = F.one_hot(labels, classes).float().sum(1) + 1e-3 * F.one_hot(labels[:, 0], classes).float()
    return counts.argmax(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=Path, required=True)
    ap.add_argument("--train-manifest", required=True)
    ap.add_argument("--val-manifest", required=True)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ml = MusicLM.from_pretrained(args.model)
    prior, mulan = ml.prior, ml.conditioner.mulan
    assert prior is not None
    reader = ControlReader.from_mulan(mulan)
    items = torch.load(args.tokens / "train.pt", weights_only=False)["items"]
    rows, _ = manifest_rows(args.train_manifest, require_caption=False)
    by_path = {str(Path(r["path"]).resolve()): r["tags"] for r in rows}
    tags = [by_path[str(Path(it["path"]).resolve())] for it in items]
    bank_latents = F.normalize(torch.stack([it["mulan"] for it in items]).float(), dim=-1)
    bank_key, bank_drums = reader.read(bank_latents).unbind(1)
    true_key = torch.tensor([key_index(t["tonic"], t["mode"]) for t in tags])
    true_drums = torch.tensor([int(bool(t["drums"])) for t in tags])
    report: dict = {"train_clips": len(items), "training_labels_vs_tags": summary(bank_key, bank_drums, true_key,
                                                                                 true_drums)}  # fmt: skip
    val, _ = manifest_rows(args.val_manifest)
    val = val[: args.clips]
    texts = [r.get("full_caption") or r["captions"][0] for r in val]
    v_key = torch.tensor([key_index(r["tags"]["tonic"], r["tags"]["mode"]) for r in val])
    v_drums = torch.tensor([int(bool(r["tags"]["drums"])) for r in val])
    with torch.no_grad():
        text = torch.cat([mulan.get_text_latents(raw_texts=texts[i : i + 50]) for i in range(0, len(texts), 50)])
    report["val_clips"] = len(val)
    report["text_latent_itself"] = summary(*reader.read(text).unbind(1), v_key, v_drums)
    # the bank of the shipped prior may be a subset / other order: use the tokens' own latents as the bank
    sims = F.normalize(text, dim=-1) @ bank_latents.T
    for k in (4, 8, 16):
        near = sims.topk(k, dim=-1).indices
        mean = F.normalize(bank_latents[near].mean(1), dim=-1)
        report[f"k{k}_mean_latent"] = summary(*reader.read(mean).unbind(1), v_key, v_drums)
        report[f"k{k}_vote_of_labels"] = summary(vote(bank_key[near], 24), vote(bank_drums[near], 2), v_key, v_drums)
        report[f"k{k}_vote_of_tags"] = summary(vote(true_key[near], 24), vote(true_drums[near], 2), v_key, v_drums)
    report["pitch_classes"] = list(PITCH_CLASSES)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

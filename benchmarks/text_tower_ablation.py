"""Which text tower should MuLaN use: the shipped MiniLM (frozen) or a transformer trained from scratch?

A controlled comparison at a cost this CPU can pay: the audio side is a trained MuLaN's audio tower,
frozen, so its latents are computed once per clip (whole clips) and cached. Each text tower is then
trained against those fixed audio latents with the same loss (multi-positive InfoNCE, learnable
temperature), batch, steps and schedule, on the training captions of the same clips, and scored on
held-out clips with held-out caption wordings: text -> audio retrieval with the full captions, and
zero-shot tagging with the prompt ensembles, exactly as ``musiclm eval mulan`` does.

    python benchmarks/text_tower_ablation.py \\
        --mulan src/musiclm_pytorch/pretrained/musiclm_small/conditioning.safetensors \\
        --data /work/data/synth10k --train-clips 4000 --val-clips 1000 --steps 600 --out benchmarks/text_tower.json

Arms: ``minilm`` (frozen MiniLM-L6, mean-pooled, + a new linear projection; features cached per
caption), ``minilm-mlp`` (the same features through a two-layer head, 384 -> 1024 -> 128),
``minilm-tokens`` (MiniLM's token states, frozen and cached, through a trainable 2-layer transformer,
dim 256, mean-pooled), ``scratch`` (the ``small-scratch`` preset's text tower: dim 256, depth 4,
WordPiece ids). Each ends in a linear projection to the joint space. The MuLaN's own trained
projection is reported too (``trained_projection``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musiclm_pytorch import load
from musiclm_pytorch.data.captions import attribute_prompt_sets
from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.mulan_eval import ZERO_SHOT_ATTRIBUTES, embed_rows, retrieval_metrics
from musiclm_pytorch.mulan.losses import SoftmaxContrastiveLoss
from musiclm_pytorch.mulan.model import MuLaN
from musiclm_pytorch.mulan.text_tower import PretrainedTextTransformer, TextTransformer
from musiclm_pytorch.mulan.transformer import Transformer
from musiclm_pytorch.presets import MULAN_PRESETS
from musiclm_pytorch.training.mulan import positive_key, with_full_caption


def audio_latents(mulan: MuLaN, rows: list[dict[str, Any]], cache: Path) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    ids = [r["id"] for r in rows]
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved["ids"] == ids:
            return saved["latents"], saved["rows"]
    a, kept, stats = embed_rows(mulan, rows, progress=True)
    print(f"embedded {len(kept)} clips ({stats.report()})")
    torch.save({"ids": ids, "latents": a, "rows": kept}, cache)
    return a, kept


class MiniLMArm(nn.Module):
    """Frozen MiniLM features (computed once per string) + a trainable linear projection."""

    def __init__(self, dim_latent: int, projection: nn.Module | None = None, *, hidden: int = 0):
        super().__init__()
        self.encoder = PretrainedTextTransformer(freeze=True)
        if projection is None and hidden:  # a two-layer head instead of the linear projection
            projection = nn.Sequential(nn.Linear(self.encoder.dim, hidden), nn.GELU(), nn.Linear(hidden, dim_latent))
        self.proj = projection if projection is not None else nn.Linear(self.encoder.dim, dim_latent)
        self.store: dict[str, torch.Tensor] = {}

    def features(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self.store})
        for i in range(0, len(missing), 256):
            with torch.no_grad():
                self.store.update(zip(missing[i : i + 256], self.encoder(raw_texts=missing[i : i + 256])))
        return torch.stack([self.store[t] for t in texts])

    def forward(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.proj(self.features(texts)), dim=-1)


class MiniLMTokensArm(nn.Module):
    """Frozen MiniLM *token* states (computed once per string) + a trainable 2-layer transformer on top,
    mean-pooled, + a projection: token-level processing learned here, vocabulary from the pretrained model."""

    def __init__(self, dim_latent: int, dim: int = 256, depth: int = 2):
        super().__init__()
        self.encoder = PretrainedTextTransformer(freeze=True)
        self.inp = nn.Linear(self.encoder.dim, dim)
        self.transformer = Transformer(dim, depth=depth, heads=4, dim_head=64)
        self.proj = nn.Linear(dim, dim_latent)
        self.store: dict[str, torch.Tensor] = {}

    def forward(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self.store})
        for i in range(0, len(missing), 256):
            chunk = missing[i : i + 256]
            ids, mask = self.encoder.tokenize(chunk)
            with torch.no_grad():
                hidden = self.encoder.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            for t, h, m in zip(chunk, hidden, mask):
                self.store[t] = h[: int(m.sum())].half()
        states = [self.store[t] for t in texts]
        n = max(len(h) for h in states)
        x = torch.zeros(len(states), n, self.encoder.dim)
        key_mask = torch.zeros(len(states), n, dtype=torch.bool)
        for i, h in enumerate(states):
            x[i, : len(h)], key_mask[i, : len(h)] = h.float(), True
        y = self.transformer(self.inp(x), key_mask=key_mask)
        m = key_mask[..., None].float()
        return F.normalize(self.proj((y * m).sum(1) / m.sum(1)), dim=-1)


class ScratchArm(nn.Module):
    def __init__(self, dim_latent: int):
        super().__init__()
        spec = dict(MULAN_PRESETS["small-scratch"]["text"])
        spec.pop("kind")
        self.encoder = TextTransformer(**spec)
        self.proj = nn.Linear(self.encoder.dim, dim_latent)

    def forward(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.proj(self.encoder(raw_texts=texts)), dim=-1)


@torch.no_grad()
def score(arm: nn.Module, a_val: torch.Tensor, val_rows: list[dict[str, Any]]) -> dict[str, Any]:
    arm.eval()
    captions = [r.get("full_caption") or r["captions"][0] for r in val_rows]
    t = torch.cat([arm(captions[i : i + 256]) for i in range(0, len(captions), 256)])
    out: dict[str, Any] = {"text_to_audio": retrieval_metrics((t @ a_val.t()).numpy()), "zero_shot": {}}
    for attribute in ZERO_SHOT_ATTRIBUTES:
        sets = attribute_prompt_sets(attribute)
        names = list(sets)
        values = torch.stack([F.normalize(arm(sets[n]).mean(0), dim=-1) for n in names])
        truth = torch.tensor([names.index(str(r["tags"][attribute])) for r in val_rows])
        out["zero_shot"][attribute] = round(float(((a_val @ values.t()).argmax(1) == truth).float().mean()), 4)
    arm.train()
    return out


def train_arm(
    arm: nn.Module, a_train: torch.Tensor, rows: list[dict[str, Any]], *, steps: int, batch: int, lr: float, seed: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    loss_fn = SoftmaxContrastiveLoss()
    params = [p for p in arm.parameters() if p.requires_grad] + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    t0, losses = time.perf_counter(), []
    for step in range(steps):
        idx = rng.sample(range(len(rows)), batch)
        captions = [rng.choice(rows[i]["captions"]) for i in idx]
        keys = torch.tensor([positive_key(rows[i]["tags"], c) for i, c in zip(idx, captions)])
        loss = loss_fn(a_train[idx], arm(captions), keys=keys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"  step {step + 1}: loss {sum(losses[-100:]) / 100:.3f}", flush=True)
    return {"seconds": round(time.perf_counter() - t0, 1), "final_loss": round(sum(losses[-50:]) / 50, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mulan", required=True)
    p.add_argument("--data", required=True, help="a corpus folder with train.jsonl and val.jsonl")
    p.add_argument("--train-clips", type=int, default=4000)
    p.add_argument("--val-clips", type=int, default=1000)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default="minilm,scratch")
    p.add_argument("--cache", default="/tmp/text_tower_ablation_latents")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/text_tower.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mulan = load(args.mulan, expected=MuLaN).eval()
    data = Path(args.data)
    train_rows = [with_full_caption(r) for r in manifest_rows(data / "train.jsonl")[0][: args.train_clips]]
    val_rows = manifest_rows(data / "val.jsonl")[0][: args.val_clips]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    a_train, train_rows = audio_latents(mulan, train_rows, cache / f"train_{args.train_clips}.pt")
    a_val, val_rows = audio_latents(mulan, val_rows, cache / f"val_{args.val_clips}.pt")
    report: dict[str, Any] = {"mulan": args.mulan, "train_clips": len(train_rows), "val_clips": len(val_rows),
                              "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                              "arms": {}}  # fmt: skip
    if isinstance(mulan.text, PretrainedTextTransformer):
        reference = MiniLMArm(mulan.dim_latent, projection=mulan.text_to_latents)
        report["arms"]["trained_projection"] = score(reference, a_val, val_rows)
        print("trained_projection", json.dumps(report["arms"]["trained_projection"]))
    for name in args.arms.split(","):
        arms = {"minilm": lambda: MiniLMArm(mulan.dim_latent), "scratch": lambda: ScratchArm(mulan.dim_latent),
                "minilm-mlp": lambda: MiniLMArm(mulan.dim_latent, hidden=1024),
                "minilm-tokens": lambda: MiniLMTokensArm(mulan.dim_latent)}  # fmt: skip
        if name not in arms:
            raise ValueError(f"unknown arm {name!r}; choose from {sorted(arms)}")
        arm: nn.Module = arms[name]()
        print(f"arm {name}: {sum(p.numel() for p in arm.parameters() if p.requires_grad):,} trainable parameters")
        fit = train_arm(arm, a_train, train_rows, steps=args.steps, batch=args.batch_size, lr=args.lr, seed=args.seed)
        report["arms"][name] = {**fit, **score(arm, a_val, val_rows)}
        print(name, json.dumps(report["arms"][name]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

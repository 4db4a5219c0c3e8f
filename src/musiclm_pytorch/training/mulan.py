"""Train MuLaN: ``musiclm train mulan --data corpus/ --out runs/mulan`` (or ``train_mulan(config)``).

One loop, top to bottom. HF Accelerate runs it on one CPU, one GPU or many processes
(``accelerate launch -m musiclm_pytorch.cli train mulan ...`` or ``torchrun``); the contrastive loss
gathers latents across ranks with gradients, so every rank sees the global batch as negatives.

- AdamW, linear warm-up + cosine decay, gradient clipping, bf16 autocast option, optional EMA of the
  weights (``ema_decay``): validation then uses the average, saved as ``mulan_ema.safetensors``.
- Multi-positive target (``multi_positive``): two clips with the same recorded attributes (or the same
  caption, for data without tags) are positives of each other, not negatives.
- Hard negative captions (``hard_negatives``): each clip's caption with one stated attribute changed
  (mode, key, tempo, drums, instrument; ``data.captions.perturb_caption``) is an extra negative for
  that clip's audio, so the audio tower must hear exactly that attribute.
- Mined negative captions (``mined_negatives``): each caption also with its instrument swapped to the
  other-family instrument whose prompt the clip's audio matches best at that step (the model's own
  likeliest confusion, e.g. kalimba -> marimba), a second hard negative for that clip's audio.
- A feature queue (``queue_size``, MoCo-style) adds detached latents of earlier batches as extra
  negatives: gradient accumulation adds no negatives to a contrastive loss, a queue does.
- A frozen pretrained text encoder's output is cached per caption string (``text_cache``; the
  pooled features, or the token states when a text adapter trains: ``PretrainedTextTransformer.cache``).
- Every ``eval_every`` steps: retrieval and zero-shot tagging on held-out clips; every
  ``checkpoint_every`` steps: ``mulan.safetensors`` (model + config) and ``train_state.pt``
  (optimizer, scheduler, step, data position, RNG), both written atomically. Rerunning the same
  command resumes from them: the data order and the loss curve continue where they stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..checkpoint import load, save
from ..data.captions import perturb_caption, swap_instrument
from ..data.datasets import CaptionedAudioDataset, ClipOptions, SkipStats, collate, data_rows, manifest_rows
from ..data.tags import LEAD_PROGRAMS
from ..evaluation.mulan_eval import evaluate_mulan
from ..mulan.losses import Negatives
from ..mulan.model import MuLaN
from ..mulan.text_tower import PretrainedTextTransformer
from ..presets import build_mulan
from .common import (
    EMA,
    EpochCursor,
    adamw_warmup_cosine,
    load_config,
    make_accelerator,
)
from .core import RunSettings, TrainRun

POSITIVE_ATTRIBUTES = ("program", "tempo_class", "tonic", "mode", "drums")


@dataclass
class MuLaNTrainConfig(RunSettings):
    """Everything a MuLaN run needs. Unknown keys in a config file are rejected."""

    data: str = ""  # a corpus folder (train.jsonl / val.jsonl), a manifest, or an audio folder
    val_data: str | None = None  # default: DATA/val.jsonl when DATA is a corpus folder
    out: str = "runs/mulan"
    preset: str = "small"
    init_checkpoint: str | None = None
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_steps: int = 2000
    grad_clip: float = 1.0
    crop_seconds: float = 6.0
    normalize: str | None = "rms"
    mixed_precision: str = "no"  # "no" or "bf16"
    loss: str = "softmax"
    multi_positive: bool = True
    full_captions: bool = True  # also train on each row's ``full_caption`` (every attribute stated)
    hard_negatives: bool = False  # each caption with one attribute changed, as a negative for its audio
    mined_negatives: bool = False  # and its instrument swapped to the one the model confuses it with most
    queue_size: int = 0
    ema_decay: float | None = None  # e.g. 0.999: validate and also save an EMA of the weights
    text_cache: bool = True
    num_workers: int = 2
    eval_every: int = 250
    eval_clips: int = 1000

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if not self.data:
            raise ValueError("data is required: a corpus folder, a JSONL manifest or an audio folder")


def _rows(path: str) -> tuple[list[dict[str, Any]], SkipStats]:
    stats = SkipStats()
    rows, bad = data_rows(path, what="training data")
    stats.update(bad)
    if not rows:
        raise ValueError(f"training data {path!r} has no usable rows: {stats.why_empty()}")
    return rows, stats


def positive_key(row_tags: dict[str, Any], caption: str) -> int:
    """Clips sharing every attribute a caption can state are positives; untagged data uses the caption."""
    if all(k in row_tags for k in POSITIVE_ATTRIBUTES):
        text = "|".join(str(row_tags[k]) for k in POSITIVE_ATTRIBUTES)
    else:
        text = "caption|" + caption.strip().lower()
    return int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)


def with_full_caption(row: dict[str, Any]) -> dict[str, Any]:
    """Add a corpus row's ``full_caption`` to the captions drawn from in training.

    The partial captions teach that a description may leave things out; the full one is the only
    training text that states key, mode and tempo together, as the retrieval captions do."""
    full = row.get("full_caption")
    if isinstance(full, str) and full.strip() and full not in row["captions"]:
        return {**row, "captions": [*row["captions"], full]}
    return row


class FeatureQueue:
    def __init__(self, size: int, dim: int):
        self.size = size
        self.audio = torch.zeros(0, dim)
        self.text = torch.zeros(0, dim)
        self.keys = torch.zeros(0, dtype=torch.long)

    def push(self, audio: torch.Tensor, text: torch.Tensor, keys: torch.Tensor) -> None:
        self.audio = torch.cat([audio.detach().float().cpu(), self.audio])[: self.size]
        self.text = torch.cat([text.detach().float().cpu(), self.text])[: self.size]
        self.keys = torch.cat([keys.cpu(), self.keys])[: self.size]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"audio": self.audio, "text": self.text, "keys": self.keys}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.audio, self.text, self.keys = state["audio"], state["text"], state["keys"]

    def negatives(self) -> Negatives | None:
        return Negatives(self.audio, self.text, self.keys) if self.size and len(self.keys) else None


def _uncached_text_latents(model: MuLaN, texts: list[str]) -> torch.Tensor:
    """Text latents (float32, with grad where the text side trains) of strings seen once, such as
    hard negative captions: they bypass the text cache, which would otherwise grow by one entry each."""
    text = model.text
    with text.uncached() if isinstance(text, PretrainedTextTransformer) else contextlib.nullcontext():
        return model.get_text_latents(raw_texts=texts).float()


def _hard_negative_latents(
    model: MuLaN, captions: list[str], tags: list[dict[str, Any] | None], seed: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of each caption with one attribute changed (``[B, D]``) and which rows have one (``[B]``).
    The changes are drawn from a generator seeded by (seed, step), so a resumed run draws the same.
    They bypass the text caches (a new string each time); a frozen text tower runs without grad itself."""
    rng = random.Random(seed * 1_000_003 + step)
    perturbed = [perturb_caption(c, t, rng) if t and "mode" in t else None for c, t in zip(captions, tags)]
    mask = torch.tensor([p is not None for p in perturbed])
    texts = [p if p is not None else c for p, c in zip(perturbed, captions)]
    latents = _uncached_text_latents(model, texts)
    return latents, mask.to(latents.device)


INSTRUMENT_PROMPT = "a piece played on {}"


def _mined_negative_latents(
    model: MuLaN,
    audio_latents: torch.Tensor,
    captions: list[str],
    tags: list[dict[str, Any] | None],
    seed: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per caption, a hard negative from the model's own confusions: the clip's instrument swapped
    to the lead instrument of another family whose prompt (``INSTRUMENT_PROMPT``) its audio matches
    best right now (``data.captions.swap_instrument``). Latents ``[B, D]`` and which rows have one
    ``[B]`` (rows without tags, or whose caption states no instrument, have none)."""
    names = [(family, name) for family, progs in LEAD_PROGRAMS.items() for name in progs.values()]
    with torch.no_grad():  # a fixed set of strings: the text cache keeps them
        prompts = model.get_text_latents(raw_texts=[INSTRUMENT_PROMPT.format(n) for _, n in names]).float()
    families = [family for family, _ in names]
    own = torch.tensor([[family == (t or {}).get("family") for family in families] for t in tags])
    best = (audio_latents.detach().float() @ prompts.t()).masked_fill(own.to(prompts.device), -torch.inf).argmax(1)
    rng = random.Random(seed * 1_000_003 + step + 500_009)
    texts, mask = [], []
    for row, (caption, t) in enumerate(zip(captions, tags)):
        swapped = None
        if t and t.get("family") in LEAD_PROGRAMS and t.get("instrument"):
            swapped = swap_instrument(caption, t, names[int(best[row])][1], rng)
        texts.append(swapped if swapped is not None else caption)
        mask.append(swapped is not None)
    latents = _uncached_text_latents(model, texts)
    return latents, torch.tensor(mask, device=latents.device)


def eval_record(step: int, report: dict[str, Any]) -> dict[str, Any]:
    """One log line from a validation report: retrieval R@1 / R@10 and zero-shot accuracy per attribute."""
    t2a, a2t = report["text_to_audio"], report["audio_to_text"]
    return {"step": step, "val_t2a_R@1": t2a["R@1"], "val_t2a_R@10": t2a["R@10"], "val_a2t_R@1": a2t["R@1"],
            **{f"zs_{k}": v["accuracy"] for k, v in report["zero_shot"].items()}}  # fmt: skip


def _val_rows(cfg: Any) -> list[dict[str, Any]]:
    """``cfg.eval_clips`` rows of ``cfg.val_data``, or of DATA/val.jsonl when ``cfg.data`` is a corpus folder."""
    path = cfg.val_data or (str(Path(cfg.data) / "val.jsonl") if (Path(cfg.data) / "val.jsonl").is_file() else None)
    if path is None:
        return []
    rows, _ = manifest_rows(path)
    return rows[: cfg.eval_clips]


def train_mulan(cfg: MuLaNTrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns the last validation report (empty without validation data)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    rows, skipped = _rows(cfg.data)  # before --out exists: bad data leaves no empty run folder
    if cfg.init_checkpoint and not Path(cfg.init_checkpoint).is_file():
        raise FileNotFoundError(f"--init-checkpoint {cfg.init_checkpoint!r}: no such file")
    accelerator = make_accelerator(cfg.mixed_precision)
    run = TrainRun(cfg, out=out, accelerator=accelerator, desc="mulan", model_file="mulan.safetensors")
    if cfg.full_captions:
        rows = [with_full_caption(r) for r in rows]
    val_rows = _val_rows(cfg)
    if not val_rows:
        accelerator.print("no validation data (val_data, or DATA/val.jsonl): training without evaluation")
    torch.manual_seed(cfg.seed)
    if run.resuming:
        mulan = load(run.model_file, expected=MuLaN)
    elif cfg.init_checkpoint:
        mulan = load(cfg.init_checkpoint, expected=MuLaN)
    else:
        mulan = build_mulan(cfg.preset, loss=cfg.loss)
    if cfg.text_cache and isinstance(mulan.text, PretrainedTextTransformer) and mulan.text.freeze:
        mulan.text.cache()
    optimizer, scheduler = adamw_warmup_cosine(mulan.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                                               decay_vectors=False)  # fmt: skip
    cursor = EpochCursor(len(rows), batch_size=cfg.batch_size, num_processes=accelerator.num_processes, seed=cfg.seed)
    queue = FeatureQueue(cfg.queue_size, mulan.dim_latent)
    ema = EMA(mulan, cfg.ema_decay) if cfg.ema_decay else None
    run.restore(model=mulan, optimizer=optimizer, scheduler=scheduler, cursor=cursor, queue=queue, ema=ema)
    if run.resuming:
        run.print(f"(epoch {cursor.epoch}, batch {cursor.batch_in_epoch})")
    # not wrapped in DDP: a step calls the towers, the hard negatives and the loss apart, never one forward
    # that DDP would see; the training core averages the gradients over the processes instead
    model: MuLaN = mulan.to(accelerator.device)
    optimizer = accelerator.prepare(optimizer)
    if ema is not None:
        ema.model.to(accelerator.device)
    opts = ClipOptions(sample_rate=model.sample_rate, crop_seconds=cfg.crop_seconds, crop="random",
                       normalize=cfg.normalize)  # type: ignore[arg-type]  # fmt: skip
    dataset = CaptionedAudioDataset(rows, opts, seed=cfg.seed)
    report: dict[str, Any] = {}
    mulan.train()

    def export() -> None:
        save(model, run.model_file, extra={"step": run.step})
        if ema is not None:
            save(ema.model, out / "mulan_ema.safetensors", extra={"step": run.step, "ema_decay": ema.decay})

    def make_loader(epoch: int, order: list[int]) -> Any:
        dataset.set_epoch(epoch)
        return accelerator.prepare(DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, collate_fn=collate,
                                              num_workers=cfg.num_workers, drop_last=True))  # fmt: skip

    def epoch_done(epoch: int) -> None:
        accelerator.print(f"epoch {epoch} done; data: {skipped.report()}")

    batches = cursor.batches(make_loader, epoch_done) if run.running else iter(())
    for batch in batches:  # the cursor counts every batch consumed, used or not
        skipped.update(batch["skipped"])
        if len(batch["captions"]) < 2:
            continue
        wavs, captions = batch["wavs"], batch["captions"]
        keys = None
        if cfg.multi_positive:
            keys = torch.tensor([positive_key(t, c) for t, c in zip(batch["tags"], captions)], device=wavs.device)
        with accelerator.autocast():  # the towers in bf16 when asked; the loss below in fp32
            audio_latents = model.get_audio_latents(wavs)
            text_latents = model.get_text_latents(raw_texts=captions)
        audio_latents, text_latents = audio_latents.float(), text_latents.float()
        hard = []
        if cfg.hard_negatives:
            hard.append(_hard_negative_latents(model, captions, batch["tags"], cfg.seed, run.step))
        if cfg.mined_negatives:
            hard.append(_mined_negative_latents(model, audio_latents, captions, batch["tags"], cfg.seed, run.step))
        hard_text = torch.stack([h[0] for h in hard], dim=1) if hard else None  # [B, K, D]
        hard_mask = torch.stack([h[1] for h in hard], dim=1) if hard else None
        loss = model.contrast(audio_latents, text_latents, keys=keys, extra=queue.negatives(), hard_text=hard_text,
                              hard_mask=hard_mask)  # fmt: skip
        run.update(loss, optimizer, model.parameters(), grad_clip=cfg.grad_clip, scheduler=scheduler, ema=ema,
                   model=model, sync_grads=True)  # fmt: skip
        if cfg.queue_size:
            queue.push(audio_latents, text_latents, keys if keys is not None else torch.full((len(captions),), -1))
        run.advance(items=len(captions))
        if run.due(cfg.log_every):
            run.log({"epoch": cursor.epoch, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                     "temperature": round(model.contrast.temperature.item(), 5)},  # type: ignore[operator]
                    rate="clips_per_s")  # fmt: skip
        if val_rows and run.due(cfg.eval_every) and run.is_main:
            report = evaluate_mulan(ema.model if ema is not None else model, val_rows)
            flat = eval_record(run.step, report)
            run.write(flat)
            (out / f"eval_step{run.step}.json").write_text(json.dumps(report, indent=2))
            run.print(json.dumps(flat))
            mulan.train()
        if run.due(cfg.checkpoint_every):
            run.checkpoint(export, curves=["loss", "temperature", "val_t2a_R@1", "val_t2a_R@10", "zs_family",
                                           "zs_drums"], title=f"MuLaN {cfg.preset}")  # fmt: skip
        if not run.running:
            break
    run.close(model)
    accelerator.print(f"training done at step {run.step}; data: {skipped.report()}")
    return report


def main_from_args(config_path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    return train_mulan(load_config(MuLaNTrainConfig, config_path, overrides))

"""Fit MuLaN's text side to a trained, frozen audio side: ``musiclm train mulan-text --mulan CKPT --data corpus/``.

The audio tower is the expensive half of MuLaN; the text side can be retrained, or replaced, against it
for a small fraction of the cost. The audio latents of the training clips are computed once, whole
clips the way evaluation embeds them, and cached in ``OUT/audio_latents.pt`` (keyed by the rows and
the audio side's weights); after that a step costs only the text side. What it is for:

- a better text side for a trained audio tower: on the synthetic corpus, a small transformer over
  the frozen MiniLM's token states maps held-out caption wordings onto a trained audio space far
  better than the linear projection of MiniLM's pooled output trained jointly with it
  (benchmarks/RESULTS.md, "Which text tower");
- swapping the text tower of a trained MuLaN (``text_tower``) without touching the audio latents that
  the conditioning quantizer and the stage LMs were built on.

``text_tower``: ``None`` continues training the MuLaN's own text tower and projection;
``"minilm-adapter"`` (the best measured) puts a fresh 2-layer transformer (dim 256) over the frozen
shipped MiniLM's token states; ``"minilm"`` a fresh projection on its pooled output; ``"scratch"`` a
fresh transformer (dim 256, depth 4, WordPiece ids, the ``small-scratch`` preset's).

The loss is MuLaN's own contrastive loss (multi-positive by default), its temperature trained too;
AdamW, warm-up + cosine, gradient clipping. Every ``eval_every`` steps: retrieval and zero-shot
tagging on the held-out clips (their audio latents cached the same way). Every ``checkpoint_every``
steps, atomically: ``mulan.safetensors`` (the whole MuLaN, audio side unchanged) and
``train_state.pt``. Rerunning the command resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import identity, load, save
from ..evaluation.mulan_eval import embed_rows, evaluate_mulan
from ..mulan.model import MuLaN
from ..mulan.text_tower import PretrainedTextTransformer, TextTransformer
from ..presets import MULAN_PRESETS
from .common import adamw_warmup_cosine, atomic_torch_save, load_config, make_accelerator
from .core import RunSettings, TrainRun
from .mulan import _rows, _val_rows, eval_record, positive_key, with_full_caption

TEXT_TOWERS = ("minilm-adapter", "minilm", "scratch")


@dataclass
class TextAlignConfig(RunSettings):
    """Everything a text-side run needs. Unknown keys in a config file are rejected."""

    mulan: str = ""  # a trained MuLaN checkpoint: its audio side is kept frozen
    data: str = ""  # a corpus folder (train.jsonl / val.jsonl) or a manifest
    val_data: str | None = None  # default: DATA/val.jsonl when DATA is a corpus folder
    out: str = "runs/mulan_text"
    text_tower: str | None = None  # None: keep the MuLaN's; one of TEXT_TOWERS: a fresh one
    max_clips: int | None = None  # the first N training rows (their audio latents are embedded once)
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_steps: int = 2000
    grad_clip: float = 1.0
    multi_positive: bool = True
    full_captions: bool = True
    eval_every: int = 500
    eval_clips: int = 1000
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if not self.mulan:
            raise ValueError("mulan is required: the trained MuLaN checkpoint whose audio side is kept")
        if not self.data:
            raise ValueError("data is required: a corpus folder or a JSONL manifest")
        if self.text_tower is not None and self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS} or None, got {self.text_tower!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")


def new_text_tower(kind: str) -> TextTransformer | PretrainedTextTransformer:
    if kind == "minilm-adapter":
        return PretrainedTextTransformer(freeze=True, max_seq_len=128, adapter_depth=2, adapter_dim=256)
    if kind == "minilm":
        return PretrainedTextTransformer(freeze=True, max_seq_len=128)
    spec = dict(MULAN_PRESETS["small-scratch"]["text"])
    spec.pop("kind")
    return TextTransformer(**spec)


def audio_side_hash(mulan: MuLaN) -> str:
    h = hashlib.sha256(identity(mulan.audio)["hash"].encode())
    for v in mulan.audio_to_latents.state_dict().values():
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_audio_latents(
    mulan: MuLaN, rows: list[dict[str, Any]], path: Path, *, progress: bool
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Whole-clip audio latents of ``rows`` (skipped rows dropped), computed once per audio side and row list."""
    key = {"audio": audio_side_hash(mulan), "rows": [r["path"] for r in rows]}
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        if saved["key"] == key:
            return saved["latents"], [rows[i] for i in saved["kept"]]
    latents, kept, stats = embed_rows(mulan, rows, progress=progress)
    index = {id(r): i for i, r in enumerate(rows)}
    atomic_torch_save({"key": key, "latents": latents, "kept": [index[id(r)] for r in kept]}, path)
    if stats.total:
        print(f"{path.name}: {stats.report()}")
    return latents, kept


def align_text(cfg: TextAlignConfig) -> dict[str, Any]:
    """Run (or resume) a text-side fit; returns the last validation report (empty without validation data)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    rows, skipped = _rows(cfg.data)  # before --out exists: bad data leaves no empty run folder
    if not (out / "train_state.pt").is_file() and not Path(cfg.mulan).is_file():
        raise FileNotFoundError(f"--mulan {cfg.mulan!r}: no such file (a trained MuLaN checkpoint)")
    accelerator = make_accelerator()
    run = TrainRun(cfg, out=out, accelerator=accelerator, desc="mulan text", model_file="mulan.safetensors")
    rows = rows[: cfg.max_clips] if cfg.max_clips else rows
    if cfg.full_captions:
        rows = [with_full_caption(r) for r in rows]
    val_rows = _val_rows(cfg)
    torch.manual_seed(cfg.seed)
    mulan = load(run.model_file if run.resuming else cfg.mulan, expected=MuLaN)
    if cfg.text_tower and not run.resuming:
        mulan = mulan.with_text_tower(new_text_tower(cfg.text_tower))
    mulan.audio.requires_grad_(False)
    mulan.audio_to_latents.requires_grad_(False)
    mulan.eval()  # the audio side only embeds; the text side is switched to train mode below
    a_train, rows = cached_audio_latents(mulan, rows, out / "audio_latents.pt", progress=cfg.progress)
    val = (
        cached_audio_latents(mulan, val_rows, out / "val_audio_latents.pt", progress=cfg.progress) if val_rows else None
    )
    params = [p for p in mulan.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_warmup_cosine(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                                               decay_vectors=False)  # fmt: skip
    run.restore(model=mulan, optimizer=optimizer, scheduler=scheduler)
    if isinstance(mulan.text, PretrainedTextTransformer) and mulan.text.freeze:
        mulan.text.cache()  # the encoder runs once per distinct caption
    # not wrapped in DDP (a step calls the text tower and the loss apart): the core averages the gradients
    model: MuLaN = mulan.to(accelerator.device)
    optimizer = accelerator.prepare(optimizer)
    a_train = a_train.to(accelerator.device)
    report: dict[str, Any] = {}
    model.text.train()

    def export() -> None:
        save(model, run.model_file, extra={"step": run.step, "audio_side_of": str(cfg.mulan)})

    while run.running:
        rng = run.step_rng()
        idx = rng.sample(range(len(rows)), min(cfg.batch_size, len(rows)))
        captions = [rng.choice(rows[i]["captions"]) for i in idx]
        text = model.get_text_latents(raw_texts=captions)
        keys = None
        if cfg.multi_positive:
            keys = torch.tensor([positive_key(rows[i].get("tags") or {}, c) for i, c in zip(idx, captions)],
                                device=a_train.device)  # fmt: skip
        loss = model.contrast(a_train[idx], text, keys=keys)
        run.update(loss, optimizer, params, grad_clip=cfg.grad_clip, scheduler=scheduler, sync_grads=True)
        run.advance(items=len(idx))
        if run.due(cfg.log_every):
            run.log({"loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                     "temperature": round(model.contrast.temperature.item(), 5)},  # type: ignore[operator]
                    rate="clips_per_s")  # fmt: skip
        if val is not None and run.due(cfg.eval_every) and run.is_main:
            report = evaluate_mulan(model, val[1], audio=val)
            model.text.train()
            flat = eval_record(run.step, report)
            run.write(flat)
            (out / f"eval_step{run.step}.json").write_text(json.dumps(report, indent=2))
            run.print(json.dumps(flat))
        if run.due(cfg.checkpoint_every):
            run.checkpoint(export, curves=["loss", "temperature", "val_t2a_R@1", "zs_family"], title="MuLaN text side")
    run.close(model)
    run.print(f"text side done at step {run.step}; data: {skipped.report()}")
    return report


def main_from_args(config_path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    return align_text(load_config(TextAlignConfig, config_path, overrides))

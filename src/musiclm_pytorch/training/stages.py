"""Train the stage LMs on a corpus tokenized once (:mod:`.tokenize`, ``musiclm data tokenize``).

``musiclm train stage --stage semantic|coarse|fine``: one loop for the three stages; crops start on
the 40 ms grid shared by the 25 Hz and 50 Hz streams (paper crops: 30 s / 10 s / 3 s); validation
loss and next-token accuracy per codec level. HF Accelerate runs the loop on one CPU, one GPU or many
processes (``accelerate launch -m musiclm_pytorch.cli train stage ...``); ``mixed_precision="bf16"``
autocasts; ``ema_decay`` keeps an average of the weights that validation uses and that is saved as
``{stage}_ema.safetensors``. Each process draws its batch from a generator seeded by (seed, step,
rank), so a resumed run continues with exactly the crops it would have drawn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import STAGE_INPUTS, check_identity, identity, load, save, stage_identity
from ..lm.controls import CONTROL_CLASSES
from ..lm.flow import FlowAcousticLM
from ..lm.frame_aligned import noisy_condition
from ..lm.layouts import CoarseLayout, FineLayout, SemanticLayout
from ..lm.masked import MaskedAcousticLM
from ..lm.regression import LatentAcousticLM
from ..lm.transformer import TokenLM
from .common import EMA, adamw_warmup_cosine, load_config, make_accelerator
from .core import RunSettings, TrainRun
from .tokenize import load_split_tokens


def _level_embeddings(cfg: StageTrainConfig) -> bool:
    return cfg.level_embeddings if cfg.level_embeddings is not None else cfg.stage == "fine"


@dataclass
class StageTrainConfig(RunSettings):
    stage: str = "semantic"
    tokens: str = ""
    out: str = "runs/stage"
    dim: int = 256
    depth: int = 4
    heads: int = 4
    dim_head: int = 64
    dropout: float = 0.1
    num_coarse: int = 3
    crop_seconds: float | None = None  # default: paper crops 30 / 10 / 3 s
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 100
    max_steps: int = 2000
    cond_drop_prob: float = 0.1
    # acoustic stage: largest std of the Gaussian noise on its (unit) MuLaN conditioning in training
    cond_noise: float = 0.0
    # acoustic stage: the first codec levels it makes (None: all the tokens hold)
    acoustic_levels: int | None = None
    # latent stage: the SpectralCodec checkpoint whose latents it regresses (the one the tokens were made with)
    codec: str = ""
    # acoustic and latent stages: training audio latents kept for generation's text prior (0: none; the
    # first N training clips); by measurement the prior conditions from text as well as the clip's own audio
    prior_size: int = 4096
    # flow stage: the trained latent (regression) stage whose mean it samples around; its weights are kept
    # frozen inside the flow stage, and --dim/--depth/--heads/--dim-head size the flow transformer
    mean_stage: str = ""
    flow_steps: int = 16  # flow stage: Euler steps of generation
    # TokenLM token_groups (each id also gets its codec level's embedding). None: the fine stage only
    # (a resumed run: what its checkpoint has),
    # by measurement on MDCT codes (benchmarks/RESULTS.md): fine 8.37 -> 6.79 val loss at 300 steps,
    # coarse 5.52 without against 6.08 with, at 450 steps (one seed each)
    level_embeddings: bool | None = None
    # semantic / coarse / fine stages: also read the clip's continuous MuLaN audio latent at every position
    # (TokenLM cond_latent_dim; --cond-noise applies to it), beside the 12 conditioning ids
    cond_latent: bool = False
    # semantic and latent stages: the semantic tokenizer the tokens were made with; its onset features give
    # each clip's beat grid (semantic.beat), which the LM then reads at every position (TokenLM beat_harmonics;
    # the latent stage also a table per beat-phase bin, LatentAcousticLM beat_bins, with --controls-from). "": off
    beat_from: str = ""
    beat_harmonics: int = 3
    # latent stage with --beat-from: phase bins per beat of its table of latent offsets per (drums label, bin)
    beat_bins: int = 16
    # semantic and latent stages: a MuLaN checkpoint (or the conditioning file holding it), the one the tokens
    # were made with; its zero-shot reading of each clip's audio latent gives the clip's key and drums, labels
    # the LM reads at every position (lm/controls.py; TokenLM control_classes; the latent stage reads drums). "": off
    controls_from: str = ""
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # "no" or "bf16"
    ema_decay: float | None = None  # e.g. 0.999
    eval_every: int = 250
    eval_items: int = 64  # validation clips per evaluation (one crop each, fixed across evaluations)

    def __post_init__(self) -> None:
        if self.stage not in ("semantic", "coarse", "fine", "acoustic", "latent", "flow"):
            raise ValueError(f"stage must be semantic, coarse, fine, acoustic, latent or flow, got {self.stage!r}")
        if self.stage in ("latent", "flow") and not self.codec:
            raise ValueError(f"the {self.stage} stage needs --codec: the SpectralCodec whose latents it learns")
        if self.cond_latent and self.stage != "semantic":
            raise ValueError(f"--cond-latent is for the semantic stage (the pipeline gives the continuous "
                             f"conditioning to the semantic LM only), not {self.stage!r}")  # fmt: skip
        if self.beat_from and self.stage not in ("semantic", "latent"):
            raise ValueError(f"--beat-from is for the semantic and latent stages (the beat grid of the ids), not "
                             f"{self.stage!r}")  # fmt: skip
        if self.controls_from and self.stage not in ("semantic", "latent"):
            raise ValueError(f"--controls-from is for the semantic and latent stages (key and drums labels), not "
                             f"{self.stage!r}")  # fmt: skip
        if self.stage == "latent" and bool(self.beat_from) != bool(self.controls_from):
            raise ValueError("the latent stage reads the beat grid and the drums label together: give both "
                             "--beat-from and --controls-from, or neither")  # fmt: skip
        if self.beat_bins < 1:
            raise ValueError(f"--beat-bins must be >= 1, got {self.beat_bins}")
        if self.stage == "flow" and not self.mean_stage:
            raise ValueError("the flow stage needs --mean-stage: a trained `train stage --stage latent` checkpoint")
        if not self.tokens:
            raise ValueError("tokens is required: the folder written by `musiclm data tokenize`")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")


# acoustic (SoundStorm-like) and latent: our stages, 10 s as the paper's coarse stage
PAPER_CROPS = {"semantic": 30.0, "coarse": 10.0, "fine": 3.0, "acoustic": 10.0, "latent": 10.0, "flow": 10.0}
ACOUSTIC = ("acoustic", "latent", "flow")  # the frame-aligned stages (MuLaN latents, every codec level)


def _crop_frames(cfg: StageTrainConfig, meta: dict[str, Any]) -> int:
    """Semantic frames per crop: ``crop_seconds`` (default the paper's for the stage) at the tokens' semantic
    rate (files written before it was recorded: 25 Hz), shrunk to the shortest clip (documented)."""
    frames = max(1, int((cfg.crop_seconds or PAPER_CROPS[cfg.stage]) * _semantic_rate(meta)))
    return min(frames, min(len(it["semantic"]) for it in meta["items"]))


def _semantic_rate(meta: dict[str, Any]) -> float:
    return float(meta.get("semantic_rate", 25.0))


def _layout(cfg: StageTrainConfig, meta: dict[str, Any]) -> SemanticLayout | CoarseLayout | FineLayout:
    if cfg.stage == "semantic":
        return SemanticLayout(meta["semantic_vocab"])
    if cfg.stage == "coarse":
        return CoarseLayout(meta["semantic_vocab"], meta["codebook_size"], cfg.num_coarse)
    return FineLayout(meta["codebook_size"], cfg.num_coarse, meta["num_quantizers"] - cfg.num_coarse)


def _crop(item: dict[str, Any], frames: int, ratio: int, rng: random.Random) -> tuple[Tensor, Tensor, int]:
    """A crop of ``frames`` semantic frames (and ``frames * ratio`` codec frames) on the shared grid, and
    its first semantic frame."""
    total = len(item["semantic"])
    start = rng.randrange(total - frames + 1) if total > frames else 0
    sem = item["semantic"][start : start + frames].long()
    codes = item["codes"][:, start * ratio : (start + frames) * ratio].long()
    return sem, codes, start


def add_beat_grids(items: list[dict[str, Any]], tokenizer: Any) -> None:
    """Each item's ``beat`` = ``[period, phase]`` in frames, estimated from its whole id sequence
    (:func:`~musiclm_pytorch.semantic.beat.grid_of_ids`)."""
    from ..semantic.beat import grid_of_ids

    for it in items:
        it["beat"] = torch.tensor(grid_of_ids(tokenizer, it["semantic"]))


def load_beat_tokenizer(path: str, tokens_identity: dict[str, Any]) -> Any:
    """The semantic tokenizer at ``path`` (``--beat-from``), checked to be the one the tokens were made with."""
    from ..semantic import SemanticTokenizer

    tok = load(path, expected=SemanticTokenizer)
    check_identity(tokens_identity, semantic=tok)
    return tok


def add_controls(items: list[dict[str, Any]], reader: Any) -> None:
    """Each item's ``controls`` = ``[key, drums]`` labels: ``reader``'s zero-shot reading
    (:class:`~musiclm_pytorch.lm.controls.ControlReader`) of its MuLaN audio latent."""
    if "mulan" not in items[0]:
        raise ValueError("these tokens hold no MuLaN latents (tokenized before they were stored): controls are "
                         "read from them; run `musiclm data tokenize --reuse` into a new folder")  # fmt: skip
    labels = reader.read(torch.stack([it["mulan"].float() for it in items]))
    for it, row in zip(items, labels):
        it["controls"] = row


def load_control_reader(path: str, tokens_identity: dict[str, Any]) -> Any:
    """The :class:`~musiclm_pytorch.lm.controls.ControlReader` of the MuLaN at ``path`` (``--controls-from``: a
    MuLaN or conditioning file), checked to be the one the tokens were made with."""
    from ..lm.controls import ControlReader
    from ..mulan import MuLaN

    if not Path(path).is_file():
        raise FileNotFoundError(f"--controls-from {path!r}: no such file")
    mulan = load(path, expected=MuLaN)
    check_identity(tokens_identity, mulan=mulan)
    return ControlReader.from_mulan(mulan)


def _controls(items: list[dict[str, Any]]) -> Tensor | None:
    return torch.stack([it["controls"] for it in items]) if "controls" in items[0] else None


Layout = SemanticLayout | CoarseLayout | FineLayout


def _cond_latent_dim(cfg: StageTrainConfig, train: dict[str, Any]) -> int:
    if not cfg.cond_latent:
        return 0
    if "mulan" not in train["items"][0]:
        raise ValueError(f"{cfg.tokens} holds no MuLaN latents (tokenized before they were stored): --cond-latent "
                         "reads them; run `musiclm data tokenize --reuse` into a new folder")  # fmt: skip
    return int(train["items"][0]["mulan"].shape[-1])


def _noisy_latents(items: list[dict[str, Any]], noise: float, rng: random.Random) -> Tensor:
    """The clips' MuLaN audio latents ``[B, C]`` (unit) with the frame-aligned stages' training noise
    (:func:`~musiclm_pytorch.lm.frame_aligned.noisy_condition`), drawn from ``rng``."""
    latents = F.normalize(torch.stack([it["mulan"].float() for it in items]), dim=-1)
    if noise <= 0:
        return latents
    return noisy_condition(latents, noise, torch.Generator().manual_seed(rng.randrange(2**62)))


def _batch(
    items: list[dict[str, Any]],
    layout: Layout,
    ratio: int,
    frames: int,
    rng: random.Random,
    num_levels: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(tokens, mask, cond_ids, beat)`` of random crops; ``beat [B, 2]`` (period, phase from the crop's
    first frame) when the items carry beat grids (:func:`add_beat_grids`), else ``None``."""
    tokens, masks, conds, beats = [], [], [], []
    for item in items:
        sem, codes, start = _crop(item, frames, ratio, rng)
        if "beat" in item:
            period, phase = item["beat"].tolist()
            beats.append(torch.tensor([period, (phase - start) % period]))
        if isinstance(layout, SemanticLayout):
            t, m = layout.flatten(sem[None])
        elif isinstance(layout, CoarseLayout):
            t, m = layout.flatten(sem[None], codes[None, : layout.num_coarse])
        else:
            t, m = layout.flatten(codes[None, :num_levels])
        tokens.append(t[0])
        masks.append(m[0])
        conds.append(item["cond_ids"].long())
    n = min(len(t) for t in tokens)
    beat = torch.stack(beats) if len(beats) == len(items) else None
    return torch.stack([t[:n] for t in tokens]), torch.stack([m[:n] for m in masks]), torch.stack(conds), beat


def train_stage(cfg: StageTrainConfig) -> dict[str, Any]:
    """Train one stage LM on pre-tokenized data; resumes from ``cfg.out``."""
    from accelerate import DistributedDataParallelKwargs

    torch.set_num_threads(cfg.threads)
    root, out = Path(cfg.tokens), Path(cfg.out)
    if not (root / "train.pt").is_file():
        raise FileNotFoundError(f"no tokens at {str(root / 'train.pt')!r}: run `musiclm data tokenize` first")
    # the learned null condition is used only in steps that drop a conditioning: DDP must allow unused weights
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = make_accelerator(cfg.mixed_precision, kwargs_handlers=[ddp])
    train = torch.load(root / "train.pt", weights_only=False)
    val = torch.load(root / "val.pt", weights_only=False) if (root / "val.pt").is_file() else None
    layout = _layout(cfg, train) if cfg.stage not in ACOUSTIC else None
    if cfg.beat_from:  # each clip's beat grid from its own ids: still trained from audio alone
        beat_tok = load_beat_tokenizer(cfg.beat_from, train["identity"])
        for split in (train, val) if val is not None else (train,):
            add_beat_grids(split["items"], beat_tok)
    if cfg.controls_from:  # key and drums read from each clip's own audio latent: still trained from audio alone
        reader = load_control_reader(cfg.controls_from, train["identity"])
        for split in (train, val) if val is not None else (train,):
            add_controls(split["items"], reader)
    ratio = train["ratio"]
    frames = _crop_frames(cfg, train)
    seq_len = {"semantic": frames, "coarse": frames + frames * ratio * getattr(layout, "num_coarse", 0),
               "fine": frames * ratio * getattr(layout, "levels", 0),
               "acoustic": frames * ratio, "latent": frames * ratio, "flow": frames * ratio}[cfg.stage]  # fmt: skip
    # every input is checked before TrainRun makes the run folder: a bad one leaves no empty run behind
    codec = _latent_codec(cfg, train) if cfg.stage in ("latent", "flow") else None
    if cfg.stage in ACOUSTIC and "mulan" not in train["items"][0]:
        raise ValueError(f"{root} holds no MuLaN latents (tokenized before they were stored): the {cfg.stage} stage "
                         "conditions on them; run `musiclm data tokenize --reuse` into a new folder")  # fmt: skip
    if cfg.stage == "flow" and cfg.mean_stage and not Path(cfg.mean_stage).is_file():
        raise FileNotFoundError(f"--mean-stage {cfg.mean_stage!r}: no such file")
    run = TrainRun(cfg, out=out, accelerator=accelerator, desc=f"{cfg.stage} LM",
                   model_file=f"{cfg.stage}.safetensors")  # fmt: skip
    model_path, resume = run.model_file, run.resuming
    torch.manual_seed(cfg.seed)
    lm: TokenLM | MaskedAcousticLM | LatentAcousticLM
    if resume and cfg.stage == "acoustic":
        lm = load(model_path, expected=MaskedAcousticLM)
    elif resume and cfg.stage == "latent":
        lm = load(model_path, expected=LatentAcousticLM)
    elif resume and cfg.stage == "flow":
        lm = load(model_path, expected=FlowAcousticLM)
    elif resume:
        lm = load(model_path, expected=TokenLM)
        has_levels = lm.group_emb is not None
        if (
            cfg.level_embeddings is not None
            and cfg.level_embeddings != has_levels
            and len(getattr(layout, "groups", [])) > 1
        ):
            raise ValueError(
                f"{model_path} was trained {'with' if has_levels else 'without'} level embeddings; resume it "
                f"with {'--level-embeddings' if has_levels else '--no-level-embeddings'} (or neither)"
            )
    elif cfg.stage == "latent":
        assert codec is not None
        beat_args: dict[str, Any] = {"beat_bins": cfg.beat_bins, "beat_harmonics": cfg.beat_harmonics}
        lm = LatentAcousticLM(latent_dim=codec.latent_dim, **_frame_aligned_args(cfg, train),
                              **(beat_args if cfg.beat_from else {}))  # fmt: skip
        lm.set_prior_bank(_prior_bank(train["items"], len(lm.prior_bank)))
        fit_report = lm.fit_direct(
            (
                it["semantic"],
                codec.latents_from_codes(it["codes"][None].long())[0],
                it["mulan"],
                *((it["beat"], it["controls"][1]) if lm.beat_bins else ()),
            )
            for it in train["items"]
        )
        (out / "fit_direct.json").write_text(json.dumps(fit_report, indent=2))
    elif cfg.stage == "flow":
        assert codec is not None
        lm = _flow_stage(cfg, train, codec)
        fit_report = lm.fit_residual(
            (it["semantic"], codec.latents_from_codes(it["codes"][None].long())[0], it["mulan"].float())
            for it in train["items"][:256]
        )
        (out / "fit_residual.json").write_text(json.dumps(fit_report, indent=2))
    elif cfg.stage == "acoustic":
        if not 1 <= (cfg.acoustic_levels or 1) <= train["num_quantizers"]:
            raise ValueError(f"acoustic_levels={cfg.acoustic_levels} must be in [1, {train['num_quantizers']}] (the "
                             f"codec levels {root} holds)")  # fmt: skip
        lm = MaskedAcousticLM(codebook_size=train["codebook_size"],
                              num_quantizers=cfg.acoustic_levels or train["num_quantizers"],
                              **_frame_aligned_args(cfg, train))  # fmt: skip
        lm.set_prior_bank(_prior_bank(train["items"], len(lm.prior_bank)))
    else:
        assert layout is not None
        lm = TokenLM(vocab_size=layout.vocab_size, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head,
                     dropout=cfg.dropout, num_cond=train["num_cond"], cond_vocab=train["cond_vocab"],
                     cond_drop_prob=cfg.cond_drop_prob, max_seq_len=seq_len,
                     token_groups=layout.groups if _level_embeddings(cfg) else None,
                     cond_latent_dim=_cond_latent_dim(cfg, train),
                     beat_harmonics=cfg.beat_harmonics if cfg.beat_from else 0,
                     control_classes=CONTROL_CLASSES if cfg.controls_from else None)  # fmt: skip
    if isinstance(lm, FlowAcousticLM):  # the regression part is frozen: only the flow's weights get gradients
        lm.requires_grad_(False)
        for p in lm.flow_parameters():
            p.requires_grad_(True)
    opt, sched = adamw_warmup_cosine(lm.parameters(), lr=cfg.lr, weight_decay=0.01, warmup_steps=cfg.warmup_steps,
                                     max_steps=cfg.max_steps)  # fmt: skip
    ema = EMA(lm, cfg.ema_decay) if cfg.ema_decay else None
    run.restore(model=lm, optimizer=opt, scheduler=sched, ema=ema)
    lm_ddp, opt = accelerator.prepare(lm, opt)
    if codec is not None:  # the latent stage's targets are computed from codes on the training device
        codec.to(accelerator.device)
    model: TokenLM | MaskedAcousticLM | LatentAcousticLM = accelerator.unwrap_model(lm_ddp)

    def evaluate(m: Any) -> dict[str, Any]:
        assert val is not None
        if cfg.stage == "acoustic":
            return evaluate_acoustic(m, val["items"], cfg, ratio, frames)
        if cfg.stage == "latent":
            return evaluate_latent(m, codec, val["items"], cfg, ratio, frames)
        if cfg.stage == "flow":
            return evaluate_flow(m, codec, val["items"], cfg, ratio, frames)
        assert layout is not None
        return evaluate_stage(m, val["items"], cfg, layout, ratio, frames, num_levels, _semantic_rate(train))

    if ema is not None:
        ema.model.to(accelerator.device)
    num_levels = train["num_quantizers"]
    items = train["items"]
    report: dict[str, Any] = {}
    keys = ["loss", "val_loss", "val_loss_shuffled_cond"] + (["val_loss_no_beat"] if cfg.beat_from else [])
    keys += ["val_loss_no_controls"] if cfg.controls_from and cfg.stage == "semantic" else []
    keys += {"latent": ["val_loss_null_cond"], "flow": ["val_loss_null_cond"],
             "acoustic": ["val_level1_from_blank", "val_level1_from_blank_shuffled_cond",
                          "val_level1_from_blank_null_cond"]}.get(cfg.stage, [])  # fmt: skip

    def export() -> None:
        extra = {"step": run.step, "stage": cfg.stage, "identity": stage_identity(cfg.stage, train["identity"]),
                 "config": asdict(cfg)}  # fmt: skip
        save(model, model_path, extra=extra)
        if ema is not None:
            save(ema.model, out / f"{cfg.stage}_ema.safetensors", extra={**extra, "ema_decay": ema.decay})

    lm_ddp.train()
    while run.running:
        rng = run.step_rng()
        batch_items = [items[rng.randrange(len(items))] for _ in range(cfg.batch_size)]
        if isinstance(model, FlowAcousticLM):  # flow matching on the residual of the frozen regression
            assert codec is not None
            batch = _acoustic_batch(batch_items, ratio, frames, rng, codec.num_quantizers)
            sem, codes, latents = (t.to(accelerator.device) for t in batch)
            gen = torch.Generator().manual_seed(rng.randrange(2**62))
            cond, drop = model.training_inputs(latents, generator=gen)
            with accelerator.autocast():
                loss = model.flow_loss(sem, codec.latents_from_codes(codes), cond, drop=drop, generator=gen,
                                       wrapper=lm_ddp)  # fmt: skip
            mask = torch.ones_like(codes[:, 0], dtype=torch.bool)
        elif isinstance(model, LatentAcousticLM):  # regression on the codec's latents
            assert codec is not None
            sem, codes, latents, beat, drums = _acoustic_crops(batch_items, ratio, frames, rng, codec.num_quantizers)
            sem, codes, latents = (t.to(accelerator.device) for t in (sem, codes, latents))
            target = codec.latents_from_codes(codes)
            gen = torch.Generator().manual_seed(rng.randrange(2**62))
            cond, drop = model.training_inputs(latents, generator=gen)
            beat_in = model.training_beat(beat, generator=gen) if model.beat_bins else None
            with accelerator.autocast():
                pred = lm_ddp(sem, cond, frames=target.shape[1], drop=drop, beat=beat_in,
                              drums=drums if model.beat_bins else None)  # fmt: skip
            loss = F.l1_loss(pred.float(), target)
            mask = torch.ones_like(codes[:, 0], dtype=torch.bool)
        elif layout is None:  # the masked acoustic stage: its own masking and loss
            assert isinstance(model, MaskedAcousticLM)
            batch = _acoustic_batch(batch_items, ratio, frames, rng, model.num_quantizers)
            sem, codes, latents = (t.to(accelerator.device) for t in batch)
            gen = torch.Generator().manual_seed(rng.randrange(2**62))
            inputs, target, truth = model.training_inputs(sem, codes, latents, generator=gen)
            with accelerator.autocast():
                logits = lm_ddp(**inputs)  # through the wrapper: DDP syncs gradients of its forward
            loss = F.cross_entropy(logits[target].float(), truth[target].long())
            mask = torch.ones_like(codes[:, 0], dtype=torch.bool)  # frames seen, for the throughput figure
        else:
            tokens, mask, cond, beat = _batch(batch_items, layout, ratio, frames, rng, num_levels)
            tokens, mask, cond = tokens.to(accelerator.device), mask.to(accelerator.device), cond.to(accelerator.device)
            latent = _noisy_latents(batch_items, cfg.cond_noise, rng) if model.cond_latent_dim else None
            controls = _controls(batch_items) if model.control_classes else None
            with accelerator.autocast():
                logits = lm_ddp(tokens, cond, cond_latent=None if latent is None else latent.to(accelerator.device),
                                beat=beat if getattr(model, "beat_harmonics", 0) else None,
                                controls=None if controls is None else controls.to(accelerator.device))  # fmt: skip
            loss = F.cross_entropy(logits[mask].float(), tokens[mask])
        run.update(loss, opt, lm_ddp.parameters(), grad_clip=cfg.grad_clip, scheduler=sched, ema=ema, model=model)
        run.advance(items=int(mask.sum()))
        if run.due(cfg.log_every):
            run.log({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, rate="tokens_per_s")
        if val is not None and run.is_main and run.due(cfg.eval_every):
            with accelerator.autocast():
                report = evaluate(ema.model if ema is not None else model)
            run.write({k: v for k, v in report.items() if isinstance(v, float)})
            lm_ddp.train()
        if run.due(cfg.checkpoint_every):
            run.checkpoint(export, curves=keys, title=cfg.stage)
    run.close(model)
    return report


def _acoustic_batch(items: list[dict[str, Any]], ratio: int, frames: int, rng: random.Random,
                    levels: int) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """``(semantic [B, frames], codes [B, levels, frames * ratio], MuLaN latents [B, C])`` of random crops."""
    return _acoustic_crops(items, ratio, frames, rng, levels)[:3]


def _acoustic_crops(items: list[dict[str, Any]], ratio: int, frames: int, rng: random.Random, levels: int
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:  # fmt: skip
    """:func:`_acoustic_batch` and the crops' beat grids ``[B, 2]`` (phase from each crop's first frame) and
    drums labels ``[B]`` where the items carry them (:func:`add_beat_grids`, :func:`add_controls`), else ``None``."""
    crops = [_crop(it, frames, ratio, rng) for it in items]
    n = min(len(sem) for sem, _, _ in crops)
    beat = drums = None
    if "beat" in items[0]:
        grids = [it["beat"].float() for it in items]
        beat = torch.stack([torch.stack([g[0], (g[1] - start) % g[0] if g[0] > 0 else g[1] * 0])
                            for g, (_, _, start) in zip(grids, crops)])  # fmt: skip
    if "controls" in items[0]:
        drums = torch.stack([it["controls"][1] for it in items]).long()
    return (torch.stack([sem[:n] for sem, _, _ in crops]), torch.stack([c[:levels, : n * ratio] for _, c, _ in crops]),
            torch.stack([it["mulan"].float() for it in items]), beat, drums)  # fmt: skip


@torch.no_grad()
def evaluate_acoustic(lm: MaskedAcousticLM, items: list[dict[str, Any]], cfg: StageTrainConfig, ratio: int,
                      frames: int) -> dict[str, Any]:  # fmt: skip
    """Validation of the acoustic stage with the clips' own conditioning, another clip's (shuffled) and
    none (null): the masked loss on fixed masks, and the loss of the first level with every frame
    masked (what the first round of generation faces, where only the conditioning and the semantic
    ids can say what the music is: the conditioning must matter there, shuffled and null higher)."""
    lm.eval()
    rng = random.Random(1234)
    chosen = items[: max(cfg.eval_items, 2)]
    device = lm.null_cond.device
    sums: dict[str, float] = {}
    count, frame_count = 0, 0
    for start in range(0, len(chosen), cfg.batch_size):
        part = chosen[start : start + cfg.batch_size]
        if len(part) < 2:
            break
        sem, codes, latents = (t.to(device) for t in _acoustic_batch(part, ratio, frames, rng, lm.num_quantizers))
        seed = rng.randrange(2**62)
        blank = torch.full_like(codes, lm.mask_id)
        zero = torch.zeros(len(part), dtype=torch.long, device=device)
        for name, cond in (("", latents), ("_shuffled_cond", latents.roll(1, 0)), ("_null_cond", None)):
            inputs, target, truth = lm.training_inputs(sem, codes, cond, generator=torch.Generator().manual_seed(seed))
            ce = F.cross_entropy(lm(**inputs)[target].float(), truth[target].long(), reduction="sum")
            sums[f"val_loss{name}"] = sums.get(f"val_loss{name}", 0.0) + ce.item()
            first = F.cross_entropy(lm(sem, blank, cond, zero).flatten(0, 1).float(), codes[:, 0].flatten().long(),
                                    reduction="sum")  # fmt: skip
            sums[f"val_level1_from_blank{name}"] = sums.get(f"val_level1_from_blank{name}", 0.0) + first.item()
        count += int(target.sum())
        frame_count += codes.shape[0] * codes.shape[-1]
    report: dict[str, Any] = {
        k: round(v / (count if k.startswith("val_loss") else frame_count), 5) for k, v in sums.items()
    }
    return {**report, "val_clips": len(chosen)}


def _frame_aligned_args(cfg: StageTrainConfig, train: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments both frame-aligned stages take from the config and the tokens."""
    cond_dim = train["items"][0]["mulan"].shape[-1]
    return dict(semantic_vocab=train["semantic_vocab"], ratio=train["ratio"], cond_dim=cond_dim, dim=cfg.dim,
                depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head, dropout=cfg.dropout,
                cond_drop_prob=cfg.cond_drop_prob, cond_noise=cfg.cond_noise,
                prior_size=min(cfg.prior_size, len(train["items"])))  # fmt: skip


def _prior_bank(items: list[dict[str, Any]], size: int) -> Tensor:
    """The MuLaN audio latents of the first ``size`` training clips ``[size, C]`` (the text prior's bank)."""
    return torch.stack([it["mulan"].float() for it in items[:size]]) if size else torch.zeros(0, 0)


def _latent_codec(cfg: StageTrainConfig, train: dict[str, Any]) -> Any:
    """The SpectralCodec of ``cfg.codec``, checked to be the one the tokens were made with."""
    from ..codec import SpectralCodec

    codec = load(cfg.codec, expected=SpectralCodec).eval()
    made_with = train["identity"].get("codec")
    if made_with != identity(codec):
        raise ValueError(f"--codec {cfg.codec!r} is {identity(codec)}, but the tokens were made with {made_with}")
    return codec


def _flow_stage(cfg: StageTrainConfig, train: dict[str, Any], codec: Any) -> FlowAcousticLM:
    """A new flow stage around the regression stage of ``cfg.mean_stage`` (its weights copied, to stay frozen),
    checked to have been trained on tokens of the same MuLaN, semantic tokenizer and codec."""
    from ..checkpoint import read_header

    mean = load(cfg.mean_stage, expected=LatentAcousticLM)
    if isinstance(mean, FlowAcousticLM):
        raise ValueError(f"--mean-stage {cfg.mean_stage!r} is a flow stage already; give its latent stage")
    made_with = read_header(cfg.mean_stage)["extra"].get("identity")
    needed = stage_identity("latent", train["identity"])
    if made_with is not None and stage_identity("latent", made_with) != needed:
        raise ValueError(f"--mean-stage {cfg.mean_stage!r} was trained on tokens of {made_with}, --tokens "
                         f"{cfg.tokens!r} holds {train['identity']}")  # fmt: skip
    if mean.beat_bins:
        raise ValueError(f"--mean-stage {cfg.mean_stage!r} reads a beat grid and a drums label, which the flow "
                         "stage does not pass yet: give a latent stage trained without --beat-from")  # fmt: skip
    if mean.latent_dim != codec.latent_dim:
        raise ValueError(f"--mean-stage {cfg.mean_stage!r} makes {mean.latent_dim}-dim latents, --codec "
                         f"{codec.latent_dim}")  # fmt: skip
    # the flow's own conditioning noise and dropout (the config's, not the latent stage's): its residual is
    # measured against the mean of the conditioning it is given, and generation gives a clean one
    config = {**mean.config, "cond_noise": cfg.cond_noise, "cond_drop_prob": cfg.cond_drop_prob}
    for key in ("movement_gain_alpha", "movement_bands"):  # a setting of the mean stage's generate, not the flow's
        config.pop(key, None)
    lm = FlowAcousticLM(**config, flow_dim=cfg.dim, flow_depth=cfg.depth, flow_heads=cfg.heads,
                        flow_dim_head=cfg.dim_head, flow_dropout=cfg.dropout, flow_steps=cfg.flow_steps)  # fmt: skip
    weights = {k: v.float() for k, v in mean.state_dict().items() if k != "movement_gain"}
    missing, unexpected = lm.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("flow_") or k == "resid_std" for k in missing), (missing, unexpected)
    return lm


def _latent_val_batches(lm: LatentAcousticLM, codec: Any, chosen: list[dict[str, Any]], batch_size: int, ratio: int,
                        frames: int, rng: random.Random) -> Iterator[tuple[Tensor, Tensor, Tensor]]:  # fmt: skip
    """``(semantic, target latents, MuLaN latents)`` of each validation batch of at least 2 clips (shuffling the
    conditioning needs two), on the stage's device, with ``lm`` put in evaluation mode."""
    for sem, target, latents, _, _ in _latent_val_crops(lm, codec, chosen, batch_size, ratio, frames, rng):
        yield sem, target, latents


def _latent_val_crops(lm: LatentAcousticLM, codec: Any, chosen: list[dict[str, Any]], batch_size: int, ratio: int,
                      frames: int, rng: random.Random
                      ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]]:  # fmt: skip
    """:func:`_latent_val_batches` with each batch's beat grids and drums labels (``None`` where not carried)."""
    lm.eval()
    device = lm.null_cond.device
    for start in range(0, len(chosen), batch_size):
        part = chosen[start : start + batch_size]
        if len(part) < 2:
            break
        sem, codes, latents, beat, drums = _acoustic_crops(part, ratio, frames, rng, codec.num_quantizers)
        sem, codes, latents = sem.to(device), codes.to(device), latents.to(device)
        yield sem, codec.latents_from_codes(codes), latents, beat, drums


@torch.no_grad()
def evaluate_flow(lm: FlowAcousticLM, codec: Any, items: list[dict[str, Any]], cfg: StageTrainConfig, ratio: int,
                  frames: int) -> dict[str, Any]:  # fmt: skip
    """Validation flow loss (fixed noise and times per batch) with the clips' own conditioning, another clip's
    (shuffled) and none (null), and the frame L1 of one sample (8 steps, own conditioning) against the
    regression's mean alone: a sample is farther from the truth than the mean by design, but it should
    not be by much more than the spread of real frames."""
    rng = random.Random(1234)
    chosen = items[: max(cfg.eval_items, 2)]
    sums: dict[str, float] = {}
    batches = 0
    for sem, target, latents in _latent_val_batches(lm, codec, chosen, cfg.batch_size, ratio, frames, rng):
        seed = rng.randrange(2**62)
        for name, cond in (("", latents), ("_shuffled_cond", latents.roll(1, 0)), ("_null_cond", None)):
            loss = lm.flow_loss(sem, target, cond, generator=torch.Generator().manual_seed(seed)).item()
            sums[f"val_loss{name}"] = sums.get(f"val_loss{name}", 0.0) + loss
        gen = torch.Generator().manual_seed(seed)
        sample = lm.generate(sem, latents, frames=target.shape[1], steps=8, generator=gen)
        mean = lm.generate(sem, latents, frames=target.shape[1], temperature=0.0)
        sums["val_sample_l1"] = sums.get("val_sample_l1", 0.0) + F.l1_loss(sample, target).item()
        sums["val_mean_l1"] = sums.get("val_mean_l1", 0.0) + F.l1_loss(mean, target).item()
        batches += 1
    return {**{k: round(v / batches, 5) for k, v in sums.items()}, "val_clips": len(chosen)}


@torch.no_grad()
def evaluate_latent(lm: LatentAcousticLM, codec: Any, items: list[dict[str, Any]], cfg: StageTrainConfig, ratio: int,
                    frames: int) -> dict[str, Any]:  # fmt: skip
    """Validation L1 of the latent stage with the clips' own conditioning, another clip's (shuffled) and
    none (null): the conditioning matters when the shuffled and null losses are higher."""
    rng = random.Random(1234)
    chosen = items[: max(cfg.eval_items, 2)]
    sums: dict[str, float] = {}
    batches = 0
    for sem, target, latents, beat, drums in _latent_val_crops(lm, codec, chosen, cfg.batch_size, ratio, frames, rng):
        if not lm.beat_bins:
            beat = drums = None
        runs = [("", latents, beat, drums), ("_shuffled_cond", latents.roll(1, 0), beat,
                 None if drums is None else drums.roll(1, 0)), ("_null_cond", None, beat, None)]  # fmt: skip
        if lm.beat_bins:  # what the grid and the label are worth: the same crops with both unknown
            runs.append(("_no_beat", latents, None, None))
        for name, cond, b, d in runs:
            err = F.l1_loss(lm(sem, cond, frames=target.shape[1], beat=b, drums=d).float(), target).item()
            sums[f"val_loss{name}"] = sums.get(f"val_loss{name}", 0.0) + err
        batches += 1
    return {**{k: round(v / batches, 5) for k, v in sums.items()}, "val_clips": len(chosen)}


@torch.no_grad()
def evaluate_stage(
    lm: TokenLM,
    items: list[dict[str, Any]],
    cfg: StageTrainConfig,
    layout: Layout,
    ratio: int,
    frames: int,
    num_levels: int,
    semantic_rate: float = 25.0,
) -> dict[str, Any]:
    """Validation loss and accuracy with the true conditioning, and with conditioning shuffled
    across the batch (conditioning must matter: the shuffled loss should be higher).

    ``val_loss_first_second`` (and its shuffled twin) restrict the loss to the targets of each crop's
    first second: later tokens can be predicted from the context the crop already holds (semantic ids
    and codes change slowly), so that is where the conditioning has most to say."""
    lm.eval()
    rng = random.Random(1234)
    chosen = items[: max(cfg.eval_items, 2)]
    device = next(lm.parameters()).device
    sums = {"loss": 0.0, "shuffled": 0.0, "correct": 0.0, "count": 0, "head": 0.0, "head_shuffled": 0.0,
            "head_count": 0}  # fmt: skip
    level_correct: Tensor | None = None
    level_count: Tensor | None = None
    bounds = [*range(0, len(chosen), cfg.batch_size), len(chosen)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:  # shuffling needs two clips: a last lone clip joins
        del bounds[-2]  # the batch before it
    seconds = frames / semantic_rate
    for start, end in zip(bounds, bounds[1:]):
        part = chosen[start:end]
        tokens, mask, cond, beat = _batch(part, layout, ratio, frames, rng, num_levels)
        tokens, mask, cond = tokens.to(device), mask.to(device), cond.to(device)
        beat = beat if lm.beat_harmonics else None
        latent = _noisy_latents(part, 0.0, rng).to(device) if lm.cond_latent_dim else None
        controls = _controls(part) if lm.control_classes else None
        logits = lm(tokens, cond, cond_latent=latent, beat=beat, controls=controls).float()
        shuffled = lm(tokens, cond.roll(1, dims=0), cond_latent=None if latent is None else latent.roll(1, dims=0),
                      beat=beat, controls=None if controls is None else controls.roll(1, dims=0))  # fmt: skip
        shuffled = shuffled.float()
        if controls is not None:  # what the labels are worth: the same crops with key and drums unknown
            blind = lm(tokens, cond, cond_latent=latent, beat=beat, controls=torch.full_like(controls, -1)).float()
            sums["no_controls"] = (
                sums.get("no_controls", 0.0) + F.cross_entropy(blind[mask], tokens[mask], reduction="sum").item()
            )
        if beat is not None:  # what the grid is worth: the same crops with the tempo unknown
            no_beat = lm(tokens, cond, cond_latent=latent, beat=torch.zeros_like(beat), controls=controls).float()
            sums["no_beat"] = (
                sums.get("no_beat", 0.0) + F.cross_entropy(no_beat[mask], tokens[mask], reduction="sum").item()
            )
        n = int(mask.sum())
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # [B, N]
        ce_shuffled = F.cross_entropy(shuffled.transpose(1, 2), tokens, reduction="none")
        sums["loss"] += ce[mask].sum().item()
        sums["shuffled"] += ce_shuffled[mask].sum().item()
        head = mask & (mask.cumsum(1) <= mask.sum(1, keepdim=True) / seconds)  # targets of the first second
        sums["head"] += ce[head].sum().item()
        sums["head_shuffled"] += ce_shuffled[head].sum().item()
        sums["head_count"] += int(head.sum())
        correct = (logits.argmax(-1) == tokens) & mask
        sums["correct"] += int(correct.sum())
        sums["count"] += n
        if not isinstance(layout, SemanticLayout):  # accuracy per codec level
            levels = layout.num_coarse if isinstance(layout, CoarseLayout) else layout.levels
            offset = frames if isinstance(layout, CoarseLayout) else 0
            pos = torch.arange(tokens.shape[1], device=device) - offset
            level = torch.where(pos >= 0, pos % levels, -1)
            hits = torch.stack([(correct & (level == q)).sum() for q in range(levels)]).float()
            counts = torch.stack([(mask & (level == q)).sum() for q in range(levels)]).float()
            level_correct = hits if level_correct is None else level_correct + hits
            level_count = counts if level_count is None else level_count + counts
    loss, loss_shuffled, acc = (sums["loss"] / sums["count"], sums["shuffled"] / sums["count"],
                                sums["correct"] / sums["count"])  # fmt: skip
    head_count = max(sums["head_count"], 1)
    report: dict[str, Any] = {"val_loss": round(loss, 5), "val_loss_shuffled_cond": round(loss_shuffled, 5),
                              "val_accuracy": round(acc, 5),
                              "val_loss_first_second": round(sums["head"] / head_count, 5),
                              "val_loss_first_second_shuffled_cond": round(sums["head_shuffled"] / head_count, 5),
                              "val_clips": len(chosen)}  # fmt: skip
    for name in ("no_beat", "no_controls"):
        if name in sums:
            report[f"val_loss_{name}"] = round(sums[name] / sums["count"], 5)
    if level_correct is not None and level_count is not None:
        per_level = (level_correct / level_count.clamp(min=1)).tolist()
        report["val_accuracy_per_level"] = {str(q): round(a, 4) for q, a in enumerate(per_level) if level_count[q]}
    return report


def evaluate_checkpoint(checkpoint: str, tokens: str, *, items: int = 256, batch_size: int = 16,
                        crop_seconds: float | None = None, threads: int = 2, split: str = "val",
                        beat_from: str = "", controls_from: str = "") -> dict[str, Any]:  # fmt: skip
    """:func:`evaluate_stage` of a saved stage LM on ``tokens/val.pt`` (``split="test"``: ``test.pt``, the
    sealed test split that ``data tokenize --test`` writes; the stage, crop and number of coarse levels
    come from the checkpoint's training config unless given)."""
    from ..checkpoint import read_header

    torch.set_num_threads(threads)
    extra = read_header(checkpoint)["extra"]
    if "stage" not in extra:
        raise ValueError(f"{checkpoint!r} is not a stage LM written by `musiclm train stage` (no stage recorded)")
    val = load_split_tokens(tokens, split)
    needed = stage_identity(extra["stage"], val["identity"])
    if extra.get("identity") and stage_identity(extra["stage"], extra["identity"]) != needed:
        raise ValueError(
            f"{checkpoint!r} was trained on tokens of {extra['identity']}, {tokens!r} holds {val['identity']}"
        )
    trained = extra.get("config", {})
    cfg = StageTrainConfig(stage=extra["stage"], tokens=tokens, batch_size=batch_size, eval_items=items,
                           num_coarse=trained.get("num_coarse", 3),
                           crop_seconds=crop_seconds or trained.get("crop_seconds"))  # fmt: skip
    layout = _layout(cfg, val)
    frames = _crop_frames(cfg, val)
    lm = load(checkpoint, expected=TokenLM)
    if lm.beat_harmonics:  # the grid each clip's own ids give, as in training (else the LM's null grid)
        source = beat_from or trained.get("beat_from", "")
        if not source or not Path(source).is_file():
            raise ValueError(f"{checkpoint!r} reads a beat grid: give the semantic tokenizer that made the tokens "
                             f"(eval stage --beat-from; its run used {trained.get('beat_from')!r})")  # fmt: skip
        add_beat_grids(val["items"], load_beat_tokenizer(source, val["identity"]))
    if lm.control_classes:  # the labels each clip's audio latent gives, as in training
        source = controls_from or trained.get("controls_from", "")
        if not source or not Path(source).is_file():
            raise ValueError(f"{checkpoint!r} reads key and drums labels: give the MuLaN that made the tokens (eval "
                             f"stage --controls-from; its run used {trained.get('controls_from')!r})")  # fmt: skip
        add_controls(val["items"], load_control_reader(source, val["identity"]))
    return {"stage": cfg.stage, "crop_seconds": frames / _semantic_rate(val), **evaluate_stage(lm, val["items"], cfg,
            layout, val["ratio"], frames, val["num_quantizers"], _semantic_rate(val))}  # fmt: skip


def main_from_args(config_path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    return train_stage(load_config(StageTrainConfig, config_path, overrides))


__all__ = ["STAGE_INPUTS", "StageTrainConfig", "check_identity", "identity", "train_stage"]

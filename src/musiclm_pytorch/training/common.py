"""Plumbing every trainer shares: configs, LR schedule, resumable state, resumable data order, logs, plots.

The library never imports this package; trainers use only the public model APIs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..checkpoint import atomic_path

C = TypeVar("C")


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config dataclass; unknown keys are an error that names them and lists the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
    return cls(**data)


def load_config(cls: type[C], path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> C:
    """Config from a JSON file (optional) with ``overrides`` on top (``None`` values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(p)!r} not found")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {str(p)!r} is not valid JSON: {e}") from e
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, data)


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float = 0.05) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_warmup_cosine(parameters: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
                        warmup_steps: int, max_steps: int, decay_vectors: bool = True) -> tuple[Any, Any]:  # fmt: skip
    """Every trainer's optimizer: AdamW over the parameters that train, with :func:`warmup_cosine` as its
    schedule. ``decay_vectors=False`` keeps biases and norm gains (1-D parameters) out of the weight decay,
    in a second parameter group. Returns ``(optimizer, scheduler)``."""
    params = [p for p in parameters if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params, "weight_decay": weight_decay}]
    if not decay_vectors:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps=warmup_steps, max_steps=max_steps)
    )
    return optimizer, scheduler


def make_accelerator(mixed_precision: str = "no", **kwargs: Any) -> Any:
    """An ``accelerate.Accelerator`` (CPU when no GPU is visible) for one training run.

    Accelerate keeps one process-wide state and refuses a second Accelerator with another precision,
    so a notebook (or test session) that trains MuLaN in bf16 and then a stage in fp32 would fail.
    The per-run part (precision, plugins) is cleared here; the process group (``PartialState``, set
    up by ``accelerate launch`` / ``torchrun``) is kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), **kwargs)


class EMA:
    """Exponential moving average of a model's trained weights, kept beside the training copy.

    After every optimizer step, ``ema = d * ema + (1 - d) * weights`` for each parameter that requires
    a gradient (frozen parts, e.g. a frozen MiniLM, are shared and never averaged) and buffers are
    copied. ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first averages do not
    stay near the random initialisation. ``ema.model`` is an eval-mode copy used for validation and
    saved as its own checkpoint; :meth:`state_dict` goes into the train state for resuming.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model: Any = copy.deepcopy(model).eval()  # the same class as ``model``
        self.model.requires_grad_(False)
        self.num_updates = 0
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        live, ema = dict(model.named_parameters()), dict(self.model.named_parameters())
        for name in self._names:
            ema[name].lerp_(live[name].detach().to(ema[name].dtype), 1.0 - d)
        ema_buffers = dict(self.model.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)

    def state_dict(self) -> dict[str, Any]:
        weights = dict(self.model.named_parameters())
        return {"num_updates": self.num_updates, "decay": self.decay,
                "weights": {n: weights[n].detach().clone() for n in self._names}}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        weights = dict(self.model.named_parameters())
        missing = sorted(set(self._names) - set(state["weights"]))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} trained weights, e.g. {missing[:3]}")
        with torch.no_grad():
            for n in self._names:
                weights[n].copy_(state["weights"][n])


def check_finite(value: torch.Tensor, step: int, what: str = "loss") -> None:
    """Stop a run whose loss (or gradient norm) is NaN or infinite before the step writes it into the
    weights: the last checkpoint stays the last good one."""
    if not torch.isfinite(value.detach()).all():
        raise FloatingPointError(f"{what} is {value.item()} at step {step + 1}: stopped before the update; the "
                                 "last checkpoint is untouched (lower lr, check the data, or bf16 off)")  # fmt: skip


# settings a resumed run may change: how long it runs, how often it reports, and how fast it goes;
# anything else (lr, batch size, data, model, seed...) would silently make one run of two
RESUMABLE_CHANGES = frozenset({
    "max_steps", "out", "progress", "threads", "num_workers", "log_every", "eval_every", "eval_clips",
    "eval_items", "checkpoint_every", "val_data", "allow_config_change",
})  # fmt: skip


# settings that build the model: a resumed run rebuilds it from its own file, so a change could not take
# effect and is refused even with --allow-config-change
ARCHITECTURE_KEYS = frozenset({
    "stage", "preset", "dim", "depth", "heads", "dim_head", "dropout", "num_coarse", "cond_latent", "cond_drop_prob",
    "acoustic_levels", "codec", "mean_stage", "level_embeddings", "text_tower", "mulan", "loss", "crop_seconds",
    "prior_size", "init_checkpoint",
})  # fmt: skip


def check_resume_config(stored: dict[str, Any] | None, requested: dict[str, Any], out: str | os.PathLike, *,
                        allow: bool = False) -> list[str]:  # fmt: skip
    """Refuse to resume the run in ``out`` with other settings than it was started with (``stored``, the
    config its train state keeps): only :data:`RESUMABLE_CHANGES` may differ, unless ``allow`` (the
    trainers' ``--allow-config-change``). Settings the stored config lacks (written by an older version)
    and requested ``None`` (unset: what the checkpoint has) are not compared. Returns the changes
    (``"key old -> new"``) that were allowed."""
    if not stored:
        return []
    changed = [f"{k} {stored[k]!r} -> {v!r}" for k, v in requested.items()
               if k in stored and v is not None and k not in RESUMABLE_CHANGES and stored[k] != v]  # fmt: skip
    frozen = [c for c in changed if c.split(" ", 1)[0] in ARCHITECTURE_KEYS]
    if allow and frozen:
        raise ValueError(f"{str(out)!r}: {', '.join(frozen)} cannot change on resume, not even with "
                         "--allow-config-change (the model is rebuilt from its own file): train into a new "
                         "--out")  # fmt: skip
    if changed and not allow:
        raise ValueError(f"{str(out)!r} holds a run started with other settings: {', '.join(changed)}. Resume it "
                         "with its own settings (only max_steps, the log / eval / checkpoint cadence, threads and "
                         "workers may change), train into a new --out, or pass --allow-config-change to continue "
                         "it with the new settings")  # fmt: skip
    return changed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def rng_state() -> dict[str, Any]:
    """Every global RNG a step draws from: Python's, numpy's legacy one (what third-party code such as
    librosa and augmentations use), torch's CPU generator and, on a GPU, each CUDA device's (dropout)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:  # another machine: the run goes on, its dropout draws no longer those of an unbroken run
            warnings.warn(f"the train state holds {len(state['cuda'])} CUDA generators, this machine has "
                          f"{torch.cuda.device_count()} devices: their RNGs start afresh", stacklevel=2)  # fmt: skip


def epoch_order(n: int, *, seed: int, epoch: int, skip: int = 0) -> list[int]:
    """The shuffled index order of ``epoch`` (a function of seed and epoch only), minus the first
    ``skip`` indices already consumed before a resume."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()[skip:]


class EpochCursor:
    """Where a run is in its data (epoch, batches consumed), so a resumed run continues the same order.

    ``batches(make_loader)`` yields batches forever: each epoch's order is :func:`epoch_order` minus
    what was consumed before a resume, and ``make_loader(epoch, order)`` turns it into batches (a
    DataLoader over ``sampler=order``). The position advances before a batch is yielded, so a
    checkpoint written while handling it resumes after it.
    """

    def __init__(self, num_items: int, *, batch_size: int, num_processes: int = 1, seed: int = 0):
        self.num_items, self.per_step, self.seed = num_items, batch_size * num_processes, seed
        self.steps_per_epoch = num_items // self.per_step
        if self.steps_per_epoch == 0:
            raise ValueError(f"{num_items} training clips are fewer than one batch of {batch_size}")
        self.epoch, self.batch_in_epoch = 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]

    def batches(
        self, make_loader: Callable[[int, list[int]], Iterable[Any]], on_epoch_end: Callable[[int], None] | None = None
    ) -> Iterator[Any]:
        while True:
            if self.batch_in_epoch >= self.steps_per_epoch:
                if on_epoch_end is not None:
                    on_epoch_end(self.epoch)
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            order = epoch_order(
                self.num_items, seed=self.seed, epoch=self.epoch, skip=self.batch_in_epoch * self.per_step
            )
            for batch in make_loader(self.epoch, order):
                self.batch_in_epoch += 1
                yield batch
                if self.batch_in_epoch >= self.steps_per_epoch:
                    break


class JsonLog:
    """Append-only JSON-lines log; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> Iterator[dict[str, Any]]:
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line:
                    yield json.loads(line)


def plot_curves(log: JsonLog, path: str | os.PathLike, *, keys: list[str], title: str) -> Path | None:
    """One panel per key that the log has (x = step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(log.records())
    present = [k for k in keys if any(k in r for r in records)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present):
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

"""The training loop core every trainer shares: resume, the update step, logging, progress, checkpoints.

A trainer keeps its model, data and loss, and hands the rest to :class:`TrainRun`::

    run = TrainRun(cfg, out=out, accelerator=accelerator, desc="mulan")
    ...build the model (from run.model_file when run.resuming) and its optimizer...
    run.restore(model=model, optimizer=opt, scheduler=sched, ema=ema)   # the step, weights and state
    while run.step < cfg.max_steps:
        loss = ...
        run.update(loss, opt, model.parameters(), grad_clip=cfg.grad_clip, scheduler=sched, ema=ema)
        run.advance(items=len(batch))
        if run.due(cfg.log_every):
            run.log({"loss": loss.item()}, rate="clips_per_s")
        if run.due(cfg.eval_every):
            run.write(evaluate(model))
        if run.due(cfg.checkpoint_every):
            run.checkpoint(export=lambda: save(model, run.model_file), curves=["loss"], title="mulan")
    run.close()

Why not Accelerate's ``save_state`` / ``load_state``: they write a folder of files (weights, optimizer,
scheduler, RNG) one after another, so a kill part way leaves a mix of two steps, and they keep no
config to compare on resume. Here the whole train state (weights included, the trainer's own
objects too: data cursor, queue, EMA) is one file written atomically, with the run's config; it alone
is what a resume reads, and it is written before the exported model files, so a kill at any moment
resumes the last complete step. Accelerate still does the device placement, DDP, mixed precision and
gradient clipping.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .common import (
    EMA,
    JsonLog,
    atomic_torch_save,
    check_finite,
    check_resume_config,
    plot_curves,
    rng_state,
    set_rng_state,
)


@dataclass
class RunSettings:
    """The settings every trainer's config shares: how a run reports, checkpoints and resumes, not what it
    trains (a trainer's config dataclass subclasses this and adds its own)."""

    threads: int = 2
    log_every: int = 10
    checkpoint_every: int = 100
    allow_config_change: bool = False  # resume with other settings (logged) instead of refusing
    seed: int = 0
    progress: bool = True


class TrainRun:
    """One run of a trainer in ``out``: ``train_state.pt`` (everything a resume needs, one atomic file),
    ``config.json``, ``log.jsonl``, ``curves.png`` and the trainer's exported files.

    Args:
        cfg: the trainer's config dataclass (stored in the train state and compared on resume).
        out: the run folder (created here: make it after checking the inputs).
        accelerator: from :func:`~.common.make_accelerator` (or ``None``: one process, the CPU).
        desc: the progress bar's label.
        model_file: the exported model's file name in ``out`` (what a resume builds the model from).
    """

    def __init__(self, cfg: Any, *, out: str | os.PathLike, accelerator: Any, desc: str, model_file: str):
        self.cfg, self.config = cfg, asdict(cfg)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.accelerator = accelerator
        self.desc = desc
        self.max_steps = int(cfg.max_steps)
        self.state_path, self.model_file = self.out / "train_state.pt", self.out / model_file
        self.resuming = self.state_path.is_file()
        if self.resuming and not self.model_file.is_file():
            raise FileNotFoundError(f"{str(self.state_path)!r} has no {self.model_file.name} beside it: a run "
                                    "folder from elsewhere? Train into a new --out")  # fmt: skip
        self.step = 0
        self.is_main = accelerator is None or accelerator.is_main_process
        self._objects: dict[str, Any] = {}
        self._items, self._t_last = 0, time.perf_counter()
        self.log_file: JsonLog | None = None
        self.bar: Any = None

    def print(self, *args: Any) -> None:
        if self.is_main:
            print(*args)

    def restore(self, **objects: Any) -> dict[str, Any]:
        """Register the objects whose state the train state keeps (anything with ``state_dict`` /
        ``load_state_dict``; ``model`` is the unwrapped model; ``None`` values are left out), and when
        resuming, load them, the step and the RNGs from the train state after checking that the run's
        settings are the stored ones. Then start the config file, the log and the progress bar.
        Returns the loaded train state (empty for a new run) for anything else a trainer kept in it."""
        self._objects = {k: v for k, v in objects.items() if v is not None}
        state: dict[str, Any] = {}
        changed: list[str] = []
        if self.resuming:
            state = torch.load(self.state_path, weights_only=False)
            changed = check_resume_config(state.get("config"), self.config, self.out,
                                          allow=bool(getattr(self.cfg, "allow_config_change", False)))  # fmt: skip
            for name, obj in self._objects.items():
                part = state.get(name)
                if part is None and name == "cursor" and "epoch" in state:  # train states before this core
                    part = state
                if part is not None:  # a train state older than the weights in it: the model file's weights
                    obj.load_state_dict(part)
            self.step = int(state["step"])
            set_rng_state(state["rng"])
            old_lr = (state.get("config") or {}).get("lr")
            if changed and old_lr is not None and getattr(self.cfg, "lr", old_lr) != old_lr:
                self._apply_lr(float(old_lr), float(self.cfg.lr))
            self.print(f"resuming from step {self.step}")
        if self.is_main:  # one writer: the other processes would rewrite the log under it
            (self.out / "config.json").write_text(json.dumps(self.config, indent=2))
            self.log_file = JsonLog(self.out / "log.jsonl", resume_step=self.step if self.resuming else None)
        if self.resuming and changed:  # allowed by --allow-config-change: said, and kept in the log
            self.print(f"resuming with changed settings: {', '.join(changed)}")
            self.write({"config_changed": changed})
        self.bar = tqdm(total=self.max_steps, initial=self.step, desc=self.desc,
                        disable=not (getattr(self.cfg, "progress", True) and self.is_main))  # fmt: skip
        self._t_last = time.perf_counter()
        return state

    def _apply_lr(self, old: float, new: float) -> None:
        """A learning rate changed with --allow-config-change: the optimizer and scheduler states just
        loaded hold the old one; rescale every parameter group that runs on it (not, e.g., a
        discriminator's own rate) and its scheduler's base."""
        ratio = new / old
        for obj in self._objects.values():
            if isinstance(obj, torch.optim.Optimizer):
                for group in obj.param_groups:
                    if math.isclose(group.get("initial_lr", group["lr"]), old, rel_tol=1e-9):
                        group["lr"] *= ratio
                        if "initial_lr" in group:
                            group["initial_lr"] *= ratio
            elif hasattr(obj, "base_lrs"):
                obj.base_lrs = [b * ratio if math.isclose(b, old, rel_tol=1e-9) else b for b in obj.base_lrs]

    def step_rng(self) -> random.Random:
        """This step's data generator, seeded by (seed, step, process): a resumed run draws what the
        unbroken run would have, and each process draws its own batch."""
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        return random.Random((self.cfg.seed * 1_000_003 + self.step) * 1_009 + rank)

    @property
    def running(self) -> bool:
        return self.step < self.max_steps

    def update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
               *, grad_clip: float = 0.0, scheduler: Any = None, ema: EMA | None = None, model: Any = None,
               what: str = "loss", sync_grads: bool = False) -> None:  # fmt: skip
        """One optimizer step on ``loss``; a non-finite loss or gradient norm stops the run before the
        weights change (the last checkpoint stays the last good one). ``ema`` follows ``model``.
        ``sync_grads``: average the gradients over the processes here, for a model that is not wrapped
        in DDP (a trainer that calls its model's methods rather than one forward: DDP syncs only what
        went through its own forward)."""
        check_finite(loss, self.step, what)
        params = list(parameters)
        optimizer.zero_grad(set_to_none=True)
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()
        world = self.accelerator.num_processes if self.accelerator is not None else 1
        if sync_grads and world > 1:
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
        # the norm is checked with or without clipping (an infinite bound measures it and clips nothing)
        clip = self.accelerator.clip_grad_norm_ if self.accelerator is not None else torch.nn.utils.clip_grad_norm_
        check_finite(clip(params, grad_clip or float("inf")), self.step, f"gradient norm of the {what}")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)

    def advance(self, items: int = 0) -> None:
        """The step is done: count it and the ``items`` (clips, tokens) it trained on."""
        self.step += 1
        self._items += items
        self.bar.update()

    def due(self, every: int) -> bool:
        """Whether a cadence of ``every`` steps falls on this step (the last step always does)."""
        return (every > 0 and self.step % every == 0) or self.step == self.max_steps

    def log(self, record: dict[str, Any], *, rate: str | None = None,
            postfix: Iterable[str] = ("loss",)) -> dict[str, Any]:  # fmt: skip
        """Write a training record with the step and, under ``rate``, the items a second since the last
        record; show ``postfix`` keys on the progress bar."""
        now = time.perf_counter()
        record = {"step": self.step, **record}
        if rate is not None:
            n = self._items * (self.accelerator.num_processes if self.accelerator is not None else 1)
            record[rate] = round(n / max(now - self._t_last, 1e-9), 2)
        self._items, self._t_last = 0, now
        shown = {k: f"{record[k]:.3f}" for k in postfix if isinstance(record.get(k), float)}
        if rate is not None:
            shown[rate] = str(record[rate])
        self.bar.set_postfix(**shown)
        self.write(record)
        return record

    def write(self, record: dict[str, Any]) -> None:
        """A line in the run's log (validation results, notes), stamped with the step; main process only."""
        if self.is_main:
            assert self.log_file is not None, "restore() starts the log"
            self.log_file.write({"step": self.step, **record})

    def checkpoint(self, export: Callable[[], None] | None = None, *, curves: list[str] | None = None,
                   title: str = "") -> None:  # fmt: skip
        """The train state (every registered object's state, the step, RNGs, config), written atomically
        and first; then ``export()`` writes the trainer's model files; then the curves plot. At the first
        checkpoint the model file goes first: a resume builds the model from it, so a train state must
        never exist without one (a kill between the two leaves a folder that starts over)."""
        if not self.is_main:
            return
        state = {name: obj.state_dict() for name, obj in self._objects.items()}
        state.update(step=self.step, rng=rng_state(), config=self.config)
        first = not self.model_file.is_file()
        if export is not None and first:
            export()
        atomic_torch_save(state, self.state_path)
        if export is not None and not first:
            export()
        if curves and self.log_file is not None:
            plot_curves(self.log_file, self.out / "curves.png", keys=curves, title=title or self.desc)

    def close(self, model: torch.nn.Module | None = None) -> None:
        """End the run; with ``model`` and several processes, check that they all hold the same weights
        (gradients that were not synchronised would leave each process its own model, and only the
        main process's would be saved)."""
        self.bar.close()
        if self.accelerator is None:
            return
        self.accelerator.wait_for_everyone()
        try:
            if model is not None and self.accelerator.num_processes > 1:
                with torch.no_grad():
                    total = sum((p.double().sum() for p in model.parameters() if p.requires_grad), torch.zeros((),
                                dtype=torch.float64, device=self.accelerator.device))  # fmt: skip
                every = self.accelerator.gather(total[None])
                if not torch.allclose(every, every[0].expand_as(every), rtol=1e-6, atol=1e-6):
                    raise RuntimeError(f"the {len(every)} processes ended with different weights (sums "
                                       f"{every.tolist()}): their gradients were not synchronised")  # fmt: skip
        finally:
            # tear the process group down before the interpreter does: left to exit, its threads can
            # abort a process ("terminate called without an active exception") after a finished run
            self.accelerator.end_training()

"""The training core on a two-weight problem: restore, the guarded update, cadences, checkpoint order."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from musiclm_pytorch.training.common import EpochCursor, atomic_torch_save, rng_state
from musiclm_pytorch.training.core import TrainRun


@dataclasses.dataclass
class _Cfg:
    lr: float = 0.1
    max_steps: int = 6
    progress: bool = False
    allow_config_change: bool = False


def _fit(out, cfg: _Cfg, *, stop_at: int | None = None) -> dict[int, float]:
    """Least squares y = 3x with SGD, one weight; a checkpoint every 2 steps; losses by step."""
    run = TrainRun(cfg, out=out, accelerator=None, desc="fit", model_file="w.pt")
    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    run.restore(model=model, optimizer=opt)
    losses = {}
    while run.running:
        x = torch.randn(8, 1)  # from the global RNG: a resume must restore it
        loss = (model(x) - 3 * x).pow(2).mean()
        run.update(loss, opt, model.parameters(), grad_clip=1.0)
        run.advance(items=8)
        losses[run.step] = loss.item()
        if run.due(1):
            run.log({"loss": loss.item()}, rate="items_per_s")
        if run.due(2):
            run.checkpoint(lambda: torch.save(model.state_dict(), out / "w.pt"), curves=["loss"])
        if run.step == stop_at:
            raise KeyboardInterrupt
    run.close()
    return losses


def test_a_stopped_run_resumes_on_the_same_curve_and_logs_every_step_once(tmp_path):
    torch.manual_seed(0)
    whole = _fit(tmp_path / "a", _Cfg())
    assert whole[6] < whole[1]  # it learns
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", _Cfg(), stop_at=5)  # after the step-4 checkpoint; step 5 is lost
    rest = _fit(tmp_path / "b", _Cfg())
    assert list(rest) == [5, 6] and rest == {k: whole[k] for k in (5, 6)}  # bitwise: weights, optimizer, RNG
    logged = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6] and all("items_per_s" in r for r in logged)
    assert json.loads((tmp_path / "b" / "config.json").read_text()) == dataclasses.asdict(_Cfg())
    assert (tmp_path / "b" / "curves.png").is_file()


def test_a_non_finite_loss_stops_before_the_weights_change(tmp_path):
    run = TrainRun(_Cfg(), out=tmp_path, accelerator=None, desc="fit", model_file="w.pt")
    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run.restore(model=model, optimizer=opt)
    before = model.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="loss is nan at step 1: stopped before the update"):
        run.update(model.weight.sum() * float("nan"), opt, model.parameters())
    assert torch.equal(model.weight, before) and not (tmp_path / "train_state.pt").exists()
    # a finite loss whose gradient is not: stopped too, without any clipping
    hook = model.weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(FloatingPointError, match="gradient norm of the loss is nan at step 1"):
        run.update(model.weight.sum(), opt, model.parameters(), grad_clip=0.0)
    hook.remove()
    assert torch.equal(model.weight, before)


def test_resume_checks_the_settings_and_the_files(tmp_path):
    torch.manual_seed(0)
    _fit(tmp_path, _Cfg(max_steps=2))
    with pytest.raises(ValueError, match=r"other settings: lr 0\.1 -> 0\.5\. .*--allow-config-change"):
        TrainRun(_Cfg(lr=0.5, max_steps=4), out=tmp_path, accelerator=None, desc="fit", model_file="w.pt").restore()
    more = _fit(tmp_path, _Cfg(max_steps=4))  # a longer budget is the same run
    assert list(more) == [3, 4]
    (tmp_path / "w.pt").unlink()
    with pytest.raises(FileNotFoundError, match="train_state.pt' has no w.pt beside it"):
        TrainRun(_Cfg(), out=tmp_path, accelerator=None, desc="fit", model_file="w.pt")


def test_train_states_written_before_the_core_keep_resuming(tmp_path):
    """Trainers stored their data cursor's fields at the top of the train state; a run in flight then
    resumes at the same place."""
    cursor = EpochCursor(10, batch_size=2)
    atomic_torch_save({"step": 7, "epoch": 1, "batch_in_epoch": 2, "rng": rng_state(), "config": None},
                      tmp_path / "train_state.pt")  # fmt: skip
    (tmp_path / "w.pt").write_bytes(b"")
    run = TrainRun(_Cfg(max_steps=9), out=tmp_path, accelerator=None, desc="fit", model_file="w.pt")
    run.restore(cursor=cursor)
    assert run.step == 7 and cursor.state_dict() == {"epoch": 1, "batch_in_epoch": 2}
    run.checkpoint()
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["cursor"] == cursor.state_dict()


def test_cadence():
    run = TrainRun.__new__(TrainRun)
    run.max_steps, run.step = 10, 4
    assert run.due(2) and not run.due(3) and not run.due(0)
    run.step = 10
    assert run.due(3) and run.due(0)  # the last step always


@dataclasses.dataclass
class _ArchCfg(_Cfg):
    dim: int = 1


def test_allowed_changes_take_effect_and_the_architecture_cannot_change(tmp_path):
    def run_with(cfg):
        run = TrainRun(cfg, out=tmp_path, accelerator=None, desc="fit", model_file="w.pt")
        model = torch.nn.Linear(1, 1, bias=False)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        run.restore(model=model, optimizer=opt, scheduler=sched)
        while run.running:
            run.update(model.weight.sum() ** 2, opt, model.parameters(), scheduler=sched)
            run.advance()
            if run.due(2):
                run.checkpoint(lambda: torch.save(model.state_dict(), tmp_path / "w.pt"))
        return opt, sched

    run_with(_ArchCfg(lr=0.1, max_steps=2))
    opt, sched = run_with(_ArchCfg(lr=0.4, max_steps=4, allow_config_change=True))
    assert sched.base_lrs == [pytest.approx(0.4)] and opt.param_groups[0]["lr"] == pytest.approx(0.4 / 5)
    with pytest.raises(ValueError, match="dim 1 -> 2 cannot change on resume, not even with"):
        run_with(_ArchCfg(lr=0.4, max_steps=6, dim=2, allow_config_change=True))

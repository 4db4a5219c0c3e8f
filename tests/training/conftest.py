from __future__ import annotations

import pytest


@pytest.fixture
def kill_export_at(monkeypatch):
    """``kill_export_at(trainer_module, step)``: the trainer is killed (KeyboardInterrupt) as it starts to
    write the model file of checkpoint ``step``, after that checkpoint's train state; ``.undo()`` of the
    returned monkeypatch lets the rerun write normally."""

    def arm(trainer, step: int):
        real_save = trainer.save

        def killed(model, path, *, extra=None):
            if (extra or {}).get("step") == step:
                raise KeyboardInterrupt
            return real_save(model, path, extra=extra)

        monkeypatch.setattr(trainer, "save", killed)
        return monkeypatch

    return arm

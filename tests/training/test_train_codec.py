from __future__ import annotations

import json

import pytest
import torch

from musiclm_pytorch import load
from musiclm_pytorch.codec import SoundStream
from musiclm_pytorch.training.codec import CodecTrainConfig, train_codec


def _cfg(corpus, out, **kw) -> CodecTrainConfig:
    args = dict(data=str(corpus), out=str(out), preset="tiny", batch_size=4, crop_seconds=0.25, max_steps=8,
                adversarial_start=4, num_workers=0, threads=1, log_every=1, eval_every=8, eval_clips=2,
                checkpoint_every=4, progress=False)  # fmt: skip
    args.update(kw)
    return CodecTrainConfig(**args)


def test_codec_trainer_runs_resumes_and_reports(tiny_corpus, tmp_path):
    report = train_codec(_cfg(tiny_corpus, tmp_path))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "mel" in r]
    assert steps == list(range(1, 9))
    assert all("adv" in r for r in records if "mel" in r and r["step"] > 4)  # adversarial from step 5
    assert all(r["wave"] > 0 for r in records if "mel" in r)  # the waveform L1 term is trained and logged
    assert set(report["per_levels"]) == {"1", "3"}
    assert (tmp_path / "spectrograms.png").stat().st_size > 1000 and (tmp_path / "curves.png").is_file()
    assert isinstance(load(tmp_path / "codec.safetensors"), SoundStream)
    # rerun with more steps: resumes at 8
    train_codec(_cfg(tiny_corpus, tmp_path, max_steps=10))
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [s for s in steps if s > 8][:2] == [9, 10]
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 10


def test_codec_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown codec preset 'huge'"):
        CodecTrainConfig(data="x", preset="huge")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train_codec(_cfg(tmp_path / "nowhere", tmp_path / "o"))


def test_mdct_codec_trainer_fits_first_then_trains_and_resumes(tiny_corpus, tmp_path):
    from musiclm_pytorch.codec import MDCTCodec

    report = train_codec(_cfg(tiny_corpus, tmp_path, preset="mdct_tiny", adversarial_start=100))
    fitted = json.loads((tmp_path / "fit_init.json").read_text())
    assert fitted["energy_kept_by_projection"] > 0.5
    assert fitted["latent_energy_left_after_level3"] < fitted["latent_energy_left_after_level1"] < 1
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and "val_si_snr_q3" in records[0]  # the fitted codec, before training
    assert all("snr_db" in r for r in records if "mel" in r)
    assert set(report["per_levels"]) == {"1", "3"}
    codec = load(tmp_path / "codec.safetensors")
    assert isinstance(codec, MDCTCodec)
    before = codec.project.weight.clone()
    (tmp_path / "fit_init.json").unlink()
    train_codec(_cfg(tiny_corpus, tmp_path, preset="mdct_tiny", adversarial_start=100, max_steps=9))
    assert not (tmp_path / "fit_init.json").exists()  # a resumed run is not fitted again
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps.count(0) == 1 and steps[-2:] == [9, 9]  # step 9's training record, then its evaluation
    assert not torch.equal(load(tmp_path / "codec.safetensors").project.weight, before)  # trained on


def test_a_nan_loss_stops_the_codec_run_before_it_reaches_a_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    import musiclm_pytorch.training.codec as trainer

    calls = {"n": 0}
    real = trainer.snr_loss

    def poisoned(recon, wav):
        calls["n"] += 1
        loss = real(recon, wav)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainer, "snr_loss", poisoned)
    with pytest.raises(FloatingPointError, match="loss is nan at step 3"):
        train_codec(_cfg(tiny_corpus, tmp_path, checkpoint_every=2, eval_every=100, adversarial_start=100))
    kept = load(tmp_path / "codec.safetensors")  # the step-2 checkpoint: finite weights
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 2


def test_resume_refuses_other_settings_but_allows_a_longer_run(tiny_corpus, tmp_path):
    train_codec(_cfg(tiny_corpus, tmp_path, max_steps=2, eval_every=100, adversarial_start=100, checkpoint_every=2))
    with pytest.raises(ValueError, match=r"other settings: batch_size 4 -> 2, lr 0\.0003 -> 0\.001\. Resume it"):
        train_codec(_cfg(tiny_corpus, tmp_path, max_steps=4, eval_every=100, adversarial_start=100, lr=1e-3,
                         batch_size=2))  # fmt: skip
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 2  # untouched
    train_codec(_cfg(tiny_corpus, tmp_path, max_steps=3, eval_every=50, adversarial_start=100, log_every=2))
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 3
    # asked for: the run continues with the new lr, says so, and the log keeps what changed
    train_codec(_cfg(tiny_corpus, tmp_path, max_steps=4, eval_every=50, adversarial_start=100, lr=1e-3,
                     allow_config_change=True))  # fmt: skip
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    assert state["step"] == 4 and state["config"]["lr"] == 1e-3
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-3)  # in effect, not only recorded
    notes = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"step": 3, "config_changed": ["lr 0.0003 -> 0.001"]} in notes


def test_a_kill_between_the_train_state_and_the_model_file_resumes_on_the_same_curve(tiny_corpus, tmp_path,
                                                                                      kill_export_at):  # fmt: skip
    import musiclm_pytorch.training.codec as trainer

    kw = dict(max_steps=8, checkpoint_every=2, eval_every=100, adversarial_start=3)
    train_codec(_cfg(tiny_corpus, tmp_path / "a", **kw))
    patched = kill_export_at(trainer, 4)
    with pytest.raises(KeyboardInterrupt):
        train_codec(_cfg(tiny_corpus, tmp_path / "b", **kw))
    patched.undo()
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=False)["step"] == 4  # the files: step 2
    train_codec(_cfg(tiny_corpus, tmp_path / "b", **kw))

    def curve(run: str) -> dict[int, tuple[float, float]]:
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return {r["step"]: (r["mel"], r.get("disc", 0.0)) for r in map(json.loads, lines) if "mel" in r}

    assert list(curve("b")) == list(range(1, 9)) and curve("b") == curve("a")  # steps 5-8, generator and critic


def test_a_corpus_manifest_whose_audio_lies_elsewhere_trains_without_validation(tiny_corpus, tmp_path):
    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()]
    data = tmp_path / "data"
    data.mkdir()  # train.jsonl only, absolute paths, no audio in the folder and no val.jsonl
    (data / "train.jsonl").write_text("\n".join(json.dumps({**r, "path": str(tiny_corpus / r["path"])}) for r in rows))
    report = train_codec(_cfg(data, tmp_path / "run", max_steps=2, eval_every=100, adversarial_start=100))
    assert report == {} and (tmp_path / "run" / "codec.safetensors").is_file()

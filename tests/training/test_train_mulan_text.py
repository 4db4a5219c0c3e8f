from __future__ import annotations

import json

import pytest
import torch

from musiclm_pytorch import MuLaN, build_mulan, load, save
from musiclm_pytorch.mulan.text_tower import PretrainedTextTransformer
from musiclm_pytorch.training import mulan_text
from musiclm_pytorch.training.mulan_text import TextAlignConfig, align_text


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mulan.safetensors"
    save(build_mulan("tiny"), path)
    return path


def _cfg(ckpt, corpus, out, **kw) -> TextAlignConfig:
    args = dict(mulan=str(ckpt), data=str(corpus), out=str(out), batch_size=6, max_steps=40, warmup_steps=2,
                lr=3e-3, eval_every=40, eval_clips=6, checkpoint_every=10, log_every=1, threads=1,
                progress=False)  # fmt: skip
    args.update(kw)
    return TextAlignConfig(**args)


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _losses(out) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _log(out) if "loss" in r}


def test_text_side_learns_and_the_audio_side_stays(tiny_ckpt, tiny_corpus, tmp_path):
    out = tmp_path / "run"
    report = align_text(_cfg(tiny_ckpt, tiny_corpus, out))
    before, after = load(tiny_ckpt, expected=MuLaN), load(out / "mulan.safetensors", expected=MuLaN)
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        if name.startswith(("audio.", "audio_to_latents.")):
            assert torch.equal(a, b), name  # the audio side is frozen
    assert not torch.equal(before.text_to_latents.weight, after.text_to_latents.weight)
    losses = list(_losses(out).values())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:5]) / 5  # the text side fits the fixed audio latents
    assert report["clips"] == 6 and "family" in report["zero_shot"]
    assert (out / "curves.png").stat().st_size > 1000 and (out / "eval_step40.json").is_file()


def test_crash_resumes_on_the_same_curve_without_re_embedding(tiny_ckpt, tiny_corpus, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    align_text(_cfg(tiny_ckpt, tiny_corpus, ref, max_steps=20, eval_every=10))
    out = tmp_path / "crashed"
    real_eval, calls = mulan_text.evaluate_mulan, []

    def crash_on_second_eval(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(mulan_text, "evaluate_mulan", crash_on_second_eval)
    with pytest.raises(RuntimeError, match="killed"):  # dies at step 20, after the step-10 checkpoint
        align_text(_cfg(tiny_ckpt, tiny_corpus, out, max_steps=20, eval_every=10))
    monkeypatch.setattr(mulan_text, "evaluate_mulan", real_eval)

    def no_embedding(*args, **kwargs):
        raise AssertionError("the cached audio latents should be reused")

    monkeypatch.setattr(mulan_text, "embed_rows", no_embedding)
    align_text(_cfg(tiny_ckpt, tiny_corpus, out, max_steps=20, eval_every=10))
    got, want = _losses(out), _losses(ref)
    assert sorted(got) == list(range(1, 21)) and got == want  # bitwise: the resumed run is the unbroken one


def test_a_kill_between_state_and_model_file_resumes_on_the_same_curve(tiny_ckpt, tiny_corpus, tmp_path,
                                                                       kill_export_at):  # fmt: skip
    kw = dict(max_steps=8, checkpoint_every=2, eval_every=100)
    align_text(_cfg(tiny_ckpt, tiny_corpus, tmp_path / "a", **kw))
    patched = kill_export_at(mulan_text, 4)
    with pytest.raises(KeyboardInterrupt):
        align_text(_cfg(tiny_ckpt, tiny_corpus, tmp_path / "b", **kw))
    patched.undo()
    assert torch.load(tmp_path / "b" / "train_state.pt", weights_only=False)["step"] == 4  # the model file: step 2
    align_text(_cfg(tiny_ckpt, tiny_corpus, tmp_path / "b", **kw))
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")


def test_a_missing_mulan_leaves_no_run_folder(tiny_corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="--mulan .*nowhere.*: no such file"):
        align_text(_cfg(tmp_path / "nowhere.safetensors", tiny_corpus, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("tower", ["minilm", "minilm-adapter"])
def test_a_new_text_tower_on_the_same_audio_side(tiny_ckpt, tiny_corpus, tmp_path, tower):
    out = tmp_path / tower
    align_text(_cfg(tiny_ckpt, tiny_corpus, out, text_tower=tower, max_steps=4, eval_every=4, lr=1e-3))
    mulan = load(out / "mulan.safetensors", expected=MuLaN)
    assert isinstance(mulan.text, PretrainedTextTransformer) and mulan.text.freeze
    assert mulan.text.adapter_depth == (2 if tower == "minilm-adapter" else 0)
    assert len(_losses(out)) == 4
    before = load(tiny_ckpt, expected=MuLaN).eval()
    wav = torch.randn(1, 16000)
    with torch.no_grad():  # audio latents are the old model's, so the conditioning built on them still holds
        assert torch.allclose(mulan.eval().get_audio_latents(wav), before.get_audio_latents(wav), atol=1e-6)
    assert mulan.get_text_latents(raw_texts=["a calm piano piece"]).shape == (1, before.dim_latent)


def test_config_errors():
    with pytest.raises(ValueError, match="mulan is required"):
        TextAlignConfig(data="x")
    with pytest.raises(ValueError, match="text_tower must be one of"):
        TextAlignConfig(mulan="m", data="x", text_tower="bert")
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TextAlignConfig(mulan="m", data="x", batch_size=1)


def test_cli(tiny_ckpt, tiny_corpus, tmp_path, capsys):
    from musiclm_pytorch.cli import main

    out = tmp_path / "cli"
    argv = ["train", "mulan-text", "--mulan", str(tiny_ckpt), "--data", str(tiny_corpus), "--out", str(out),
            "--max-steps", "3", "--batch-size", "4", "--eval-every", "3", "--eval-clips", "4", "--threads", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{\n") :])
    assert report["text_to_audio"]["n"] == 4 and json.loads((out / "config.json").read_text())["max_steps"] == 3

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from musiclm_pytorch import MuLaN, load
from musiclm_pytorch.training.common import load_config, warmup_cosine
from musiclm_pytorch.training.mulan import MuLaNTrainConfig, positive_key, train_mulan, with_full_caption


def _cfg(corpus, out, **kw) -> MuLaNTrainConfig:
    args = dict(data=str(corpus), out=str(out), preset="tiny", batch_size=4, max_steps=8, warmup_steps=2,
                crop_seconds=2.0, num_workers=0, threads=1, log_every=1, eval_every=8, eval_clips=8,
                checkpoint_every=4, progress=False, queue_size=8)  # fmt: skip
    args.update(kw)
    return MuLaNTrainConfig(**args)


def _losses(out) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r}


def test_tiny_run_writes_everything(tiny_corpus, tmp_path):
    report = train_mulan(_cfg(tiny_corpus, tmp_path, hard_negatives=True, mined_negatives=True))
    assert set(_losses(tmp_path)) == set(range(1, 9))
    assert report["clips"] > 0 and "R@10" in report["text_to_audio"] and "family" in report["zero_shot"]
    assert isinstance(load(tmp_path / "mulan.safetensors"), MuLaN)
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    assert state["step"] == 8 and "optimizer" in state and "rng" in state
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "eval_step8.json").is_file()


def test_killed_run_resumes_and_continues_the_same_curve(tiny_corpus, tmp_path):
    ref = tmp_path / "ref"
    train_mulan(_cfg(tiny_corpus, ref, max_steps=12, eval_every=100, ema_decay=0.9))
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "musiclm_pytorch.cli", "train", "mulan", "--data", str(tiny_corpus),
            "--out", str(out),
            "--preset", "tiny", "--batch-size", "4", "--max-steps", "12", "--warmup-steps", "2", "--crop-seconds", "2",
            "--num-workers", "0", "--threads", "1", "--log-every", "1", "--eval-every", "100", "--eval-clips", "8",
            "--checkpoint-every", "4", "--queue-size", "8", "--ema-decay", "0.9", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the first checkpoint, then kill -9 in the middle of the run
        if (out / "train_state.pt").exists() and len(_losses(out)) >= 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert 4 <= state["step"] < 12
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from step {state['step']}" in done.stdout + done.stderr
    got, want = _losses(out), _losses(ref)
    assert sorted(got) == list(range(1, 13))  # no step lost, none duplicated
    assert got == want  # bitwise (fp32, one thread, no loader workers): the resumed run is the uninterrupted one
    # the weight average resumed too: it ends where the uninterrupted run's does, not at the raw weights
    ema_got, ema_want = load(out / "mulan_ema.safetensors"), load(ref / "mulan_ema.safetensors")
    raw = load(out / "mulan.safetensors")
    for (name, a), b in zip(ema_got.state_dict().items(), ema_want.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.allclose(a, r) for a, r in zip(ema_got.state_dict().values(), raw.state_dict().values()))


def test_config_errors(tmp_path, tiny_corpus):
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"data": "x", "batchsize": 3}))
    with pytest.raises(ValueError, match=r"unknown MuLaNTrainConfig keys \['batchsize'\]"):
        load_config(MuLaNTrainConfig, bad)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        MuLaNTrainConfig(data="x", batch_size=1)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train_mulan(_cfg(tmp_path / "nowhere", tmp_path / "o"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"path": "missing.wav", "caption": "x"}\n')
    with pytest.raises(ValueError, match="no usable rows.*1 missing file"):
        train_mulan(_cfg(empty, tmp_path / "o"))
    assert not (tmp_path / "o").exists()  # bad data leaves no empty run folder behind
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="has no usable rows: it holds no rows"):
        train_mulan(_cfg(tmp_path / "blank.jsonl", tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="--init-checkpoint .*: no such file"):
        train_mulan(_cfg(tiny_corpus, tmp_path / "o", init_checkpoint=str(tmp_path / "nowhere.safetensors")))
    assert not (tmp_path / "o").exists()
    (tmp_path / "no_audio").mkdir()
    with pytest.raises(ValueError, match="holds no audio files"):
        train_mulan(_cfg(tmp_path / "no_audio", tmp_path / "o"))
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_mulan(_cfg(tiny_corpus, tmp_path / "o", batch_size=64))


def test_schedule_and_positive_keys():
    lrs = [warmup_cosine(s, warmup_steps=10, max_steps=100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[-1] < 0.1
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    tags = {"program": 0, "tempo_class": "slow", "tonic": "C", "mode": "major", "drums": False, "moods": ["calm"]}
    assert positive_key(tags, "a") == positive_key({**tags, "moods": ["x"]}, "b")  # same attributes
    assert positive_key(tags, "a") != positive_key({**tags, "drums": True}, "a")
    assert positive_key({}, "Calm piano ") == positive_key({}, "calm piano") != positive_key({}, "loud drums")


def test_full_caption_joins_the_training_captions():
    row = {"captions": ["calm piano"], "full_caption": "calm piano in C major, slow, no drums"}
    assert with_full_caption(row)["captions"] == ["calm piano", "calm piano in C major, slow, no drums"]
    assert with_full_caption(with_full_caption(row)) == with_full_caption(row)  # never twice
    assert with_full_caption({"captions": ["x"]}) == {"captions": ["x"]}  # corpora without one


def test_joint_training_with_a_text_adapter(tiny_corpus, tiny_bert_dir, tmp_path):
    from musiclm_pytorch import build_mulan, save
    from musiclm_pytorch.mulan import PretrainedTextTransformer

    torch.manual_seed(0)
    text = PretrainedTextTransformer(tiny_bert_dir, freeze=True, adapter_depth=1, adapter_dim=16, adapter_heads=2)
    init = build_mulan("tiny").with_text_tower(text)
    save(init, tmp_path / "init.safetensors")
    train_mulan(_cfg(tiny_corpus, tmp_path / "run", init_checkpoint=str(tmp_path / "init.safetensors"), max_steps=3,
                     eval_every=100, queue_size=0))  # fmt: skip
    after = load(tmp_path / "run" / "mulan.safetensors", expected=MuLaN)
    assert not torch.equal(after.text.adapter_in.weight, init.text.adapter_in.weight)  # the adapter trained
    for (name, a), b in zip(after.text.encoder.state_dict().items(), init.text.encoder.state_dict().values()):
        assert torch.equal(a, b), name  # the encoder did not


def test_hard_negative_captions_do_not_grow_the_state_cache(tiny_corpus, tiny_bert_dir):
    from musiclm_pytorch import build_mulan
    from musiclm_pytorch.mulan import PretrainedTextTransformer
    from musiclm_pytorch.training.mulan import _hard_negative_latents

    text = PretrainedTextTransformer(tiny_bert_dir, freeze=True, adapter_depth=1, adapter_dim=16, adapter_heads=2)
    mulan = build_mulan("tiny").with_text_tower(text)
    text.cache()
    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()][:4]
    captions = [r["captions"][0] for r in rows]
    mulan.get_text_latents(raw_texts=captions)
    latents, mask = _hard_negative_latents(mulan, captions, [r["tags"] for r in rows], seed=0, step=0)
    assert latents.shape == (4, mulan.dim_latent) and mask.all()
    assert set(text._cache) == set(captions)  # seen once each, the perturbed captions were not kept


def test_mined_negatives_swap_in_the_instrument_the_audio_matches_best():
    from musiclm_pytorch import build_mulan
    from musiclm_pytorch.training.mulan import INSTRUMENT_PROMPT, _mined_negative_latents

    torch.manual_seed(0)
    mulan = build_mulan("tiny").eval()
    kalimba = {"family": "ethnic", "instrument": "kalimba"}
    captions = ["A calm kalimba in D minor", "A calm kalimba in D minor", "Slow music", "A calm kalimba"]
    with torch.no_grad():
        marimba, banjo, cello = mulan.get_text_latents(
            raw_texts=[INSTRUMENT_PROMPT.format(n) for n in ("marimba", "banjo", "cello")]
        )
        # row 1 sounds most like banjo (own family, never a negative), then cello
        audio = torch.stack([marimba, banjo + 0.5 * cello, marimba, marimba])
        latents, mask = _mined_negative_latents(mulan, audio, captions, [kalimba, kalimba, kalimba, None], 0, 0)
        expect = mulan.get_text_latents(raw_texts=["A calm marimba in D minor"])[0]
    assert mask.tolist() == [True, True, False, False]  # no instrument stated / no tags: none
    assert torch.allclose(latents[0], expect, atol=1e-5)
    sims = audio[1] @ torch.stack([marimba, banjo, cello]).t()
    assert sims[1] > sims[2]  # banjo matched best, yet the swap went to another family
    assert not torch.allclose(latents[1], mulan.get_text_latents(raw_texts=["A calm banjo in D minor"])[0], atol=1e-3)


def test_a_non_finite_loss_or_gradient_stops_the_run_before_the_update():
    from musiclm_pytorch.training.common import check_finite

    check_finite(torch.tensor(1.5), 0)
    with pytest.raises(FloatingPointError, match="loss is nan at step 5"):
        check_finite(torch.tensor(float("nan")), 4)
    with pytest.raises(FloatingPointError, match="gradient norm is inf at step 1"):
        check_finite(torch.tensor(float("inf")), 0, "gradient norm")


@pytest.mark.parametrize("kill_at", [2, 4])
def test_a_kill_between_state_and_model_file_resumes_on_the_same_curve(tiny_corpus, tmp_path, kill_export_at,
                                                                       kill_at):  # fmt: skip
    """At step 4 the train state is written and the model file of step 2 stays: the rerun resumes at 4. At
    the first checkpoint (step 2) the model file goes first: killed as it is written, the folder holds
    neither, and the rerun starts over (a train state without a model file could not be resumed)."""
    import musiclm_pytorch.training.mulan as trainer

    kw = dict(max_steps=8, checkpoint_every=2, eval_every=100)
    train_mulan(_cfg(tiny_corpus, tmp_path / "a", **kw))
    patched = kill_export_at(trainer, kill_at)
    with pytest.raises(KeyboardInterrupt):
        train_mulan(_cfg(tiny_corpus, tmp_path / "b", **kw))
    patched.undo()
    state = tmp_path / "b" / "train_state.pt"
    if kill_at == 4:
        assert torch.load(state, weights_only=False)["step"] == 4  # mulan.safetensors: step 2
    else:
        assert not state.exists() and not (tmp_path / "b" / "mulan.safetensors").exists()
    train_mulan(_cfg(tiny_corpus, tmp_path / "b", **kw))
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")  # the steps after the kill on the unbroken curve

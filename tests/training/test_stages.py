from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import MuLaNEmbedQuantizer, build_mulan, load
from musiclm_pytorch.codec import SoundStream
from musiclm_pytorch.lm import TokenLM
from musiclm_pytorch.semantic import SemanticTokenizer
from musiclm_pytorch.training.stages import STAGE_INPUTS, StageTrainConfig, check_identity, train_stage
from musiclm_pytorch.training.tokenize import tokenize_corpus


@pytest.fixture(scope="module")
def tokens(tiny_corpus, tmp_path_factory):
    torch.manual_seed(0)
    cond = MuLaNEmbedQuantizer(build_mulan("tiny"), conditioning_dims=(), namespaces=(), num_quantizers=2,
                               codebook_size=4)  # fmt: skip
    cond.fit(F.normalize(torch.randn(64, 128), dim=-1))
    sem = SemanticTokenizer(vocab_size=8)
    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()][:4]
    import soundfile as sf

    sem.fit([torch.stack([torch.from_numpy(sf.read(tiny_corpus / r["path"], dtype="float32")[0]) for r in rows])])
    # 16 kHz / 320 = 50 Hz codec, 2 codec frames per semantic frame
    codec = SoundStream(strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False)
    out = tmp_path_factory.mktemp("tokens")
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tiny_corpus), out=str(out),
                              progress=False)  # fmt: skip
    return out, summary, (cond, sem, codec)


def test_tokenized_streams_align(tokens):
    out, summary, _ = tokens
    assert summary["splits"] == {"train": 18, "val": 6}
    data = torch.load(out / "train.pt", weights_only=False)
    item = data["items"][0]
    assert data["ratio"] == 2 and item["cond_ids"].shape == (2,)
    assert item["codes"].shape == (4, 2 * len(item["semantic"])) and len(item["semantic"]) == 75  # 3 s at 25 Hz


def test_tokenize_limits_splits_and_counts_corrupt_files(tokens, tiny_corpus, tmp_path):
    _, _, (cond, sem, codec) = tokens
    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()][:3]
    (tmp_path / "bad.flac").write_bytes(b"not audio at all")
    rows.insert(1, {**rows[0], "id": "bad", "path": str(tmp_path / "bad.flac")})
    rows = [{**r, "path": str(tiny_corpus / r["path"]) if r["id"] != "bad" else r["path"]} for r in rows]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val.jsonl").write_text(
        (tiny_corpus / "val.jsonl").read_text().replace('"path": "', f'"path": "{tiny_corpus}/')
    )
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tmp_path), out=str(tmp_path / "t"),
                              max_clips=4, max_val_clips=2, num_workers=1, progress=False)  # fmt: skip
    assert summary["splits"] == {"train": 3, "val": 2}
    assert summary["skipped"]["train"].startswith("1 rows skipped (1 unreadable audio)")
    # a corpus with no held-out rows (the sealed test set: --val-fraction 0) or --max-val-clips 0: no val.pt
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tmp_path), out=str(tmp_path / "u"),
                              max_clips=1, max_val_clips=0, num_workers=0, progress=False)  # fmt: skip
    assert summary["splits"] == {"train": 1} and not (tmp_path / "u" / "val.pt").exists()
    (tmp_path / "val.jsonl").write_text("")
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tmp_path), out=str(tmp_path / "v"),
                              max_clips=1, num_workers=0, progress=False)  # fmt: skip
    assert summary["splits"] == {"train": 1}
    # the sealed test split: tokenized only when asked for, whole
    with pytest.raises(FileNotFoundError, match="has no test.jsonl"):
        tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tmp_path), out=str(tmp_path / "w"),
                        test=True, progress=False)  # fmt: skip
    (tmp_path / "test.jsonl").write_text(
        (tiny_corpus / "val.jsonl").read_text().replace('"path": "', f'"path": "{tiny_corpus}/')
    )
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tmp_path), out=str(tmp_path / "w"),
                              max_clips=1, max_val_clips=0, num_workers=0, progress=False)  # fmt: skip
    assert summary["splits"] == {"train": 1} and not (tmp_path / "w" / "test.pt").exists()
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tmp_path), out=str(tmp_path / "w"),
                              max_clips=1, max_val_clips=0, test=True, num_workers=0, progress=False)  # fmt: skip
    assert summary["splits"] == {"train": 1, "test": 6}


def test_tokenize_reuses_the_ids_of_unchanged_components(tokens, tiny_corpus, tmp_path, monkeypatch):
    out, _, (cond, sem, _) = tokens
    torch.manual_seed(1)
    other = SoundStream(strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False)

    def recomputed(*args, **kwargs):
        raise AssertionError("an unchanged component was run again")

    monkeypatch.setattr(type(sem), "forward", recomputed)  # same weights: ids are copied, never recomputed
    monkeypatch.setattr(type(cond.mulan), "get_audio_latents", recomputed)
    summary = tokenize_corpus(conditioner=cond, semantic=sem, codec=other, data=str(tiny_corpus),
                              out=str(tmp_path / "t"), reuse=str(out), progress=False)  # fmt: skip
    monkeypatch.undo()
    assert summary["reused"] == {
        "train": {"cond_ids": 18, "mulan": 18, "semantic": 18},
        "val": {"cond_ids": 6, "mulan": 6, "semantic": 6},
    }
    before = torch.load(out / "train.pt", weights_only=False)["items"]
    after = torch.load(tmp_path / "t" / "train.pt", weights_only=False)
    assert after["identity"]["codec"] != torch.load(out / "train.pt", weights_only=False)["identity"]["codec"]
    from musiclm_pytorch.data.datasets import CaptionedAudioDataset, ClipOptions, manifest_rows

    rows, _ = manifest_rows(tiny_corpus / "train.jsonl")
    wav = CaptionedAudioDataset(rows[:1], ClipOptions(crop_seconds=None, min_seconds=1.0))[0]["wav"]
    for old, new in zip(before, after["items"]):
        assert old["source"] == new["source"]
        assert torch.equal(old["semantic"], new["semantic"]) and torch.equal(old["cond_ids"], new["cond_ids"])
    codes = other.encode(wav[None, None])[0].short()
    assert torch.equal(after["items"][0]["codes"], codes[:, : after["items"][0]["codes"].shape[-1]])  # the new codec's
    assert not torch.equal(after["items"][0]["codes"], before[0]["codes"])
    with pytest.raises(FileNotFoundError, match="tokens folder to reuse"):
        tokenize_corpus(conditioner=cond, semantic=sem, codec=other, data=str(tiny_corpus), out=str(tmp_path / "u"),
                        reuse=str(tmp_path / "nowhere"), progress=False)  # fmt: skip


@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_each_stage_trains_and_resumes(tokens, tmp_path, stage, monkeypatch):
    out, _, comps = tokens
    cfg = dict(stage=stage, tokens=str(out), out=str(tmp_path), dim=32, depth=1, heads=2, dim_head=16, num_coarse=2,
               crop_seconds=1.0, batch_size=4, max_steps=6, warmup_steps=1, log_every=1, eval_every=6,
               checkpoint_every=3, progress=False)  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    assert report["val_loss"] > 0 and "val_loss_shuffled_cond" in report
    if stage != "semantic":
        assert len(report["val_accuracy_per_level"]) == 2  # coarse: levels 0-1; fine: the fine levels 2-3
    train_stage(StageTrainConfig(**{**cfg, "max_steps": 8}))  # resumes at 6
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r and r["step"] > 6] == [7, 8]
    # killed after a checkpoint, the run resumes on the uninterrupted run's curve, bitwise
    unbroken = {**cfg, "out": str(tmp_path / "a"), "max_steps": 8, "checkpoint_every": 2, "eval_every": 100}
    train_stage(StageTrainConfig(**unbroken))
    _assert_resumes_on_the_same_curve(unbroken, tmp_path, monkeypatch)
    lm = load(tmp_path / f"{stage}.safetensors", expected=TokenLM)
    assert lm.num_cond == 2
    assert (lm.group_emb is not None) == (stage == "fine")  # level embeddings: the fine stage's default
    from musiclm_pytorch.checkpoint import read_header

    ident = read_header(tmp_path / f"{stage}.safetensors")["extra"]["identity"]
    cond, sem, codec = comps
    assert set(ident) == set(STAGE_INPUTS[stage])  # only what the stage reads: a semantic LM ignores the codec
    check_identity(ident, conditioner=cond, semantic=sem, codec=codec)
    other = SoundStream(strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False)
    if stage != "semantic":
        with pytest.raises(ValueError, match="codec .* differs from the one this stage was trained with"):
            check_identity(ident, codec=other)


def test_semantic_stage_reads_the_clip_latent_and_resumes_on_the_same_curve(tokens, tmp_path, monkeypatch):
    """--cond-latent: the semantic LM also reads each clip's MuLaN audio latent at every position; its
    validation shuffles ids and latent together; a killed run resumes bitwise (the noise draws too)."""
    out, _, _ = tokens
    cfg = dict(stage="semantic", tokens=str(out), out=str(tmp_path / "a"), dim=32, depth=1, heads=2, dim_head=16,
               crop_seconds=1.0, batch_size=4, max_steps=8, warmup_steps=1, log_every=1, eval_every=8,
               checkpoint_every=2, progress=False, cond_latent=True, cond_noise=0.1)  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    assert report["val_loss"] > 0 and report["val_loss_shuffled_cond"] != report["val_loss"]
    lm = load(tmp_path / "a" / "semantic.safetensors", expected=TokenLM)
    assert lm.cond_latent_dim == 128 and lm.num_cond == 2
    torch.manual_seed(0)  # the trainer's seed before it builds the model: the same initial weights
    init = TokenLM(**lm.config)
    moved = (lm.cond_latent.weight - init.cond_latent.weight).abs().max()
    assert moved > 1e-4  # the projection got gradients: the latent reached the loss
    with pytest.raises(ValueError, match="--cond-latent is for the semantic stage"):
        StageTrainConfig(stage="coarse", cond_latent=True)
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)


def test_semantic_stage_reads_the_beat_grid_of_its_ids_and_resumes_on_the_same_curve(tokens, tmp_path, monkeypatch):
    """--beat-from: each clip's beat grid comes from its own ids through the tokenizer that made them; the
    LM reads it (the projection gets gradients), validation reports the loss with the tempo unknown, and a
    killed run resumes bitwise; another tokenizer is refused."""
    from musiclm_pytorch import save

    out, _, (_, sem, _) = tokens
    save(sem, tmp_path / "sem.safetensors")
    cfg = dict(stage="semantic", tokens=str(out), out=str(tmp_path / "a"), dim=32, depth=1, heads=2, dim_head=16,
               crop_seconds=1.0, batch_size=4, max_steps=8, warmup_steps=1, log_every=1, eval_every=8,
               checkpoint_every=2, progress=False, beat_from=str(tmp_path / "sem.safetensors"),
               beat_harmonics=2)  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    assert report["val_loss_no_beat"] > 0 and report["val_loss_no_beat"] != report["val_loss"]
    lm = load(tmp_path / "a" / "semantic.safetensors", expected=TokenLM)
    assert lm.beat_harmonics == 2
    torch.manual_seed(0)
    init = TokenLM(**lm.config)
    assert (lm.beat_proj.weight - init.beat_proj.weight).abs().max() > 1e-4
    # the saved LM evaluated apart reads the same grids (from its run's --beat-from): the same figures
    from musiclm_pytorch.training.stages import evaluate_checkpoint

    again = evaluate_checkpoint(str(tmp_path / "a" / "semantic.safetensors"), str(out), items=64, threads=1)
    assert again["val_loss"] == pytest.approx(report["val_loss"], abs=1e-4)
    assert again["val_loss_no_beat"] == pytest.approx(report["val_loss_no_beat"], abs=1e-4)
    with pytest.raises(ValueError, match="reads a beat grid: give the semantic tokenizer"):
        evaluate_checkpoint(str(tmp_path / "a" / "semantic.safetensors"), str(out), beat_from=str(tmp_path / "no"))
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)
    other = SemanticTokenizer(vocab_size=8)
    other.centers.normal_()
    save(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="differs from the one this stage was trained with"):
        train_stage(
            StageTrainConfig(**{**cfg, "out": str(tmp_path / "c"), "beat_from": str(tmp_path / "other.safetensors")})
        )
    with pytest.raises(ValueError, match="--beat-from is for the semantic and latent stages"):
        StageTrainConfig(stage="coarse", tokens="x", beat_from="sem.safetensors")


def test_semantic_stage_reads_key_and_drums_labels_from_each_clips_audio_latent(tokens, tmp_path, monkeypatch):
    """--controls-from: each clip's labels are MuLaN's zero-shot reading of its own audio latent (the MuLaN the
    tokens were made with, here inside the conditioning file); the LM learns their vectors, validation reports
    the loss with them unknown, the saved LM evaluated apart gets the same figures, a killed run resumes
    bitwise, and another MuLaN is refused."""
    from musiclm_pytorch import save
    from musiclm_pytorch.lm.controls import ControlReader
    from musiclm_pytorch.training.stages import add_controls, evaluate_checkpoint, load_control_reader

    out, _, (cond, _, _) = tokens
    save(cond, tmp_path / "cond.safetensors")
    cfg = dict(stage="semantic", tokens=str(out), out=str(tmp_path / "a"), dim=32, depth=1, heads=2, dim_head=16,
               crop_seconds=1.0, batch_size=4, max_steps=8, warmup_steps=1, log_every=1, eval_every=8,
               checkpoint_every=2, progress=False, controls_from=str(tmp_path / "cond.safetensors"))  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    assert report["val_loss_no_controls"] > 0 and report["val_loss_no_controls"] != report["val_loss"]
    lm = load(tmp_path / "a" / "semantic.safetensors", expected=TokenLM)
    assert lm.control_classes == [24, 2] and lm.control_source == "prior"
    torch.manual_seed(0)
    assert (lm.control_emb.weight - TokenLM(**lm.config).control_emb.weight).abs().max() > 1e-4
    items = torch.load(out / "train.pt", weights_only=False)
    add_controls(items["items"], load_control_reader(str(tmp_path / "cond.safetensors"), items["identity"]))
    expected = ControlReader.from_mulan(cond.mulan).read(torch.stack([it["mulan"].float() for it in items["items"]]))
    assert torch.equal(torch.stack([it["controls"] for it in items["items"]]), expected)
    again = evaluate_checkpoint(str(tmp_path / "a" / "semantic.safetensors"), str(out), items=64, threads=1)
    assert again["val_loss_no_controls"] == pytest.approx(report["val_loss_no_controls"], abs=1e-4)
    with pytest.raises(ValueError, match="reads key and drums labels: give the MuLaN"):
        evaluate_checkpoint(str(tmp_path / "a" / "semantic.safetensors"), str(out), controls_from=str(tmp_path / "no"))
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)
    torch.manual_seed(1)
    save(build_mulan("tiny"), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="differs from the one this stage was trained with"):
        train_stage(StageTrainConfig(**{**cfg, "out": str(tmp_path / "c"),
                                        "controls_from": str(tmp_path / "other.safetensors")}))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="--controls-from 'nowhere': no such file"):
        train_stage(StageTrainConfig(**{**cfg, "out": str(tmp_path / "d"), "controls_from": "nowhere"}))
    with pytest.raises(ValueError, match="--controls-from is for the semantic and latent stages"):
        StageTrainConfig(stage="coarse", tokens="x", controls_from="cond.safetensors")


def test_retrieval_prior_keeps_each_clips_beat_period(tokens, tmp_path, capsys):
    from musiclm_pytorch import save
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.lm import RetrievalPrior
    from musiclm_pytorch.semantic.beat import estimate_beat, onset_from_ids

    out, _, (_, sem, _) = tokens
    save(sem, tmp_path / "sem.safetensors")
    argv = ["train", "retrieval-prior", "--tokens", str(out), "--out", str(tmp_path / "p.safetensors")]
    assert main([*argv, "--beat-from", str(tmp_path / "sem.safetensors")]) == 0
    prior = load(tmp_path / "p.safetensors", expected=RetrievalPrior)
    first = torch.load(out / "train.pt", weights_only=False)["items"][0]["semantic"]
    assert prior.has_beats and prior.periods[0] == pytest.approx(estimate_beat(onset_from_ids(sem, first), 25.0)[0])
    other = SemanticTokenizer(vocab_size=8)
    save(other, tmp_path / "other.safetensors")
    capsys.readouterr()
    assert main([*argv, "--beat-from", str(tmp_path / "other.safetensors")]) == 2
    assert "differs from the one this stage was trained with" in capsys.readouterr().err
    # --beat-tags: the tempo each clip was rendered at, from its manifest row
    items = torch.load(out / "train.pt", weights_only=False)["items"]
    rows = [{"path": it["path"], "tags": {"tempo_bpm": 100.0 + i}} for i, it in enumerate(items)]
    (tmp_path / "tags.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([*argv, "--beat-tags", str(tmp_path / "tags.jsonl")]) == 0
    prior = load(tmp_path / "p.safetensors", expected=RetrievalPrior)
    assert torch.allclose(prior.periods, 60 * 25.0 / (100.0 + torch.arange(len(items)).float()))
    (tmp_path / "tags.jsonl").write_text(json.dumps(rows[0]) + "\n")
    capsys.readouterr()
    assert main([*argv, "--beat-tags", str(tmp_path / "tags.jsonl")]) == 2
    assert f"{len(items) - 1} of the {len(items)} clips have no row with tags.tempo_bpm" in capsys.readouterr().err
    # a frame bank of whole clips, fewer codec levels, the envelope alone taken from the matched frames
    frames = min(int(it["codes"].shape[1]) for it in items)
    assert main([*argv, "--frames-per-clip", str(frames), "--frame-window", "--frame-k", "1", "--frame-levels", "1",
                 "--frame-envelope", "4", "--frame-envelope-skip", "1", "--frame-continuity", "3",
                 "--frame-drums-only"]) == 0  # fmt: skip
    prior = load(tmp_path / "p.safetensors", expected=RetrievalPrior)
    assert prior.frame_codes.shape == (len(items), frames, 1)
    assert torch.equal(prior.frame_codes[0, :, 0].long(), items[0]["codes"][0, :frames].long())
    assert (prior.config["frame_envelope"], prior.config["frame_envelope_skip"]) == (4, 1)
    assert prior.frame_drums_only
    # neighbours of the text's instrument family first, read through the tokens' MuLaN
    capsys.readouterr()
    assert main([*argv, "--family-pool", "12"]) == 2
    assert "--family-pool reads families through MuLaN: pass --conditioning" in capsys.readouterr().err
    save(tokens[2][0], tmp_path / "cond.safetensors")
    assert main([*argv, "--family-pool", "12", "--conditioning", str(tmp_path / "cond.safetensors")]) == 0
    prior = load(tmp_path / "p.safetensors", expected=RetrievalPrior)
    assert prior.family_pool == 12 and prior.bank_family.shape == (len(items),)
    assert torch.equal(prior.bank_family.long(), prior.read_family(prior.latents))
    assert prior.family_neighbours(prior.latents[:3]).shape == (3, 8)
    assert not prior.family_acoustic_only
    assert main([*argv, "--family-pool", "12", "--conditioning", str(tmp_path / "cond.safetensors"),
                 "--family-acoustic-only"]) == 0  # fmt: skip
    assert load(tmp_path / "p.safetensors", expected=RetrievalPrior).family_acoustic_only
    capsys.readouterr()
    assert main([*argv, "--family-acoustic-only"]) == 2
    assert "--family-acoustic-only needs --family-pool" in capsys.readouterr().err


def test_stage_ema_and_bf16(tokens, tmp_path):
    out, _, _ = tokens
    cfg = StageTrainConfig(stage="semantic", tokens=str(out), out=str(tmp_path), dim=32, depth=1, heads=2,
                           dim_head=16, crop_seconds=1.0, batch_size=4, max_steps=4, warmup_steps=1, log_every=1,
                           eval_every=4, checkpoint_every=4, progress=False, ema_decay=0.9,
                           mixed_precision="bf16")  # fmt: skip
    report = train_stage(cfg)
    assert report["val_loss"] > 0
    raw, ema = load(tmp_path / "semantic.safetensors"), load(tmp_path / "semantic_ema.safetensors")
    assert isinstance(ema, TokenLM)
    diffs = [not torch.allclose(a, b) for a, b in zip(raw.state_dict().values(), ema.state_dict().values())]
    assert any(diffs)
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    assert state["ema"]["num_updates"] == 4
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)


def test_stage_config_errors(tmp_path):
    with pytest.raises(ValueError, match="stage must be semantic, coarse, fine, acoustic, latent or flow"):
        StageTrainConfig(stage="medium", tokens="x")
    with pytest.raises(ValueError, match="mixed_precision must be 'no' or 'bf16'"):
        StageTrainConfig(tokens="x", mixed_precision="fp16")
    with pytest.raises(FileNotFoundError, match="musiclm data tokenize"):
        train_stage(StageTrainConfig(tokens=str(tmp_path)))


def test_two_process_stage_training(tokens, tmp_path, torchrun, free_port):
    """The stage trainer on 2 CPU processes (gloo) through torchrun, as `accelerate launch` would run it."""
    import subprocess

    from musiclm_pytorch import load
    from musiclm_pytorch.lm import TokenLM

    out_tokens, _, _ = tokens
    out = tmp_path / "ddp"
    argv = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port), "-m", "musiclm_pytorch.cli", "train",
            "stage", "--stage", "coarse", "--tokens", str(out_tokens), "--out", str(out), "--dim", "32", "--depth", "1",
            "--heads", "2", "--dim-head", "16", "--num-coarse", "2", "--crop-seconds", "1", "--batch-size", "2",
            "--max-steps", "4", "--warmup-steps", "1", "--log-every", "1", "--eval-every", "4",
            "--checkpoint-every", "2", "--threads", "1", "--no-progress"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # only the main process writes
    assert any("val_loss_shuffled_cond" in r for r in records)
    assert isinstance(load(out / "coarse.safetensors"), TokenLM)


def test_validation_shows_when_conditioning_matters(tmp_path, capsys):
    """Semantic ids that are a function of the MuLaN tokens: after training, the loss with the true
    conditioning is well below the loss with the conditioning shuffled across clips."""
    from musiclm_pytorch.training.common import atomic_torch_save

    gen = torch.Generator().manual_seed(0)

    def item() -> dict:
        cond = torch.randint(0, 4, (2,), generator=gen)
        sem = (cond[0] * 2 + cond[1] % 2).repeat(50)  # ids 0..7, one per condition
        return {"cond_ids": cond.short(), "semantic": sem.short(), "codes": torch.zeros(2, 100, dtype=torch.short)}

    meta = {"identity": {}, "ratio": 2, "semantic_vocab": 8, "codebook_size": 4, "num_quantizers": 2,
            "cond_vocab": 4, "num_cond": 2}  # fmt: skip
    atomic_torch_save({**meta, "items": [item() for _ in range(64)]}, tmp_path / "train.pt")
    atomic_torch_save({**meta, "items": [item() for _ in range(32)]}, tmp_path / "val.pt")
    cfg = StageTrainConfig(stage="semantic", tokens=str(tmp_path), out=str(tmp_path / "run"), dim=32, depth=1, heads=2,
                           dim_head=16, dropout=0.0, crop_seconds=2.0, batch_size=16, lr=3e-3, max_steps=80,
                           warmup_steps=5, eval_every=80, eval_items=32, threads=1, progress=False)  # fmt: skip
    report = train_stage(cfg)
    # a clip repeats one id, so only its first token needs the conditioning (the rest copy the context):
    # a wrong condition costs one confident miss per crop, shared by 50 targets, or by the 25 of the first second
    gap = report["val_loss_shuffled_cond"] - report["val_loss"]
    head_gap = report["val_loss_first_second_shuffled_cond"] - report["val_loss_first_second"]
    assert report["val_loss"] < 0.1 and gap > 0.05 and head_gap == pytest.approx(2 * gap, rel=0.1)
    # the same evaluation from the saved checkpoint through the CLI
    from musiclm_pytorch.cli import main

    capsys.readouterr()
    assert main(["eval", "stage", "--checkpoint", str(tmp_path / "run" / "semantic.safetensors"), "--tokens",
                 str(tmp_path), "--items", "32", "--threads", "1"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["stage"] == "semantic" and printed["crop_seconds"] == 2.0 and printed["val_clips"] == 32
    assert printed["val_loss"] == pytest.approx(report["val_loss"], abs=1e-4)
    argv = ["eval", "stage", "--checkpoint", str(tmp_path / "run" / "semantic.safetensors"), "--tokens", str(tmp_path),
            "--items", "32", "--threads", "1", "--split", "test"]  # fmt: skip
    assert main(argv) == 2 and "test.pt" in capsys.readouterr().err  # no sealed split tokenized yet
    (tmp_path / "test.pt").write_bytes((tmp_path / "val.pt").read_bytes())
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["val_loss"] == printed["val_loss"]


@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_each_stage_overfits_one_batch(tokens, stage):
    """One batch in each stage's own token layout (real tokenized clips) is learned: the loss on the
    layout's loss positions falls below a fifth of its start."""
    import random

    from musiclm_pytorch.lm import TokenLM
    from musiclm_pytorch.training.stages import _batch, _layout

    out, _, _ = tokens
    data = torch.load(out / "train.pt", weights_only=False)
    cfg = StageTrainConfig(stage=stage, tokens=str(out), num_coarse=2)
    layout = _layout(cfg, data)
    items = data["items"][:4]
    tokens_, mask, cond, _ = _batch(items, layout, data["ratio"], 10, random.Random(0), data["num_quantizers"])
    lm = TokenLM(vocab_size=layout.vocab_size, dim=64, depth=2, heads=2, dim_head=32, num_cond=data["num_cond"],
                 cond_vocab=data["cond_vocab"], dropout=0.0, cond_drop_prob=0.0,
                 max_seq_len=tokens_.shape[1])  # fmt: skip
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return F.cross_entropy(lm(tokens_, cond)[mask], tokens_[mask])

    first = loss().item()
    for _ in range(100):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < first / 5


def test_level_embeddings_can_be_turned_on_for_the_coarse_stage(tokens, tmp_path):
    out, _, _ = tokens
    cfg = StageTrainConfig(stage="coarse", tokens=str(out), out=str(tmp_path), dim=32, depth=1, heads=2, dim_head=16,
                           num_coarse=2, crop_seconds=1.0, batch_size=4, max_steps=1, warmup_steps=1, eval_every=100,
                           progress=False, level_embeddings=True)  # fmt: skip
    train_stage(cfg)
    lm = load(tmp_path / "coarse.safetensors", expected=TokenLM)
    assert lm.config["token_groups"] == [8, 8, 8]  # 8 semantic ids, then 2 coarse levels of 8 codes
    with pytest.raises(ValueError, match="trained with level embeddings; resume it with --level-embeddings"):
        train_stage(dataclasses.replace(cfg, max_steps=2, level_embeddings=False))
    train_stage(dataclasses.replace(cfg, max_steps=2, level_embeddings=None))  # None: what the checkpoint has


def _assert_resumes_on_the_same_curve(cfg: dict, tmp_path: Path, monkeypatch, *, folder: str = "b",
                                     kill: str = "step") -> None:  # fmt: skip
    """``cfg`` ran unbroken into ``tmp_path / "a"`` (8 steps, a checkpoint every 2); the same run killed while
    computing step 5, after its step-4 checkpoint (``kill="step"``), or between the step-4 train state and the
    step-4 model file (``kill="export"``), and rerun must log exactly the same losses (bitwise)."""
    from musiclm_pytorch.training import core, stages

    real_check, real_save = core.check_finite, stages.save

    def killed(value, step, what="loss"):
        if step == 4:
            raise KeyboardInterrupt
        real_check(value, step, what)

    def killed_export(model, path, *, extra=None):
        if (extra or {}).get("step") == 4:
            raise KeyboardInterrupt
        return real_save(model, path, extra=extra)

    if kill == "step":
        monkeypatch.setattr(core, "check_finite", killed)  # the training core checks every loss
    else:
        monkeypatch.setattr(stages, "save", killed_export)
    with pytest.raises(KeyboardInterrupt):
        train_stage(StageTrainConfig(**{**cfg, "out": str(tmp_path / folder)}))
    monkeypatch.undo()
    if kill == "export":  # the state is at step 4, the model file still at step 2
        assert torch.load(tmp_path / folder / "train_state.pt", weights_only=False)["step"] == 4
    train_stage(StageTrainConfig(**{**cfg, "out": str(tmp_path / folder)}))

    def losses(name: str) -> dict[int, float]:
        lines = (tmp_path / name / "log.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}

    assert list(losses(folder)) == list(range(1, 9)) and losses(folder) == losses("a")  # steps 5-8 included


def test_acoustic_stage_trains_evaluates_and_resumes_on_the_same_curve(tokens, tmp_path, monkeypatch):
    """The masked acoustic stage through the stage trainer: its validation reports the conditioning's
    share; a run killed after its step-4 checkpoint resumes with exactly the losses of an unbroken run."""
    from musiclm_pytorch.lm import MaskedAcousticLM

    out, _, _ = tokens
    cfg = dict(stage="acoustic", tokens=str(out), out=str(tmp_path / "a"), dim=32, depth=1, heads=2, dim_head=16,
               crop_seconds=1.0, batch_size=4, max_steps=8, warmup_steps=1, log_every=1, eval_every=8,
               checkpoint_every=2, cond_noise=0.1, acoustic_levels=3, threads=1, progress=False)  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    for key in ("val_loss", "val_loss_shuffled_cond", "val_loss_null_cond", "val_level1_from_blank",
                "val_level1_from_blank_shuffled_cond", "val_level1_from_blank_null_cond"):  # fmt: skip
        assert report[key] > 0
    lm = load(tmp_path / "a" / "acoustic.safetensors", expected=MaskedAcousticLM)
    assert lm.num_quantizers == 3 and lm.ratio == 2 and lm.cond_noise == 0.1  # the first 3 of the codec's 4 levels
    with pytest.raises(ValueError, match="acoustic_levels=5 must be in \\[1, 4\\]"):
        train_stage(StageTrainConfig(**{**cfg, "out": str(tmp_path / "c"), "acoustic_levels": 5}))

    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch, folder="d", kill="export")


def test_acoustic_stage_needs_mulan_latents(tokens, tmp_path):
    from musiclm_pytorch.training.common import atomic_torch_save

    out, _, _ = tokens
    for split in ("train", "val"):
        data = torch.load(out / f"{split}.pt", weights_only=False)
        data["items"] = [{k: v for k, v in it.items() if k != "mulan"} for it in data["items"]]
        atomic_torch_save(data, tmp_path / f"{split}.pt")
    with pytest.raises(ValueError, match="holds no MuLaN latents"):
        train_stage(StageTrainConfig(stage="acoustic", tokens=str(tmp_path), out=str(tmp_path / "run"), progress=False))


@pytest.fixture(scope="module")
def spectral_tokens(tokens, tiny_corpus, tmp_path_factory):
    """The tiny corpus tokenized with a small fitted SpectralCodec (for the latent stage)."""
    import soundfile as sf

    from musiclm_pytorch.codec import SpectralCodec

    _, _, (cond, sem, _) = tokens
    rows = [json.loads(line) for line in (tiny_corpus / "train.jsonl").read_text().splitlines()][:6]
    codec = SpectralCodec(dim=16, num_quantizers=3, codebook_size=16, gl_iters=4)
    codec.fit([torch.from_numpy(sf.read(tiny_corpus / r["path"], dtype="float32")[0]) for r in rows], kmeans_iters=3)
    out = tmp_path_factory.mktemp("spectral_tokens")
    codec.save(out / "codec.safetensors")
    tokenize_corpus(conditioner=cond, semantic=sem, codec=codec, data=str(tiny_corpus), out=str(out), progress=False)
    return out


def test_latent_stage_trains_evaluates_and_resumes_on_the_same_curve(spectral_tokens, tmp_path, monkeypatch):
    from musiclm_pytorch.lm import LatentAcousticLM

    cfg = dict(stage="latent", tokens=str(spectral_tokens), codec=str(spectral_tokens / "codec.safetensors"),
               out=str(tmp_path / "a"), dim=32, depth=1, heads=2, dim_head=16, crop_seconds=1.0, batch_size=4,
               max_steps=8, warmup_steps=1, log_every=1, eval_every=8, checkpoint_every=2, cond_noise=0.1, threads=1,
               progress=False)  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    assert all(report[k] > 0 for k in ("val_loss", "val_loss_shuffled_cond", "val_loss_null_cond"))
    lm = load(tmp_path / "a" / "latent.safetensors", expected=LatentAcousticLM)
    assert lm.latent_dim == 16 and lm.prior_bank.shape == (18, 128)  # every training clip's MuLaN latent
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="needs --codec"):
        StageTrainConfig(stage="latent", tokens="x")


def test_acoustic_crops_shift_each_grid_to_the_crops_first_frame():
    import random

    from musiclm_pytorch.training.stages import _acoustic_crops

    items = [{"semantic": torch.arange(40), "codes": torch.zeros(2, 80, dtype=torch.long), "mulan": torch.ones(4),
              "beat": torch.tensor([7.5, 2.0]), "controls": torch.tensor([3, 1])},
             {"semantic": torch.arange(40), "codes": torch.zeros(2, 80, dtype=torch.long), "mulan": torch.ones(4),
              "beat": torch.tensor([0.0, 0.0]), "controls": torch.tensor([-1, 0])}]  # fmt: skip
    sem, codes, _, beat, drums = _acoustic_crops(items, 2, 10, random.Random(5), 2)
    start = int(sem[0, 0])  # the ids are their own frame numbers
    assert 0 < start and codes.shape == (2, 2, 20)
    assert torch.allclose(beat[0], torch.tensor([7.5, (2.0 - start) % 7.5]))  # beats at 2 + 7.5 k, from the crop
    assert torch.equal(beat[1], torch.zeros(2)) and drums.tolist() == [1, 0]  # an unknown grid stays unknown


def test_latent_stage_reads_the_beat_grid_and_drums_label_and_the_oracle_gives_them(
    tokens, spectral_tokens, tiny_corpus, tmp_path, monkeypatch, capsys
):  # fmt: skip
    """--beat-from with --controls-from: the latent stage's phase table is fitted from each clip's grid (from its
    ids) and drums label (MuLaN's reading of its audio latent), validation reports the loss with both unknown, a
    killed run resumes bitwise, and `eval acoustic` gives the stage the grids of the true ids."""
    from musiclm_pytorch import save
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.lm import LatentAcousticLM

    _, _, (cond, sem, _) = tokens
    save(sem, tmp_path / "sem.safetensors")
    save(cond, tmp_path / "cond.safetensors")
    cond.mulan.save(tmp_path / "mulan.safetensors")
    codec = str(spectral_tokens / "codec.safetensors")
    cfg = dict(stage="latent", tokens=str(spectral_tokens), codec=codec, out=str(tmp_path / "a"), dim=32, depth=1,
               heads=2, dim_head=16, crop_seconds=1.0, batch_size=4, max_steps=8, warmup_steps=1, log_every=1,
               eval_every=8, checkpoint_every=2, threads=1, progress=False, beat_bins=4,
               beat_from=str(tmp_path / "sem.safetensors"),
               controls_from=str(tmp_path / "cond.safetensors"))  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    assert report["val_loss_no_beat"] > 0 and report["val_loss_no_beat"] != report["val_loss"]
    lm = load(tmp_path / "a" / "latent.safetensors", expected=LatentAcousticLM)
    assert lm.beat_bins == 4 and float(lm.beat_table.detach().abs().sum()) > 0  # fitted, then trained
    assert "fit_l1_with_beat_table" in json.loads((tmp_path / "a" / "fit_direct.json").read_text())
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="give both --beat-from and --controls-from"):
        StageTrainConfig(**{**cfg, "controls_from": ""})
    argv = ["eval", "acoustic", "--stage", str(tmp_path / "a" / "latent.safetensors"), "--codec", codec,
            "--mulan", str(tmp_path / "mulan.safetensors"), "--tokens", str(spectral_tokens), "--data",
            str(tiny_corpus / "val.jsonl"), "--clips", "3", "--knn", "2", "--threads", "1", "--examples", "0",
            "--out", str(tmp_path / "oracle")]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2  # the stage reads the grid of its ids: the tokenizer is required
    assert "pass semantic_tokenizer" in capsys.readouterr().err
    assert main([*argv, "--semantic-tokenizer", str(tmp_path / "sem.safetensors")]) == 0
    oracle = json.loads((tmp_path / "oracle" / "acoustic_oracle.json").read_text())
    assert oracle["clips"] == 3 and "drums" in oracle["from_text_knn"]["judge"]
    # through a retrieval prior's acoustic latent, as the pipeline conditions the stage
    from musiclm_pytorch.lm import RetrievalPrior

    train = torch.load(spectral_tokens / "train.pt", weights_only=False)
    prior = RetrievalPrior.from_items(train["items"], vocab_size=train["semantic_vocab"], k=2, family_classes=2,
                                      family_pool=len(train["items"]), family_acoustic_only=True)  # fmt: skip
    prior.set_families(torch.randn(2, prior.cond_dim, generator=torch.Generator().manual_seed(0)))
    save(prior, tmp_path / "prior.safetensors")
    argv = [
        *argv,
        "--semantic-tokenizer",
        str(tmp_path / "sem.safetensors"),
        "--prior",
        str(tmp_path / "prior.safetensors"),
    ]
    assert main(argv) == 0
    oracle = json.loads((tmp_path / "oracle" / "acoustic_oracle.json").read_text())
    assert "family" in oracle["from_text_prior"]["judge"] and oracle["caption_swap"]["clips"] >= 0


def test_flow_stage_trains_around_a_frozen_latent_stage_and_resumes_on_the_same_curve(spectral_tokens, tmp_path,
                                                                                     monkeypatch):  # fmt: skip
    from musiclm_pytorch.lm import FlowAcousticLM, LatentAcousticLM

    codec = str(spectral_tokens / "codec.safetensors")
    train_stage(StageTrainConfig(stage="latent", tokens=str(spectral_tokens), codec=codec, out=str(tmp_path / "mean"),
                                 dim=32, depth=1, heads=2, dim_head=16, crop_seconds=1.0, batch_size=4, max_steps=2,
                                 eval_every=100, cond_noise=0.1, threads=1, progress=False))  # fmt: skip
    mean_path = tmp_path / "mean" / "latent.safetensors"
    cfg = dict(stage="flow", tokens=str(spectral_tokens), codec=codec, mean_stage=str(mean_path),
               out=str(tmp_path / "a"), dim=32, depth=1, heads=2, dim_head=16, crop_seconds=1.0, batch_size=4,
               max_steps=8, warmup_steps=1, log_every=1, eval_every=8, checkpoint_every=2, flow_steps=4, threads=1,
               progress=False)  # fmt: skip
    report = train_stage(StageTrainConfig(**cfg))
    for k in ("val_loss", "val_loss_shuffled_cond", "val_loss_null_cond", "val_sample_l1", "val_mean_l1"):
        assert report[k] > 0
    flow = load(tmp_path / "a" / "flow.safetensors", expected=FlowAcousticLM)
    mean = load(mean_path, expected=LatentAcousticLM)
    assert flow.flow_steps == 4 and flow.latent_dim == 16 and float(flow.resid_std.min()) > 0
    assert mean.cond_noise == 0.1 and flow.cond_noise == 0.0  # the flow's own (clean) conditioning, not the mean's
    fitted = json.loads((tmp_path / "a" / "fit_residual.json").read_text())
    assert fitted["frames"] > 0 and fitted["resid_std_mean"] > 0
    # the regression part is the latent stage's, unchanged by 8 steps of flow training
    for k, v in mean.state_dict().items():
        assert torch.equal(flow.state_dict()[k], v), k
    assert not torch.equal(flow.flow_out.weight, torch.zeros_like(flow.flow_out.weight))  # the flow did train
    _assert_resumes_on_the_same_curve(cfg, tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="needs --mean-stage"):
        StageTrainConfig(stage="flow", tokens="x", codec="c")
    with pytest.raises(ValueError, match="is a flow stage already"):
        train_stage(StageTrainConfig(**{**cfg, "mean_stage": str(tmp_path / "a" / "flow.safetensors"),
                                        "out": str(tmp_path / "c")}))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="--mean-stage .*nowhere.safetensors.*: no such file"):
        train_stage(StageTrainConfig(**{**cfg, "mean_stage": str(tmp_path / "nowhere.safetensors"),
                                        "out": str(tmp_path / "e")}))  # fmt: skip
    assert not (tmp_path / "e").exists()  # checked before the run folder is made


def test_latent_stage_refuses_another_codec(spectral_tokens, tmp_path):
    from musiclm_pytorch.codec import SpectralCodec

    other = SpectralCodec(dim=16, num_quantizers=3, codebook_size=16)
    other.fitted.fill_(True)
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="but the tokens were made with"):
        train_stage(StageTrainConfig(stage="latent", tokens=str(spectral_tokens), out=str(tmp_path / "run"),
                                     codec=str(tmp_path / "other.safetensors"), progress=False))  # fmt: skip


def test_eval_acoustic_cli_on_a_latent_stage(tokens, spectral_tokens, tiny_corpus, tmp_path, capsys):
    """`musiclm eval acoustic`: the oracle's versions from the CLI, matched to the manifest by path."""
    from musiclm_pytorch.cli import main

    _, _, (cond, _, _) = tokens
    cond.mulan.save(tmp_path / "mulan.safetensors")
    codec = str(spectral_tokens / "codec.safetensors")
    train_stage(StageTrainConfig(stage="latent", tokens=str(spectral_tokens), codec=codec, out=str(tmp_path / "run"),
                                 dim=32, depth=1, heads=2, dim_head=16, crop_seconds=1.0, batch_size=4, max_steps=1,
                                 eval_every=100, threads=1, progress=False))  # fmt: skip
    argv = ["eval", "acoustic", "--stage", str(tmp_path / "run" / "latent.safetensors"), "--codec", codec,
            "--mulan", str(tmp_path / "mulan.safetensors"), "--tokens", str(spectral_tokens), "--data",
            str(tiny_corpus / "val.jsonl"), "--clips", "4", "--knn", "2", "--other-scales", "1", "--threads", "1",
            "--out", str(tmp_path / "oracle")]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    report = json.loads((tmp_path / "oracle" / "acoustic_oracle.json").read_text())
    assert report["clips"] == 4 and report["seconds"] == 3.0
    for name in ("codec_ceiling", "from_text", "from_text_cfg1", "from_audio", "null", "from_text_knn"):
        assert 0.0 <= report[name]["caption_r1"] <= 1.0 and "family" in report[name]["judge"]
    assert "caption_swap" in report
    assert (tmp_path / "oracle" / "acoustic_oracle.png").stat().st_size > 10_000  # spectrograms of the examples
    assert (tmp_path / "oracle" / "clip0_from_text.wav").is_file() and (
        tmp_path / "oracle" / "clip3_null.wav"
    ).is_file()
    assert main([*argv[:-2], "--data", str(tmp_path / "empty.jsonl")]) == 2  # no manifest there: one-line error

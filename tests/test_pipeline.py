from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch.lm import TokenLM
from musiclm_pytorch.pipeline import MusicLM


def _record_calls(monkeypatch, obj, pick) -> list:
    """Calls of ``obj.generate`` go through unchanged; ``pick(kwargs)`` of each is appended to the list returned."""
    seen: list = []
    real = obj.generate

    def spy(*args, **kwargs):
        seen.append(pick(kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, "generate", spy)
    return seen


@pytest.fixture(scope="module")
def parts(musiclm_parts):
    return musiclm_parts


def test_generate_candidates_in_one_batch_and_rerank(parts):
    mlm = MusicLM(**parts)
    assert mlm.ratio == 2 and mlm.max_seconds() == 2.0
    out = mlm.generate(
        ["calm piano", "loud drums"], seconds=1.0, num_candidates=3, generator=torch.Generator().manual_seed(0)
    )
    assert out.wavs.shape == (2, 16000) and out.scores.shape == (2, 3)
    assert torch.equal(out.chosen, out.scores.argmax(1))
    assert out.candidates.shape == (2, 3, 16000) and torch.equal(out.candidates[1, out.chosen[1]], out.wavs[1])
    assert out.semantic.shape == (2, 25) and out.codes.shape == (2, 4, 50)
    assert int(out.codes.max()) < 8


def test_fine_stage_keeps_the_coarse_levels(parts):
    mlm = MusicLM(**parts)
    coarse = torch.randint(0, 8, (3, 2, 12))
    cond = torch.randint(0, 4, (3, 2))
    full = mlm._fine(coarse, cond, mlm_sampling(), torch.Generator().manual_seed(0))
    assert full.shape == (3, 4, 12) and torch.equal(full[:, :2], coarse)  # fine LM chunks of 40 // 4 = 10 frames


def mlm_sampling():
    from musiclm_pytorch.lm import SamplingConfig

    return SamplingConfig(temperature=1.0, cfg_scale=2.0)


def test_contracts_name_both_sides(parts, tiny_lm):
    with pytest.raises(ValueError, match=r"coarse_lm.vocab_size=30 does not match semantic vocab \+ 2 x codebook=24"):
        MusicLM(**{**parts, "coarse_lm": tiny_lm(30, 50)})
    with pytest.raises(ValueError, match="semantic_lm.vocab_size=9 does not match semantic_tokenizer.vocab_size=8"):
        MusicLM(**{**parts, "semantic_lm": tiny_lm(9, 50)})
    bad = TokenLM(vocab_size=8, dim=32, depth=1, heads=2, dim_head=16, num_cond=3, cond_vocab=4, max_seq_len=50)
    with pytest.raises(ValueError, match="semantic_lm.num_cond=3 does not match conditioner.num_quantizers=2"):
        MusicLM(**{**parts, "semantic_lm": bad})
    with pytest.raises(ValueError, match=r"seconds must be in \(0, 2.00\]"):
        MusicLM(**parts).generate(["x"], seconds=3.0)


def test_bundle_folder_and_generate_cli(parts, tmp_path, capsys):
    import json

    from musiclm_pytorch import save
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.pipeline import BUNDLE_FILES

    for key, name in BUNDLE_FILES.items():
        if key in parts:
            save(parts[key], tmp_path / name)
    argv = ["generate", "calm piano", "--model-dir", str(tmp_path), "--seconds", "1", "--candidates", "2",
            "--out", str(tmp_path / "gen")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["files"]) == 1 and len(report["mulan_scores"][0]) == 2
    assert main([*argv, "--lm-precision", "int8", "--temperature", "0.8"]) == 0  # int8 LMs, the same pipeline
    assert len(json.loads(capsys.readouterr().out)["files"]) == 1
    one = tmp_path / "one.wav"  # one text, one named file; longer than the model's 2 s window: long generation
    assert main([*argv[:-2], "--seconds", "3", "-o", str(one)]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == [str(one)] and one.stat().st_size > 3 * 16000 * 2
    assert main([*argv[:2], "x", *argv[2:-2], "-o", str(one)]) == 2 and "names one WAV file" in capsys.readouterr().err
    from musiclm_pytorch.pipeline import load_musiclm

    assert load_musiclm(tmp_path, lm_precision="int8").coarse_lm.quantized
    with pytest.raises(ValueError, match="lm_precision must be one of"):
        load_musiclm(tmp_path, lm_precision="fp8")
    (tmp_path / BUNDLE_FILES["codec"]).unlink()
    assert main(argv) == 2 and "missing ['codec.safetensors']" in capsys.readouterr().err
    assert main([*argv[:3], str(tmp_path / "nowhere"), *argv[4:]]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_long_generation_and_story_mode(parts):
    mlm = MusicLM(**parts)
    gen = torch.Generator().manual_seed(0)
    story = mlm.generate_long([("calm piano", 1.6), ("loud drums", 1.6)], window_seconds=2.0, stride_seconds=1.0,
                              generator=gen)  # fmt: skip
    assert story.shape == (51200,)  # 3.2 s (80 frames), longer than one 2 s window
    with pytest.raises(ValueError, match=r"need 0 < stride \(3.0\) < window \(2.0\)"):
        mlm.generate_long([("x", 3.0)], window_seconds=2.0, stride_seconds=3.0)
    with pytest.raises(ValueError, match="segments must be non-empty"):
        mlm.generate_long([])


def test_model_folder_refuses_a_stage_trained_on_other_tokenizers(parts, tmp_path):
    from musiclm_pytorch import save
    from musiclm_pytorch.checkpoint import identity
    from musiclm_pytorch.codec import SoundStream
    from musiclm_pytorch.pipeline import BUNDLE_FILES, load_musiclm

    trained_with = {"conditioner": identity(parts["conditioner"]), "semantic": identity(parts["semantic_tokenizer"]),
                    "codec": identity(parts["codec"])}  # fmt: skip
    for key, name in BUNDLE_FILES.items():
        if key in parts:
            save(parts[key], tmp_path / name, extra={"identity": trained_with} if key.endswith("_lm") else None)
    assert load_musiclm(tmp_path).ratio == 2  # the tokenizers it was trained on: accepted
    other = SoundStream(strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False)
    save(other, tmp_path / BUNDLE_FILES["codec"])  # same shapes, other weights
    # the semantic LM does not read codec codes: the coarse LM is the first to refuse
    with pytest.raises(ValueError, match=r"coarse_lm.safetensors in .*: codec .* differs from the one this stage"):
        load_musiclm(tmp_path)
    # retrained coarse and fine stages on the new codec: the old semantic LM stays valid
    for key in ("coarse_lm", "fine_lm"):
        save(parts[key], tmp_path / BUNDLE_FILES[key], extra={"identity": {**trained_with, "codec": identity(other)}})
    assert load_musiclm(tmp_path).codec is not None
    other_semantic = parts["semantic_tokenizer"].__class__(vocab_size=8)
    other_semantic.centers.add_(1.0)  # same shapes, other weights
    save(other_semantic, tmp_path / BUNDLE_FILES["semantic_tokenizer"])
    with pytest.raises(ValueError, match=r"semantic_lm.safetensors in .*: semantic .* differs"):
        load_musiclm(tmp_path)


def test_batched_resample_equals_row_by_row():
    from musiclm_pytorch.audio import resample
    from musiclm_pytorch.pipeline import _resample

    wavs = torch.randn(3, 1, 2400)
    batched = _resample(wavs, 24000, 16000)
    rows = torch.stack([torch.from_numpy(resample(w[0], 24000, 16000)) for w in wavs])
    assert batched.shape == (3, 1, 1600) and torch.equal(batched[:, 0], rows)
    assert _resample(wavs, 16000, 16000) is wavs


@pytest.fixture(scope="module")
def acoustic_parts(parts):
    from musiclm_pytorch.lm import MaskedAcousticLM

    acoustic = MaskedAcousticLM(semantic_vocab=8, codebook_size=8, num_quantizers=4, cond_dim=128, dim=32, depth=1,
                                heads=2, dim_head=16).eval()  # fmt: skip
    return {k: v for k, v in parts.items() if k not in ("coarse_lm", "fine_lm", "num_coarse")} | {
        "acoustic_lm": acoustic
    }


def test_masked_acoustic_stage_in_the_pipeline(acoustic_parts, tmp_path):
    from musiclm_pytorch import save
    from musiclm_pytorch.pipeline import BUNDLE_FILES, load_musiclm

    mlm = MusicLM(**acoustic_parts)
    assert mlm.max_seconds() == 2.0  # the semantic LM's 50 ids at 25 Hz
    out = mlm.generate(["calm piano", "loud drums"], seconds=1.0, num_candidates=2, cfg_scale=2.0,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.wavs.shape == (2, 16000) and out.codes.shape == (2, 4, 50) and out.scores.shape == (2, 2)
    story = mlm.generate_long([("calm piano", 1.6), ("loud drums", 1.6)], window_seconds=2.0, stride_seconds=1.0,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert story.shape == (51200,)
    for key, name in BUNDLE_FILES.items():
        if key in acoustic_parts:
            save(acoustic_parts[key], tmp_path / name)
    assert load_musiclm(tmp_path).acoustic_lm is not None
    save(acoustic_parts["semantic_lm"], tmp_path / BUNDLE_FILES["coarse_lm"])  # two acoustic paths: ambiguous
    with pytest.raises(FileNotFoundError, match="one acoustic stage"):
        load_musiclm(tmp_path)


def test_acoustic_stage_contracts(acoustic_parts, parts):
    from musiclm_pytorch.lm import MaskedAcousticLM

    wrong = MaskedAcousticLM(semantic_vocab=9, codebook_size=8, num_quantizers=4, cond_dim=128, dim=32, depth=1)
    with pytest.raises(ValueError, match="acoustic_lm.semantic_vocab=9 does not match semantic_tokenizer.vocab_size=8"):
        MusicLM(**{**acoustic_parts, "acoustic_lm": wrong})
    with pytest.raises(ValueError, match="either coarse_lm"):
        MusicLM(**{**acoustic_parts, "coarse_lm": parts["coarse_lm"]})


def test_latent_acoustic_stage_in_the_pipeline(acoustic_parts):
    from musiclm_pytorch.codec import SpectralCodec
    from musiclm_pytorch.lm import LatentAcousticLM

    t = torch.arange(16000) / 16000
    codec = SpectralCodec(dim=16, num_quantizers=2, codebook_size=8, gl_iters=2)
    codec.fit([torch.sin(2 * torch.pi * f * t) * 0.3 for f in (220, 330, 440, 550)], kmeans_iters=2)
    stage = LatentAcousticLM(semantic_vocab=8, latent_dim=16, cond_dim=128, dim=32, depth=1, heads=2, dim_head=16)
    parts = {**acoustic_parts, "codec": codec, "acoustic_lm": stage.eval()}
    mlm = MusicLM(**parts)
    out = mlm.generate(["calm piano", "loud drums"], seconds=1.0, num_candidates=2, cfg_scale=2.0,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.wavs.shape == (2, 16000) and out.codes.shape == (2, 2, 50) and int(out.codes.max()) < 8
    story = mlm.generate_long([("calm piano", 1.6), ("loud drums", 1.6)], window_seconds=2.0, stride_seconds=1.0,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert story.shape == (51200,)
    with pytest.raises(ValueError, match="has no decode_latents"):
        MusicLM(**{**parts, "codec": acoustic_parts["codec"]})
    with pytest.raises(ValueError, match="acoustic_lm.latent_dim=16 does not match codec.latent_dim=8"):
        small = SpectralCodec(dim=8, num_quantizers=2, codebook_size=8)
        MusicLM(**{**parts, "codec": small})


def test_retrieval_prior_conditions_every_stage(acoustic_parts, tmp_path):
    from musiclm_pytorch import save
    from musiclm_pytorch.checkpoint import identity
    from musiclm_pytorch.lm import RetrievalPrior
    from musiclm_pytorch.pipeline import BUNDLE_FILES, load_musiclm

    gen = torch.Generator().manual_seed(0)
    items = [{"mulan": torch.randn(128, generator=gen), "semantic": torch.full((25,), i % 8)} for i in range(16)]
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=1, mix=0.999)
    mlm = MusicLM(**acoustic_parts, prior=prior)
    texts = ["calm piano", "loud drums"]
    cond, log_probs, latent, *_ = mlm.text_condition(texts)
    text = mlm.conditioner.mulan.get_text_latents(raw_texts=texts)
    nearest = prior.neighbours(text)[:, 0]
    assert torch.allclose(latent, prior.latents[nearest])  # k = 1: the nearest clip's audio latent itself
    assert torch.equal(cond, mlm.conditioner.quantize(latent)[0])  # quantized as training quantized audio
    assert torch.allclose(log_probs, prior.token_log_prior(text))
    assert mlm.prior_mix(None) == 0.999 and mlm.prior_mix(0.0) == 0.0
    with pytest.raises(ValueError, match=r"prior_mix must be in \[0, 1\), got 1.0"):
        mlm.prior_mix(1.0)
    out = mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    # almost all prior: each text's ids are its neighbour's (clip i holds only id i mod 8)
    assert [set(row.tolist()) for row in out.semantic] == [{int(i) % 8} for i in nearest]
    free = mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0), prior_mix=0.0)
    assert any(len(set(row.tolist())) > 1 for row in free.semantic)
    with pytest.raises(ValueError, match="prior.vocab_size=9 does not match semantic_tokenizer.vocab_size=8"):
        MusicLM(**acoustic_parts, prior=RetrievalPrior.from_items(items, vocab_size=9))
    # in a model folder, with the identity of what it was built from
    for key, name in BUNDLE_FILES.items():
        if key in acoustic_parts:
            save(acoustic_parts[key], tmp_path / name)
    mulan_id = identity(acoustic_parts["conditioner"].mulan)
    semantic_id = identity(acoustic_parts["semantic_tokenizer"])
    save(prior, tmp_path / BUNDLE_FILES["prior"], extra={"identity": {"mulan": mulan_id, "semantic": semantic_id}})
    assert load_musiclm(tmp_path).prior is not None
    save(prior, tmp_path / BUNDLE_FILES["prior"],
         extra={"identity": {"mulan": {**mulan_id, "hash": "0" * 16}, "semantic": semantic_id}})  # fmt: skip
    with pytest.raises(ValueError, match="retrieval_prior.safetensors .* mulan .* differs"):
        load_musiclm(tmp_path)


def test_bundle_gathers_components_into_a_checked_model_folder(parts, tmp_path, capsys):
    import json

    from musiclm_pytorch import save
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.pipeline import BUNDLE_FILES, load_musiclm

    src = tmp_path / "runs"
    src.mkdir()
    flags = {"conditioner": "--conditioning", "semantic_tokenizer": "--semantic-tokenizer", "codec": "--codec",
             "semantic_lm": "--semantic-lm", "coarse_lm": "--coarse-lm", "fine_lm": "--fine-lm"}  # fmt: skip
    argv = ["bundle", "--out", str(tmp_path / "model"), "--half"]
    for key, flag in flags.items():
        save(parts[key], src / f"{key}.safetensors")  # the trainers' own file names, not the bundle's
        argv += [flag, str(src / f"{key}.safetensors")]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["files"]) == {BUNDLE_FILES[k] for k in flags}
    for key in ("semantic_lm", "coarse_lm", "fine_lm"):  # float16 on disk: about half the bytes
        assert report["files"][BUNDLE_FILES[key]] < 0.6 * (src / f"{key}.safetensors").stat().st_size
    mlm = load_musiclm(tmp_path / "model")
    assert mlm.semantic_lm.token_emb.weight.dtype == torch.float32  # loaded back into float32 models
    assert torch.allclose(mlm.semantic_lm.token_emb.weight, parts["semantic_lm"].token_emb.weight, atol=1e-3)
    assert mlm.default_cfg_scale == (1.0, 3.0)
    assert mlm.default_temperatures == (1.0, 0.95, 0.4)  # none stored: the paper's
    argv_stored = [*argv, "--semantic-cfg-scale", "2", "--acoustic-cfg-scale", "4", "--semantic-temperature", "0.8"]
    assert main(argv_stored) == 0  # stored in the stages' files
    assert load_musiclm(tmp_path / "model").default_cfg_scale == (2.0, 4.0)
    assert load_musiclm(tmp_path / "model").default_temperatures == (0.8, 0.95, 0.4)
    assert main([*argv[: argv.index("--half")], *argv[argv.index("--half") + 1 :]]) == 0  # as they were
    capsys.readouterr()
    # a component that already lies in the folder (the shipped model's recipe rebuilds its own folder) stays
    before = (tmp_path / "model" / "codec.safetensors").read_bytes()
    again = (
        argv[: argv.index("--codec") + 1]
        + [str(tmp_path / "model" / "codec.safetensors")]
        + argv[argv.index("--codec") + 2 :]
    )
    assert main(again) == 0 and (tmp_path / "model" / "codec.safetensors").read_bytes() == before
    capsys.readouterr()
    argv[argv.index("--codec") + 1] = str(src / "semantic_lm.safetensors")  # a wrong file is refused
    assert main(argv) == 2 and "codec.safetensors" in (err := capsys.readouterr().err)
    assert "holds a 'token_lm', not a codec" in err


def _latent_parts(acoustic_parts):
    from musiclm_pytorch.codec import SpectralCodec
    from musiclm_pytorch.lm import LatentAcousticLM

    t = torch.arange(16000) / 16000
    codec = SpectralCodec(dim=16, num_quantizers=2, codebook_size=8, gl_iters=2)
    codec.fit([torch.sin(2 * torch.pi * f * t) * 0.3 for f in (220, 330, 440, 550)], kmeans_iters=2)
    stage = LatentAcousticLM(semantic_vocab=8, latent_dim=16, cond_dim=128, dim=32, depth=1, heads=2, dim_head=16)
    return {**acoustic_parts, "codec": codec, "acoustic_lm": stage.eval()}


def test_flow_stage_in_the_pipeline_with_the_guidance_its_file_stores(acoustic_parts, tmp_path, monkeypatch):
    from musiclm_pytorch import save
    from musiclm_pytorch.lm import FlowAcousticLM
    from musiclm_pytorch.pipeline import BUNDLE_FILES, load_musiclm

    parts = _latent_parts(acoustic_parts)
    assert MusicLM(**parts).default_cfg_scale == (1.0, 3.0)  # a stage that stores none: the pipeline's 3
    flow = FlowAcousticLM(**parts["acoustic_lm"].config, flow_dim=16, flow_depth=1, flow_heads=2, flow_dim_head=8,
                          flow_steps=2)  # fmt: skip
    torch.nn.init.normal_(flow.flow_out.weight, std=0.5)  # a velocity that is not 0, so sampling shows
    flow.set_sampling(mean_cfg_scale=1.0, cfg_scale=2.0)
    for key, name in BUNDLE_FILES.items():
        part = {**parts, "acoustic_lm": flow}.get(key)
        if part is not None:
            save(part, tmp_path / name)
    mlm = load_musiclm(tmp_path)
    assert isinstance(mlm.acoustic_lm, FlowAcousticLM) and mlm.default_cfg_scale == (1.0, 1.0)
    seen = _record_calls(monkeypatch, mlm.acoustic_lm, lambda kw: kw["cfg_scale"])
    texts = ["calm piano", "loud drums"]
    out = mlm.generate(texts, seconds=1.0, num_candidates=2, generator=torch.Generator().manual_seed(0))
    assert out.wavs.shape == (2, 16000) and torch.isfinite(out.wavs).all()
    again = mlm.generate(texts, seconds=1.0, num_candidates=2, generator=torch.Generator().manual_seed(0))
    other = mlm.generate(texts, seconds=1.0, num_candidates=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.wavs, again.wavs) and not torch.allclose(out.wavs, other.wavs)  # it samples
    mlm.generate(texts, seconds=1.0, cfg_scale=(1.0, 2.5))  # a caller's scale wins
    story = mlm.generate_long([("calm piano", 1.6)], window_seconds=1.0, stride_seconds=0.5)
    assert story.shape == (25600,) and torch.isfinite(story).all()
    assert seen[:4] == [1.0, 1.0, 1.0, 2.5] and set(seen[4:]) == {1.0}


def test_a_family_prior_for_the_acoustic_stage_alone(acoustic_parts, monkeypatch):
    from musiclm_pytorch.lm import RetrievalPrior, TokenLM

    gen = torch.Generator().manual_seed(0)
    items = [{"mulan": torch.randn(128, generator=gen), "semantic": torch.full((25,), i % 8)} for i in range(32)]
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, family_pool=16, family_classes=4,
                                      family_acoustic_only=True)  # fmt: skip
    prior.set_families(torch.randn(4, 128, generator=gen))
    reads = TokenLM(**{**acoustic_parts["semantic_lm"].config, "cond_latent_dim": 128}).eval()
    mlm = MusicLM(**{**acoustic_parts, "semantic_lm": reads}, prior=prior)
    texts = ["calm piano", "loud drums", "a flute solo", "organ chords"]
    tc = mlm.text_condition(texts)
    assert tc.acoustic is not None and tc.semantic is not None
    assert torch.allclose(tc.semantic, prior.latent(tc.text)) and torch.allclose(
        tc.acoustic, prior.acoustic_latent(tc.text)
    )
    assert not torch.allclose(tc.semantic, tc.acoustic)  # the family's clips are not always the nearest
    assert torch.equal(tc.cond_ids, mlm.conditioner.quantize(tc.semantic)[0])  # the ids quantize the nearest
    seen = _record_calls(monkeypatch, reads, lambda kw: kw.get("cond_latent"))
    acoustic: list = []
    real = mlm.acoustic_lm.generate
    monkeypatch.setattr(
        mlm.acoustic_lm, "generate", lambda sem, cond, **kw: acoustic.append(cond) or real(sem, cond, **kw)
    )
    mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen[0], tc.semantic) and torch.allclose(acoustic[0], tc.acoustic)


def test_a_semantic_lm_that_reads_a_latent_gets_the_acoustic_stages_conditioning(acoustic_parts, monkeypatch):
    from musiclm_pytorch.lm import TokenLM

    sem = acoustic_parts["semantic_lm"]
    reads = TokenLM(**{**sem.config, "cond_latent_dim": 128}).eval()
    mlm = MusicLM(**{**acoustic_parts, "semantic_lm": reads})
    seen = _record_calls(monkeypatch, reads, lambda kw: kw.get("cond_latent"))
    texts = ["calm piano", "loud drums"]
    out = mlm.generate(texts, seconds=1.0, num_candidates=2, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert out.wavs.shape == (2, 16000)
    acoustic = mlm.text_condition(texts).acoustic
    assert acoustic is not None and torch.equal(seen[0], acoustic.repeat_interleave(2, dim=0))
    mlm.generate_long([("calm piano", 1.6), ("loud drums", 1.6)], window_seconds=2.0, stride_seconds=1.0)
    assert all(z is not None and z.shape == (1, 128) for z in seen[1:])
    assert MusicLM(**acoustic_parts).semantic_latent(mlm.text_condition(texts)) is None  # an LM of ids only gets none
    # a guidance default stored in the semantic LM's file is the pipeline's
    assert mlm.default_cfg_scale == (1.0, 3.0)
    stored = TokenLM(**{**reads.config, "default_cfg_scale": 2.5})
    assert MusicLM(**{**acoustic_parts, "semantic_lm": stored}).default_cfg_scale == (2.5, 3.0)


def test_a_semantic_lm_that_reads_a_beat_grid_gets_the_tempo_the_text_names(acoustic_parts, monkeypatch):
    sem = acoustic_parts["semantic_lm"]
    plain = MusicLM(**acoustic_parts)
    assert plain.beat_grids(["x at 120 bpm"]) is None  # an LM without a beat input gets none
    with pytest.raises(ValueError, match="reads no beat grid"):
        plain.generate(["x"], seconds=0.5, beat=torch.tensor([[12.0, 0.0]]))
    beats = TokenLM(**{**sem.config, "beat_harmonics": 2}).eval()
    mlm = MusicLM(**{**acoustic_parts, "semantic_lm": beats})
    rate = mlm.semantic_tokenizer.frame_rate
    grids = mlm.beat_grids(["a jig, about 140 bpm", "slow piano at 72.5 BPM", "no tempo named", "9000 bpm"])
    assert torch.allclose(grids, torch.tensor([[60 * rate / 140, 0.0], [60 * rate / 72.5, 0.0], [0.0, 0.0],
                                               [0.0, 0.0]]))  # fmt: skip
    seen = _record_calls(monkeypatch, beats, lambda kw: kw["beat"])
    mlm.generate(["calm piano, 100 bpm", "drums"], seconds=0.5, num_candidates=2)
    assert torch.allclose(seen[0][:, 0], torch.tensor([60 * rate / 100] * 2 + [0.0] * 2))  # per candidate
    given = torch.tensor([[10.0, 3.0]])
    mlm.generate(["calm piano, 100 bpm"], seconds=0.5, beat=given)
    assert torch.equal(seen[1], given)
    # long generation: each window gets the piece's grid shifted to the window's first frame
    mlm.generate_long([("calm piano, 120 bpm", 1.6)], window_seconds=1.0, stride_seconds=0.5)
    period = 60 * rate / 120
    windows = seen[2:]
    assert len(windows) >= 2 and torch.allclose(windows[0], torch.tensor([[period, 0.0]]))
    first = int(1.0 * rate) - int(0.5 * rate)  # the second window's first frame: the first's end less the overlap
    assert torch.allclose(windows[1], torch.tensor([[period, (-first) % period]]))
    with pytest.raises(ValueError, match=r"beat must be \[B, 2\] = \[1, 2\]"):
        mlm.generate(["x"], seconds=0.5, beat=torch.zeros(2, 2))
    # a text that names no tempo: its nearest training clips' median period, from a prior that keeps them
    from musiclm_pytorch.lm import RetrievalPrior

    items = [{"mulan": torch.randn(128, generator=torch.Generator().manual_seed(i)), "semantic": torch.zeros(25)}
             for i in range(4)]  # fmt: skip
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=1, beat_periods=True)
    prior.set_beat_periods(torch.tensor([7.0, 9.0, 11.0, 13.0]))
    with_prior = MusicLM(**{**acoustic_parts, "semantic_lm": beats, "prior": prior})
    text = with_prior.conditioner.mulan.get_text_latents(raw_texts=["calm piano", "drums at 150 bpm"])
    grids = with_prior.beat_grids(["calm piano", "drums at 150 bpm"], None, text)
    assert grids[0, 0] == prior.periods[prior.neighbours(text[:1])[0, 0]]
    assert grids[1, 0] == pytest.approx(60 * rate / 150)  # a named tempo comes first


def test_a_semantic_lm_that_reads_key_and_drums_gets_musics_reading_of_its_conditioning(acoustic_parts, monkeypatch):
    from musiclm_pytorch.lm import RetrievalPrior
    from musiclm_pytorch.lm.controls import ControlReader

    sem = acoustic_parts["semantic_lm"]
    plain = MusicLM(**acoustic_parts)
    text = plain.conditioner.mulan.get_text_latents(raw_texts=["calm piano in D minor"])
    assert plain.control_labels(text, text) is None and plain.text_condition(["x"]).controls is None
    with pytest.raises(ValueError, match="reads no key and drums labels"):
        plain.generate(["x"], seconds=0.5, controls=torch.tensor([[0, 1]]))
    reads = TokenLM(**{**sem.config, "control_classes": [24, 2], "cond_latent_dim": 128}).eval()
    items = [{"mulan": torch.randn(128, generator=torch.Generator().manual_seed(i)), "semantic": torch.zeros(25)}
             for i in range(4)]  # fmt: skip
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2)
    mlm = MusicLM(**{**acoustic_parts, "semantic_lm": reads, "prior": prior})
    reader = ControlReader.from_mulan(mlm.conditioner.mulan)
    texts = ["calm piano in D minor", "loud drums in A major"]
    text = mlm.conditioner.mulan.get_text_latents(raw_texts=texts)
    seen = _record_calls(monkeypatch, reads, lambda kw: kw["controls"])
    mlm.generate(texts, seconds=0.5, num_candidates=2)
    # the default source "prior": the latent the LM is conditioned on, the text's neighbours' mean audio latent
    assert torch.equal(seen[0], reader.read(prior.latent(text)).repeat_interleave(2, dim=0))
    reads.set_control_source("text")
    mlm.generate(texts, seconds=0.5)
    assert torch.equal(seen[1], reader.read(text))
    given = torch.tensor([[3, 1], [-1, 0]])
    mlm.generate(texts, seconds=0.5, controls=given)
    assert torch.equal(seen[2], given)
    mlm.generate_long([(texts[0], 0.8), (texts[1], 0.8)], window_seconds=1.0, stride_seconds=0.5)
    labels = reader.read(text)
    assert all(torch.equal(w, labels[:1]) or torch.equal(w, labels[1:]) for w in seen[3:])
    assert any(torch.equal(w, labels[1:]) for w in seen[3:])  # the story's second text gets its own labels
    with pytest.raises(ValueError, match=r"controls must be \[B, 2\] = \[2, 2\]"):
        mlm.generate(texts, seconds=0.5, controls=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="control source must be 'prior' or 'text'"):
        mlm.control_labels(text, text, source="audio")
    with pytest.raises(ValueError, match="a melody replaces"):
        mlm.generate(texts, seconds=0.5, controls=given, melody=(torch.zeros(16000), 16000))
    # an LM of ids only (no latent at every position) reads the same prior latent its ids quantize
    reads.set_control_source("prior")
    ids_only = TokenLM(**{**sem.config, "control_classes": [24, 2]}).eval()
    assert torch.equal(MusicLM(**{**acoustic_parts, "semantic_lm": ids_only, "prior": prior}).text_condition(texts)
                       .controls, reader.read(prior.latent(text)))  # fmt: skip
    # an audio condition (continuation) reads the prompt's own audio latent, not its neighbours'
    audio = F.normalize(torch.randn(1, 128, generator=torch.Generator().manual_seed(9)), dim=-1)
    assert torch.equal(mlm.audio_condition(audio).controls, reader.read(audio))
    # the key label's PMI over the prior's clips, scaled by the LM's stored key bias, biases every step
    from musiclm_pytorch.lm.controls import label_pmi

    assert mlm.text_condition(texts).key_bias is None  # key_bias 0: none
    prior.counts.copy_(torch.randint(0, 9, prior.counts.shape, generator=torch.Generator().manual_seed(3)))
    reads.set_key_bias(0.7)
    biased = MusicLM(**{**acoustic_parts, "semantic_lm": reads, "prior": prior})
    cond = biased.text_condition(texts)
    table = label_pmi(prior.counts, reader.read(prior.latents)[:, 0], 24)
    assert torch.allclose(cond.key_bias, 0.7 * table[cond.controls[:, 0]])
    bias_seen = _record_calls(monkeypatch, reads, lambda kw: kw["logit_bias"])
    biased.generate(texts, seconds=0.5, num_candidates=2, controls=torch.tensor([[5, 1], [-1, 0]]))
    assert torch.allclose(bias_seen[0][:2], (0.7 * table[5]).expand(2, -1))
    assert torch.equal(bias_seen[0][2:], torch.zeros(2, 8))  # an unknown key: no bias


def test_a_stored_semantic_temperature_samples_unless_the_caller_gives_one(acoustic_parts, monkeypatch):
    sem = acoustic_parts["semantic_lm"]
    with pytest.raises(ValueError, match="default_temperature must be > 0"):
        TokenLM(**{**sem.config, "default_temperature": 0.0})
    stored = TokenLM(**sem.config).set_default_temperature(0.7)
    again = TokenLM(**stored.config)  # kept in the config, hence in the file
    assert again.default_temperature == 0.7
    mlm = MusicLM(**{**acoustic_parts, "semantic_lm": again})
    used = _record_calls(monkeypatch, again, lambda kw: kw["sampling"].temperature)
    mlm.generate(["calm piano"], seconds=0.5)
    mlm.generate(["calm piano"], seconds=0.5, temperatures=(1.3, 0.95, 0.4))
    mlm.generate_long([("calm piano", 1.0)], window_seconds=0.8, stride_seconds=0.4)
    assert used[0] == 0.7 and used[1] == 1.3 and set(used[2:]) == {0.7}
    with pytest.raises(ValueError, match="temperatures must be three values > 0"):
        mlm.generate(["calm piano"], seconds=0.5, temperatures=(0.0, 0.95, 0.4))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        stored.set_default_temperature(-1)


@pytest.mark.parametrize("path", ["coarse_fine", "masked", "latent"])
def test_continuation_primes_every_stage_with_the_prompt(parts, acoustic_parts, path, monkeypatch):
    from musiclm_pytorch.semantic import SemanticTokenizer

    chosen = {"coarse_fine": parts, "masked": acoustic_parts, "latent": None}[path]
    sem = SemanticTokenizer(vocab_size=8)  # fitted: the prompt is tokenized
    sem.fit([torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1])
    chosen = chosen if chosen is not None else _latent_parts(acoustic_parts)
    mlm = MusicLM(**{**chosen, "semantic_tokenizer": sem})
    t = torch.arange(int(1.3 * 22050)) / 22050
    prompt = 0.3 * torch.sin(2 * torch.pi * 330 * t)  # 1.3 s at another sample rate: resampled
    seen = _record_calls(monkeypatch, mlm.semantic_lm, lambda kw: kw.get("prime"))
    out = mlm.generate_continuation(prompt, 22050, seconds=1.6, window_seconds=2.0, stride_seconds=1.0,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.shape == (int(1.6 * 16000),) and torch.isfinite(out).all()
    # the first window continues the prompt's last (window - stride) = 1 s: its 25 semantic ids
    wav = torch.from_numpy(__import__("musiclm_pytorch.audio", fromlist=["resample"]).resample(prompt, 22050, 16000))
    expected = mlm.semantic_tokenizer(wav[-16000:][None])
    assert seen[0] is not None and torch.equal(seen[0], expected)
    with_text = mlm.generate_continuation(prompt, 22050, seconds=0.4, text="loud drums",
                                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert with_text.shape == (6400,)
    with pytest.raises(ValueError, match=r"prompt must be mono audio \[S >= 1\]"):
        mlm.generate_continuation(prompt[None], 22050, seconds=1.0)
    with pytest.raises(ValueError, match="shorter than one semantic frame"):
        mlm.generate_continuation(prompt[:100], 22050, seconds=1.0)


def test_a_continuation_keeps_the_beat_of_its_prompt(acoustic_parts, monkeypatch):
    from musiclm_pytorch.semantic import SemanticTokenizer
    from musiclm_pytorch.semantic.beat import estimate_beat, onset_from_ids

    sem = SemanticTokenizer(vocab_size=8)
    sem.fit([torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1])
    beats = TokenLM(**{**acoustic_parts["semantic_lm"].config, "beat_harmonics": 2}).eval()
    mlm = MusicLM(**{**acoustic_parts, "semantic_tokenizer": sem, "semantic_lm": beats})
    t = torch.arange(32000) / 16000
    prompt = torch.sin(2 * torch.pi * 440 * t) * ((t * 2) % 1 < 0.1)  # 2 s of 120 bpm blips
    seen = _record_calls(monkeypatch, beats, lambda kw: kw["beat"])
    mlm.generate_continuation(prompt, 16000, seconds=0.8, window_seconds=2.0, stride_seconds=1.0)
    prefix = sem(prompt[-16000:][None])[0]  # the last (window - stride) = 1 s: the first window's prefix
    period, phase, _ = estimate_beat(onset_from_ids(sem, prefix), 25.0)
    assert torch.allclose(seen[0], torch.tensor([[period, phase]]))


def test_melody_ids_replace_the_semantic_stage(acoustic_parts):
    from musiclm_pytorch.semantic import SemanticTokenizer

    sem = SemanticTokenizer(vocab_size=8)
    sem.fit([torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1])
    mlm = MusicLM(**{**_latent_parts(acoustic_parts), "semantic_tokenizer": sem})
    t = torch.arange(32000) / 32000
    melody = 0.3 * torch.sin(2 * torch.pi * (300 + 200 * t) * t)  # 1 s at 32 kHz: resampled to 16 kHz
    out = mlm.generate(["calm piano", "loud drums"], seconds=0.8, melody=(melody, 32000), num_candidates=2)
    expected = mlm.melody_ids(melody, 32000, frames=20)
    assert out.semantic.shape == (2, 20) and torch.equal(out.semantic, expected.repeat(2, 1))
    assert out.wavs.shape == (2, 12800)
    with pytest.raises(ValueError, match="the melody lasts 1.00 s, shorter than the 1.60 s asked for"):
        mlm.generate(["x"], seconds=1.6, melody=(melody, 32000))


def test_frame_bank_pulls_the_latent_stage_toward_real_frames(acoustic_parts):
    import torch.nn.functional as F

    from musiclm_pytorch.lm import RetrievalPrior

    parts = _latent_parts(acoustic_parts)
    codec = parts["codec"]
    gen = torch.Generator().manual_seed(0)
    items = [{"mulan": F.normalize(torch.randn(128, generator=gen), dim=0), "semantic": torch.randint(0, 8, (25,)),
              "codes": torch.randint(0, 8, (2, 50), generator=gen)} for _ in range(6)]  # fmt: skip
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=10, frame_k=1,
                                      frame_semantic_weight=1.0)  # fmt: skip
    mlm = MusicLM(**parts, prior=prior)
    texts = ["calm piano", "loud drums"]
    matched = mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    plain = mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0), frame_blend=0.0)
    assert torch.equal(matched.semantic, plain.semantic) and not torch.allclose(matched.wavs, plain.wavs)
    # frame_k = 1, blend 1: every frame of the result is one of the bank's real frames (its codes quantize exactly)
    nearest = prior.neighbours(mlm.text_condition(texts).text)
    bank_latents = codec.latents_from_codes(prior.frame_codes[nearest[0]].long().reshape(-1, 2).T[None])[0]
    made = codec.latents_from_codes(matched.codes[:1])[0]  # [T, L], the chosen candidate of the first text
    assert all(((bank_latents - f).abs().amax(-1) < 1e-4).any() for f in made)
    story = mlm.generate_long([("calm piano", 1.2), ("loud drums", 1.2)], window_seconds=2.0, stride_seconds=1.0)
    assert story.shape == (38400,)
    # the envelope alone from the real frames: the prediction's fine structure kept, the real frames' colour taken
    envelope = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=10, frame_k=1,
                                         frame_semantic_weight=1.0, frame_envelope=3)  # fmt: skip
    coloured = MusicLM(**parts, prior=envelope).generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(coloured.semantic, plain.semantic)
    assert not torch.allclose(coloured.wavs, plain.wavs) and not torch.allclose(coloured.wavs, matched.wavs)
    # a drums-only bank: real frames for the texts MuLaN reads drums in (here the first), the prediction elsewhere
    only = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=10, frame_k=1,
                                     frame_semantic_weight=1.0, frame_drums_only=True)  # fmt: skip
    drummed = MusicLM(**parts, prior=only)

    class Reader:
        def read(self, latents):
            return torch.tensor([[0, 1], [0, 0]])[: len(latents)]

    drummed._control_reader = Reader()
    mixed = drummed.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mixed.wavs[0], matched.wavs[0]) and torch.allclose(mixed.wavs[1], plain.wavs[1])
    with pytest.raises(ValueError, match="frame_blend=0.5 needs a retrieval prior with a frame bank"):
        MusicLM(**parts).generate(texts, seconds=1.0, frame_blend=0.5)


def _latent_bundle_argv(parts, tmp_path) -> list[str]:
    """``musiclm bundle`` arguments for a latent-stage model of ``parts``, each saved to ``tmp_path``, into
    ``tmp_path / "model"``."""
    from musiclm_pytorch import save

    flags = {"conditioner": "--conditioning", "semantic_tokenizer": "--semantic-tokenizer", "codec": "--codec",
             "semantic_lm": "--semantic-lm", "acoustic_lm": "--acoustic-lm"}  # fmt: skip
    argv = ["bundle", "--out", str(tmp_path / "model")]
    for key, flag in flags.items():
        save(parts[key], tmp_path / f"{key}.safetensors")
        argv += [flag, str(tmp_path / f"{key}.safetensors")]
    return argv


def test_bundle_stores_envelope_guidance_in_a_latent_stage(acoustic_parts, tmp_path, capsys):
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.pipeline import BUNDLE_FILES, load_musiclm

    parts = _latent_parts(acoustic_parts)
    with torch.no_grad():
        parts["acoustic_lm"].cond_to_latent.weight.normal_()  # a conditioning that moves the prediction
    argv = _latent_bundle_argv(parts, tmp_path)
    assert main(argv) == 0
    plain = load_musiclm(tmp_path / "model")
    assert plain.acoustic_lm.guidance_filter is None
    assert main([*argv, "--acoustic-guidance-envelope", "4"]) == 0
    capsys.readouterr()
    mlm = load_musiclm(tmp_path / "model")
    stage = mlm.acoustic_lm
    assert stage.guidance_envelope == 4 and BUNDLE_FILES["acoustic_lm"] == "acoustic_lm.safetensors"
    expected = parts["acoustic_lm"].set_guidance_envelope(parts["codec"].basis, 4).guidance_filter
    assert torch.allclose(stage.guidance_filter, expected, atol=1e-6)
    texts = ["calm piano", "loud drums"]
    a = mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    b = plain.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.semantic, b.semantic) and not torch.allclose(a.wavs, b.wavs, atol=1e-4)
    argv[argv.index("--acoustic-lm") + 1] = str(tmp_path / "semantic_lm.safetensors")  # not a latent stage
    assert main([*argv, "--acoustic-guidance-envelope", "4"]) == 2
    assert "--acoustic-guidance-envelope is for a latent acoustic stage" in capsys.readouterr().err


def test_a_latent_stage_that_reads_the_beat_gets_the_grid_of_the_ids_and_the_drums_label(acoustic_parts,
                                                                                           monkeypatch):  # fmt: skip
    from musiclm_pytorch.lm import LatentAcousticLM
    from musiclm_pytorch.lm.controls import ControlReader
    from musiclm_pytorch.semantic.beat import grid_of_ids

    parts = _latent_parts(acoustic_parts)
    stage = LatentAcousticLM(**{**parts["acoustic_lm"].config, "beat_bins": 4}).eval()
    with torch.no_grad():
        stage.beat_table.normal_()  # a table that changes the output, as a fitted one does
    mlm = MusicLM(**{**parts, "acoustic_lm": stage})
    assert MusicLM(**parts).acoustic_beat(torch.zeros(1, 5, dtype=torch.long), None, torch.zeros(1, 128)) == {}
    seen = _record_calls(monkeypatch, stage, lambda kw: (kw.get("beat"), kw.get("drums")))
    sem_seen = _record_calls(monkeypatch, parts["semantic_lm"], lambda kw: kw)
    texts = ["calm piano", "loud drums"]
    out = mlm.generate(texts, seconds=1.0, num_candidates=2, generator=torch.Generator().manual_seed(0))
    beat, drums = seen[0]
    assert beat.shape == (4, 2) and drums.shape == (4,)
    # each candidate's grid from its own ids, through the tokenizer, as in training
    assert torch.allclose(beat[0], torch.tensor(grid_of_ids(mlm.semantic_tokenizer, out.semantic[0])).float())
    # the drums label: MuLaN's reading of the text (the semantic LM here reads no labels)
    text = mlm.conditioner.mulan.get_text_latents(raw_texts=texts)
    reader = ControlReader.from_mulan(mlm.conditioner.mulan)
    assert torch.equal(drums, reader.read(text)[:, 1].repeat_interleave(2))
    assert len(sem_seen) == 1
    # long generation: each window gets its segment's grid (of the segment's whole ids) shifted to its first
    # frame, and its segment's label
    del seen[:]
    story = mlm.generate_long([(texts[0], 0.8), (texts[1], 0.8)], window_seconds=1.0, stride_seconds=0.5)
    assert story.ndim == 1 and len(seen) == 2 and all(b.shape == (1, 2) and d.shape == (1,) for b, d in seen)
    labels = reader.read(text)[:, 1]
    assert int(seen[0][1]) == int(labels[0]) and int(seen[-1][1]) == int(labels[1])
    # with a known grid per segment (10 frames, phase 3 from the segment's start): segment 0 holds frames 0-19,
    # segment 1 frames 20-39; windows of 25 frames, overlap 12: [0, 25) of segment 0, [19, 40) of segment 1
    monkeypatch.setattr(mlm, "ids_beat", lambda ids: torch.tensor([[10.0, 3.0]]).expand(len(ids), 2))
    del seen[:]
    mlm.generate_long([(texts[0], 0.8), (texts[1], 0.8)], window_seconds=1.0, stride_seconds=0.5)
    assert [b.tolist() for b, _ in seen] == [[[10.0, 3.0]], [[10.0, (3.0 + 20 - 19) % 10]]]
    # fewer than 4 ids: no beat to estimate, the grid is unknown (period 0), and generation still works
    monkeypatch.undo()
    seen = _record_calls(monkeypatch, stage, lambda kw: (kw.get("beat"), kw.get("drums")))
    assert torch.equal(mlm.ids_beat(torch.zeros(2, 3, dtype=torch.long)), torch.zeros(2, 2))
    # a long piece whose last window holds 2 ids: it gets the segment's grid, shifted
    tail = mlm.generate_long([(texts[0], 2.06)], window_seconds=2.0, stride_seconds=1.96)
    assert tail.shape == (int(2.06 * 25) * 640,) and len(seen) == 2 and seen[-1][0][0, 0] == seen[0][0][0, 0]


def test_a_beat_reading_latent_stage_gets_the_semantic_lms_grid_where_known(acoustic_parts, monkeypatch, tmp_path):
    from musiclm_pytorch import save
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.lm import LatentAcousticLM
    from musiclm_pytorch.pipeline import load_musiclm

    parts = _latent_parts(acoustic_parts)
    stage = LatentAcousticLM(**{**parts["acoustic_lm"].config, "beat_bins": 4}).eval()
    assert stage.beat_source == "semantic" and stage.config["beat_source"] == "semantic"  # the default
    beats = TokenLM(**{**parts["semantic_lm"].config, "beat_harmonics": 2}).eval()
    mlm = MusicLM(**{**parts, "semantic_lm": beats, "acoustic_lm": stage})
    monkeypatch.setattr(mlm, "ids_beat", lambda ids: torch.tensor([[7.0, 2.0]]).expand(len(ids), 2).clone())
    seen = _record_calls(monkeypatch, stage, lambda kw: kw.get("beat"))
    texts = ["a piece at 150 bpm", "calm piano"]  # 150 bpm at 25 frames/s: a period of 10 frames; the other unknown
    mlm.generate(texts, seconds=1.0, num_candidates=2, generator=torch.Generator().manual_seed(0))
    assert seen[-1].tolist() == [[10.0, 0.0], [10.0, 0.0], [7.0, 2.0], [7.0, 2.0]]
    mlm.generate(texts, seconds=1.0, num_candidates=2, beat_source="ids")  # per call: always the ids'
    assert seen[-1].tolist() == [[7.0, 2.0]] * 4
    with pytest.raises(ValueError, match="beat_source must be one of"):
        mlm.generate(texts, seconds=1.0, beat_source="text")
    # long generation: the semantic LM's grid of each segment, shifted to each window's first frame (windows of
    # 25 frames, overlap 12: [0, 25) of segment 0, [19, 40) of segment 1), the ids' grid where its tempo is unknown
    del seen[:]
    mlm.generate_long([(texts[0], 0.8), (texts[1], 0.8)], window_seconds=1.0, stride_seconds=0.5)
    assert [b.tolist() for b in seen] == [[[10.0, 0.0]], [[7.0, (2.0 + 20 - 19) % 7]]]
    del seen[:]
    mlm.generate_long([(texts[0], 1.6)], window_seconds=1.0, stride_seconds=0.5)
    assert [b.tolist() for b in seen] == [[[10.0, 0.0]], [[10.0, (0.0 - 19) % 10]]]
    del seen[:]
    mlm.generate_long([(texts[0], 0.8)], window_seconds=1.0, stride_seconds=0.5, beat_source="ids")
    assert [b.tolist() for b in seen] == [[[7.0, 2.0]]]
    # the choice is stored in the stage's file by `musiclm bundle`, and refused for a stage that reads no beat
    flags = {"conditioner": "--conditioning", "semantic_tokenizer": "--semantic-tokenizer", "codec": "--codec",
             "semantic_lm": "--semantic-lm", "acoustic_lm": "--acoustic-lm"}  # fmt: skip
    argv = ["bundle", "--out", str(tmp_path / "model")]
    for key, flag in flags.items():
        save({**parts, "semantic_lm": beats, "acoustic_lm": stage}[key], tmp_path / f"{key}.safetensors")
        argv += [flag, str(tmp_path / f"{key}.safetensors")]
    assert main([*argv, "--acoustic-beat-source", "ids"]) == 0
    assert load_musiclm(tmp_path / "model").acoustic_lm.beat_source == "ids"
    save(parts["acoustic_lm"], tmp_path / "plain.safetensors")
    argv[argv.index("--acoustic-lm") + 1] = str(tmp_path / "plain.safetensors")
    assert main([*argv, "--acoustic-beat-source", "ids"]) == 2
    with pytest.raises(ValueError, match="reads the beat"):
        parts["acoustic_lm"].set_beat_source("ids")


def test_bundle_fits_and_stores_a_movement_gain_in_a_latent_stage(acoustic_parts, tmp_path, capsys):
    import torch.nn.functional as F

    from musiclm_pytorch import load
    from musiclm_pytorch.checkpoint import identity
    from musiclm_pytorch.cli import main
    from musiclm_pytorch.lm import LatentAcousticLM
    from musiclm_pytorch.pipeline import load_musiclm

    parts = _latent_parts(acoustic_parts)
    stage = LatentAcousticLM(**{**parts["acoustic_lm"].config, "beat_bins": 4}).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    parts["acoustic_lm"] = stage
    argv = _latent_bundle_argv(parts, tmp_path)
    items = [{"semantic": torch.randint(0, 8, (25,), generator=gen),
              "codes": torch.randint(0, 8, (2, 50), generator=gen),
              "mulan": F.normalize(torch.randn(128, generator=gen), dim=0)} for _ in range(5)]  # fmt: skip
    ident = {"semantic": identity(parts["semantic_tokenizer"]), "codec": identity(parts["codec"]),
             "mulan": identity(parts["conditioner"].mulan)}  # fmt: skip
    (tmp_path / "tokens").mkdir()
    torch.save({"items": items, "identity": ident}, tmp_path / "tokens" / "train.pt")
    assert main([*argv, "--acoustic-movement-gain", "0.5", "--movement-gain-tokens", str(tmp_path / "tokens"),
                 "--movement-gain-clips", "4"]) == 0  # fmt: skip
    assert '"movement_gain"' in capsys.readouterr().err
    mlm = load_musiclm(tmp_path / "model")
    # the gains the pipeline fits on the first 4 clips, each with its ids' grid and its latent's drums label
    expected = MusicLM(**{**parts, "acoustic_lm": load(tmp_path / "acoustic_lm.safetensors").eval()})
    expected.fit_movement_gain(items[:4], alpha=0.5)
    assert mlm.acoustic_lm.movement_gain_alpha == 0.5
    assert torch.allclose(mlm.acoustic_lm.movement_gain, expected.acoustic_lm.movement_gain, atol=1e-6)
    assert not torch.allclose(mlm.acoustic_lm.movement_gain, torch.ones(16), atol=1e-2)
    texts = ["calm piano", "loud drums"]
    plain = MusicLM(**parts).generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    moved = mlm.generate(texts, seconds=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(moved.semantic, plain.semantic) and not torch.allclose(moved.wavs, plain.wavs, atol=1e-4)
    # per band of modulation frequency, the edges given in Hz at the codec's frame rate
    rate = parts["codec"].frame_rate
    gain_argv = [*argv, "--acoustic-movement-gain", "1", "--movement-gain-tokens", str(tmp_path / "tokens")]
    assert main([*gain_argv, "--movement-gain-bands", "1", "4", "--movement-gain-cap-above", "4"]) == 0
    banded = load_musiclm(tmp_path / "model").acoustic_lm
    assert banded.movement_bands == pytest.approx([1 / rate, 4 / rate]) and banded.movement_gain.shape == (3, 16)
    assert (banded.movement_gain[2] <= 1).all()  # the band from 4 Hz up raises nothing
    assert main([*gain_argv, "--movement-gain-bands", str(rate)]) == 2
    assert f"movement bands must lie between 0 and half the codec's frame rate ({rate / 2:g} Hz)" in (
        capsys.readouterr().err)  # fmt: skip
    # refusals before any file is written: no tokens folder, gain flags without the gain, a cap without bands
    fresh = [*argv[:1], "--out", str(tmp_path / "never"), *argv[3:]]
    for extra, message in [
        (["--acoustic-movement-gain", "0.5", "--movement-gain-tokens", str(tmp_path)], "no '"),
        (["--movement-gain-bands", "1"], "go with --acoustic-movement-gain"),
        ([*gain_argv[len(argv) :], "--movement-gain-cap-above", "4"], "it needs --movement-gain-bands"),
    ]:
        assert main([*fresh, *extra]) == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "never").exists()
    # and after: tokens made with another codec
    assert main([*argv, "--acoustic-movement-gain", "0.5"]) == 2
    assert "--acoustic-movement-gain needs --acoustic-lm (a latent stage) and --movement-gain-tokens" in (
        capsys.readouterr().err)  # fmt: skip
    torch.save({"items": items, "identity": {**ident, "codec": {**ident["codec"], "hash": "0" * 16}}},
               tmp_path / "tokens" / "train.pt")  # fmt: skip
    assert main([*argv, "--acoustic-movement-gain", "0.5", "--movement-gain-tokens", str(tmp_path / "tokens")]) == 2
    assert "codec" in capsys.readouterr().err


def test_a_latent_stage_continues_with_the_prompts_own_frames(acoustic_parts, monkeypatch):
    from musiclm_pytorch.lm.prior import frame_distance, select_units
    from musiclm_pytorch.pipeline import PROMPT_CONTINUITY, PROMPT_SEMANTIC_WEIGHT
    from musiclm_pytorch.semantic import SemanticTokenizer

    sem = SemanticTokenizer(vocab_size=8)
    sem.fit([torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1])
    mlm = MusicLM(**{**_latent_parts(acoustic_parts), "semantic_tokenizer": sem})
    t = torch.arange(32000) / 16000
    prompt = 0.3 * torch.sin(2 * torch.pi * (220 + 200 * t) * t)  # 2 s, a rising tone: frames that differ
    made: list[torch.Tensor] = []
    decode = mlm.codec.decode_latents
    monkeypatch.setattr(mlm.codec, "decode_latents", lambda z: made.append(z.clone()) or decode(z))
    windows: list[torch.Tensor] = []
    stage_generate = mlm.acoustic_lm.generate
    monkeypatch.setattr(mlm.acoustic_lm, "generate", lambda s, *a, **k: windows.append(s) or stage_generate(s, *a, **k))

    def continuation(**kwargs):
        return mlm.generate_continuation(prompt, 16000, seconds=0.8, window_seconds=2.0, stride_seconds=1.0,
                                         generator=torch.Generator().manual_seed(0), **kwargs)  # fmt: skip

    out = continuation()
    assert out.shape == (12800,) and len(windows) == 1
    # the bank: the codec latents of the prompt's last (window - stride) = 1 s, each frame with the id covering it
    tail = prompt[-16000:]
    bank = mlm.codec.latents_from_codes(mlm.codec.encode(tail[None, None]))[0]  # [F, L]
    bank_ids = sem(tail[None]).repeat_interleave(2, dim=1)[:, : len(bank)]
    matched = made[0]  # [1, T, L]
    plain = continuation(prompt_blend=0.0)  # the same ids and prediction, not matched
    predicted = made[1]
    assert not torch.allclose(plain, out) and not torch.allclose(predicted, matched)
    # the cost of each prompt frame for each frame: latent distance plus the ids' centres' distance
    new_ids = windows[0][:, -20:].repeat_interleave(2, dim=1)[:, : predicted.shape[1]]  # the 0.8 s continued
    cost = frame_distance(predicted, bank[None], semantic=new_ids, bank_semantic=bank_ids, centers=sem.centers,
                          semantic_weight=PROMPT_SEMANTIC_WEIGHT)  # fmt: skip
    # by default the cheapest path through the prompt, a jump costing PROMPT_CONTINUITY (unit selection)
    assert torch.allclose(matched[0], bank[select_units(cost, len(bank), PROMPT_CONTINUITY)[0]], atol=1e-5)
    continuation(prompt_continuity=0.0)  # frame by frame: each the nearest
    assert torch.allclose(made[2][0], bank[cost[0].argmin(-1)], atol=1e-5)
    continuation(prompt_continuity=1e6)  # jumps dearer than any frame's cost: one run of consecutive frames
    run = select_units(cost, len(bank), 1e6)[0]
    assert (run.diff() == 1).all() and torch.allclose(made[3][0], bank[run], atol=1e-5)
    del made[2:]
    half = continuation(prompt_blend=0.5)
    assert torch.allclose(made[2], 0.5 * matched + 0.5 * predicted, atol=1e-5) and half.shape == out.shape
    with pytest.raises(ValueError, match=r"prompt_blend must be in \[0, 1\], got 2"):
        continuation(prompt_blend=2.0)
    with pytest.raises(ValueError, match="prompt_continuity must be a finite number >= 0, got -1"):
        continuation(prompt_continuity=-1.0)
    with pytest.raises(ValueError, match="prompt_continuity must be a finite number >= 0, got nan"):
        continuation(prompt_continuity=float("nan"), prompt_blend=0.0)  # checked even where it picks nothing
    # a prior with a frame bank: the prompt's own frames replace the neighbours' (the continuation is unchanged);
    # without them (blend 0) the prior's frames act on the prediction
    import torch.nn.functional as F

    from musiclm_pytorch.lm import RetrievalPrior

    gen = torch.Generator().manual_seed(0)
    items = [{"mulan": F.normalize(torch.randn(128, generator=gen), dim=0), "semantic": torch.randint(0, 8, (25,)),
              "codes": torch.randint(0, 8, (2, 50), generator=gen)} for _ in range(4)]  # fmt: skip
    mlm.prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=50, frame_k=1, frame_window=True,
                                          frame_continuity=3.0, frame_envelope=4, frame_envelope_skip=1)  # fmt: skip
    bank_calls: list[int] = []
    prior_match = mlm.prior.match_frames
    monkeypatch.setattr(mlm.prior, "match_frames", lambda *a, **k: bank_calls.append(1) or prior_match(*a, **k))
    assert torch.allclose(continuation(), out, atol=1e-5) and not bank_calls
    assert not torch.allclose(continuation(prompt_blend=0.0), plain, atol=1e-4) and bank_calls

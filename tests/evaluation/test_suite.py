from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musiclm_pytorch.evaluation.suite import frechet_distance, longest_copied_run, memorisation


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 3))
    b = rng.normal(1.0, 2.0, (20000, 3))
    # |mu_a - mu_b|^2 + sum(s_a^2 + s_b^2 - 2 s_a s_b) = 3 + 3 * (1 + 4 - 4) = 6
    assert abs(frechet_distance(a, b) - 6.0) < 0.15
    assert frechet_distance(a, a) < 1e-6
    with pytest.raises(ValueError, match="need two"):
        frechet_distance(a, b[:, :2])


def test_memorisation_finds_copied_and_near_copied_windows():
    gen = torch.Generator().manual_seed(0)
    train = [torch.randint(0, 512, (250,), generator=gen) for _ in range(20)]
    copied = train[3][40:165].clone()  # an exact 125-id window of a training clip
    near = train[7][10:135].clone()
    near[::3] = torch.randint(0, 512, (42,), generator=gen)  # two thirds kept
    fresh = torch.randint(0, 512, (125,), generator=gen)
    report = memorisation([torch.cat([copied, near]), fresh], train)
    assert report["windows"] == 3 and report["exact"] == 1 and report["approx_ge_0.5"] == 2
    assert report["max_best_share"] == 1.0 and report["mean_best_share"] < 0.6
    # the run gate: the first sequence holds a 125-id copy (longer where the near copy happens to continue it)
    assert report["longest_copied_run_ids"] >= 125 and report["sequences_with_copied_run_ge_75"] == 1
    runs = longest_copied_run([train[5][100:180], fresh, torch.cat([fresh[:10], train[2][0:40], fresh[10:]])], train)
    assert runs[0] == 80 and runs[1] < 5 and runs[2] >= 40
    with pytest.raises(ValueError, match="shorter than one window"):
        memorisation([torch.zeros(10, dtype=torch.long)], train)


def test_eval_generate_cli_reports_ceiling_chance_and_audit(tmp_path, capsys):
    from musiclm_pytorch.audio import save_audio
    from musiclm_pytorch.cli import main

    sr = 16000
    rows = []
    for i, (f, family) in enumerate([(220.0, "piano"), (330.0, "organ"), (440.0, "strings")]):
        t = torch.arange(5 * sr) / sr
        save_audio(tmp_path / f"c{i}.wav", 0.3 * torch.sin(2 * torch.pi * f * t), sr)
        rows.append({"path": f"c{i}.wav", "full_caption": f"a {family} piece", "tags": {"family": family,
                     "drums": False}})  # fmt: skip
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    torch.save({"items": [{"semantic": torch.randint(0, 512, (60,))} for _ in range(4)]}, tokens / "train.pt")
    argv = ["eval", "generate", "--prompts", str(tmp_path / "val.jsonl"), "--num-prompts", "3", "--seconds", "2",
            "--tokens", str(tokens), "--threads", "1", "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "training sequences must hold at least 125 ids" in err and "generating" not in err
    torch.save({"items": [{"semantic": torch.randint(0, 512, (250,))} for _ in range(4)]}, tokens / "train.pt")
    argv[argv.index("--seconds") + 1] = "5"  # one 5 s window per clip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["prompts"] == 3 and {"family", "drums"} <= set(report["judge"])
    assert report["judge_real_clips"]["family"]["n"] == 3 and "judge_shuffled_prompts" in report
    assert set(report["family_per_value"]) == {"piano", "organ", "strings"}
    assert sum(v["n"] for v in report["family_per_value_real_clips"].values()) == 3
    assert report["frechet_mulan"] >= 0 and report["memorisation"]["windows"] == 3
    assert report["memorisation_audio"]["windows"] == 3  # the generated audio tokenized again
    assert (tmp_path / "out" / "report.png").stat().st_size > 5000
    capsys.readouterr()


def test_prompted_memorisation_finds_a_model_that_copies_its_training_clips(monkeypatch):
    """The paper's audit: primed with a training clip's ids and conditioned on its own audio latent, a
    semantic stage that reproduces the clip is caught (every continuation exact), and a real one on
    clips it never saw agrees with them no more than with another clip."""
    from musiclm_pytorch import MusicLM
    from musiclm_pytorch.evaluation.suite import prompted_memorisation

    model = MusicLM.from_pretrained()
    gen = torch.Generator().manual_seed(0)
    dim = model.conditioner.mulan.dim_latent
    unit = torch.nn.functional.normalize
    items = [{"semantic": torch.randint(0, 512, (300,), generator=gen), "mulan": unit(torch.randn(dim, generator=gen),
              dim=0)} for _ in range(6)]  # fmt: skip
    with pytest.raises(ValueError, match="exceed the semantic stage's window of 10 s"):
        prompted_memorisation(model, items, prompt_seconds=(9.0,), seconds=2.0)
    with pytest.raises(ValueError, match="needs 2 training clips of at least 10 s"):
        prompted_memorisation(model, [{**it, "semantic": it["semantic"][:200]} for it in items], prompt_seconds=(5.0,))
    honest = prompted_memorisation(model, items, prompt_seconds=(0.0, 2.0), seconds=2.0, batch_size=4, progress=False)
    assert honest["clips"] == 6 and honest["prompt_2s"]["exact"] == 0 and honest["prompt_2s"]["mean_share"] < 0.1

    real_generate = model.semantic_lm.generate

    def copying(*, steps, cond_latent, prime=None, **kwargs):  # finds each row's clip by its latent, and copies it
        real_generate(steps=1, cond_latent=cond_latent, prime=prime, **kwargs)  # the real call's checks
        rows = [next(it for it in items if torch.allclose(it["mulan"], c.cpu(), atol=1e-4)) for c in cond_latent]
        p = 0 if prime is None else prime.shape[1]
        return torch.stack([it["semantic"][: p + steps] for it in rows])

    monkeypatch.setattr(model.semantic_lm, "generate", copying)
    caught = prompted_memorisation(model, items, prompt_seconds=(0.0, 2.0), seconds=2.0, batch_size=4, progress=False)
    for key in ("prompt_0s", "prompt_2s"):
        assert caught[key]["exact"] == 6 and caught[key]["mean_share"] == 1.0
        assert caught[key]["mean_share_other_clip"] < 0.1  # the control: another clip's next ids


def test_per_value_counts_what_is_heard_instead():
    from musiclm_pytorch.evaluation.suite import per_value

    preds = [{"family": f} for f in ("piano", "organ", "organ", "strings", "piano")]
    tags = [{"family": "piano"}, {"family": "piano"}, {"family": "organ"}, {"family": "piano"}, {}]
    out = per_value(preds, tags, "family")
    assert set(out) == {"piano", "organ"}  # the untagged row is left out
    assert out["piano"] == {"n": 3, "accuracy": round(1 / 3, 4), "heard": {"piano": 1, "organ": 1, "strings": 1}}
    assert out["organ"] == {"n": 1, "accuracy": 1.0, "heard": {"organ": 1}}

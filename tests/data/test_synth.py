from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musiclm_pytorch.data.captions import FULL_TEMPLATES_HELDOUT, HELDOUT_TEMPLATES, templates_matching
from musiclm_pytorch.data.render import SynthUnavailableError, find_soundfonts
from musiclm_pytorch.data.synth import SynthConfig, heldout_combo, plan, synthesize
from musiclm_pytorch.data.tags import validate_tags

pytest.importorskip("fluidsynth", reason="needs pyfluidsynth + apt fluidsynth (installed by .ci/run)")


def _cfg(**kw) -> SynthConfig:
    args = dict(num_clips=16, seconds=3.0, workers=1, soundfonts=["TimGM6mb.sf2"], val_fraction=0.25,
                bach_fraction=0.0, seed=3)  # fmt: skip
    args.update(kw)
    return SynthConfig(**args)


def test_plan_is_deterministic_and_held_out_by_source():
    a, b = plan(_cfg(num_clips=200)), plan(_cfg(num_clips=200))
    assert [(s.id, s.source, s.tags) for s in a] == [(s.id, s.source, s.tags) for s in b]
    assert plan(_cfg(num_clips=200, seed=4))[0].tags != a[0].tags
    train_sources = {s.source for s in a if s.split == "train"}
    val_sources = {s.source for s in a if s.split == "val"}
    assert train_sources and val_sources and not train_sources & val_sources
    # held-out attribute combinations never appear in training
    for s in a:
        combo = heldout_combo(s.tags["family"], s.tags["tempo_class"], s.tags["drums"])
        assert not (s.split == "train" and combo)
    assert any(heldout_combo(s.tags["family"], s.tags["tempo_class"], s.tags["drums"]) for s in a if s.split == "val")


def test_the_sealed_test_split_holds_generated_compositions_of_its_own():
    cfg = dict(num_clips=400, bach_fraction=0.3)
    b = plan(_cfg(**cfg, test_fraction=0.3))
    sources = {split: {s.source for s in b if s.split == split} for split in ("train", "val", "test")}
    assert all(sources.values()) and not (sources["test"] & (sources["train"] | sources["val"]))
    assert all(src.startswith("gen-") for src in sources["test"])  # a chorale is never unseen: none in test
    assert any(src.startswith("bach-") for src in sources["train"])
    assert any(heldout_combo(s.tags["family"], s.tags["tempo_class"], s.tags["drums"]) for s in b if s.split == "test")
    with pytest.raises(ValueError, match="test_fraction must be in"):
        _cfg(val_fraction=0.5, test_fraction=0.6)
    only_test = plan(_cfg(num_clips=20, val_fraction=0.0, test_fraction=1.0))
    assert {s.split for s in only_test} == {"test"}


def test_synthesize_small_corpus(tmp_path):
    summary = synthesize(_cfg(shard_size=5, test_fraction=0.25), tmp_path, progress=False)
    assert sum(summary["counts"][s] for s in ("train", "val", "test")) == 16 and summary["failed"] == 0
    rows = [json.loads(line) for s in ("train", "val", "test")
            for line in (tmp_path / f"{s}.jsonl").read_text().splitlines()]  # fmt: skip
    for row in rows:
        validate_tags(row["tags"])
        wav, sr = sf.read(tmp_path / row["path"])
        assert sr == 16000 and len(wav) == 48000 and row["duration"] == 3.0
        rms = float(np.sqrt(np.mean(wav**2)))
        assert 1e-3 < rms and np.abs(wav).max() < 1.0  # music, not silence, not clipped
        assert len(row["captions"]) == 4 and row["caption"] == row["captions"][0]
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    heldout = set(HELDOUT_TEMPLATES + FULL_TEMPLATES_HELDOUT)
    for row in rows:  # validation and test captions use held-out wordings only, training captions never do
        for text in [*row["captions"], row["full_caption"]]:
            matches = set(templates_matching(text))
            assert matches, text
            # slot-only templates ("{fam} {drums}") match many texts, so ask which set can explain it
            assert (matches & heldout) if row["split"] != "train" else (matches - heldout), text
    shards = summary["shards"]["train"] + summary["shards"]["val"]
    assert all((tmp_path / s).is_file() for s in shards)
    corpus = json.loads((tmp_path / "corpus.json").read_text())
    assert corpus["schema"] == 1 and corpus["clips_per_second"] > 0


def test_renders_are_deterministic(tmp_path):
    cfg = _cfg(num_clips=3, val_fraction=0.0)
    synthesize(cfg, tmp_path / "a", progress=False)
    synthesize(cfg, tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "test.jsonl").exists()  # a test split only when asked for
    for name in ("train-000000", "train-000002"):
        a, _ = sf.read(tmp_path / "a" / "audio" / "train" / f"{name}.flac")
        b, _ = sf.read(tmp_path / "b" / "audio" / "train" / f"{name}.flac")
        np.testing.assert_array_equal(a, b)


def test_bach_chorale_source(tmp_path):
    pytest.importorskip("music21")
    summary = synthesize(_cfg(num_clips=2, bach_fraction=1.0, val_fraction=0.0), tmp_path, progress=False)
    row = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert row["tags"]["source_kind"] == "bach_chorale" and row["tags"]["source"].startswith("bach-")
    assert summary["counts"]["train"] + summary["failed"] == 2


def test_missing_soundfont_says_what_to_install():
    with pytest.raises(SynthUnavailableError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        find_soundfonts(["NoSuchFont.sf2"])

from __future__ import annotations

import random

import pytest

from musiclm_pytorch.data.captions import (
    FULL_TEMPLATES_HELDOUT,
    FULL_TEMPLATES_TRAIN,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    attribute_prompts,
    caption,
    full_caption,
)
from musiclm_pytorch.data.tags import LEAD_PROGRAMS, family_of, moods_for, tempo_class, validate_tags


def make_tags(**kw):
    tags = {
        "schema": 1, "program": 42, "instrument": "cello", "family": "strings", "tempo_bpm": 72.0,
        "tempo_class": "slow", "tonic": "D", "mode": "minor", "drums": False, "bass": True, "dynamics": "soft",
        "register": "low", "moods": ["sad", "melancholic"], "source": "gen-1", "source_kind": "generated",
        "form": "AABA", "time_signature": "4/4",
    }  # fmt: skip
    tags.update(kw)
    return tags


def test_tempo_bins_and_families():
    assert [tempo_class(b) for b in (60, 89.9, 90, 129.9, 130, 200)] == [
        "slow", "slow", "medium", "medium", "fast", "fast",
    ]  # fmt: skip
    assert family_of(0) == "piano" and family_of(42) == "strings" and family_of(127) == "sound effects"
    for family, programs in LEAD_PROGRAMS.items():
        assert all(family_of(p) == family for p in programs)
    with pytest.raises(ValueError, match="0..127"):
        family_of(128)


def test_validate_tags_names_the_bad_key():
    assert validate_tags(make_tags())["family"] == "strings"
    with pytest.raises(ValueError, match="'mode'"):
        validate_tags(make_tags(mode="dorian"))
    with pytest.raises(ValueError, match="does not match program"):
        validate_tags(make_tags(family="piano"))
    with pytest.raises(ValueError, match="tempo_class 'fast' does not match"):
        validate_tags(make_tags(tempo_class="fast"))
    with pytest.raises(ValueError, match="lack required key 'drums'"):
        validate_tags({k: v for k, v in make_tags().items() if k != "drums"})
    with pytest.raises(ValueError, match="schema"):
        validate_tags(make_tags(schema=2))


def test_moods_follow_attributes():
    assert moods_for(mode="minor", tempo="slow", family="strings", drums=False, dynamics="soft") == [
        "sad", "melancholic", "gentle", "cinematic",
    ]  # fmt: skip
    assert "energetic" in moods_for(mode="major", tempo="fast", family="guitar", drums=True, dynamics="loud")


def test_captions_vary_and_held_out_templates_are_disjoint():
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    assert not set(FULL_TEMPLATES_TRAIN) & set(FULL_TEMPLATES_HELDOUT)
    rng = random.Random(0)
    tags = make_tags()
    texts = {caption(tags, rng) for _ in range(200)}
    assert len(texts) > 50  # many wordings
    assert not any(" a a" in t.lower() or "a unhurried" in t.lower() for t in texts)
    for _ in range(20):
        full = full_caption(tags, rng, heldout=True).lower()
        assert "cello" in full and "d minor" in full
        assert any(w in full for w in ("no drums", "without drums", "no percussion", "drumless"))
    assert set(attribute_prompts("drums")) == {"True", "False"}
    with pytest.raises(ValueError, match="no zero-shot prompts"):
        attribute_prompts("colour")


def test_perturbed_captions_change_one_stated_attribute():
    import random

    from musiclm_pytorch.data.captions import perturb_caption

    tags = {"mode": "minor", "tonic": "E", "tempo_class": "slow", "tempo_bpm": 66.0, "drums": False,
            "family": "brass", "instrument": "trombone"}  # fmt: skip
    seen = set()
    for seed in range(60):
        out = perturb_caption("An unhurried sad piece in E minor played on trombone without drums", tags,
                              random.Random(seed))  # fmt: skip
        assert out is not None and out != "An unhurried sad piece in E minor played on trombone without drums"
        seen.add(out)
    assert "An unhurried sad piece in E major played on trombone without drums" in seen  # mode, kept a key
    assert any("piece in E minor played on trombone with" in s and "without" not in s for s in seen)  # drums
    assert any(s.startswith("A ") and "minor played on trombone without" in s for s in seen)  # tempo, "a"/"an"
    tonics = {s.split(" in ")[1].split()[0] for s in seen if " minor played on trombone without drums" in s}
    assert len(tonics - {"E"}) >= 1  # the tonic of the stated key changes too
    # the family word inside an instrument name is not the family: "bright acoustic piano" stays whole
    piano = {**tags, "family": "piano", "instrument": "bright acoustic piano", "mode": "major"}
    for seed in range(30):
        out = perturb_caption("Bright acoustic piano in B major", piano, random.Random(seed))
        assert out is not None and "acoustic synth" not in out and "Bright acoustic guitar" not in out
    assert perturb_caption("some music", tags, random.Random(0)) is None


def test_swap_instrument_names_the_confusable_instrument_or_its_family():
    import random

    from musiclm_pytorch.data.captions import swap_instrument

    kalimba = {"family": "ethnic", "instrument": "kalimba"}
    rng = random.Random(0)
    assert swap_instrument("A kalimba in D minor", kalimba, "marimba", rng) == "A marimba in D minor"
    # no name stated: the family word changes to one of the new family's
    out = swap_instrument("Calm folk instrument music", kalimba, "marimba", rng)
    assert out in ("Calm mallet percussion music", "Calm tuned percussion music")
    # "an"/"a" follow the new word; nothing to swap gives None
    assert swap_instrument("An oboe solo", {"family": "reed", "instrument": "oboe"}, "violin", rng) == "A violin solo"
    assert swap_instrument("Slow music in D minor", kalimba, "marimba", rng) is None
    with pytest.raises(ValueError, match="own family 'ethnic'"):
        swap_instrument("A kalimba", kalimba, "banjo", rng)
    with pytest.raises(ValueError, match="'kazoo' is not a lead instrument"):
        swap_instrument("A kalimba", kalimba, "kazoo", rng)

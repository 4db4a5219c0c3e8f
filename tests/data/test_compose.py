from __future__ import annotations

from musiclm_pytorch.data.compose import (
    DRUM_KICK,
    DRUM_SNARE,
    PROGRESSIONS,
    SCALES,
    arrange,
    form_string,
    generate_composition,
)
from musiclm_pytorch.data.tags import PITCH_CLASSES


def _arr(comp, **kw):
    args = dict(tonic="E", bpm=120.0, program=0, register="mid", dynamics="medium", drums=True, bass_program=33,
                seconds=16.0, seed=0)  # fmt: skip
    args.update(kw)
    return arrange(comp, **args)


def test_generation_is_deterministic_and_has_form():
    a, b = generate_composition(7), generate_composition(7)
    assert a == b
    assert generate_composition(8) != a
    form = form_string(a)
    assert len(form) == 4 and form[0] == "A"
    # repetition with variation: A' keeps A's first three bars
    if "A'" in a.phrases:
        head = [n for n in a.phrases["A"].melody if n[1] < 12]
        assert [n for n in a.phrases["A'"].melody if n[1] < 12] == head
    for phrase in a.phrases.values():
        assert phrase.chords in PROGRESSIONS[a.mode]
        assert sum(length for _, _, length in phrase.melody) == 16  # four full bars of 4/4


def test_arrangement_is_in_key_with_chords_bass_and_drums_on_the_grid():
    comp = generate_composition(3)
    arr = _arr(comp)
    tonic = PITCH_CLASSES.index("E")
    scale = {(tonic + s) % 12 for s in SCALES[comp.mode]}
    if comp.mode == "minor":
        scale.add((tonic + 11) % 12)  # harmonic-minor leading tone in dominant chords
    melodic = [n for n in arr.notes if n.channel in (0, 1, 2)]
    assert all(n.pitch % 12 in scale for n in melodic)
    beat = 0.5
    drums = [n for n in arr.notes if n.channel == 9]
    assert drums and all(abs((n.start / (beat / 2)) - round(n.start / (beat / 2))) < 1e-6 for n in drums)
    kicks = [n.start for n in drums if n.pitch == DRUM_KICK]
    snares = [n.start for n in drums if n.pitch == DRUM_SNARE]
    assert 0.0 in kicks and 0.5 in snares  # kick on 1, snare on 2
    assert {n.channel for n in arr.notes} == {0, 1, 2, 9}
    assert arr.programs == {0: 0, 1: 0, 2: 33}
    assert max(n.end for n in arr.notes) <= 16.0
    # the melody sits in the requested register
    mel = [n.pitch for n in arr.notes if n.channel == 0]
    assert 48 <= min(mel) and max(mel) <= 90


def test_no_drums_no_bass_and_tempo_scales_time():
    comp = generate_composition(5)
    slow = _arr(comp, drums=False, bass_program=None, bpm=60.0)
    fast = _arr(comp, drums=False, bass_program=None, bpm=120.0)
    assert {n.channel for n in slow.notes} == {0, 1}
    first_slow = sorted(n.start for n in slow.notes if n.channel == 0)[:4]
    first_fast = sorted(n.start for n in fast.notes if n.channel == 0)[:4]
    assert [round(2 * f, 6) for f in first_fast] == [round(s, 6) for s in first_slow]

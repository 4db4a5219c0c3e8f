"""The tag schema (version 1): structured attributes of a clip, shared by the synthetic corpus's
manifest, the judge's input, and MuLaN's zero-shot evaluation.

A clip's ``tags`` is a JSON object with these keys (all required unless marked optional):

| key | type | meaning |
|---|---|---|
| ``schema`` | int | always ``1`` for this version |
| ``program`` | int 0-127 | General MIDI program of the lead instrument (melody and chords) |
| ``instrument`` | str | readable name of ``program``, e.g. ``"acoustic grand piano"`` |
| ``family`` | str | GM family of ``program``: one of :data:`FAMILIES` |
| ``tempo_bpm`` | float | quarter-note tempo |
| ``tempo_class`` | str | ``"slow"`` (< 90 bpm), ``"medium"`` (90-130), ``"fast"`` (>= 130): :func:`tempo_class` |
| ``tonic`` | str | one of :data:`PITCH_CLASSES` |
| ``mode`` | str | ``"major"`` or ``"minor"`` |
| ``drums`` | bool | a drum kit plays |
| ``bass`` | bool | a bass line plays (GM bass family, under the lead) |
| ``dynamics`` | str | ``"soft"``, ``"medium"`` or ``"loud"`` (velocity bands 40-60, 65-90, 100-120) |
| ``register`` | str | melody register: ``"low"``, ``"mid"`` or ``"high"`` |
| ``moods`` | list[str] | words that follow from the attributes (:func:`moods_for`) |
| ``source`` | str | composition id; the validation split is held out by it |
| ``source_kind`` | str | ``"generated"`` or ``"bach_chorale"`` |
| ``form`` | str | section letters, e.g. ``"AABA"`` |
| ``time_signature`` | str | e.g. ``"4/4"`` |
| ``soundfont`` | str (optional) | soundfont file name used to render |
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
TEMPO_CLASSES = ("slow", "medium", "fast")
TEMPO_BINS = (90.0, 130.0)  # slow < 90 <= medium < 130 <= fast
DYNAMICS = ("soft", "medium", "loud")
VELOCITY_BANDS = {"soft": (40, 60), "medium": (65, 90), "loud": (100, 120)}
REGISTERS = ("low", "mid", "high")

# General MIDI families: program // 8
FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)  # fmt: skip

# Lead instruments the corpus uses, by family: musically usable programs only
LEAD_PROGRAMS: dict[str, dict[int, str]] = {
    "piano": {0: "acoustic grand piano", 1: "bright acoustic piano", 4: "electric piano"},
    "chromatic percussion": {8: "celesta", 11: "vibraphone", 12: "marimba"},
    "organ": {16: "drawbar organ", 19: "church organ", 21: "accordion"},
    "guitar": {24: "nylon-string guitar", 25: "steel-string guitar", 27: "clean electric guitar",
               30: "distorted electric guitar"},
    "strings": {40: "violin", 41: "viola", 42: "cello"},
    "ensemble": {48: "string ensemble", 52: "choir"},
    "brass": {56: "trumpet", 57: "trombone", 60: "french horn"},
    "reed": {65: "alto saxophone", 68: "oboe", 71: "clarinet"},
    "pipe": {73: "flute", 75: "pan flute", 79: "ocarina"},
    "synth lead": {80: "square lead synth", 81: "sawtooth lead synth"},
    "synth pad": {88: "new age pad", 89: "warm pad"},
    "ethnic": {104: "sitar", 105: "banjo", 108: "kalimba"},
}  # fmt: skip
LEAD_FAMILIES = tuple(LEAD_PROGRAMS)
BASS_PROGRAMS = {32: "acoustic bass", 33: "electric bass", 38: "synth bass"}


def family_of(program: int) -> str:
    if not 0 <= program <= 127:
        raise ValueError(f"GM program must be in 0..127, got {program}")
    return FAMILIES[program // 8]


def instrument_name(program: int) -> str:
    for programs in LEAD_PROGRAMS.values():
        if program in programs:
            return programs[program]
    return BASS_PROGRAMS.get(program, f"GM program {program}")


def tempo_class(bpm: float) -> str:
    """``"slow"`` below 90 bpm, ``"medium"`` from 90 to below 130, ``"fast"`` from 130."""
    if bpm <= 0:
        raise ValueError(f"tempo must be positive, got {bpm}")
    return "slow" if bpm < TEMPO_BINS[0] else "medium" if bpm < TEMPO_BINS[1] else "fast"


def moods_for(*, mode: str, tempo: str, family: str, drums: bool, dynamics: str) -> list[str]:
    """Mood and style words implied by the attributes (a fixed rule, so captions never lie)."""
    table = {
        ("major", "slow"): ["calm", "peaceful"],
        ("major", "medium"): ["warm", "cheerful"],
        ("major", "fast"): ["happy", "upbeat"],
        ("minor", "slow"): ["sad", "melancholic"],
        ("minor", "medium"): ["wistful", "mysterious"],
        ("minor", "fast"): ["tense", "dramatic"],
    }
    moods = list(table[(mode, tempo)])
    if dynamics == "soft" and tempo != "fast":
        moods.append("gentle")
    if dynamics == "loud" and drums and tempo == "fast":
        moods.append("energetic")
    if family in ("synth lead", "synth pad") and drums:
        moods.append("electronic")
    if family == "organ" and tempo == "slow" and not drums:
        moods.append("solemn")
    if family in ("strings", "ensemble") and tempo == "slow":
        moods.append("cinematic")
    return moods


_CHOICES = {
    "tempo_class": TEMPO_CLASSES,
    "tonic": PITCH_CLASSES,
    "mode": MODES,
    "dynamics": DYNAMICS,
    "register": REGISTERS,
    "family": FAMILIES,
}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "schema": int, "program": int, "instrument": str, "family": str, "tempo_bpm": (int, float),
    "tempo_class": str, "tonic": str, "mode": str, "drums": bool, "bass": bool, "dynamics": str,
    "register": str, "moods": list, "source": str, "source_kind": str, "form": str, "time_signature": str,
}  # fmt: skip


def validate_tags(tags: dict[str, Any]) -> dict[str, Any]:
    """Check ``tags`` against schema 1; returns it, or raises ``ValueError`` naming the first bad key."""
    if not isinstance(tags, dict):
        raise ValueError(f"tags must be a JSON object, got {type(tags).__name__}")
    if tags.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"tags schema {tags.get('schema')!r} is not the supported version {SCHEMA_VERSION}")
    for key, typ in _TYPES.items():
        if key not in tags:
            raise ValueError(f"tags lack required key {key!r}")
        if not isinstance(tags[key], typ) or (typ is int and isinstance(tags[key], bool)):
            raise ValueError(f"tags[{key!r}] = {tags[key]!r} is not of type {typ}")
    for key, allowed in _CHOICES.items():
        if tags[key] not in allowed:
            raise ValueError(f"tags[{key!r}] = {tags[key]!r} is not one of {list(allowed)}")
    if tags["family"] != family_of(tags["program"]):
        raise ValueError(f"tags family {tags['family']!r} does not match program {tags['program']}")
    if tags["tempo_class"] != tempo_class(float(tags["tempo_bpm"])):
        raise ValueError(f"tags tempo_class {tags['tempo_class']!r} does not match tempo_bpm {tags['tempo_bpm']}")
    return tags

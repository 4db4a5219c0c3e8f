"""Captions in many wordings for tagged clips (schema 1), with held-out templates for validation.

A caption is built from a template whose slots are filled with synonyms of the clip's attributes.
Templates state different subsets of the attributes (partial descriptions), in different word
orders, including MusicCaps-style multi-sentence descriptions. ``TRAIN_TEMPLATES`` and
``HELDOUT_TEMPLATES`` never overlap; :func:`full_caption` states every recorded attribute (for
retrieval evaluation) in either a train or a held-out wording.
"""

from __future__ import annotations

import random
import re
from typing import Any

INSTRUMENT_WORDS = {
    "piano": ["piano", "keys"],
    "chromatic percussion": ["mallet percussion", "tuned percussion"],
    "organ": ["organ", "keyboard organ"],
    "guitar": ["guitar"],
    "strings": ["strings", "bowed strings"],
    "ensemble": ["ensemble", "orchestral ensemble"],
    "brass": ["brass", "horns"],
    "reed": ["woodwind", "reed instrument"],
    "pipe": ["flute", "wind pipe"],
    "synth lead": ["synth lead", "lead synthesizer"],
    "synth pad": ["synth pad", "ambient pad"],
    "ethnic": ["folk instrument", "world instrument"],
}
TEMPO_WORDS = {
    "slow": ["slow", "leisurely", "unhurried", "slow-paced"],
    "medium": ["mid-tempo", "moderately paced", "medium-tempo", "walking-pace"],
    "fast": ["fast", "up-tempo", "brisk", "quick"],
}
MODE_WORDS = {"major": ["major", "major-key"], "minor": ["minor", "minor-key"]}
DRUM_WORDS = {
    True: ["with drums", "with a drum beat", "backed by a drum kit", "over a steady beat"],
    False: ["without drums", "with no percussion", "with no drums", "drumless"],
}
DYNAMICS_WORDS = {"soft": ["soft", "quiet", "delicate"], "medium": ["moderately loud", "balanced"],
                  "loud": ["loud", "powerful", "forceful"]}  # fmt: skip
REGISTER_WORDS = {"low": ["low", "low-register"], "mid": ["mid-range", "middle-register"],
                  "high": ["high", "high-register"]}  # fmt: skip

# Slots: {inst} instrument name, {fam} family word, {tempo}, {bpm}, {key} e.g. "D minor", {mode},
# {drums}, {mood}, {mood2}, {dyn}, {reg}
TRAIN_TEMPLATES = [
    "a {tempo} {mood} piece on {inst} {drums}",
    "{inst} playing a {mode} melody, {tempo}, {drums}",
    "{mood} {fam} music in {key}",
    "a {dyn} {inst} tune at {bpm} bpm",
    "{tempo} {fam} {drums}",
    "solo {inst}, {mood} and {tempo}",
    "a {mood} song in {key} played on {inst}",
    "{fam} melody in a {reg} register, {mode} key",
    "this is a {tempo} instrumental in {key}. the {inst} carries the melody {drums}. it sounds {mood}.",
    "an instrumental track featuring {inst}. the tempo is {tempo}, around {bpm} bpm, and the mood is {mood}.",
    "{drums}, a {inst} plays a {mood} tune",
    "{key} {inst} piece",
    "{mood}, {mood2} {fam} music",
    "a {tempo} {mode} tune",
    "{fam} {drums}",
    "music for {inst} in {key}, {tempo}",
]
HELDOUT_TEMPLATES = [
    "the {inst} performs a {mood} {mode}-key theme {drums}, {tempo}",
    "a {mood} recording: {inst}, {key}, {tempo} tempo",
    "low-fi clip of {fam} {drums}; it feels {mood}",
    "here a {inst} plays something {tempo} and {mood} in {key}.",
]
FULL_TEMPLATES_TRAIN = [
    "a {tempo} {mood} piece in {key} played on {inst} {drums}",
    "{inst} in {key}, {tempo}, {mood}, {drums}",
]
FULL_TEMPLATES_HELDOUT = [
    "{drums}, the {inst} plays a {tempo} {mood} theme in {key}",
    "a recording of {inst} in {key}: {tempo} and {mood}, {drums}",
]


def _slots(tags: dict[str, Any], rng: random.Random) -> dict[str, str]:
    moods = list(tags["moods"]) or ["plain"]
    rng.shuffle(moods)
    mode = rng.choice(MODE_WORDS[tags["mode"]])
    return {
        "inst": tags["instrument"],
        "fam": rng.choice(INSTRUMENT_WORDS.get(tags["family"], [tags["family"]])),
        "tempo": rng.choice(TEMPO_WORDS[tags["tempo_class"]]),
        "bpm": str(int(round(tags["tempo_bpm"]))),
        "key": f"{tags['tonic']} {tags['mode']}",
        "mode": mode.replace("-key", ""),
        "drums": rng.choice(DRUM_WORDS[bool(tags["drums"])]),
        "mood": moods[0],
        "mood2": moods[1] if len(moods) > 1 else moods[0],
        "dyn": rng.choice(DYNAMICS_WORDS[tags["dynamics"]]),
        "reg": rng.choice(REGISTER_WORDS[tags["register"]]),
    }


def _fill(template: str, slots: dict[str, str]) -> str:
    text = template.format(**slots).strip()
    text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)  # "a up-tempo" -> "an up-tempo"
    return text[0].upper() + text[1:] if text else text


def caption(tags: dict[str, Any], rng: random.Random, *, heldout: bool = False) -> str:
    """One caption in a train (or held-out) wording; it may state only some attributes."""
    template = rng.choice(HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES)
    return _fill(template, _slots(tags, rng))


def full_caption(tags: dict[str, Any], rng: random.Random, *, heldout: bool = False) -> str:
    """A caption stating instrument, tempo class, key and mode, mood and drums."""
    template = rng.choice(FULL_TEMPLATES_HELDOUT if heldout else FULL_TEMPLATES_TRAIN)
    return _fill(template, _slots(tags, rng))


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{\w+\}", template)
    body = ".+?".join(re.escape(p) for p in parts)
    return re.compile(body, re.IGNORECASE)


def templates_matching(text: str) -> list[str]:
    """The templates (train, held-out, full) that could have produced ``text`` (an audit helper)."""
    text = re.sub(r"\ban\b", "a", text, flags=re.IGNORECASE)
    pool = TRAIN_TEMPLATES + HELDOUT_TEMPLATES + FULL_TEMPLATES_TRAIN + FULL_TEMPLATES_HELDOUT
    return [t for t in pool if _template_regex(t).fullmatch(text)]


_KEY = re.compile(r"\b([A-G](?:b|#)?) (major|minor)\b(?!-)")


def _articles(text: str) -> str:
    text = re.sub(r"\b([Aa])n? (?=[aeiouAEIOU])", r"\1n ", text)
    return re.sub(r"\b([Aa])n (?=[^aeiouAEIOU\W])", r"\1 ", text)


def _swap_words(
    text: str, own: list[str], other: list[str], rng: random.Random, *, paired: bool = False, protect: str = ""
) -> str | None:
    """Replace the first of ``own`` (longest first, whole words, any case) found in ``text`` by a word
    of ``other`` (with ``paired``, the word at the same index: "major-key" -> "minor-key"); ``None``
    if none is found. Occurrences inside ``protect`` (e.g. the instrument name) are left alone."""
    masked = text
    if protect:
        masked = re.sub(re.escape(protect), lambda m: "\0" * len(m.group(0)), text, flags=re.IGNORECASE)
    for word in sorted(own, key=len, reverse=True):
        m = re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", masked, flags=re.IGNORECASE)
        if m:
            new = other[own.index(word)] if paired else rng.choice(other)
            if m.group(0)[:1].isupper():
                new = new[:1].upper() + new[1:]
            return text[: m.start()] + new + text[m.end() :]
    return None


def perturb_caption(text: str, tags: dict[str, Any], rng: random.Random) -> str | None:
    """``text`` with ONE stated attribute changed to another value (a hard negative caption), or
    ``None`` when it states none that can be changed.

    Candidates, among the attributes ``text`` states for this clip (``tags``): mode (major <-> minor,
    also inside "C minor"), tonic of a stated key, tempo word (to another tempo class), beats per
    minute (x 1.5 or / 1.5), drums phrase (to the opposite), instrument family word, instrument
    name (to a name from another family). Training against such captions (the audio must score its
    own caption above them) makes the model hear exactly the attribute that differs, which the
    in-batch negatives, differing in many attributes at once, teach only weakly.
    """
    from .tags import LEAD_PROGRAMS, PITCH_CLASSES

    options = []
    mode, other_mode = tags["mode"], "minor" if tags["mode"] == "major" else "major"
    options.append(lambda: _swap_words(text, MODE_WORDS[mode], MODE_WORDS[other_mode], rng, paired=True))
    key = _KEY.search(text)
    if key:
        tonic = rng.choice([p for p in PITCH_CLASSES if p != key.group(1)])
        options.append(lambda: text[: key.start(1)] + tonic + text[key.end(1) :])
    others = [w for c, ws in TEMPO_WORDS.items() if c != tags["tempo_class"] for w in ws]
    options.append(lambda: _swap_words(text, TEMPO_WORDS[tags["tempo_class"]], others, rng))
    bpm = re.search(r"\b(\d{2,3}) bpm\b", text, flags=re.IGNORECASE)
    if bpm:
        factor = rng.choice([1.5, 1 / 1.5])
        options.append(lambda: text[: bpm.start(1)] + str(int(round(int(bpm.group(1)) * factor))) + text[bpm.end(1) :])
    drums = bool(tags["drums"])
    options.append(lambda: _swap_words(text, DRUM_WORDS[drums], DRUM_WORDS[not drums], rng))
    fam = tags["family"]
    other_fams = [w for f, ws in INSTRUMENT_WORDS.items() if f != fam for w in ws]
    options.append(
        lambda: _swap_words(text, INSTRUMENT_WORDS.get(fam, []), other_fams, rng, protect=tags["instrument"])
    )
    other_names = [n for f, progs in LEAD_PROGRAMS.items() if f != fam for n in progs.values()]
    options.append(lambda: _swap_words(text, [tags["instrument"]], other_names, rng))
    rng.shuffle(options)
    for make in options:
        out = make()
        if out is not None and out != text:
            return _articles(out)
    return None


def swap_instrument(text: str, tags: dict[str, Any], new_instrument: str, rng: random.Random) -> str | None:
    """``text`` with the clip's lead instrument changed to ``new_instrument`` (a lead instrument of
    another family, ``tags.LEAD_PROGRAMS``): its name where ``text`` names it, else its family word
    (to one of the new family's); ``None`` when ``text`` states neither. For hard negatives chosen by
    the model's own confusions (``training.mulan``, ``mined_negatives``)."""
    from .tags import LEAD_PROGRAMS

    new_family = next((f for f, progs in LEAD_PROGRAMS.items() if new_instrument in progs.values()), None)
    if new_family is None:
        names = sorted(n for progs in LEAD_PROGRAMS.values() for n in progs.values())
        raise ValueError(f"new_instrument {new_instrument!r} is not a lead instrument; expected one of {names}")
    if new_family == tags["family"]:
        raise ValueError(f"new_instrument {new_instrument!r} is of the clip's own family {new_family!r}")
    out = _swap_words(text, [tags["instrument"]], [new_instrument], rng)
    if out is None:
        own = INSTRUMENT_WORDS.get(tags["family"], [])
        out = _swap_words(text, own, INSTRUMENT_WORDS[new_family], rng, protect=tags["instrument"])
    return None if out is None else _articles(out)


def attribute_prompt_sets(attribute: str) -> dict[str, list[str]]:
    """Zero-shot prompt ensembles (CLIP-style), several prompts per value of ``attribute``: every
    synonym of the value in a few generic frames; for mode and tonic every key that has it (the way
    captions name keys, "in D minor"). Their text latents are averaged per value."""
    from .tags import PITCH_CLASSES

    if attribute == "family":
        return {f: [t.format(w) for w in words for t in ("{} music", "a piece played on {}", "a recording of {}")]
                for f, words in INSTRUMENT_WORDS.items()}  # fmt: skip
    if attribute == "drums":
        return {str(v): [t.format(d) for d in words for t in ("music {}", "an instrumental {}")]
                for v, words in DRUM_WORDS.items()}  # fmt: skip
    if attribute == "tempo_class":
        return {k: [t.format(w) for w in words for t in ("{} music", "a {} tune")] for k, words in TEMPO_WORDS.items()}
    if attribute == "mode":
        return {m: [f"music in {p} {m}" for p in PITCH_CLASSES] + [f"a {w} tune" for w in MODE_WORDS[m]]
                for m in MODE_WORDS}  # fmt: skip
    if attribute == "tonic":
        return {p: [f"music in {p} {m}" for m in MODE_WORDS] + [f"music in the key of {p}"] for p in PITCH_CLASSES}
    raise ValueError(f"no zero-shot prompts for attribute {attribute!r}")


def attribute_prompts(attribute: str) -> dict[str, str]:
    """Zero-shot prompts, one per value of ``attribute`` (family, drums, tempo_class, mode, tonic)."""
    if attribute == "family":
        return {f: f"{INSTRUMENT_WORDS[f][0]} music" for f in INSTRUMENT_WORDS}
    if attribute == "drums":
        return {"True": "music with drums", "False": "music without drums"}
    if attribute == "tempo_class":
        return {t: f"{TEMPO_WORDS[t][0]} music" for t in TEMPO_WORDS}
    if attribute == "mode":
        return {m: f"music in a {m} key" for m in MODE_WORDS}
    if attribute == "tonic":
        from .tags import PITCH_CLASSES

        return {p: f"music in the key of {p}" for p in PITCH_CLASSES}
    raise ValueError(f"no zero-shot prompts for attribute {attribute!r}")

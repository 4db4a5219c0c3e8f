"""Compositions for the synthetic corpus: melody, chords on a progression, bass, drums, and form.

A :class:`Composition` is key-, tempo- and instrument-free: scale degrees, chord degrees and rhythms
in beats. :func:`arrange` turns one into timed MIDI notes for a given tonic, mode, tempo, register,
instrument and dynamics, so one composition can be rendered many ways (and the validation split,
held out by composition, never meets a training composition under another instrument or tempo).

Sources: :func:`generate_composition` (seeded: a 4-bar motif over a progression, repeated with
variation in a form such as AABA) and :func:`bach_chorale` (the soprano as melody and the lower
voices as chords, from the music21 corpus, when music21 is installed).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from .tags import PITCH_CLASSES, VELOCITY_BANDS

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# progressions as scale degrees (0 = tonic), one chord per bar
PROGRESSIONS = {
    "major": [(0, 4, 5, 3), (0, 3, 4, 0), (1, 4, 0, 0), (0, 5, 3, 4), (0, 3, 0, 4), (5, 3, 0, 4)],
    "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 3, 6, 2), (0, 5, 3, 4), (3, 4, 0, 0)],
}
# melody rhythms for one 4/4 bar, in beats
RHYTHMS = [
    (1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (1.5, 0.5, 1, 1), (0.5, 0.5, 1, 2), (1, 0.5, 0.5, 2),
    (2, 2), (1, 1, 0.5, 0.5, 1), (0.5, 0.5, 0.5, 0.5, 2), (3, 1), (1.5, 0.5, 2), (4,),
]  # fmt: skip
FORMS = ("AABA", "ABAB", "AABB", "ABAC", "AAAB")
REGISTER_BASE = {"low": 48, "mid": 60, "high": 72}  # MIDI pitch of the tonic the melody centres on
DRUM_KICK, DRUM_SNARE, DRUM_HAT, DRUM_OPEN_HAT, DRUM_CRASH = 36, 38, 42, 46, 49


@dataclass
class Phrase:
    """Four bars: chord degree per bar, melody as (scale step from tonic, onset beat, length beats)."""

    chords: tuple[int, ...]
    melody: list[tuple[int, float, float]]


@dataclass
class Composition:
    source: str
    kind: str
    phrases: dict[str, Phrase]
    form: list[str]  # section keys in playing order, e.g. ["A", "A'", "B", "A"]
    mode: str  # "major" or "minor": progressions and melodies are written for one mode
    # explicit chord voicings (scale steps) per bar, when the source has real harmony (chorales)
    voicings: dict[str, list[list[int]]] = field(default_factory=dict)

    @property
    def bars(self) -> int:
        return sum(len(self.phrases[s].chords) for s in self.form)


def _chord_steps(degree: int) -> tuple[int, int, int]:
    return (degree, degree + 2, degree + 4)


def _melody(rng: random.Random, chords: tuple[int, ...], start_step: int = 0) -> list[tuple[int, float, float]]:
    """Chord tones on strong beats, mostly stepwise motion between them, a cadence on the last bar."""
    notes = []
    step = start_step
    for bar, degree in enumerate(chords):
        rhythm = (2, 2) if bar == len(chords) - 1 and rng.random() < 0.5 else rng.choice(RHYTHMS)
        onset = 0.0
        for length in rhythm:
            beat = bar * 4 + onset
            strong = onset in (0.0, 2.0)
            if strong:
                tones = [t + 7 * o for t in _chord_steps(degree) for o in (-1, 0, 1)]
                step = min(tones, key=lambda t: (abs(t - step), rng.random()))
            else:
                step += rng.choice((-2, -1, -1, 1, 1, 2))
            step = max(-3, min(9, step))  # about an octave and a half around the tonic
            notes.append((step, beat, float(length)))
            onset += length
    # end the phrase on a chord tone of its last chord, long
    last_step, last_beat, _ = notes[-1]
    tones = [t + 7 * o for t in _chord_steps(chords[-1]) for o in (-1, 0, 1)]
    notes[-1] = (min(tones, key=lambda t: abs(t - last_step)), last_beat, 4 * len(chords) - last_beat)
    return notes


def _vary(rng: random.Random, phrase: Phrase) -> Phrase:
    """The same phrase with its last bar re-composed (A -> A')."""
    last_bar = (len(phrase.chords) - 1) * 4
    kept = [n for n in phrase.melody if n[1] < last_bar]
    tail = _melody(rng, phrase.chords[-1:], start_step=kept[-1][0] if kept else 0)
    return Phrase(phrase.chords, kept + [(s, b + last_bar, n) for s, b, n in tail])


def generate_composition(seed: int) -> Composition:
    """A seeded composition: phrases A, B (and C), a form, a progression per phrase."""
    rng = random.Random(seed)
    form = rng.choice(FORMS)
    mode = rng.choice(("major", "minor"))
    phrases = {}
    for letter in sorted(set(form)):
        chords = rng.choice(PROGRESSIONS[mode])
        phrases[letter] = Phrase(chords, _melody(rng, chords, start_step=rng.choice((0, 2, 4))))
    if form.count("A") > 1:
        phrases["A'"] = _vary(rng, phrases["A"])
    # the second A of a form becomes A' (repetition with variation)
    sections = []
    seen_a = False
    for letter in form:
        if letter == "A" and seen_a and "A'" in phrases:
            sections.append("A'")
        else:
            sections.append(letter)
        seen_a = seen_a or letter == "A"
    return Composition(source=f"gen-{seed}", kind="generated", phrases=phrases, form=sections, mode=mode)


def form_string(comp: Composition) -> str:
    """Section letters, e.g. ``"AABA"`` (A' counts as A; chorale phrases as P)."""
    return "".join(s[0] for s in comp.form)


@dataclass(frozen=True)
class Note:
    channel: int
    pitch: int
    start: float  # seconds
    end: float
    velocity: int


@dataclass
class Arrangement:
    notes: list[Note]
    programs: dict[int, int]  # channel -> GM program (channel 9 = drums)
    seconds: float


def _midi(tonic_pc: int, mode: str, step: int, base: int, *, leading_tone: bool = False) -> int:
    """MIDI pitch of scale ``step`` (0 = tonic at ``base + tonic_pc``); ``leading_tone`` raises a
    minor 7th degree by a semitone (harmonic minor, for the dominant chord)."""
    scale = SCALES[mode]
    octave, idx = divmod(step, 7)
    pitch = base + tonic_pc + 12 * octave + scale[idx]
    if leading_tone and mode == "minor" and idx == 6:
        pitch += 1
    return pitch


def arrange(
    comp: Composition,
    *,
    tonic: str,
    bpm: float,
    program: int,
    register: str,
    dynamics: str,
    drums: bool,
    bass_program: int | None,
    seconds: float,
    seed: int,
) -> Arrangement:
    """Timed notes for ``seconds`` of ``comp`` in its own mode, transposed to ``tonic``.

    The form repeats if the clip is longer than one pass through it.
    """
    if tonic not in PITCH_CLASSES:
        raise ValueError(f"tonic must be one of {PITCH_CLASSES}, got {tonic!r}")
    rng = random.Random(seed)
    mode = comp.mode
    tonic_pc = PITCH_CLASSES.index(tonic)
    base = REGISTER_BASE[register] - (12 if tonic_pc >= 6 else 0)
    vlo, vhi = VELOCITY_BANDS[dynamics]
    beat = 60.0 / bpm
    notes: list[Note] = []
    programs = {0: program, 1: program}
    if bass_program is not None:
        programs[2] = bass_program
    bar_index = 0
    sections = list(comp.form)
    while bar_index * 4 * beat < seconds:
        for section in sections:
            phrase = comp.phrases[section]
            t0 = bar_index * 4 * beat
            for step, onset, length in phrase.melody:
                start = t0 + onset * beat
                end = start + length * beat * 0.95
                notes.append(Note(0, _midi(tonic_pc, mode, step, base), start, end, rng.randint(vlo, vhi)))
            voicings = comp.voicings.get(section)
            for bar, degree in enumerate(phrase.chords):
                bar_t = t0 + bar * 4 * beat
                chord = voicings[bar] if voicings else [s - 7 for s in _chord_steps(degree)]
                chord_vel = max(30, rng.randint(vlo, vhi) - 15)  # accompaniment under the melody
                pattern = (0.0, 2.0) if bpm < 110 else (0.0, 1.0, 2.0, 3.0)
                for on in pattern:
                    length = 4.0 / len(pattern)
                    for s in chord:
                        pitch = _midi(tonic_pc, mode, s, base, leading_tone=degree % 7 == 4 and not voicings)
                        notes.append(Note(1, pitch, bar_t + on * beat, bar_t + (on + length) * beat * 0.98, chord_vel))
                if bass_program is not None:
                    root = _midi(tonic_pc, mode, degree % 7, 36)
                    for on, p in ((0.0, root), (2.0, root + 7 if rng.random() < 0.5 else root)):
                        notes.append(Note(2, p, bar_t + on * beat, bar_t + (on + 1.9) * beat, min(127, chord_vel + 10)))
                if drums:
                    notes.extend(_drum_bar(bar_t, beat, bpm, vlo, vhi, rng, crash=(bar == 0 and bar_index == 0)))
            bar_index += len(phrase.chords)
            if bar_index * 4 * beat >= seconds:
                break
    notes = [n for n in notes if n.start < seconds]
    notes = [Note(n.channel, n.pitch, n.start, min(n.end, seconds), n.velocity) for n in notes]
    return Arrangement(notes=notes, programs=programs, seconds=seconds)


def _drum_bar(bar_t: float, beat: float, bpm: float, vlo: int, vhi: int, rng: random.Random, crash: bool) -> list[Note]:
    hits = []
    vel = lambda: rng.randint(vlo, vhi)  # noqa: E731
    kicks = (0.0, 2.0) if bpm >= 100 else (0.0, 2.5)
    snares = (1.0, 3.0) if bpm >= 80 else (2.0,)
    hats = [i * 0.5 for i in range(8)] if bpm < 150 else [float(i) for i in range(4)]
    for on in kicks:
        hits.append((DRUM_KICK, on))
    for on in snares:
        hits.append((DRUM_SNARE, on))
    for on in hats:
        hits.append((DRUM_HAT, on))
    if crash:
        hits.append((DRUM_CRASH, 0.0))
    return [Note(9, p, bar_t + on * beat, bar_t + on * beat + 0.1, vel()) for p, on in hits]


def _bach_paths() -> list[str]:
    from music21 import corpus

    # the Bach folder also holds Roman-numeral analyses (not scores); keep the scores
    return sorted(str(p) for p in corpus.getComposer("bach") if "choraleAnalyses" not in str(p))


def usable_chorales() -> list[int]:
    """Indices into the Bach score list that :func:`bach_chorale` accepts (shipped, see
    ``bach_chorales.json``; remade by ``python -m musiclm_pytorch.data.compose``)."""
    from importlib import resources

    text = resources.files("musiclm_pytorch.data").joinpath("bach_chorales.json").read_text()
    return list(json.loads(text)["usable"])


def bach_chorale(index: int) -> Composition:
    """Chorale ``index`` of the music21 Bach corpus: soprano = melody, lower voices = chords.

    Beats keep their rhythm; the phrase structure is cut into 4-bar phrases played in order (form
    ``PPP...``). The chorale's own mode is recorded; it is transposed to the requested tonic.
    """
    try:
        from music21 import corpus
    except ImportError as e:
        raise ImportError("Bach chorales need music21: pip install music21") from e
    paths = _bach_paths()
    if not 0 <= index < len(paths):
        raise ValueError(f"chorale index must be in [0, {len(paths)}), got {index}")
    score = corpus.parse(paths[index])
    key = score.analyze("key")
    mode = "minor" if key.mode == "minor" else "major"
    tonic_pc = key.tonic.pitchClass
    parts = list(score.parts)
    if len(parts) < 4:
        raise ValueError(f"chorale {paths[index]} has {len(parts)} parts, need 4")
    soprano, lower = parts[0] if parts[0].id != "Horn 2" else parts[1], parts[-3:]
    scale = SCALES[mode]

    def to_step(midi: int, base: int = 60) -> int:
        rel = midi - base - tonic_pc
        octave, pc = divmod(rel, 12)
        idx = min(range(7), key=lambda i: abs(scale[i] - pc))
        return octave * 7 + idx

    melody = [(to_step(int(n.pitch.midi)), float(n.offset), float(n.quarterLength))
              for n in soprano.flatten().notes if hasattr(n, "pitch")]  # fmt: skip
    if not melody:
        raise ValueError(f"chorale {paths[index]} has no soprano notes")
    total_beats = max(b + n for _, b, n in melody)
    phrases: dict[str, Phrase] = {}
    voicings: dict[str, list[list[int]]] = {}
    sections = []
    bars_total = int(total_beats // 4)
    for p, bar0 in enumerate(range(0, bars_total, 4)):
        letter = f"P{p}"
        bars = range(bar0, min(bar0 + 4, bars_total))
        mel = [(s, b - bar0 * 4, n) for s, b, n in melody if bar0 * 4 <= b < (bar0 + len(bars)) * 4]
        voic = []
        for bar in bars:
            chord_notes = {
                to_step(int(n.pitch.midi), 48)
                for part in lower
                for n in part.flatten().notes
                if hasattr(n, "pitch") and bar * 4 <= n.offset < bar * 4 + 1
            }
            voic.append(sorted(chord_notes) or [0, 2, 4])
        phrases[letter] = Phrase(tuple(v[0] % 7 for v in voic), mel)
        voicings[letter] = [[s - 7 for s in v] for v in voic]
        sections.append(letter)
    return Composition(
        source=f"bach-{index}", kind="bach_chorale", phrases=phrases, form=sections, voicings=voicings, mode=mode
    )


def _vet(index: int) -> int | None:
    try:
        bach_chorale(index)
    except (ValueError, IndexError, AttributeError):
        return None
    return index


if __name__ == "__main__":  # remake bach_chorales.json: python -m musiclm_pytorch.data.compose
    import multiprocessing
    from pathlib import Path

    with multiprocessing.Pool(2) as pool:
        usable = [i for i in pool.map(_vet, range(len(_bach_paths()))) if i is not None]
    out = Path(__file__).with_name("bach_chorales.json")
    out.write_text(json.dumps({"command": "python -m musiclm_pytorch.data.compose", "total": len(_bach_paths()),
                               "usable": usable}))  # fmt: skip
    print(f"{len(usable)} of {len(_bach_paths())} Bach scores are usable chorales -> {out}")

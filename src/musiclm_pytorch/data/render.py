"""Render arrangements to audio with one persistent FluidSynth synthesizer per worker.

Loading a soundfont costs far more than rendering a clip (FluidR3_GM is 148 MB), so a
:class:`FluidRenderer` keeps its synthesizer and soundfonts for its whole life and resets the
synth between clips. Needs the apt packages ``fluidsynth`` and a General MIDI soundfont
(``fluid-soundfont-gm`` and/or ``timgm6mb-soundfont``) and the Python package ``pyfluidsynth``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .compose import Arrangement

SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"))
DEFAULT_SOUNDFONTS = ("FluidR3_GM.sf2", "TimGM6mb.sf2")
INSTALL_HINT = (
    "install them with: apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont && pip install pyfluidsynth"
)


class SynthUnavailableError(RuntimeError):
    """FluidSynth or a soundfont is missing; the message says what to install."""


def find_soundfonts(names: tuple[str, ...] | list[str] | None = None) -> list[Path]:
    """Paths of the named soundfonts (file names looked up in the apt folders, or paths)."""
    found = []
    for name in names or DEFAULT_SOUNDFONTS:
        candidates = [Path(name)] + [d / name for d in SOUNDFONT_DIRS]
        path = next((c for c in candidates if c.is_file()), None)
        if path is not None:
            found.append(path)
        elif names:  # an explicitly requested soundfont must exist
            raise SynthUnavailableError(
                f"soundfont {name!r} not found in {[str(d) for d in SOUNDFONT_DIRS]}; " + INSTALL_HINT
            )
    if not found:
        raise SynthUnavailableError(
            f"no General MIDI soundfont found (looked for {list(DEFAULT_SOUNDFONTS)} in "
            f"{[str(d) for d in SOUNDFONT_DIRS]}); " + INSTALL_HINT
        )
    return found


class FluidRenderer:
    """A persistent FluidSynth: ``render(arrangement) -> float32 mono [S]``.

    Args:
        sample_rate: output rate.
        soundfonts: soundfont names or paths (default: every default one installed).
        gain: FluidSynth master gain.
    """

    def __init__(self, *, sample_rate: int = 16000, soundfonts: list[str] | None = None, gain: float = 1.0):
        try:
            import fluidsynth
        except (ImportError, OSError) as e:  # OSError: the Python package is there but libfluidsynth is not
            raise SynthUnavailableError(f"FluidSynth is not available ({e}); " + INSTALL_HINT) from e
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(samplerate=float(sample_rate), gain=gain)
        self.soundfonts: dict[str, int] = {}
        for path in find_soundfonts(soundfonts):
            sfid = self.synth.sfload(str(path))
            if sfid < 0:
                raise SynthUnavailableError(f"FluidSynth could not load soundfont {str(path)!r}")
            self.soundfonts[path.name] = sfid

    def _reset(self) -> None:
        self.synth.system_reset()
        for ch in range(16):
            self.synth.all_sounds_off(ch)
        self.synth.get_samples(self.sample_rate // 2)  # flush reverb and chorus tails

    def render(self, arrangement: Arrangement, *, soundfont: str | None = None) -> np.ndarray:
        """Audio of exactly ``arrangement.seconds``; a 30 ms fade-out; peaks kept below 0.99."""
        name = soundfont or next(iter(self.soundfonts))
        if name not in self.soundfonts:
            raise ValueError(f"soundfont {name!r} is not loaded; loaded: {list(self.soundfonts)}")
        sfid = self.soundfonts[name]
        self._reset()
        for channel, program in arrangement.programs.items():
            self.synth.program_select(channel, sfid, 0, program)
        self.synth.program_select(9, sfid, 128, 0)  # GM drum kit on channel 10
        events = [(n.start, 1, n) for n in arrangement.notes] + [(n.end, 0, n) for n in arrangement.notes]
        events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same instant
        total = int(round(arrangement.seconds * self.sample_rate))
        chunks, done = [], 0
        for t, is_on, note in events:
            target = min(total, int(round(t * self.sample_rate)))
            if target > done:
                chunks.append(self.synth.get_samples(target - done))
                done = target
            if is_on:
                self.synth.noteon(note.channel, note.pitch, note.velocity)
            else:
                self.synth.noteoff(note.channel, note.pitch)
        if total > done:
            chunks.append(self.synth.get_samples(total - done))
        stereo = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(2 * total, np.float32)
        wav = stereo.reshape(-1, 2).mean(axis=1)[:total]
        fade = min(len(wav), int(0.03 * self.sample_rate))
        if fade:
            wav[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        peak = float(np.abs(wav).max()) if len(wav) else 0.0
        if peak > 0.99:
            wav *= 0.99 / peak
        return wav

    def close(self) -> None:
        self.synth.delete()

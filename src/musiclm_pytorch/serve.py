"""``musiclm serve``: a web demo of a text-to-music model (gradio; the ``[demo]`` extra).

Three tabs, each one request to the model:

- **Generate**: prompt, seconds, candidates, seed, guidance (semantic, acoustic); one audio player per
  candidate with its MuLaN score against the prompt (the chosen one marked) and its spectrogram;
- **Story**: one piece whose segments follow their own texts (MusicLM's story mode), one line per
  segment, ``text: seconds``;
- **Continue**: an uploaded or recorded audio prompt continued by some seconds, optionally in the style
  of a text.

Limits (:class:`Limits`) keep one request from exhausting the machine: seconds, candidates, prompt
length and story segments are bounded, requests run ``concurrency`` at a time and at most
``queue_size`` wait; a request over a limit gets a message naming the limit, nothing runs. Nothing is
downloaded: the model is the shipped one or a local folder, and gradio's analytics are off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .pipeline import MusicLM

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many run and wait at once."""

    max_seconds: float = 30.0
    max_candidates: int = 4
    max_prompt_chars: int = 300
    max_segments: int = 6
    concurrency: int = 1
    queue_size: int = 8

    def __post_init__(self) -> None:
        if self.max_seconds <= 0 or self.max_candidates < 1 or self.max_prompt_chars < 1 or self.max_segments < 1:
            raise ValueError(f"limits must be positive, got {self}")
        if self.concurrency < 1 or self.queue_size < 1:
            raise ValueError(f"concurrency and queue_size must be >= 1, got {self.concurrency}, {self.queue_size}")

    def check_text(self, text: str, what: str = "prompt") -> str:
        text = (text or "").strip()
        if not text:
            raise ValueError(f"the {what} is empty: describe the music, e.g. 'a calm piano piece in C major'")
        if len(text) > self.max_prompt_chars:
            raise ValueError(f"the {what} has {len(text)} characters; the limit is {self.max_prompt_chars}")
        return text

    def check_seconds(self, seconds: float, what: str = "seconds") -> float:
        seconds = float(seconds)
        if not 0 < seconds <= self.max_seconds:  # also refuses nan
            raise ValueError(f"{what} must be > 0 and at most {self.max_seconds:g}, got {seconds:g}")
        return seconds

    def check_candidates(self, candidates: float) -> int:
        n = int(candidates)
        if not 1 <= n <= self.max_candidates:
            raise ValueError(f"candidates must be between 1 and {self.max_candidates}, got {n}")
        return n

    def parse_story(self, lines: str) -> list[tuple[str, float]]:
        """``text: seconds`` per line -> segments, checked."""
        segments = []
        for n, line in enumerate(row for row in (lines or "").splitlines() if row.strip()):
            text, sep, sec = line.rpartition(":")
            try:
                seconds = float(sec) if sep else float("nan")
            except ValueError:
                seconds = float("nan")
            if seconds != seconds:
                raise ValueError(f"story line {n + 1} {line.strip()!r}: write 'text: seconds'")
            segments.append((self.check_text(text, f"text of story line {n + 1}"), seconds))
        if not segments:
            raise ValueError("the story is empty: one line per segment, 'text: seconds'")
        if len(segments) > self.max_segments:
            raise ValueError(f"the story has {len(segments)} segments; the limit is {self.max_segments}")
        self.check_seconds(sum(s for _, s in segments), "the story's total seconds")
        return segments


def spectrogram_image(wav: torch.Tensor | np.ndarray, sample_rate: int, *, height: int = 128) -> np.ndarray:
    """An RGB image ``[height, frames, 3]`` (uint8) of the log-magnitude spectrogram, low frequencies at
    the bottom, 80 dB of range (magma colours)."""
    from matplotlib import colormaps

    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).flatten()
    n_fft = 1024
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-8))
    db = (db - db.max() + 80).clamp(min=0) / 80  # [F, T] in [0, 1]
    rows = torch.linspace(0, db.shape[0] - 1, height).round().long()
    img = colormaps["magma"](db[rows].flip(0).numpy())[..., :3]
    return (img * 255).astype(np.uint8)


def _audio(wav: torch.Tensor, sample_rate: int) -> tuple[int, np.ndarray]:
    """Gradio audio at -20 dBFS as 16-bit PCM (the magnitude codec's raw output is much quieter)."""
    from .audio import normalize_level

    y = normalize_level(wav.detach().cpu().float()).numpy()
    return sample_rate, (np.clip(y, -1, 1) * 32767).astype(np.int16)


class Demo:
    """The request handlers, separate from the UI so they can be called and tested without a browser."""

    def __init__(self, model: MusicLM, limits: Limits | None = None):
        self.model, self.limits = model, limits or Limits()

    def _seconds_for_one_window(self, seconds: float) -> float:
        if seconds > self.model.max_seconds():
            raise ValueError(f"one window is at most {self.model.max_seconds():g} s: use the Story tab (one "
                             "segment) for longer pieces")  # fmt: skip
        return seconds

    def generate(self, prompt: str, seconds: float, candidates: float, seed: float, semantic_cfg: float,
                 acoustic_cfg: float) -> tuple[list[dict[str, Any]], str]:  # fmt: skip
        """Candidates as ``{"audio": (sr, pcm), "score": float, "chosen": bool, "spectrogram": img}`` and a
        one-line summary."""
        text = self.limits.check_text(prompt)
        seconds = self._seconds_for_one_window(self.limits.check_seconds(seconds))
        n = self.limits.check_candidates(candidates)
        gen = torch.Generator(self.model.device).manual_seed(int(seed))
        out = self.model.generate([text], seconds=seconds, num_candidates=n, generator=gen,
                                  cfg_scale=(float(semantic_cfg), float(acoustic_cfg)))  # fmt: skip
        sr = self.model.sample_rate
        made = [{"audio": _audio(w, sr), "score": float(s), "chosen": i == int(out.chosen[0]),
                 "spectrogram": spectrogram_image(w.cpu().numpy(), sr)}
                for i, (w, s) in enumerate(zip(out.candidates[0], out.scores[0]))]  # fmt: skip
        best = int(out.chosen[0])
        return made, f"{n} candidate(s) of {seconds:g} s; MuLaN picks candidate {best + 1} ({made[best]['score']:.3f})"

    def story(self, lines: str, seed: float) -> tuple[tuple[int, np.ndarray], np.ndarray]:
        segments = self.limits.parse_story(lines)
        gen = torch.Generator(self.model.device).manual_seed(int(seed))
        wav = self.model.generate_long(segments, generator=gen).cpu()
        return _audio(wav, self.model.sample_rate), spectrogram_image(wav.numpy(), self.model.sample_rate)

    def continuation(self, audio: tuple[int, np.ndarray] | None, seconds: float, text: str, seed: float
                     ) -> tuple[tuple[int, np.ndarray], np.ndarray]:  # fmt: skip
        if audio is None:
            raise ValueError("upload or record an audio prompt first")
        sr, pcm = audio
        y = np.asarray(pcm)
        y = y.astype(np.float32) / (32768.0 if np.issubdtype(y.dtype, np.integer) else 1.0)
        if y.ndim == 2:
            y = y.mean(axis=1)
        if len(y) > self.limits.max_seconds * sr:
            raise ValueError(f"the audio prompt lasts {len(y) / sr:.1f} s; the limit is {self.limits.max_seconds:g}")
        seconds = self.limits.check_seconds(seconds)
        style = self.limits.check_text(text, "style text") if (text or "").strip() else None
        gen = torch.Generator(self.model.device).manual_seed(int(seed))
        made = self.model.generate_continuation(torch.from_numpy(y), int(sr), seconds=seconds, text=style,
                                                generator=gen).cpu()  # fmt: skip
        return _audio(made, self.model.sample_rate), spectrogram_image(made.numpy(), self.model.sample_rate)


def build_app(model: MusicLM, limits: Limits | None = None) -> Any:
    """The gradio Blocks app (queued with the limits' concurrency and queue size)."""
    import gradio as gr

    demo = Demo(model, limits)
    lim = demo.limits

    def user_errors(fn: Any) -> Any:
        def run(*args: Any) -> Any:
            try:
                return fn(*args)
            except ValueError as e:  # a limit or a bad input: shown to the user, nothing ran
                raise gr.Error(str(e)) from e

        return run

    window = min(model.max_seconds(), lim.max_seconds)
    with gr.Blocks(title="musiclm-pytorch") as app:
        gr.Markdown("# musiclm-pytorch\nText to music on this machine, from the model in the package "
                    "(no download). It knows General-MIDI-rendered music: instruments, key, tempo, drums.")  # fmt: skip
        with gr.Tab("Generate"):
            prompt = gr.Textbox(label="Prompt", value="a slow sad piano piece in D minor", max_lines=3,
                                elem_id="prompt")  # fmt: skip
            with gr.Row():
                seconds = gr.Slider(1, window, value=min(10.0, window), step=0.5, label="Seconds")
                candidates = gr.Slider(1, lim.max_candidates, value=min(2, lim.max_candidates), step=1,
                                       label="Candidates (reranked by MuLaN)")  # fmt: skip
                seed = gr.Number(value=0, precision=0, label="Seed")
            with gr.Row():
                sem_cfg = gr.Slider(0, 5, value=model.default_cfg_scale[0], step=0.5, label="Guidance: semantic stage")
                ac_cfg = gr.Slider(0, 8, value=model.default_cfg_scale[1], step=0.5,
                                   label="Guidance: acoustic stage")  # fmt: skip
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            summary = gr.Markdown(elem_id="summary")
            slots = []
            for i in range(lim.max_candidates):
                with gr.Row(visible=i == 0) as row:
                    player = gr.Audio(label=f"Candidate {i + 1}", type="numpy", interactive=False,
                                      elem_id=f"candidate-{i + 1}")  # fmt: skip
                    image = gr.Image(label="Spectrogram", type="numpy", interactive=False, height=160)
                slots.append((row, player, image))

            def on_generate(*args: Any) -> list[Any]:
                made, text = demo.generate(*args)
                updates: list[Any] = [text]
                for i, (_, _, _) in enumerate(slots):
                    if i < len(made):
                        c = made[i]
                        label = f"Candidate {i + 1}: MuLaN {c['score']:.3f}" + (" (chosen)" if c["chosen"] else "")
                        updates += [gr.update(visible=True), gr.update(value=c["audio"], label=label),
                                    gr.update(value=c["spectrogram"])]  # fmt: skip
                    else:
                        updates += [gr.update(visible=False), gr.update(value=None), gr.update(value=None)]
                return updates

            outputs = [summary] + [c for slot in slots for c in slot]
            button.click(user_errors(on_generate), [prompt, seconds, candidates, seed, sem_cfg, ac_cfg], outputs,
                         api_name="generate")  # fmt: skip
        with gr.Tab("Story"):
            lines = gr.Textbox(label="Segments: one 'text: seconds' per line", lines=4,
                               value="a calm piano piece in C major: 8\na fast rock song with drums: 8")  # fmt: skip
            story_seed = gr.Number(value=0, precision=0, label="Seed")
            story_button = gr.Button("Generate the story", variant="primary")
            story_audio = gr.Audio(label="Story", type="numpy", interactive=False)
            story_image = gr.Image(label="Spectrogram", type="numpy", interactive=False, height=160)
            story_button.click(user_errors(demo.story), [lines, story_seed], [story_audio, story_image],
                               api_name="story")  # fmt: skip
        with gr.Tab("Continue"):
            prompt_audio = gr.Audio(label="Audio prompt", type="numpy", sources=["upload", "microphone"])
            with gr.Row():
                cont_seconds = gr.Slider(1, lim.max_seconds, value=min(10.0, lim.max_seconds), step=0.5,
                                         label="Seconds to add")  # fmt: skip
                cont_text = gr.Textbox(label="Style text (optional)", max_lines=2)
                cont_seed = gr.Number(value=0, precision=0, label="Seed")
            cont_button = gr.Button("Continue", variant="primary")
            cont_audio = gr.Audio(label="Continuation", type="numpy", interactive=False)
            cont_image = gr.Image(label="Spectrogram", type="numpy", interactive=False, height=160)
            cont_button.click(user_errors(demo.continuation), [prompt_audio, cont_seconds, cont_text, cont_seed],
                              [cont_audio, cont_image], api_name="continue")  # fmt: skip
    app.queue(default_concurrency_limit=lim.concurrency, max_size=lim.queue_size)
    return app


def serve(model: MusicLM, *, limits: Limits | None = None, host: str = "127.0.0.1", port: int = 7860,
          block: bool = True) -> Any:  # fmt: skip
    """Start the demo at ``http://host:port`` (``block=False``: return the running app)."""
    app = build_app(model, limits)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, ssr_mode=False, quiet=True,
               show_error=True)  # fmt: skip
    return app


__all__ = ["Demo", "Limits", "build_app", "serve", "spectrogram_image"]

"""Does a continuation keep its prompt's music? (``musiclm eval continuation``)

For held-out clips: the first ``prompt_seconds`` are the prompt, :meth:`MusicLM.generate_continuation`
makes the next ``seconds``, and the independent judge (:mod:`.judge`) reads key, tempo, drums and
instrument family of the prompt and of the continuation. Agreement of the two, per attribute, beside

- the ceiling: the same judge on the clip's *real* next ``seconds`` against its prompt (the judge's own
  noise and the music's changes bound what any continuation can reach);
- the control: each continuation against *another* clip's prompt (what agreement by chance is).

The judge's reading of the prompt plays the part of the intended tags (:func:`.judge.score`), so a
prompt the judge misreads costs the continuation and the ceiling alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..audio import load_audio
from ..pipeline import MusicLM
from .judge import Judge, accuracy, score


def _as_intended(pred: dict[str, Any]) -> dict[str, Any]:
    """The judge's reading of a prompt, as the tags a continuation is scored against."""
    keys = ("tempo_bpm", "tempo_class", "tonic", "mode", "drums", "family")
    return {k: pred[k] for k in keys}


@torch.no_grad()
def continuation_agreement(
    model: MusicLM,
    rows: Sequence[dict[str, Any]],
    *,
    root: str | Path,
    prompt_seconds: float = 5.0,
    seconds: float = 5.0,
    text: bool = False,
    seed: int = 0,
    judge: Judge | None = None,
    progress: bool = True,
    prompt_blend: float | None = None,
    prompt_continuity: float | None = None,
) -> dict[str, Any]:
    """Judge agreement of continuations with their prompts (module docstring). ``rows``: manifest rows
    (``path`` relative to ``root``) of clips at least ``prompt_seconds + seconds`` long; ``text``: also
    give the clip's caption to the continuation (default: the prompt's own audio embedding only);
    ``prompt_blend``, ``prompt_continuity``: a latent stage's matching to the prompt's frames
    (:meth:`MusicLM.generate_continuation`).
    Unreadable or short clips are skipped and listed."""
    judge = judge or Judge()
    sr = model.sample_rate
    gen = torch.Generator(model.device).manual_seed(seed)
    prompts, made, real, skipped = [], [], [], []
    for row in tqdm(rows, desc="continuations", disable=not progress):
        p, s = int(prompt_seconds * sr), int(seconds * sr)
        try:
            wav, _ = load_audio(Path(root) / row["path"], sample_rate=sr)
        except Exception as e:  # an unreadable clip is skipped and counted, not fatal
            skipped.append(f"{row['path']}: {e}")
            continue
        if len(wav) < p + s:
            skipped.append(f"{row['path']}: {len(wav) / sr:.2f} s, shorter than {prompt_seconds + seconds:g} s")
            continue
        caption = row.get("text") or row.get("full_caption") or row.get("caption") if text else None
        cont = model.generate_continuation(wav[:p], sr, seconds=seconds, text=caption, generator=gen,
                                           prompt_blend=prompt_blend,
                                           prompt_continuity=prompt_continuity).cpu()  # fmt: skip
        prompts.append(judge.predict(wav[:p].numpy(), sr))
        made.append(judge.predict(cont.numpy(), sr))
        real.append(judge.predict(wav[p : p + s].numpy(), sr))
    if len(prompts) < 2:
        raise ValueError(f"fewer than 2 usable clips; skipped: {skipped[:3]}")
    intended = [_as_intended(p) for p in prompts]
    shuffled = intended[1:] + intended[:1]
    return {
        "clips": len(prompts), "skipped": skipped, "prompt_seconds": prompt_seconds, "seconds": seconds,
        "text": text, "seed": seed,
        "continuation": accuracy([score(m, i) for m, i in zip(made, intended)]),
        "real_next_seconds": accuracy([score(r, i) for r, i in zip(real, intended)]),
        "shuffled_prompt": accuracy([score(m, i) for m, i in zip(made, shuffled)]),
    }  # fmt: skip


__all__ = ["continuation_agreement"]

"""Classifier-free guidance sweep: does the guidance scale make the music follow the text?

For each scale ``s`` the same prompts are generated from the same random generator (only ``s``
differs; one candidate, no reranking, so MuLaN does not pick the answer). ``s = 0`` samples the
unconditional logits alone, ``s = 1`` is plain conditional sampling. Per scale:

- **MCC** (MuLan cycle consistency, MusicLM §5): mean MuLaN cosine between a clip and its own prompt,
  and the same with the prompts shuffled (``mcc_shuffled``: what an unrelated prompt scores);
- **prompt R@1**: how often a clip is closer to its own prompt than to every other prompt of the sweep
  (chance ``1 / prompts``);
- the independent judge's accuracy per attribute the prompts state (tempo class, key, drums, family),
  which involves no MuLaN at all;
- ``distinct_semantic``: distinct semantic ids per clip over clip length (diversity; guidance tends to
  lower it).

The MuLaN that scores MCC is the one that conditions the model, so MCC can reward what MuLaN hears
rather than what a listener hears; the judge is there as the independent check.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..pipeline import MusicLM, _resample
from .judge import Judge, accuracy, score


def load_prompts(manifest: str | Path, num: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``num`` rows of a corpus manifest as ``{text, tags}`` (the full caption, which states every
    recorded attribute), drawn with ``seed``."""
    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("full_caption") or r.get("caption")]
    if len(rows) < 2:
        raise ValueError(f"{str(manifest)!r} has {len(rows)} captioned rows; a sweep needs at least 2")
    chosen = random.Random(seed).sample(rows, min(num, len(rows)))
    return [{"text": r.get("full_caption") or r["caption"], "tags": r.get("tags") or {}} for r in chosen]


@torch.no_grad()
def guidance_sweep(
    model: MusicLM,
    prompts: Sequence[dict[str, Any]],
    *,
    scales: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 5.0),
    seconds: float = 4.0,
    seed: int = 0,
    judge: Judge | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate every prompt at every scale and score the clips (see the module docstring)."""
    if len(prompts) < 2:
        raise ValueError(f"a guidance sweep needs at least 2 prompts, got {len(prompts)}")
    if not scales:
        raise ValueError("scales is empty")
    texts = [p["text"] for p in prompts]
    mulan = model.conditioner.mulan
    text_latents = mulan.get_text_latents(raw_texts=texts)  # [P, D]
    judge = judge if judge is not None else Judge()
    per_scale = []
    for s in tqdm(scales, desc="guidance scales", disable=not progress):
        out = model.generate(texts, seconds=seconds, num_candidates=1, cfg_scale=float(s),
                             generator=torch.Generator().manual_seed(seed))  # fmt: skip
        audio = mulan.get_audio_latents(_resample(out.wavs, model.sample_rate, mulan.sample_rate))
        sim = audio @ text_latents.T  # [P, P]: clip i against prompt j
        own = sim.diag()
        shuffled = sim.roll(1, dims=1).diag()
        r1 = (sim.argmax(dim=1) == torch.arange(len(texts))).float().mean()
        wavs = out.wavs.float().numpy()
        judged = [score(judge.predict(w, model.sample_rate), p["tags"]) for w, p in zip(wavs, prompts)]
        distinct = np.mean([len(set(row.tolist())) / len(row) for row in out.semantic])
        per_scale.append({
            "scale": float(s), "mcc": round(float(own.mean()), 4), "mcc_shuffled": round(float(shuffled.mean()), 4),
            "prompt_r1": round(float(r1), 4), "judge": accuracy(judged), "distinct_semantic": round(float(distinct), 4),
        })  # fmt: skip
    return {"prompts": len(prompts), "seconds": seconds, "seed": seed, "chance_prompt_r1": round(1 / len(prompts), 4),
            "per_scale": per_scale}  # fmt: skip


def plot_sweep(report: dict[str, Any], path: str | Path) -> Path:
    """MCC (own vs shuffled prompt), prompt R@1 and judge accuracies against the guidance scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_scale"]
    xs = [r["scale"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(xs, [r["mcc"] for r in rows], "o-", label="MCC (own prompt)")
    a.plot(xs, [r["mcc_shuffled"] for r in rows], "o--", label="MCC (other prompt)")
    a.set_xlabel("guidance scale")
    a.set_ylabel("MuLaN cosine")
    a.legend()
    b.plot(xs, [r["prompt_r1"] for r in rows], "o-", label="prompt R@1")
    b.axhline(report["chance_prompt_r1"], color="gray", lw=0.8, ls=":", label="chance R@1")
    for key in ("family", "drums", "tempo_class", "tonic"):
        ys = [r["judge"].get(key, {}).get("accuracy") for r in rows]
        if any(y is not None for y in ys):
            b.plot(xs, [np.nan if y is None else y for y in ys], ".--", label=f"judge {key}")
    b.set_xlabel("guidance scale")
    b.set_ylim(0, 1.05)
    b.legend(fontsize=7)
    fig.suptitle(f"guidance sweep: {report['prompts']} prompts, {report['seconds']} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)

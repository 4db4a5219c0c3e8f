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
  lower it);
- ``semantic_key``: with the built-in musical semantic tokenizer, the key of the *generated semantic
  ids* themselves (the mean chroma of their cluster centres, Krumhansl-Kessler), scored against the
  prompt's key: whether the semantic stage follows the text, with the codec and the acoustic stages
  out of the picture.

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

from ..lm import SamplingConfig
from ..pipeline import MusicLM, _resample
from ..semantic import SemanticTokenizer
from .judge import Judge, accuracy, key_from_chroma, key_scores, score


def semantic_key(ids: torch.Tensor, tokenizer: SemanticTokenizer) -> tuple[str, str] | None:
    """``(tonic, mode)`` of semantic ids ``[T]`` from the mean chroma of their cluster centres, or
    ``None`` when the tokenizer's features are not the built-in musical ones (chroma first)."""
    if tokenizer.config.get("features", "musical") != "musical":
        return None
    chroma = tokenizer.centers[:, :12] * tokenizer.std[:12] + tokenizer.mean[:12]  # [V, 12] un-standardised
    tonic, mode, _ = key_from_chroma(chroma[ids.long()].mean(0).double().numpy())
    return tonic, mode


def load_prompts(manifest: str | Path, num: int, *, seed: int = 0, split: str = "val") -> list[dict[str, Any]]:
    """``num`` rows of a corpus manifest as ``{text, tags}`` (the full caption, which states every
    recorded attribute), drawn with ``seed``. Rows that already are ``{text, tags}`` (a prompt set such
    as ``benchmarks/prompts/freeform_v1.jsonl``) are taken as they are. ``split="test"`` reads the sealed
    test split (:func:`~musiclm_pytorch.data.datasets.check_split`)."""
    from ..data.datasets import check_split

    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines() if line.strip()]
    check_split(rows, split, manifest)
    rows = [r for r in rows if r.get("text") or r.get("full_caption") or r.get("caption")]
    if len(rows) < 2:
        raise ValueError(f"{str(manifest)!r} has {len(rows)} captioned rows; a sweep needs at least 2")
    chosen = random.Random(seed).sample(rows, min(num, len(rows)))
    return [{"text": r.get("text") or r.get("full_caption") or r["caption"], "tags": r.get("tags") or {}}
            for r in chosen]  # fmt: skip


@torch.no_grad()
def guidance_sweep(
    model: MusicLM,
    prompts: Sequence[dict[str, Any]],
    *,
    scales: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 5.0),
    seconds: float = 4.0,
    seed: int = 0,
    judge: Judge | None = None,
    semantic_only: bool = False,
    progress: bool = True,
    prior_mix: float | None = None,
    acoustic_cfg_scale: float | None = None,
    num_candidates: int = 1,
    frame_blend: float | None = None,
) -> dict[str, Any]:
    """Generate every prompt at every scale and score the clips (see the module docstring).
    ``semantic_only`` samples the semantic stage alone (paper temperature 1.0) and reports only the
    semantic measures: fast enough for hundreds of prompts. ``prior_mix``: the retrieval prior's share in
    the semantic LM's next-id distribution where the model has one (default: the prior's own).
    ``acoustic_cfg_scale``: hold the acoustic stages' guidance at this scale and sweep the semantic
    stage's only (default: one scale for every stage). ``num_candidates``: samples per prompt, the one
    MuLaN scores highest kept (reranking inflates MuLaN's own figures; the judge is independent).
    ``frame_blend``: share of matched real frames with a latent stage and a prior frame bank
    (:meth:`MusicLM.match_frames`; default the prior's own)."""
    if len(prompts) < 2:
        raise ValueError(f"a guidance sweep needs at least 2 prompts, got {len(prompts)}")
    if not scales:
        raise ValueError("scales is empty")
    texts = [p["text"] for p in prompts]
    mulan = model.conditioner.mulan
    if semantic_only:
        tc = model.text_condition(texts)
        cond_ids, prior_lp, acoustic, text, controls, key_bias = tc[:6]
        sem_latent = model.semantic_latent(tc)
    else:
        text_latents = mulan.get_text_latents(raw_texts=texts)  # [P, D]
        scorer = judge if judge is not None else Judge()
    per_scale: list[dict[str, Any]] = []
    for s in tqdm(scales, desc="guidance scales", disable=not progress):
        if semantic_only:
            semantic = model.semantic_lm.generate(
                steps=max(1, int(seconds * model.semantic_tokenizer.frame_rate)),
                cond_ids=cond_ids,
                sampling=SamplingConfig(temperature=1.0, cfg_scale=float(s)),
                generator=torch.Generator().manual_seed(seed),
                prior_log_probs=prior_lp,
                prior_mix=model.prior_mix(prior_mix),
                cond_latent=sem_latent,
                controls=controls,
                logit_bias=key_bias,
            )
            per_scale.append({"scale": float(s), **_semantic_measures(semantic, prompts, model.semantic_tokenizer)})
            continue
        scale = float(s) if acoustic_cfg_scale is None else (float(s), float(acoustic_cfg_scale))
        out = model.generate(texts, seconds=seconds, num_candidates=num_candidates, cfg_scale=scale,
                             generator=torch.Generator().manual_seed(seed), prior_mix=prior_mix,
                             frame_blend=frame_blend)  # fmt: skip
        audio = mulan.get_audio_latents(_resample(out.wavs, model.sample_rate, mulan.sample_rate))
        sim = audio @ text_latents.T  # [P, P]: clip i against prompt j
        own = sim.diag()
        shuffled = sim.roll(1, dims=1).diag()
        r1 = (sim.argmax(dim=1) == torch.arange(len(texts))).float().mean()
        wavs = out.wavs.float().numpy()
        judged = [score(scorer.predict(w, model.sample_rate), p["tags"]) for w, p in zip(wavs, prompts)]
        per_scale.append({
            "scale": float(s), "mcc": round(float(own.mean()), 4), "mcc_shuffled": round(float(shuffled.mean()), 4),
            "prompt_r1": round(float(r1), 4), "judge": accuracy(judged),
            **_semantic_measures(out.semantic, prompts, model.semantic_tokenizer),
        })  # fmt: skip
    return {"prompts": len(prompts), "seconds": seconds, "seed": seed, "prior_mix": model.prior_mix(prior_mix),
            "acoustic_cfg_scale": acoustic_cfg_scale, "num_candidates": num_candidates, "frame_blend": frame_blend,
            "chance_prompt_r1": round(1 / len(prompts), 4),
            "semantic_only": semantic_only, "per_scale": per_scale}  # fmt: skip


def _semantic_measures(
    semantic: torch.Tensor, prompts: Sequence[dict[str, Any]], tokenizer: SemanticTokenizer
) -> dict[str, Any]:
    distinct = np.mean([len(set(row.tolist())) / len(row) for row in semantic])
    keyed = [
        key_scores(*k, p["tags"]["tonic"], p["tags"]["mode"])
        for row, p in zip(semantic, prompts)
        if "tonic" in p["tags"] and "mode" in p["tags"] and (k := semantic_key(row, tokenizer))
    ]
    return {"distinct_semantic": round(float(distinct), 4), "semantic_key": accuracy(keyed)}


def plot_sweep(report: dict[str, Any], path: str | Path) -> Path:
    """MCC (own vs shuffled prompt), prompt R@1 and judge accuracies against the guidance scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_scale"]
    xs = [r["scale"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    if report.get("semantic_only"):
        a.plot(xs, [r["distinct_semantic"] for r in rows], "o-", label="distinct semantic ids / length")
        a.set_ylabel("diversity")
    else:
        a.plot(xs, [r["mcc"] for r in rows], "o-", label="MCC (own prompt)")
        a.plot(xs, [r["mcc_shuffled"] for r in rows], "o--", label="MCC (other prompt)")
        a.set_ylabel("MuLaN cosine")
        b.plot(xs, [r["prompt_r1"] for r in rows], "o-", label="prompt R@1")
        b.axhline(report["chance_prompt_r1"], color="gray", lw=0.8, ls=":", label="chance R@1")
    a.set_xlabel("guidance scale")
    a.legend()
    for source, key in (("judge", "family"), ("judge", "drums"), ("judge", "tempo_class"), ("judge", "key_tonic"),
                        ("semantic_key", "key_tonic")):  # fmt: skip
        ys = [r.get(source, {}).get(key, {}).get("accuracy") for r in rows]
        if any(y is not None for y in ys):
            b.plot(xs, [np.nan if y is None else y for y in ys], ".--", label=f"{source} {key}")
    b.set_xlabel("guidance scale")
    b.set_ylim(0, 1.05)
    b.legend(fontsize=7)
    fig.suptitle(f"guidance sweep: {report['prompts']} prompts, {report['seconds']} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)

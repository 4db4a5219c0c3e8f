"""MuLaN evaluation: retrieval (R@k, median rank) and zero-shot tagging (accuracy, ROC-AUC).

Retrieval pairs each held-out clip with its ``full_caption`` (every recorded attribute, in a held-out
wording) when the row has one, else its first caption. Zero-shot tagging scores each clip against one
prompt per value of an attribute (``data.captions.attribute_prompts``) over the tags the data records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.captions import attribute_prompt_sets, attribute_prompts
from ..data.datasets import BadRow, CaptionedAudioDataset, ClipOptions, SkipStats
from ..mulan.model import MuLaN

ZERO_SHOT_ATTRIBUTES = ("family", "drums", "tempo_class", "mode", "tonic")


def retrieval_metrics(sim: np.ndarray) -> dict[str, float]:
    """``sim [N_queries, N_items]`` with the match of query i at item i -> R@1/5/10, median rank."""
    order = np.argsort(-sim, axis=1)
    ranks = np.array([int(np.where(order[i] == i)[0][0]) + 1 for i in range(len(sim))])
    return {
        "R@1": float((ranks <= 1).mean()),
        "R@5": float((ranks <= 5).mean()),
        "R@10": float((ranks <= 10).mean()),
        "median_rank": float(np.median(ranks)),
        "n": int(len(ranks)),
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged); NaN if one class is absent."""
    labels = labels.astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average tied ranks
        tie = scores == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


@torch.no_grad()
def embed_rows(
    mulan: MuLaN,
    rows: list[dict[str, Any]],
    *,
    batch_size: int = 16,
    seconds: float | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, list[dict[str, Any]], SkipStats]:
    """Audio latents ``[N, D]`` of ``rows`` (whole clips, windowed if longer than MuLaN's window;
    ``seconds`` crops the centre), the rows that decoded, and the skipped ones."""
    opts = ClipOptions(sample_rate=mulan.sample_rate, crop_seconds=seconds, crop="center", min_seconds=1.0)
    ds = CaptionedAudioDataset(rows, opts)
    latents, kept, stats = [], [], SkipStats()
    items: list[dict[str, Any]] = []

    def flush() -> None:  # one forward for equal-length clips, one per clip otherwise
        lengths = {it["wav"].shape[-1] for it in items}
        groups = [items] if len(lengths) == 1 else [[it] for it in items]
        for g in groups:
            latents.append(mulan.get_audio_latents(torch.stack([it["wav"] for it in g]), windowed=True))
        items.clear()

    for i in tqdm(range(len(ds)), desc="embedding audio", disable=not progress):
        item = ds[i]
        if isinstance(item, BadRow):
            stats.add(item)
            continue
        items.append(item)
        kept.append(rows[i])
        if len(items) == batch_size:
            flush()
    if items:
        flush()
    if not latents:
        raise ValueError("no clip could be embedded: " + stats.report())
    return torch.cat(latents), kept, stats


@torch.no_grad()
def text_latents(mulan: MuLaN, texts: list[str], *, batch_size: int = 64) -> torch.Tensor:
    return torch.cat(
        [mulan.get_text_latents(raw_texts=texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    )


@torch.no_grad()
def evaluate_mulan(
    mulan: MuLaN,
    rows: list[dict[str, Any]],
    *,
    max_clips: int | None = None,
    progress: bool = False,
    audio: tuple[torch.Tensor, list[dict[str, Any]]] | None = None,
    prompt_ensemble: bool = True,
) -> dict[str, Any]:
    """Retrieval both ways and zero-shot tagging on ``rows`` (held-out clips).

    Zero-shot tagging scores each clip against one text latent per attribute value: the average of
    a prompt ensemble (:func:`attribute_prompt_sets`, as CLIP does) or, with
    ``prompt_ensemble=False``, a single prompt (:func:`attribute_prompts`). Both are reported
    (``zero_shot`` follows ``prompt_ensemble``; ``zero_shot_single_prompt`` / ``zero_shot_ensemble``
    hold the other)."""
    was_training = mulan.training
    mulan.eval()
    rows = rows[:max_clips] if max_clips else rows
    if audio is None:
        a, kept, stats = embed_rows(mulan, rows, progress=progress)
        skipped = stats.report()
    else:
        (a, kept), skipped = audio, "no rows skipped"
    captions = [r.get("full_caption") or r["captions"][0] for r in kept]
    a, t = a.float().cpu(), text_latents(mulan, captions).float().cpu()  # the model may sit on a GPU
    sim = (a @ t.t()).numpy()
    report: dict[str, Any] = {
        "clips": len(kept),
        "skipped": skipped,
        "text_to_audio": retrieval_metrics(sim.T),
        "audio_to_text": retrieval_metrics(sim),
        "chance_R@1": 1 / len(kept),
        "chance_R@10": min(1.0, 10 / len(kept)),
        "zero_shot": {},
    }
    ensemble = _zero_shot(mulan, a, kept, ensemble=True)
    single = _zero_shot(mulan, a, kept, ensemble=False)
    report["zero_shot"] = ensemble if prompt_ensemble else single
    report["zero_shot_single_prompt" if prompt_ensemble else "zero_shot_ensemble"] = (
        single if prompt_ensemble else ensemble
    )
    mulan.train(was_training)
    return report


def _zero_shot(mulan: MuLaN, a: torch.Tensor, kept: list[dict[str, Any]], *, ensemble: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in ZERO_SHOT_ATTRIBUTES:
        values = [r.get("tags", {}).get(attribute) for r in kept]
        if any(v is None for v in values):
            continue
        if ensemble:
            sets = attribute_prompt_sets(attribute)
            names = list(sets)
            value_latents = torch.stack([F.normalize(text_latents(mulan, sets[n]).mean(0), dim=-1) for n in names])
        else:
            prompts = attribute_prompts(attribute)
            names = list(prompts)
            value_latents = text_latents(mulan, [prompts[n] for n in names])
        scores = (a @ value_latents.float().cpu().t()).numpy()  # [N, V]
        truth = np.array([names.index(str(v)) for v in values])
        aucs = [roc_auc(scores[:, j], truth == j) for j in range(len(names))]
        out[attribute] = {
            "accuracy": float((scores.argmax(1) == truth).mean()),
            "roc_auc_macro": float(np.nanmean(aucs)),
            "chance": float(np.bincount(truth).max() / len(truth)),  # always predicting the majority
            "classes": len(names),
        }
    return out


def plot_similarity(mulan: MuLaN, rows: list[dict[str, Any]], path: str | Path, *, n: int = 32) -> Path:
    """Heat map of cosine similarity between ``n`` clips and their captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, kept, _ = embed_rows(mulan, rows[:n])
    t = text_latents(mulan, [r.get("full_caption") or r["captions"][0] for r in kept])
    sim = F.normalize(a, dim=-1) @ F.normalize(t, dim=-1).t()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(sim.numpy(), cmap="viridis")
    ax.set_xlabel("caption")
    ax.set_ylabel("clip")
    ax.set_title("MuLaN cosine similarity (diagonal = matching pairs)")
    fig.colorbar(im)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

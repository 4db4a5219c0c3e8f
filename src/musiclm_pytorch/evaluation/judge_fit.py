"""Calibrate the judge on freshly rendered clips with known attributes, and judge a folder.

``musiclm eval judge-fit``: render a calibration corpus in memory (its own seed, never a training
corpus), extract the judge's features, fit the drum and instrument-family classifiers on 80 % of
the *sources*, and report every attribute's accuracy on the other 20 % (the judge's ceiling).

``musiclm eval judge``: judge a folder of generated audio against the prompts' intended attributes
(JSONL rows with ``path`` or ``id`` and ``tags``); writes a JSON report and a PNG summary.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..audio import AudioLoadError, load_audio
from .judge import Judge, LinearModel, accuracy, extract, fit_linear, score

_RENDERER: Any = None


def _init(sample_rate: int, soundfonts: list[str] | None) -> None:
    global _RENDERER
    from ..data.render import FluidRenderer

    _RENDERER = FluidRenderer(sample_rate=sample_rate, soundfonts=soundfonts)


def _features(spec: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    from ..data.synth import render_spec

    try:
        wav, row = render_spec(spec, _RENDERER, captions_per_clip=1)
    except (ValueError, ImportError):
        return None
    return extract(wav, _RENDERER.sample_rate), row["tags"]


def calibration_set(
    *,
    num_clips: int,
    seconds: float,
    seed: int,
    workers: int = 2,
    soundfonts: list[str] | None = None,
    bach_fraction: float = 0.1,
    progress: bool = True,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Render ``num_clips`` clips (one per source) and return ``[(features, tags)]``."""
    from ..data.synth import SynthConfig, plan

    cfg = SynthConfig(num_clips=num_clips, seconds=seconds, seed=seed, renders_per_source=1, val_fraction=0.0,
                      bach_fraction=bach_fraction, soundfonts=soundfonts, workers=workers)  # fmt: skip
    specs = plan(cfg)
    out = []
    bar = tqdm(total=len(specs), desc="judge calibration", disable=not progress)
    if workers <= 1:
        _init(cfg.sample_rate, soundfonts)
        results = map(_features, specs)
        for r in results:
            out.append(r)
            bar.update()
    else:
        with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(cfg.sample_rate, soundfonts)) as pool:
            for r in pool.imap(_features, specs, chunksize=4):
                out.append(r)
                bar.update()
    bar.close()
    return [r for r in out if r is not None]


def _by_source_split(items: list, seed: int, test_fraction: float) -> tuple[list, list]:
    sources = sorted({tags["source"] for _, tags in items})
    random.Random(seed).shuffle(sources)
    test_sources = set(sources[: max(1, int(len(sources) * test_fraction))])
    fit = [x for x in items if x[1]["source"] not in test_sources]
    test = [x for x in items if x[1]["source"] in test_sources]
    return fit, test


def fit_judge(
    items: list[tuple[dict[str, Any], dict[str, Any]]], *, seed: int = 0, test_fraction: float = 0.2
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the classifiers; returns ``(weights, report)`` with held-out accuracies per attribute."""
    fit, test = _by_source_split(items, seed, test_fraction)
    if len(fit) < 20 or not test:
        raise ValueError(f"need at least 20 fitting clips and some test clips, got {len(fit)} and {len(test)}")
    drums = fit_linear(np.array([f["drum_features"] for f, _ in fit]), [str(t["drums"]) for _, t in fit])
    family = fit_linear(np.array([f["timbre_features"] for f, _ in fit]), [t["family"] for _, t in fit], c=0.5)
    weights = {"drums": drums.to_json(), "family": family.to_json()}
    judge = Judge(weights)
    scores = [score(judge.predict_features(f), t) for f, t in test]
    report = {"fit_clips": len(fit), "test_clips": len(test), "accuracy": accuracy(scores)}
    return weights, report


def judge_folder(
    prompts: str | Path, *, audio_dir: str | Path | None = None, judge: Judge | None = None, progress: bool = True
) -> dict[str, Any]:
    """Judge every prompt row (``path`` or ``id`` -> ``audio_dir/{id}.*``) against its ``tags``."""
    judge = judge or Judge()
    prompts = Path(prompts)
    rows = [json.loads(line) for line in prompts.read_text().splitlines() if line.strip()]
    base = Path(audio_dir) if audio_dir else prompts.parent
    per_clip, scores, skipped = [], [], []
    for row in tqdm(rows, desc="judging", disable=not progress):
        path = base / row["path"] if "path" in row else next(iter(sorted(base.glob(f"{row['id']}.*"))), None)
        if path is None:
            skipped.append({"id": row.get("id"), "reason": "missing file"})
            continue
        try:
            wav, sr = load_audio(path)
            pred = judge.predict(wav.numpy(), sr)
        except (AudioLoadError, ValueError) as e:
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        s = score(pred, row.get("tags", {}))
        scores.append(s)
        per_clip.append({"path": str(path), "prediction": pred, "correct": s})
    return {"accuracy": accuracy(scores), "clips": len(per_clip), "skipped": skipped, "per_clip": per_clip}


def plot_accuracy(acc: dict[str, dict[str, float]], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(acc)
    values = [acc[n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
    bars = ax.bar(names, values, color="#4472c4")
    for b, v, n in zip(bars, values, names):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.02, f"{v:.2f}\nn={acc[n]['n']}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    plt.xticks(rotation=30, ha="right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_fit(
    *, num_clips: int, seconds: float, seed: int, workers: int, out: str | Path, progress: bool = True
) -> dict[str, Any]:
    start = time.perf_counter()
    items = calibration_set(num_clips=num_clips, seconds=seconds, seed=seed, workers=workers, progress=progress)
    weights, report = fit_judge(items, seed=seed)
    report.update(
        command=f"musiclm eval judge-fit --num-clips {num_clips} --seconds {seconds} --seed {seed} --out {out}",
        seconds=round(time.perf_counter() - start, 1),
    )
    weights["meta"] = report
    Path(out).write_text(json.dumps(weights))
    return report


__all__ = ["LinearModel", "calibration_set", "fit_judge", "judge_folder", "plot_accuracy", "run_fit"]

"""The offline text-to-music evaluation suite (``musiclm eval generate``): one report per model and prompt set.

For each prompt, one clip (or the best of ``num_candidates`` by MuLaN, which inflates the MuLaN
figures, never the judge's), then:

- **adherence by the independent judge** (:mod:`.judge`: tempo, key, drums, instrument family; no
  MuLaN), per attribute the prompts state, beside the same judge on the prompts' *real* clips where the
  prompt set is a corpus manifest (the ceiling) and on the generations scored against *another*
  prompt's tags (chance, as the prompt set's own distribution gives it);
- **MCC** (MusicLM §5): MuLaN cosine of each clip with its prompt and with a shuffled prompt, and
  prompt R@1 among the set;
- **Fréchet distance** between the MuLaN audio embeddings of the generations and of the real clips
  (FAD's formula on MuLaN's 128-d space; the real clips' own split-half distance is reported beside it
  as the floor a finite sample gives);
- **semantic diversity**: distinct semantic ids per clip over its length;
- **memorisation audit** (MusicLM §6): with the training set's semantic ids, for every 5 s window of
  each generation the best-aligned training window's share of equal ids; exact (share 1) and
  approximate (share >= 0.5 by default) matches are counted, beside the same audit of the real
  held-out clips' ids (what unrelated music of the same corpus scores); and again on the ids of the
  generated *audio* tokenized anew (``memorisation_audio``), which is where copied audio shows; and the
  paper's own audit (:func:`prompted_memorisation`, ``eval generate --memorisation-clips N``): training
  clips' semantic ids as a prompt, the continuation against what the clip holds next.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import load_audio
from ..pipeline import MusicLM, _resample
from .guidance import _semantic_measures
from .judge import Judge, accuracy, score


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a [N, D]`` and ``b [M, D]``."""
    from scipy import linalg

    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N >= 2, D] sets of one D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def longest_copied_run(generated: Sequence[torch.Tensor], train: Sequence[torch.Tensor]) -> list[int]:
    """For each generated id sequence, the length of its longest run of consecutive ids that also stands,
    in that order, anywhere in a training sequence (the longest common substring with the training set):
    a binary search over the run length, each length's n-grams compared as 64-bit hashes."""
    weights = np.random.default_rng(0).integers(1, 2**62, size=max(len(g) for g in generated), dtype=np.int64) | 1

    def hashes(seqs: Sequence[np.ndarray], n: int) -> np.ndarray:  # int64 arithmetic wraps: a hash mod 2^64
        parts = [np.lib.stride_tricks.sliding_window_view(s, n) @ weights[:n] for s in seqs if len(s) >= n]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    bank = [t.numpy().astype(np.int64) for t in train]
    cache: dict[int, np.ndarray] = {}
    out = []
    for seq in generated:
        g = seq.numpy().astype(np.int64)
        lo, hi = 0, len(g)  # the longest copied run lies in [lo, hi]: a run of n copied holds runs of n - 1
        while lo < hi:
            n = (lo + hi + 1) // 2
            if n not in cache:
                cache[n] = np.unique(hashes(bank, n))
            known, h = cache[n], hashes([g], n)
            at = np.searchsorted(known, h).clip(max=len(known) - 1)
            if len(known) and (known[at] == h).any():
                lo = n
            else:
                hi = n - 1
        out.append(lo)
    return out


def memorisation(generated: Sequence[torch.Tensor], train: Sequence[torch.Tensor], *, window: int = 125,
                 approx: float = 0.5, run_gate: int = 75) -> dict[str, Any]:  # fmt: skip
    """For every non-overlapping ``window`` of each generated id sequence, the largest share of equal ids
    in any aligned training window; counts of exact (1.0) and approximate (``>= approx``) matches. And
    the gate of issue 18: each sequence's longest run of ids copied from a training sequence
    (:func:`longest_copied_run`), and how many hold one of ``run_gate`` ids (3 s at 25 Hz) or more."""
    lengths = {len(t) for t in train}
    if not train or min(lengths) < window:
        raise ValueError(f"training sequences must hold at least {window} ids")
    bank = torch.stack([t[: min(lengths)].long() for t in train])  # [N, L]
    windows = bank.unfold(1, window, 1)  # [N, L - window + 1, window]
    best = []
    for seq in generated:
        for start in range(0, len(seq) - window + 1, window):
            g = seq[start : start + window].long()
            best.append(float((windows == g).float().mean(-1).max()))
    if not best:
        raise ValueError(f"generated sequences are shorter than one window ({window} ids)")
    arr = np.array(best)
    runs = longest_copied_run(generated, train)
    return {"windows": len(arr), "window_ids": window, "mean_best_share": round(float(arr.mean()), 4),
            "max_best_share": round(float(arr.max()), 4), "exact": int((arr >= 1.0).sum()),
            f"approx_ge_{approx}": int((arr >= approx).sum()), "longest_copied_run_ids": max(runs),
            "median_longest_copied_run_ids": float(np.median(runs)),
            f"sequences_with_copied_run_ge_{run_gate}": sum(r >= run_gate for r in runs)}  # fmt: skip


@torch.no_grad()
def prompted_memorisation(model: MusicLM, items: Sequence[dict[str, Any]], *, prompt_seconds: Sequence[float] = (0.0,
                          2.5, 5.0), seconds: float = 5.0, approx: float = 0.5, batch_size: int = 16, seed: int = 0,
                          progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """The paper's memorisation audit (MusicLM §6): the semantic stage, conditioned as in training on a
    *training* clip's own MuLaN audio latent and primed with the clip's first ``prompt_seconds`` of
    semantic ids, continues for ``seconds``; the continuation is compared id by id with what the clip
    really holds next. Per prompt length: the mean share of equal ids, the exact (share 1) and
    approximate (share >= ``approx``) matches, and the same share against *another* clip's next ids
    (what chance agreement between two clips of the corpus is). ``items``: tokenized training clips
    (``semantic`` ids and ``mulan`` latent, as ``data tokenize`` stores them)."""
    from ..lm.transformer import SamplingConfig
    from ..semantic.beat import grid_of_ids

    rate = float(model.semantic_tokenizer.frame_rate)
    steps = int(round(seconds * rate))
    need = int(round(max(prompt_seconds) * rate)) + steps
    if need > model.semantic_lm.max_seq_len:
        raise ValueError(f"a {max(prompt_seconds):g} s prompt and a {seconds:g} s continuation exceed the semantic "
                         f"stage's window of {model.semantic_lm.max_seq_len / rate:g} s")  # fmt: skip
    clips = [it for it in items if len(it["semantic"]) >= need and "mulan" in it]
    if len(clips) < 2:
        raise ValueError(f"the audit needs 2 training clips of at least {need / rate:g} s with MuLaN latents, got "
                         f"{len(clips)}")  # fmt: skip
    sem_cfg, _ = model.default_cfg_scale
    sampling = SamplingConfig(model.sampling_temperatures(None)[0], 0, 1.0, sem_cfg)
    reads_beat = bool(getattr(model.semantic_lm, "beat_harmonics", 0))
    gen = torch.Generator(model.device).manual_seed(seed)
    report: dict[str, Any] = {"clips": len(clips), "continuation_seconds": seconds}
    batches = []  # each batch's ids, conditioning and beat grids, the same for every prompt length
    for start in range(0, len(clips), batch_size):
        part = clips[start : start + batch_size]
        cond = model.audio_condition(torch.stack([it["mulan"].float() for it in part]).to(model.device))
        beat = None
        if reads_beat:  # the clip's own grid, as in training (its phase counted from frame 0)
            beat = torch.tensor([grid_of_ids(model.semantic_tokenizer, it["semantic"].long()) for it in part])
        batches.append((torch.stack([it["semantic"][:need].long() for it in part]).to(model.device), cond,
                        model.semantic_latent(cond), beat))  # fmt: skip
    for p_sec in prompt_seconds:
        p = int(round(p_sec * rate))
        shares, chance = [], []
        for ids, cond, latent, beat in tqdm(batches, desc=f"memorisation, {p_sec:g} s prompt", disable=not progress):
            new = model.semantic_lm.generate(steps=steps, cond_ids=cond.cond_ids, prime=ids[:, :p] if p else None,
                                             sampling=sampling, generator=gen, prior_mix=model.prior_mix(None),
                                             prior_log_probs=cond.prior_log_probs, cond_latent=latent,
                                             beat=beat, controls=cond.controls,
                                             logit_bias=cond.key_bias)[:, -steps:]  # fmt: skip
            target = ids[:, p : p + steps]
            shares += (new == target).float().mean(1).tolist()
            chance += (new == target.roll(1, dims=0)).float().mean(1).tolist()
        arr = np.array(shares)
        report[f"prompt_{p_sec:g}s"] = {
            "mean_share": round(float(arr.mean()), 4), "max_share": round(float(arr.max()), 4),
            "exact": int((arr >= 1.0).sum()), f"approx_ge_{approx}": int((arr >= approx).sum()),
            "mean_share_other_clip": round(float(np.mean(chance)), 4),
        }  # fmt: skip
    return report


def per_value(preds: Sequence[dict[str, Any]], tags: Sequence[dict[str, Any]], attribute: str) -> dict[str, Any]:
    """Per value of ``attribute`` that the tags ask for: how many prompts ask for it, how often the judge hears it
    (``accuracy``) and what it hears instead (``heard``: counts, most common first). Rows whose tags do not state
    the attribute are left out."""
    out: dict[str, Any] = {}
    for value in sorted({str(t[attribute]) for t in tags if attribute in t}):
        heard = [str(p[attribute]) for p, t in zip(preds, tags) if str(t.get(attribute)) == value]
        counts = Counter(heard).most_common()
        out[value] = {"n": len(heard), "accuracy": round(heard.count(value) / len(heard), 4), "heard": dict(counts)}
    return out


@torch.no_grad()
def evaluate_generation(
    model: MusicLM,
    prompts: Sequence[dict[str, Any]],
    *,
    root: str | Path | None = None,
    seconds: float = 10.0,
    num_candidates: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    train_semantic: Sequence[torch.Tensor] | None = None,
    judge: Judge | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The suite's report (module docstring). ``prompts``: ``{text, tags}`` rows, with ``path`` (relative
    to ``root``) where the real clip exists; ``train_semantic``: the training clips' semantic ids for the
    memorisation audit."""
    if len(prompts) < 2:
        raise ValueError(f"the suite needs at least 2 prompts, got {len(prompts)}")
    if train_semantic is not None and (not train_semantic or min(len(t) for t in train_semantic) < 125):
        raise ValueError("training sequences must hold at least 125 ids (5 s) for the memorisation audit")
    judge = judge or Judge()
    mulan, sr = model.conditioner.mulan, model.sample_rate
    texts = [p["text"] for p in prompts]
    gen = torch.Generator(model.device).manual_seed(seed)
    wavs, semantic = [], []
    for start in tqdm(range(0, len(texts), batch_size), desc="generating", disable=not progress):
        out = model.generate(texts[start : start + batch_size], seconds=seconds, num_candidates=num_candidates,
                             generator=gen)  # fmt: skip
        wavs.append(out.wavs.cpu())
        semantic.append(out.semantic.cpu())
    made = torch.cat(wavs)
    ids = torch.cat(semantic)
    audio = mulan.get_audio_latents(_resample(made.to(model.device), sr, mulan.sample_rate)).cpu()
    text = mulan.get_text_latents(raw_texts=texts).cpu()
    sim = audio @ text.T
    preds = [judge.predict(w.numpy(), sr) for w in tqdm(made, desc="judging", disable=not progress)]
    tags = [p.get("tags") or {} for p in prompts]
    report: dict[str, Any] = {
        "prompts": len(prompts), "seconds": seconds, "num_candidates": num_candidates, "seed": seed,
        "judge": accuracy([score(p, t) for p, t in zip(preds, tags)]),
        "judge_shuffled_prompts": accuracy([score(p, t) for p, t in zip(preds, tags[1:] + tags[:1])]),
        "mcc": round(float(sim.diag().mean()), 4), "mcc_shuffled": round(float(sim.roll(1, dims=1).diag().mean()), 4),
        "prompt_r1": round(float((sim.argmax(1) == torch.arange(len(texts))).float().mean()), 4),
        "chance_prompt_r1": round(1 / len(texts), 4),
        **_semantic_measures(ids, prompts, model.semantic_tokenizer),
        "family_per_value": per_value(preds, tags, "family"),
    }  # fmt: skip
    real_rows = [p for p in prompts if p.get("path")]
    if root is not None and len(real_rows) == len(prompts):
        real = [load_audio(Path(root) / p["path"], sample_rate=sr, duration=seconds)[0] for p in prompts]
        n = min(len(r) for r in real)
        real_wavs = torch.stack([r[:n] for r in real])
        real_preds = [judge.predict(w.numpy(), sr) for w in tqdm(real_wavs, desc="judging real", disable=not progress)]
        report["judge_real_clips"] = accuracy([score(p, t) for p, t in zip(real_preds, tags)])
        report["family_per_value_real_clips"] = per_value(real_preds, tags, "family")
        real_audio = mulan.get_audio_latents(_resample(real_wavs.to(model.device), sr, mulan.sample_rate)).cpu()
        half = len(real_audio) // 2
        report["frechet_mulan"] = round(frechet_distance(audio.numpy(), real_audio.numpy()), 4)
        if half >= 2:  # the floor a sample of this size gives: one half of the real clips against the other
            split = frechet_distance(real_audio[:half].numpy(), real_audio[half:].numpy())
            report["frechet_mulan_real_split_half"] = round(split, 4)
        if train_semantic is not None:
            real_ids = model.semantic_tokenizer(real_wavs.to(model.device)).cpu()
            report["memorisation_real_clips"] = memorisation(list(real_ids), train_semantic)
    if train_semantic is not None:
        report["memorisation"] = memorisation(list(ids), train_semantic)
        # the audio itself, tokenized again: what a stage that copies real frames (a frame bank) copies shows
        # here, not in the semantic LM's ids; compare with memorisation_real_clips (the same measure)
        heard = torch.cat([model.semantic_tokenizer(made[i : i + batch_size].to(model.device)).cpu()
                           for i in range(0, len(made), batch_size)])  # fmt: skip
        report["memorisation_audio"] = memorisation(list(heard), train_semantic)
    return report


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Judge accuracy per attribute: generated, the real clips (ceiling) and shuffled prompts (chance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        k for k in ("family", "key_tonic", "key", "tempo_class", "tempo_any_octave", "drums") if k in report["judge"]
    ]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(keys))
    bars = [("generated", report["judge"]), ("real clips (ceiling)", report.get("judge_real_clips")),
            ("shuffled prompts (chance)", report["judge_shuffled_prompts"])]  # fmt: skip
    for i, (label, acc) in enumerate(b for b in bars if b[1] is not None):
        ax.bar(x + (i - 1) * 0.27, [acc[k]["accuracy"] if k in acc else np.nan for k in keys], 0.27, label=label)
    ax.set_xticks(x, keys)
    ax.set_ylim(0, 1)
    ax.set_ylabel("judge accuracy")
    ax.set_title(f"{report['prompts']} prompts, {report['seconds']:g} s, N = {report['num_candidates']}; "
                 f"MCC {report['mcc']} (shuffled {report['mcc_shuffled']})")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def sample_prompts(rows: Sequence[dict[str, Any]], num: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``num`` rows as ``{text, tags, path?}`` (the full caption where a manifest row has one)."""
    chosen = random.Random(seed).sample(list(rows), min(num, len(rows)))
    return [{"text": r.get("text") or r.get("full_caption") or r["caption"], "tags": r.get("tags") or {},
             **({"path": r["path"]} if r.get("path") else {})} for r in chosen]  # fmt: skip


__all__ = ["evaluate_generation", "frechet_distance", "memorisation", "plot_report", "sample_prompts"]

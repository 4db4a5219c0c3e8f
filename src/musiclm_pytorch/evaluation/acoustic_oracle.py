"""The acoustic oracle: does the acoustic stage make what the text asks, given the true semantic ids?

For held-out clips, the stage receives the clips' *true* semantic ids (the semantic stage's job is
taken as done) and a conditioning, generates every codec level (or, the latent stage, the codec's
continuous latents), and the codec decodes; the audio is
scored by :func:`~musiclm_pytorch.evaluation.codec_eval.score_versions` (MuLaN caption R@1 and cycle
consistency, the independent judge per attribute, drum flips, MuLaN zero-shot tags) beside:

- ``codec_ceiling``: the clips' own codes decoded (the most any acoustic stage can reach here);
- ``from_text``: conditioning from the clip's caption text (what generation uses), and
  ``from_text_cfg{s}`` at each other guidance scale of ``other_scales``;
- ``from_audio``: conditioning from the clip's own audio (what training used; the gap to
  ``from_text`` is the train/generate mismatch);
- ``null``: no conditioning (the floor: what the semantic ids alone give);
- ``from_text_knn`` (with a ``bank`` of training clips' audio latents): the mean audio latent of the
  ``knn`` training clips nearest the caption's text latent, a retrieval prior from text to the audio
  side of the space that the stage was trained on (unCLIP's prior, without training one);
- ``from_text_prior`` (with a ``prior``, a :class:`~musiclm_pytorch.lm.RetrievalPrior`): the conditioning the
  pipeline gives the acoustic stage, :meth:`~musiclm_pytorch.lm.RetrievalPrior.acoustic_latent` of the caption
  (the shipped prior's: the mean over the caption's nearest training clips of its instrument family);
- ``caption_swap``: the caption with its instrument swapped to one of another family: how often the
  judge hears the *caption's* family (against the ceiling's rate of hearing the clip's own family); with a
  ``prior`` or a ``bank``, the swapped caption conditions through it, as generation does (before the
  nineteenth session through its text latent directly).

Every generation uses one sample per clip and no reranking.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.captions import swap_instrument
from ..data.tags import LEAD_PROGRAMS
from .codec_eval import score_versions
from .judge import Judge, score


def _swapped(texts: list[str], tags: list[dict[str, Any]], seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Each caption with its instrument changed to a random lead instrument of another family (the
    tags follow); a caption naming no instrument or family keeps its own (and its own tags)."""
    rng = random.Random(seed)
    out_texts, out_tags = [], []
    for text, tag in zip(texts, tags):
        families = [f for f in LEAD_PROGRAMS if f != tag.get("family")]
        family = rng.choice(families)
        instrument = rng.choice(sorted(LEAD_PROGRAMS[family].values()))
        new = swap_instrument(text, tag, instrument, rng) if tag.get("family") in LEAD_PROGRAMS else None
        out_texts.append(new or text)
        out_tags.append({**tag, "family": family, "instrument": instrument} if new else tag)
    return out_texts, out_tags


def knn_prior(text: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """``text [B, C]`` latents -> the normalised mean of the ``k`` rows of ``bank [N, C]`` (audio latents
    of training clips) nearest each, by cosine (:func:`~musiclm_pytorch.lm.prior.knn_mean`)."""
    from ..lm.prior import knn_mean

    return knn_mean(text, bank, k)


@torch.no_grad()
def acoustic_oracle(
    *, stage: Any, codec: Any, mulan: Any, items: list[dict[str, Any]], texts: list[str], tags: list[dict[str, Any]],
    cfg_scale: float = 3.0, steps: tuple[int, ...] = (8, 1), temperature: float = 1.0, batch_size: int = 16,
    seed: int = 0, judge: Any = None, bank: torch.Tensor | None = None, knn: int = 8,
    other_scales: tuple[float, ...] = (), out_dir: Path | None = None, examples: int = 4,
    semantic_tokenizer: Any = None, prior: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Scores of the versions in the module docstring for token ``items`` (``semantic``, ``codes``,
    ``mulan``) with their ``texts`` and ``tags``; all clips are cut to the shortest. With ``out_dir``, the
    first ``examples`` clips of every version are also written as WAVs and drawn as spectrograms
    (``acoustic_oracle.png``). A latent stage that reads the beat (``beat_bins``) gets each clip's grid from
    its ids (through ``semantic_tokenizer``, required then) and the drums label MuLaN reads from the latent
    each version's conditioning starts from (the text, or the clip's own audio)."""
    if len(items) < 2 or not len(items) == len(texts) == len(tags):
        raise ValueError(f"need at least 2 items with one text and tags each, got {len(items)} / {len(texts)} / "
                         f"{len(tags)}")  # fmt: skip
    judge = judge if judge is not None else Judge()
    stage.eval()
    codec.eval()
    frames = min(len(it["semantic"]) for it in items)
    semantic = torch.stack([it["semantic"][:frames].long() for it in items])
    latent_stage = hasattr(stage, "latent_dim")  # LatentAcousticLM: regresses the codec's latents of every level
    levels = codec.num_quantizers if latent_stage else stage.num_quantizers
    codes = torch.stack([it["codes"][:levels, : frames * stage.ratio].long() for it in items])
    own = torch.stack([it["mulan"].float() for it in items])
    swap_texts, swap_tags = _swapped(texts, tags, seed)
    if bank is None and len(getattr(stage, "prior_bank", ())):  # the stage's own text prior
        bank, knn = stage.prior_bank, stage.prior_k

    beat = reader = None
    if getattr(stage, "beat_bins", 0):
        if semantic_tokenizer is None:
            raise ValueError("this latent stage reads the beat grid of its ids: pass semantic_tokenizer")
        from ..lm.controls import ControlReader
        from ..semantic.beat import grid_of_ids

        beat = torch.tensor([grid_of_ids(semantic_tokenizer, row) for row in semantic])
        reader = ControlReader.from_mulan(mulan)

    def text_latents(strings: list[str]) -> torch.Tensor:
        return torch.cat([mulan.get_text_latents(raw_texts=strings[i : i + 64]) for i in range(0, len(strings), 64)])

    def render(cond: torch.Tensor | None, scale: float = cfg_scale, labels_from: torch.Tensor | None = None
               ) -> torch.Tensor:  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        drums = None if reader is None or labels_from is None else reader.read(labels_from)[:, 1]
        out = []
        for i in range(0, len(items), batch_size):
            part = None if cond is None else cond[i : i + batch_size]
            if latent_stage:
                extra = (
                    {}
                    if beat is None
                    else {
                        "beat": beat[i : i + batch_size],
                        "drums": None if drums is None else drums[i : i + batch_size],
                    }
                )
                out.append(codec.decode_latents(stage.generate(semantic[i : i + batch_size], part, cfg_scale=scale,
                                                               generator=gen, **extra)))  # fmt: skip
                continue
            made = stage.generate(semantic[i : i + batch_size], part, steps=steps, cfg_scale=scale,
                                  temperature=temperature, generator=gen)  # fmt: skip
            out.append(codec.decode(made))
        return torch.cat(out)

    versions = {"codec_ceiling": torch.cat([codec.decode(c) for c in codes.split(batch_size)])}
    text = text_latents(texts)  # once: every version from text starts here
    versions["from_text"] = render(text, labels_from=text)
    for scale in other_scales:  # the guidance sweep, from text
        versions[f"from_text_cfg{scale:g}"] = render(text, scale, labels_from=text)
    versions["from_audio"] = render(own, labels_from=own)
    versions["null"] = render(None)
    if bank is not None:
        versions["from_text_knn"] = render(knn_prior(text, bank, knn), labels_from=text)
    if prior is not None:
        versions["from_text_prior"] = render(prior.acoustic_latent(text), labels_from=text)
    report: dict[str, Any] = {"clips": len(items), "seconds": round(frames * stage.ratio / codec.frame_rate, 3),
                              "cfg_scale": cfg_scale, "steps": list(steps), "temperature": temperature}  # fmt: skip
    report.update(score_versions(versions, texts, tags, sample_rate=codec.sample_rate, mulan=mulan, judge=judge))
    swap_latents = text_latents(swap_texts)
    if prior is not None:
        swap_cond = prior.acoustic_latent(swap_latents)
    else:
        swap_cond = swap_latents if bank is None else knn_prior(swap_latents, bank, knn)
    swapped = render(swap_cond, labels_from=swap_latents)
    changed = [i for i in range(len(items)) if swap_texts[i] != texts[i]]
    heard = [score(judge.predict(swapped[i, 0].numpy(), codec.sample_rate), {"family": swap_tags[i]["family"]})
             for i in changed]  # fmt: skip
    ceiling = report["codec_ceiling"]["judge"].get("family", {}).get("accuracy")
    rate = sum(h["family"] for h in heard) / max(len(heard), 1)
    report["caption_swap"] = {"clips": len(changed), "caption_family_heard": round(rate, 4),
                              "ceiling_own_family_heard": ceiling,
                              "ratio_to_ceiling": round(rate / ceiling, 4) if ceiling else None}  # fmt: skip
    for name in versions:
        report[name].pop("judge_predictions", None)
    if out_dir is not None and examples > 0:  # (0: the report alone)
        from ..audio import save_audio

        out_dir.mkdir(parents=True, exist_ok=True)
        shown = {**versions, "caption_swap": swapped}
        plot_versions(shown, [texts[i] for i in range(min(examples, len(texts)))], codec.sample_rate,
                      out_dir / "acoustic_oracle.png", swapped_texts=swap_texts)  # fmt: skip
        for i in range(min(examples, len(texts))):
            for name, audio in shown.items():
                save_audio(out_dir / f"clip{i}_{name}.wav", audio[i], codec.sample_rate)
    return report


def plot_versions(versions: dict[str, torch.Tensor], texts: list[str], sample_rate: int, path: Path, *,
                  swapped_texts: list[str] | None = None) -> Path:  # fmt: skip
    """Log-mel spectrograms (dB of each clip's peak) of each version of the first ``len(texts)`` clips:
    one row per clip (its caption as the title), one column per version."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(versions)
    fig, axes = plt.subplots(len(texts), len(names), figsize=(2.6 * len(names), 2.2 * len(texts)), squeeze=False)
    for i, text in enumerate(texts):
        for j, name in enumerate(names):
            y = versions[name][i].reshape(-1).float().numpy()
            mel = librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=1024, hop_length=256, n_mels=80)
            axes[i, j].imshow(librosa.power_to_db(mel, ref=np.max, top_db=80), origin="lower", aspect="auto")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            title = name if i == 0 else ""
            if name == "caption_swap" and swapped_texts is not None:
                title = f"{title}\n{swapped_texts[i][:40]}".strip()
            axes[i, j].set_title(title, fontsize=7)
        axes[i, 0].set_ylabel(text[:48], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

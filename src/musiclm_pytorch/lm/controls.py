"""Key and drums as labels a semantic LM reads (``TokenLM(control_classes=CONTROL_CLASSES)``).

The semantic LM is conditioned on MuLaN latents, and at generation on the retrieval prior's latent for
the text; measured end to end (benchmarks/RESULTS.md), its ids keep a prompt's key 0.50 of the time on the
test split (real clips 0.72) and drums where asked 0.19 (real 0.98), though MuLaN's own zero-shot reading of
the same latents gets the tonic 0.85 and drums 0.99 of the time. A small LM trained briefly does not pull a
crisp key out of a 128-dim latent; it can read a label. So, like the beat grid, each clip's key (24 classes:
12 tonics x major / minor) and drums (no / yes) are given as labels, each a learned vector added to every
input position.

Trained from audio alone: the labels are MuLaN's zero-shot reading of the clip's *audio* latent
(:class:`ControlReader`, CLIP-style prompt ensembles through MuLaN's text tower); at generation the same
reader reads the text latent, or the latent the LM is conditioned on (the retrieval prior's mean of the text's
nearest training clips' audio latents; ``TokenLM.control_source``). One MuLaN, one reader, the same function
of a latent in training and generation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.captions import DRUM_WORDS
from ..data.tags import MODES, PITCH_CLASSES

NUM_KEYS = 2 * len(PITCH_CLASSES)  # index = mode * 12 + tonic (major 0-11, minor 12-23)
CONTROL_CLASSES = (NUM_KEYS, 2)  # key, drums: the sizes of the labels a semantic LM reads, in this order


def key_index(tonic: str, mode: str) -> int:
    """The key label of ``tonic`` (one of :data:`~musiclm_pytorch.data.tags.PITCH_CLASSES`) and ``mode``."""
    if tonic not in PITCH_CLASSES or mode not in MODES:
        raise ValueError(f"unknown key {tonic!r} {mode!r}: tonic one of {PITCH_CLASSES}, mode one of {MODES}")
    return MODES.index(mode) * len(PITCH_CLASSES) + PITCH_CLASSES.index(tonic)


def key_name(index: int) -> str:
    """``"D minor"`` for :func:`key_index` ``("D", "minor")``."""
    if not 0 <= index < NUM_KEYS:
        raise ValueError(f"key label must be in [0, {NUM_KEYS}), got {index}")
    return f"{PITCH_CLASSES[index % 12]} {MODES[index // 12]}"


def key_prompts() -> list[list[str]]:
    """Zero-shot prompts per key label, in label order (the frames captions name keys in)."""
    return [[f"music in {key_name(i)}", f"a piece in {key_name(i)}", f"a tune in the key of {key_name(i)}"]
            for i in range(NUM_KEYS)]  # fmt: skip


def drum_prompts() -> list[list[str]]:
    """Zero-shot prompts for drums no (label 0) and yes (label 1)."""
    return [[t.format(w) for w in DRUM_WORDS[v] for t in ("music {}", "an instrumental {}")] for v in (False, True)]


class ControlReader:
    """MuLaN's zero-shot reading of latents ``[B, C]`` as control labels (module docstring).

    ``class_latents``: one ``[classes, C]`` matrix of unit class latents per control (key, drums)."""

    def __init__(self, class_latents: list[Tensor]):
        sizes = tuple(int(c.shape[0]) for c in class_latents)
        if sizes != CONTROL_CLASSES:
            raise ValueError(f"class latents for {CONTROL_CLASSES} classes (key, drums) expected, got {sizes}")
        self.class_latents = [F.normalize(c.float(), dim=-1) for c in class_latents]

    @classmethod
    @torch.no_grad()
    def from_mulan(cls, mulan: Any) -> ControlReader:
        """The reader of ``mulan`` (its text tower embeds the prompt ensembles; each class the normalised
        mean of its prompts' latents)."""
        was_training = mulan.training
        mulan.eval()
        out = []
        for sets in (key_prompts(), drum_prompts()):
            flat = [p for s in sets for p in s]
            lat = mulan.get_text_latents(raw_texts=flat).float().cpu()
            sizes = [len(s) for s in sets]
            out.append(torch.stack([F.normalize(chunk.mean(0), dim=-1) for chunk in lat.split(sizes)]))
        mulan.train(was_training)
        return cls(out)

    def read(self, latents: Tensor) -> Tensor:
        """``[B, 2]`` labels (key, drums) of latents ``[B, C]`` (cosine argmax per control)."""
        if latents.ndim != 2 or latents.shape[1] != self.class_latents[0].shape[1]:
            raise ValueError(f"latents must be [B, {self.class_latents[0].shape[1]}], got {tuple(latents.shape)}")
        x = F.normalize(latents.detach().float().cpu(), dim=-1)
        return torch.stack([(x @ c.T).argmax(-1) for c in self.class_latents], dim=1)


@torch.no_grad()
def family_class_latents(mulan: Any) -> tuple[list[str], Tensor]:
    """``(families, class_latents [F, C])``: MuLaN's text latents of each instrument family's zero-shot prompt
    ensemble (:func:`~musiclm_pytorch.data.captions.attribute_prompt_sets`, the prompts the evaluation's zero-shot
    tagging uses), each the normalised mean of its prompts' latents; a latent's family is the class latent with the
    highest cosine (``RetrievalPrior(family_pool=...)``)."""
    from ..data.captions import attribute_prompt_sets

    was_training = mulan.training
    mulan.eval()
    sets = attribute_prompt_sets("family")
    flat = [p for prompts in sets.values() for p in prompts]
    lat = mulan.get_text_latents(raw_texts=flat).float().cpu()
    latents = torch.stack([F.normalize(c.mean(0), dim=-1) for c in lat.split([len(v) for v in sets.values()])])
    mulan.train(was_training)
    return list(sets), latents


def label_pmi(counts: Tensor, labels: Tensor, classes: int, *, smoothing: float = 1.0) -> Tensor:
    """``[classes, V]``: log p(id | class) - log p(id) over clips' semantic id ``counts [N, V]`` with their
    ``labels [N]`` (add-``smoothing`` estimates; a class no clip has gets zeros). Added to the semantic LM's
    logits as ``scale * table[key]`` (``TokenLM.key_bias``), it favours the ids typical of the asked key over
    those of other keys without mixing in a unigram distribution, which breaks the beat (RESULTS.md)."""
    if counts.ndim != 2 or labels.shape != (counts.shape[0],):
        raise ValueError(f"counts must be [N, V] and labels [N], got {tuple(counts.shape)} and {tuple(labels.shape)}")
    counts = counts.float()
    vocab = counts.shape[1]
    marginal = (counts.sum(0) + smoothing) / (counts.sum() + smoothing * vocab)
    table = torch.zeros(classes, vocab)
    for c in range(classes):
        rows = counts[labels == c].sum(0)
        if rows.sum() > 0:
            table[c] = ((rows + smoothing) / (rows.sum() + smoothing * vocab)).log() - marginal.log()
    return table

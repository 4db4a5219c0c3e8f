"""The retrieval prior: the bridge from a text's MuLaN latent to what the stages were trained on.

The stages train on MuLaN *audio* latents of their clips and generate from *text*. Measured on 300
held-out captions (benchmarks/RESULTS.md, "A retrieval prior for the semantic stage"), the text
latent itself is a poor stand-in for an audio latent (the acoustic stage did worse with it than with
no conditioning at all), while the training clips whose audio latents lie nearest the text latent
share what the text asks for: the pooled semantic ids of the 8 nearest clips give the key tonic of
the caption 0.73 of the time (the clips' own ids: 0.62; the semantic LM conditioned on the caption's
quantized text latent, after 600 CPU steps: 0.18).

So the prior keeps, for ``size`` training clips, their MuLaN audio latent and the counts of their
semantic ids, and for a text latent gives

- :meth:`latent`: the normalised mean of the ``k`` nearest audio latents (cosine): the conditioning
  the stages get at generation (unCLIP's prior, without training one); with ``family_pool`` and
  ``family_acoustic_only``, :meth:`acoustic_latent` gives the acoustic stage the mean over the text's
  nearest clips of its instrument family instead;
- :meth:`token_log_prior`: the log of the pooled, smoothed semantic id distribution of the same
  neighbours, mixed into the semantic LM's next-id distribution at every step with a share ``mix``
  (chosen on validation), as the kNN-LM mixes its neighbours' distribution into its LM's (Khandelwal
  et al. 2020): the LM keeps the sequence structure, the neighbours say which ids (the key, the
  rhythm vocabulary) the text wants. Measured (RESULTS.md), a mixture beat adding the weighted log
  distribution to the logits (a product), which made the LM repeat a few ids;
- :meth:`match_frames` (with a frame bank, ``frames_per_clip > 0``): the latent acoustic stage predicts
  the *mean* spectrum given its inputs, and the instrument's harmonic fine structure is lost in that
  mean. With the codec codes of ``frames_per_clip`` evenly spaced frames of every bank clip, each
  predicted frame is replaced by the mean of its ``frame_k`` nearest real frames among the text's
  neighbour clips (kNN-VC's matching, Baas et al. 2023: real frames of the wanted timbre, chosen by
  the predicted content), blended with the prediction by ``frame_blend``. The latent distance is
  dominated by the spectral envelope, so a nearest frame may hold other pitches than the predicted
  one; ``frame_pitch_weight`` adds a chroma distance (the frames' pitch classes, read from their
  log-magnitude spectra) so that the chosen frames keep the predicted harmony, and
  ``frame_semantic_weight`` a distance between the semantic ids (their k-means centres: pitch
  classes and onsets measured on real audio) of the generated frame and of the bank frame.

  Frame by frame, the nearest real frame to a smooth predicted frame tends to be a smooth one, and
  independent choices do not keep a clip's beat. ``frame_continuity > 0`` chooses the frames as
  unit-selection synthesis does (Hunt and Black 1996): one Viterbi path through the bank frames
  minimising the frames' distances plus ``frame_continuity`` for every jump, where the step from a
  bank frame to the next frame of the same clip is free. Runs of consecutive real frames then carry
  their clip's attacks and beat while the path still follows the predicted content
  (benchmarks/RESULTS.md measures what it keeps). With ``frame_window`` (a contiguous window of
  ``frames_per_clip`` frames from the middle of each clip rather than evenly spaced frames) a copied
  run is at most that long: 125 frames of the 50 Hz codec are 2.5 s, under the 3 s the paper's
  memorisation audit counts as a copy.

With ``beat_periods`` (``train retrieval-prior --beat-from``), the prior also keeps each clip's beat period
(:mod:`musiclm_pytorch.semantic.beat`, from its ids): :meth:`beat_period` gives a text the median period of
its neighbours, the tempo a semantic LM that reads a beat grid is given when the text names none.

Shape letters: B batch, N bank rows, C conditioning dim, V semantic vocabulary, K neighbours,
F bank frames per clip, Q codec levels, T codec frames, L codec latent dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import Component


def nearest_rows(query: Tensor, bank: Tensor, k: int) -> Tensor:
    """Indices ``[B, K]`` of the ``k`` rows of ``bank [N, C]`` (unit rows) nearest each row of ``query
    [B, C]`` by cosine, nearest first (``K = min(k, N)``; the query's own norm does not change the order)."""
    return (query @ bank.T).topk(min(k, len(bank)), dim=-1).indices


def knn_mean(query: Tensor, bank: Tensor, k: int) -> Tensor:
    """``[B, C]``: the normalised mean of the ``k`` rows of ``bank`` nearest each query row
    (:func:`nearest_rows`): the conditioning a text gets from the audio latents of training clips."""
    return F.normalize(bank[nearest_rows(query, bank, k)].mean(1), dim=-1)


class RetrievalPrior(Component):
    """kNN prior over training clips (module docstring).

    Args:
        size: bank rows (training clips kept).
        cond_dim: MuLaN latent size.
        vocab_size: semantic ids.
        k: neighbours pooled per text.
        smoothing: pseudo-count added to every id's pooled count (per neighbour) before the log.
        mix: default share of :meth:`token_log_prior` in the semantic LM's next-id distribution, in
            ``[0, 1)`` (0 disables).
        frames_per_clip: codec frames kept per bank clip for :meth:`match_frames` (0: no frame bank).
        frame_levels: codec levels stored per kept frame.
        frame_k: real frames averaged per predicted frame.
        frame_blend: share of the matched frames in the output, in ``[0, 1]`` (1: real frames only).
        frame_pitch_weight: weight of the chroma distance beside the (per-query normalised) latent distance
            in the matching; 0: latent distance alone.
        frame_semantic_weight: weight of the (normalised) distance between the semantic tokenizer's centres
            of the generated frame's id and the bank frame's id.
        frame_window: keep a contiguous window of ``frames_per_clip`` frames from the middle of each clip
            (False: evenly spaced frames over the whole clip).
        frame_continuity: the cost of a jump in the unit-selection path (0: each frame matched on its own;
            > 0 needs ``frame_k == 1``).
        frame_neighbours: the frames are matched among the bank frames of this many nearest neighbours
            (None: all ``k``); the nearest clips share the prompt's key far more often than the 8th.
        beat_periods: keep each clip's beat period in semantic frames (:meth:`set_beat_periods`).
        frame_envelope: take only the spectral envelope from the matched frames, its first ``frame_envelope``
            cepstral coefficients over the codec's log-magnitude spectrum (:func:`envelope_projector`), and keep
            the prediction's fine structure (its harmonics: pitch and key); 0: the whole frame.
        frame_envelope_skip: with ``frame_envelope``, keep the prediction's first this many of those coefficients
            (1: its loudness contour, the coefficient 0 that carries the beat's onsets).
        frame_drums_only: match frames only for texts whose drums label (``drums`` of :meth:`match_frames`) is 1;
            the prediction stays as is elsewhere.
        family_pool: with ``> 0``, the conditioning latent (:meth:`latent`) is the mean over the text's
            ``family_pool`` nearest clips taken in order of agreement with its instrument family first, nearness
            second (:meth:`family_neighbours`): the family is MuLaN's zero-shot reading of a latent through
            ``family_classes`` class latents (:meth:`set_families`), of the clip's audio latent in the bank and of
            the text latent at generation, so the prior still needs no captions. The pooled ids, beat period and
            frame bank keep the nearest clips (the family's clips carry other tempi: RESULTS.md).
        family_classes: how many families the class latents hold (with ``family_pool``).
        family_acoustic_only: with ``family_pool``, the family's clips condition the acoustic stage alone
            (:meth:`acoustic_latent`) and :meth:`latent`, which the semantic LM reads, keeps the nearest clips: the
            semantic ids set the key, and the family's clips carry other keys (RESULTS.md, "The family latent for
            the acoustic stage alone").
    """

    component_name = "retrieval_prior"

    def __init__(self, *, size: int, cond_dim: int, vocab_size: int, k: int = 8, smoothing: float = 0.1,
                 mix: float = 0.25, frames_per_clip: int = 0, frame_levels: int = 0, frame_k: int = 4,
                 frame_blend: float = 1.0, frame_pitch_weight: float = 0.0,
                 frame_semantic_weight: float = 0.0, frame_window: bool = False,
                 frame_continuity: float = 0.0, frame_neighbours: int | None = None,
                 beat_periods: bool = False, frame_envelope: int = 0, frame_envelope_skip: int = 0,
                 frame_drums_only: bool = False, family_pool: int = 0, family_classes: int = 0,
                 family_acoustic_only: bool = False):  # fmt: skip
        super().__init__()
        if family_acoustic_only and not family_pool:
            raise ValueError("family_acoustic_only needs family_pool > 0 (the family's clips it gives the acoustic "
                             "stage)")  # fmt: skip
        if family_pool < 0 or (family_pool and not (k <= family_pool and family_classes >= 2)):
            raise ValueError(f"family_pool must be 0 or >= k={k} with family_classes >= 2, got {family_pool} and "
                             f"{family_classes}")  # fmt: skip
        if size < 1 or cond_dim < 1 or vocab_size < 1 or k < 1 or smoothing <= 0 or not 0 <= mix < 1:
            raise ValueError(f"need size, cond_dim, vocab_size, k >= 1, smoothing > 0 and 0 <= mix < 1; got {size}, "
                             f"{cond_dim}, {vocab_size}, {k}, {smoothing}, {mix}")  # fmt: skip
        bad_bank = frames_per_clip < 0 or (frames_per_clip and frame_levels < 1) or frame_k < 1
        if not 0 <= frame_envelope_skip < max(frame_envelope, 1):
            raise ValueError(f"frame_envelope_skip must be in [0, frame_envelope={frame_envelope}), got "
                             f"{frame_envelope_skip}")  # fmt: skip
        if frame_drums_only and not frames_per_clip:
            raise ValueError("frame_drums_only needs a frame bank (frames_per_clip > 0)")
        if frame_envelope < 0 or (frame_envelope and not frames_per_clip):
            raise ValueError(f"frame_envelope must be >= 0 and needs a frame bank (frames_per_clip > 0), got "
                             f"{frame_envelope} with frames_per_clip {frames_per_clip}")  # fmt: skip
        if frame_neighbours is not None and not 1 <= frame_neighbours <= k:
            raise ValueError(f"frame_neighbours must be in [1, k={k}] (or None: all k), got {frame_neighbours}")
        if frame_continuity < 0 or (frame_continuity and frame_k != 1):
            raise ValueError(f"need frame_continuity >= 0, and frame_k == 1 with a continuity cost (one path); got "
                             f"{frame_continuity} with frame_k {frame_k}")  # fmt: skip
        if bad_bank or not 0 <= frame_blend <= 1 or frame_pitch_weight < 0 or frame_semantic_weight < 0:
            raise ValueError(f"need frames_per_clip >= 0, frame_levels >= 1 with a frame bank, frame_k >= 1, "
                             f"0 <= frame_blend <= 1 and frame_pitch_weight >= 0; got {frames_per_clip}, "
                             f"{frame_levels}, {frame_k}, {frame_blend}, {frame_pitch_weight}")  # fmt: skip
        self.save_config(size=size, cond_dim=cond_dim, vocab_size=vocab_size, k=k, smoothing=smoothing, mix=mix,
                         frames_per_clip=frames_per_clip, frame_levels=frame_levels, frame_k=frame_k,
                         frame_blend=frame_blend, frame_pitch_weight=frame_pitch_weight,
                         frame_semantic_weight=frame_semantic_weight, frame_window=frame_window,
                         frame_continuity=frame_continuity, frame_neighbours=frame_neighbours,
                         **({"beat_periods": True} if beat_periods else {}),
                         **({"frame_envelope": frame_envelope} if frame_envelope else {}),
                         **({"frame_envelope_skip": frame_envelope_skip} if frame_envelope_skip else {}),
                         **({"frame_drums_only": True} if frame_drums_only else {}),
                         **({"family_pool": family_pool, "family_classes": family_classes} if family_pool
                            else {}),
                         **({"family_acoustic_only": True} if family_acoustic_only else {}))  # fmt: skip
        self.family_pool, self.family_acoustic_only = family_pool, family_acoustic_only
        self.k, self.smoothing, self.mix = k, smoothing, mix
        self.frame_window, self.frame_continuity = frame_window, frame_continuity
        self.frame_neighbours = frame_neighbours or k
        self.frame_pitch_weight, self.frame_semantic_weight = frame_pitch_weight, frame_semantic_weight
        self.vocab_size, self.cond_dim = vocab_size, cond_dim
        self.frame_k, self.frame_blend = frame_k, frame_blend
        self.frame_envelope, self.frame_envelope_skip = frame_envelope, frame_envelope_skip
        self.frame_drums_only = frame_drums_only
        self.register_buffer("latents", torch.zeros(size, cond_dim))
        # id counts of a clip are integers up to its length: exact in float16 up to 2,048, half the bytes
        self.register_buffer("counts", torch.zeros(size, vocab_size, dtype=torch.float16))
        # codec codes of the kept frames (codebooks up to 32,768 entries fit int16); only with a frame bank,
        # so priors saved before frame banks existed load unchanged
        if frames_per_clip:
            self.register_buffer("frame_codes", torch.zeros(size, frames_per_clip, frame_levels, dtype=torch.int16))
            # the semantic id covering each kept frame
            self.register_buffer("frame_semantic", torch.zeros(size, frames_per_clip, dtype=torch.int16))

        if beat_periods:  # only then, so that priors saved before beat periods existed load unchanged
            self.register_buffer("periods", torch.zeros(size))
        if family_pool:  # the zero-shot family reader's class latents, and each bank clip's reading
            self.register_buffer("family_latents", torch.zeros(family_classes, cond_dim))
            self.register_buffer("bank_family", torch.zeros(size, dtype=torch.int16))

    latents: Tensor
    counts: Tensor
    periods: Tensor
    family_latents: Tensor
    bank_family: Tensor
    frame_codes: Tensor
    frame_semantic: Tensor

    @property
    def has_frames(self) -> bool:
        return hasattr(self, "frame_codes")

    @classmethod
    def from_items(cls, items: Sequence[dict[str, Any]], *, vocab_size: int, size: int | None = None,
                   **kwargs: Any) -> RetrievalPrior:  # fmt: skip
        """A prior over the first ``size`` (default all) tokenized training items (``mulan`` latent and
        ``semantic`` ids each, as ``musiclm data tokenize`` stores them; with ``frames_per_clip`` their
        ``codes [Q, T]`` too, from which that many evenly spaced frames are kept)."""
        items = list(items)[: size or None]
        if not items:
            raise ValueError("a retrieval prior needs at least one tokenized item")
        missing = [i for i, it in enumerate(items) if "mulan" not in it or "semantic" not in it]
        if missing:
            raise ValueError(f"item {missing[0]} lacks 'mulan' or 'semantic' (tokens made before MuLaN latents were "
                             "stored: run `musiclm data tokenize --reuse` into a new folder)")  # fmt: skip
        frames = int(kwargs.get("frames_per_clip", 0))
        if frames:
            if any("codes" not in it for it in items):
                raise ValueError("a frame bank needs each item's codec 'codes' (musiclm data tokenize stores them)")
            kwargs.setdefault("frame_levels", int(items[0]["codes"].shape[0]))
        prior = cls(size=len(items), cond_dim=items[0]["mulan"].shape[-1], vocab_size=vocab_size, **kwargs)
        prior.set_bank(
            torch.stack([it["mulan"].float() for it in items]),
            torch.stack([torch.bincount(it["semantic"].long(), minlength=vocab_size) for it in items]),
        )
        if frames:
            prior.set_frames([it["codes"] for it in items], [it["semantic"] for it in items])
        return prior

    def set_frames(self, codes: Sequence[Tensor], semantic: Sequence[Tensor]) -> None:
        """Keep ``frames_per_clip`` evenly spaced frames (with ``frame_window``: consecutive frames from the
        middle) of each bank clip's codec ``codes [Q, T]`` (the first ``frame_levels`` levels; a clip
        shorter than that repeats frames) and the id of its
        ``semantic [Ts]`` ids that covers each (frame ``t`` of ``T`` lies in id ``t * Ts // T``)."""
        if not self.has_frames:
            raise ValueError("this retrieval prior has no frame bank: build it with frames_per_clip > 0")
        n, f, q = self.frame_codes.shape
        if len(codes) != n or len(semantic) != n:
            raise ValueError(f"set_frames needs codes and semantic ids for all {n} bank clips, got {len(codes)} "
                             f"and {len(semantic)}")  # fmt: skip
        for i, c in enumerate(codes):
            if c.ndim != 2 or c.shape[0] < q or c.shape[1] < 1:
                raise ValueError(f"clip {i}: codes must be [Q >= {q}, T >= 1], got shape {tuple(c.shape)}")
            if c.max() > torch.iinfo(torch.int16).max:
                raise ValueError(f"clip {i}: code {int(c.max())} does not fit the int16 frame bank")
            if self.frame_window:
                pick = (torch.arange(f) + max(0, (c.shape[1] - f) // 2)).clamp(max=c.shape[1] - 1)
            else:
                pick = torch.linspace(0, c.shape[1] - 1, f).round().long()
            self.frame_codes[i] = c[:q, pick].T.to(torch.int16)
            ids = semantic[i].long()
            self.frame_semantic[i] = ids[(pick * len(ids) // c.shape[1]).clamp(max=len(ids) - 1)].to(torch.int16)

    @property
    def has_beats(self) -> bool:
        return hasattr(self, "periods")

    def set_beat_periods(self, periods: Tensor) -> None:
        """Keep each bank clip's beat period ``periods [N]`` in semantic frames (> 0)."""
        if not self.has_beats:
            raise ValueError("this retrieval prior keeps no beat periods: build it with beat_periods=True")
        if periods.shape != self.periods.shape or not bool((periods > 0).all()):
            raise ValueError(f"periods must be {tuple(self.periods.shape)} and > 0, got {tuple(periods.shape)}")
        self.periods.copy_(periods.float())

    def beat_period(self, text_latents: Tensor) -> Tensor:
        """``[B]``: the median beat period (frames) of each text's neighbours."""
        if not self.has_beats:
            raise ValueError("this retrieval prior keeps no beat periods (train retrieval-prior --beat-from)")
        return self.periods[self.neighbours(text_latents)].median(dim=1).values

    def set_bank(self, latents: Tensor, counts: Tensor) -> None:
        """Keep ``latents [N, C]`` (normalised here) and their clips' semantic id ``counts [N, V]``."""
        if latents.shape != self.latents.shape or counts.shape != self.counts.shape:
            raise ValueError(f"bank must be latents {tuple(self.latents.shape)} and counts {tuple(self.counts.shape)}, "
                             f"got {tuple(latents.shape)} and {tuple(counts.shape)}")  # fmt: skip
        if counts.min() < 0 or counts.max() > 2048:
            raise ValueError(f"counts must be in [0, 2048] (float16 exact), got [{counts.min()}, {counts.max()}]")
        self.latents.copy_(F.normalize(latents.float(), dim=-1))
        self.counts.copy_(counts.to(torch.float16))

    def _check(self, text_latents: Tensor) -> None:
        if text_latents.ndim != 2 or text_latents.shape[1] != self.cond_dim:
            raise ValueError(f"text latents must be [B, {self.cond_dim}], got shape {tuple(text_latents.shape)}")

    def set_families(self, class_latents: Tensor) -> None:
        """Keep the family reader's ``class_latents [family_classes, C]`` (normalised here; MuLaN's text latents of
        each family's prompts, :func:`~musiclm_pytorch.lm.controls.family_class_latents`) and each bank clip's
        reading."""
        if not self.family_pool:
            raise ValueError("this retrieval prior reads no families: build it with family_pool > 0")
        if class_latents.shape != self.family_latents.shape:
            raise ValueError(f"class latents must be {tuple(self.family_latents.shape)}, got "
                             f"{tuple(class_latents.shape)}")  # fmt: skip
        self.family_latents.copy_(F.normalize(class_latents.float(), dim=-1))
        self.bank_family.copy_(self.read_family(self.latents).to(torch.int16))

    def read_family(self, latents: Tensor) -> Tensor:
        """``[B]``: the family index of latents ``[B, C]`` (the class latent with the highest cosine)."""
        if not self.family_pool:
            raise ValueError("this retrieval prior reads no families: build it with family_pool > 0")
        return (F.normalize(latents.float(), dim=-1) @ self.family_latents.float().T).argmax(-1)

    def neighbours(self, text_latents: Tensor) -> Tensor:
        """Indices ``[B, K]`` of the bank rows nearest each text latent (cosine), nearest first."""
        self._check(text_latents)
        return nearest_rows(F.normalize(text_latents.float(), dim=-1), self.latents, self.k)

    def family_neighbours(self, text_latents: Tensor) -> Tensor:
        """Indices ``[B, K]``: of each text's ``family_pool`` nearest bank rows, those whose family agrees with the
        text's first, nearest first within each group (:meth:`latent` with ``family_pool``)."""
        self._check(text_latents)
        query = F.normalize(text_latents.float(), dim=-1)
        near = nearest_rows(query, self.latents, self.family_pool)  # [B, P], nearest first
        other = (self.bank_family[near].long() != self.read_family(query)[:, None]).long()
        order = torch.argsort(other * near.shape[1] + torch.arange(near.shape[1], device=near.device), dim=1)
        return near.gather(1, order)[:, : self.k]

    def latent(self, text_latents: Tensor) -> Tensor:
        """``[B, C]``: the semantic LM's conditioning, the normalised mean audio latent of each text's neighbours;
        with ``family_pool`` (and not ``family_acoustic_only``), of its :meth:`family_neighbours` (the
        conditioning only: the pooled ids, beat period and frame bank keep the nearest clips)."""
        if self.family_pool and not self.family_acoustic_only:
            return self._family_latent(text_latents)
        self._check(text_latents)
        return knn_mean(F.normalize(text_latents.float(), dim=-1), self.latents, self.k).to(text_latents.dtype)

    def acoustic_latent(self, text_latents: Tensor) -> Tensor:
        """``[B, C]``: the acoustic stage's conditioning: with ``family_acoustic_only``, the normalised mean audio
        latent of each text's :meth:`family_neighbours`; else :meth:`latent`."""
        return self._family_latent(text_latents) if self.family_acoustic_only else self.latent(text_latents)

    def _family_latent(self, text_latents: Tensor) -> Tensor:
        """``[B, C]``: the normalised mean audio latent of each text's :meth:`family_neighbours`."""
        idx = self.family_neighbours(text_latents)
        return F.normalize(self.latents[idx].mean(1), dim=-1).to(text_latents.dtype)

    def token_log_prior(self, text_latents: Tensor) -> Tensor:
        """``[B, V]``: log of the neighbours' pooled semantic id counts plus ``smoothing`` per neighbour,
        normalised (a log-distribution over the ids)."""
        idx = self.neighbours(text_latents)
        pooled = self.counts[idx].float().sum(1) + self.smoothing * idx.shape[1]
        return torch.log(pooled / pooled.sum(-1, keepdim=True))

    @torch.no_grad()
    def match_frames(self, text_latents: Tensor, predicted: Tensor, codec: Any, *, blend: float | None = None,
                     pitch_weight: float | None = None, semantic: Tensor | None = None,
                     centers: Tensor | None = None, semantic_weight: float | None = None,
                     continuity: float | None = None, drums: Tensor | None = None) -> Tensor:  # fmt: skip
        """``predicted [B, T, L]`` codec latents with each frame replaced by the mean of its ``frame_k``
        nearest real frames of the text's neighbour clips, blended by ``blend`` (default ``frame_blend``);
        with ``continuity`` (default ``frame_continuity``) > 0, by the frames of the cheapest path
        (:func:`select_units`; a jump costs ``continuity``, the next frame of the same clip nothing).
        Distance: the squared latent distance over its mean across the bank, plus ``pitch_weight`` (default
        ``frame_pitch_weight``) times the squared distance of the unit chroma vectors. ``codec`` turns the
        bank's codes into latents (``latents_from_codes``) and, with a pitch weight, latents into
        log-magnitude spectra (the SpectralCodec's ``basis``, ``mean``, ``floor``, ``n_fft``). With a
        semantic weight (default ``frame_semantic_weight``), ``semantic [B, T]`` (the generated frames'
        ids) and the tokenizer's ``centers [V, D]`` add the squared centre distance of the two frames' ids
        over its mean across the bank. With ``frame_envelope``, the matched frames give only their spectral
        envelope (the codec's ``basis``), the prediction the rest, before the blend. With ``frame_drums_only``,
        ``drums [B]`` (each text's drums label, 0 / 1) keeps the prediction of the rows without drums."""
        pitch_weight = self.frame_pitch_weight if pitch_weight is None else pitch_weight
        semantic_weight = self.frame_semantic_weight if semantic_weight is None else semantic_weight
        continuity = self.frame_continuity if continuity is None else continuity
        if continuity < 0 or (continuity and self.frame_k != 1):
            raise ValueError(f"continuity must be >= 0 and needs frame_k == 1, got {continuity} "
                             f"(frame_k {self.frame_k})")  # fmt: skip
        if not self.has_frames:
            raise ValueError("this retrieval prior has no frame bank: build it with frames_per_clip > 0")
        blend = self.frame_blend if blend is None else blend
        if not 0 <= blend <= 1:
            raise ValueError(f"blend must be in [0, 1], got {blend}")
        b, t, dim = predicted.shape
        if self.frame_drums_only and (drums is None or drums.shape != (b,)):
            got = None if drums is None else tuple(drums.shape)
            raise ValueError(f"a drums-only frame bank needs each text's drums label [B={b}], got {got}")
        if text_latents.shape[0] != b:
            raise ValueError(f"{text_latents.shape[0]} text latents for {b} predicted clips")
        if self.frame_drums_only:
            assert drums is not None
            rows = (drums.to(predicted.device) > 0).nonzero()[:, 0]
            if len(rows) < b:  # match only the rows that ask for drums; the others keep the prediction
                out = predicted.clone()
                if len(rows):
                    out[rows] = self.match_frames(
                        text_latents[rows], predicted[rows], codec, blend=blend, pitch_weight=pitch_weight,
                        semantic=None if semantic is None else semantic[rows], centers=centers,
                        semantic_weight=semantic_weight, continuity=continuity, drums=drums[rows.to(drums.device)],
                    )  # fmt: skip
                return out
        idx = self.neighbours(text_latents)[:, : self.frame_neighbours]  # [B, K'], nearest first
        codes = self.frame_codes[idx].long()  # [B, K, F, Q]
        bank = codec.latents_from_codes(codes.reshape(b, -1, codes.shape[-1]).transpose(1, 2)).float()  # [B, K*F, L]
        if bank.shape[-1] != dim:
            raise ValueError(f"the frame bank's latents have {bank.shape[-1]} dims, the prediction {dim}")
        pred = predicted.float()
        bank_ids = self.frame_semantic[idx].long().reshape(b, -1) if semantic_weight else None  # [B, K*F]
        pitch = None
        if pitch_weight:
            pitch = pitch_weight * torch.cdist(frame_chroma(pred, codec), frame_chroma(bank, codec)).square()
        dist = frame_distance(pred, bank, extra=pitch, semantic=semantic, bank_semantic=bank_ids, centers=centers,
                              semantic_weight=semantic_weight)  # fmt: skip
        if continuity:
            near = select_units(dist, self.frame_codes.shape[1], continuity)[..., None]  # [B, T, 1]
        else:
            near = dist.topk(min(self.frame_k, bank.shape[1]), dim=-1, largest=False).indices  # [B, T, k]
        matched = torch.gather(bank, 1, near.reshape(b, -1, 1).expand(-1, -1, dim)).reshape(b, t, -1, dim).mean(2)
        if self.frame_envelope:
            if not hasattr(codec, "basis"):
                raise ValueError(f"frame_envelope needs a magnitude codec with a latent 'basis' (the SpectralCodec); "
                                 f"{type(codec).__name__} has none")  # fmt: skip
            filt = envelope_projector(codec.basis, self.frame_envelope, skip=self.frame_envelope_skip).to(pred)
            matched = pred + (matched - pred) @ filt.T
        return (blend * matched + (1 - blend) * pred).to(predicted.dtype)


def dct_matrix(n: int) -> Tensor:
    """``[n, n]`` orthonormal DCT-II: row ``k`` is ``sqrt(2 / n) cos(pi k (i + 0.5) / n)`` (row 0 scaled by
    ``sqrt(1 / n)``), so ``dct_matrix(n) @ x`` equals ``scipy.fft.dct(x, norm="ortho")``."""
    i = torch.arange(n, dtype=torch.float64)
    m = torch.cos(torch.pi * i[:, None] * (i[None] + 0.5) / n) * (2.0 / n) ** 0.5
    m[0] /= 2**0.5
    return m


def envelope_projector(basis: Tensor, coefficients: int, *, skip: int = 0) -> Tensor:
    """``[L, L]``: the map of a latent (difference) to its spectral envelope, for a codec whose latents map
    to log-magnitude deviations by ``basis [F, L]`` (orthonormal columns): ``basis.T D.T D basis`` with ``D`` the
    first ``coefficients`` rows of the orthonormal DCT-II over the ``F`` bins (the cepstral envelope, liftering
    as in Oppenheim and Schafer); with ``skip``, rows ``skip`` to ``coefficients`` only. In float64 (callers cast)."""
    if basis.ndim != 2 or not 0 <= skip < coefficients <= basis.shape[0]:
        raise ValueError(f"need basis [F, L] and 0 <= skip < coefficients <= F, got {tuple(basis.shape)}, skip {skip} "
                         f"and coefficients {coefficients}")  # fmt: skip
    b = basis.double()
    dct = dct_matrix(b.shape[0])[skip:coefficients].to(b.device)
    return b.T @ dct.T @ dct @ b


def frame_distance(pred: Tensor, bank: Tensor, *, extra: Tensor | None = None, semantic: Tensor | None = None,
                   bank_semantic: Tensor | None = None, centers: Tensor | None = None,
                   semantic_weight: float = 0.0) -> Tensor:  # fmt: skip
    """``[B, T, M]``: the squared latent distance of each frame of ``pred [B, T, L]`` to each bank frame ``bank [B, M,
    L]`` over its mean across the bank, plus ``semantic_weight`` times the squared distance between the semantic
    tokenizer's ``centers [V, D]`` of the frames' ids ``semantic [B, T]`` and the bank frames' ``bank_semantic [B,
    M]``, over its mean across the bank (pitch classes and onsets as measured on real audio); ``extra [B, T, M]``, a
    further cost, is added before the semantic term."""
    b, t = pred.shape[:2]
    dist = torch.cdist(pred.float(), bank.float()).square()
    dist = dist / dist.mean(-1, keepdim=True).clamp_min(1e-9)
    if extra is not None:
        dist = dist + extra
    if semantic_weight:
        if semantic is None or centers is None or bank_semantic is None or semantic.shape != (b, t):
            raise ValueError(f"a semantic weight needs the generated frames' ids [B={b}, T={t}], the bank frames' "
                             "ids and the tokenizer's centres")  # fmt: skip
        d_sem = torch.cdist(centers[semantic.long()].float(), centers[bank_semantic.long()].float()).square()
        dist = dist + semantic_weight * d_sem / d_sem.mean(-1, keepdim=True).clamp_min(1e-9)
    return dist


def match_to_bank(pred: Tensor, bank: Tensor, *, k: int = 1, blend: float = 1.0, continuity: float = 0.0,
                  **distance: Any) -> Tensor:  # fmt: skip
    """``pred [B, T, L]`` with each frame replaced by the mean of its ``k`` nearest frames of ``bank [B, M, L]``
    (:func:`frame_distance`, ``distance`` its keywords), blended by ``blend``; with ``continuity`` > 0 (and ``k``
    1), by the frames of the cheapest path through the bank, one run of ``M`` consecutive frames, where the next
    frame is free and any other step costs ``continuity`` (:func:`select_units`)."""
    if not 0 <= blend <= 1 or k < 1 or continuity < 0 or (continuity and k != 1):
        raise ValueError(f"need blend in [0, 1], k >= 1, continuity >= 0 (> 0 only with k 1), got blend {blend}, "
                         f"k {k}, continuity {continuity}")  # fmt: skip
    b, t, dim = pred.shape
    dist = frame_distance(pred, bank, **distance)
    if continuity:
        near = select_units(dist, bank.shape[1], continuity)[..., None]  # [B, T, 1]
    else:
        near = dist.topk(min(k, bank.shape[1]), dim=-1, largest=False).indices  # [B, T, k]
    matched = torch.gather(bank.float(), 1, near.reshape(b, -1, 1).expand(-1, -1, dim)).reshape(b, t, -1, dim).mean(2)
    return (blend * matched + (1 - blend) * pred.float()).to(pred.dtype)


def select_units(cost: Tensor, run: int, jump: float) -> Tensor:
    """The cheapest path ``[B, T]`` of bank frame indices through ``cost [B, T, M]`` (frame ``t``'s cost
    of bank frame ``m``), where the bank holds clips of ``run`` consecutive frames (``M = clips * run``):
    stepping from frame ``m`` to ``m + 1`` of the same clip is free, any other step (a jump, a repeat
    included) costs ``jump``. Viterbi: ``T`` steps of ``O(M)`` each."""
    b, t, m = cost.shape
    if m % run:
        raise ValueError(f"{m} bank frames are not whole clips of {run}")
    follows = (torch.arange(m, device=cost.device) % run) != 0  # m can be reached from m - 1 for free
    total = cost[:, 0].clone()
    back = torch.empty(b, t, m, dtype=torch.long, device=cost.device)
    back[:, 0] = torch.arange(m, device=cost.device)
    for i in range(1, t):
        best, arg = total.min(-1, keepdim=True)  # the cheapest frame to jump from
        stay = torch.full_like(total, float("inf"))
        stay[:, 1:] = total[:, :-1]
        stay[:, ~follows] = float("inf")
        take_run = stay <= best + jump
        back[:, i] = torch.where(take_run, torch.arange(m, device=cost.device) - 1, arg.expand(-1, m))
        total = torch.where(take_run, stay, best + jump) + cost[:, i]
    path = torch.empty(b, t, dtype=torch.long, device=cost.device)
    path[:, -1] = total.argmin(-1)
    for i in range(t - 1, 0, -1):
        path[:, i - 1] = back[:, i].gather(1, path[:, i : i + 1])[:, 0]
    return path


_CHROMA: dict[tuple[int, int], Tensor] = {}


def frame_chroma(latents: Tensor, codec: Any) -> Tensor:
    """Unit chroma vectors ``[..., 12]`` of magnitude-codec latents ``[..., L]``: their magnitude spectra
    (``exp(latents @ basis.T + mean) - floor``) through librosa's chroma filterbank."""
    for name in ("basis", "mean", "floor", "n_fft", "sample_rate"):
        if not hasattr(codec, name):
            raise ValueError(f"pitch-aware matching needs a magnitude codec with {name!r} (the SpectralCodec); "
                             f"{type(codec).__name__} has none")  # fmt: skip
    key = (int(codec.sample_rate), int(codec.n_fft))
    if key not in _CHROMA:
        import librosa

        _CHROMA[key] = torch.from_numpy(librosa.filters.chroma(sr=key[0], n_fft=key[1])).float().T  # [F, 12]
    mag = ((latents.float() @ codec.basis.T.float() + codec.mean.float()).exp() - codec.floor).clamp_min(0)
    return F.normalize(mag @ _CHROMA[key].to(mag.device), dim=-1)


__all__ = [
    "RetrievalPrior",
    "dct_matrix",
    "envelope_projector",
    "frame_chroma",
    "frame_distance",
    "knn_mean",
    "match_to_bank",
    "nearest_rows",
    "select_units",
]

"""MusicLM: text -> MuLaN tokens -> semantic ids -> codec codes -> audio, reranked by MuLaN.

Two acoustic paths: the paper's coarse + fine token LMs (``coarse_lm``, ``fine_lm``), or one parallel
frame-aligned stage (``acoustic_lm``: :class:`~musiclm_pytorch.lm.MaskedAcousticLM`, which makes every
codec level in a few forwards, or :class:`~musiclm_pytorch.lm.LatentAcousticLM`, which regresses a
magnitude codec's latents in one) that reads a continuous MuLaN embedding. With a retrieval prior
(:class:`~musiclm_pytorch.lm.RetrievalPrior`) every stage is conditioned through the training clips
nearest the text (:meth:`MusicLM.text_condition`); the shipped model (``DEFAULT_MODEL``) is built so.

A plain class holding its components. Construction checks that their contracts agree (vocabularies,
rates, quantizer splits) and raises ``ValueError`` naming both sides. ``generate`` samples
``num_candidates`` per text in ONE batch through each stage (the reference looped over them), decodes
them, and keeps the candidate whose MuLaN audio embedding is closest to the text's (MusicLM §3.3).

The fine stage forces the given coarse levels of each frame (an ``allowed`` mask with one id) and
samples the fine levels, in chunks of the length it was trained on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .codec import Codec
from .conditioning import MuLaNEmbedQuantizer
from .lm.layouts import CoarseLayout, FineLayout, SemanticLayout
from .lm.masked import MaskedAcousticLM
from .lm.prior import RetrievalPrior
from .lm.regression import LatentAcousticLM
from .lm.transformer import SamplingConfig, TokenLM
from .semantic import SemanticTokenizer

_BPM = re.compile(r"\b(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute)\b", flags=re.IGNORECASE)


@dataclass
class GenerationResult:
    wavs: Tensor  # [B, S] the chosen candidate per text (mono)
    scores: Tensor  # [B, N] MuLaN cosine of every candidate with its text
    chosen: Tensor  # [B] index of the chosen candidate
    semantic: Tensor  # [B, T] semantic ids of the chosen candidates
    codes: Tensor  # [B, Q, T'] codec codes of the chosen candidates
    candidates: Tensor  # [B, N, S] every candidate, in the order of ``scores``
    sample_rate: int = 16000  # of ``wavs`` and ``candidates``

    @property
    def audio(self) -> Tensor:
        """``[B, C, S]`` with ``C = 1``: the chosen candidates in the layout audio libraries use."""
        return self.wavs[:, None]


class TextCondition(NamedTuple):
    """What the stages get for a batch of texts (:meth:`MusicLM.text_condition`)."""

    cond_ids: Tensor  # [B, Q] the semantic LM's conditioning ids
    prior_log_probs: Tensor | None  # [B, V] the retrieval prior's log distribution over semantic ids
    acoustic: Tensor | None  # [B, C] the frame-aligned acoustic stage's conditioning latent
    text: Tensor  # [B, C] the texts' MuLaN latents
    controls: Tensor | None = None  # [B, 2] key and drums labels for a semantic LM that reads them
    key_bias: Tensor | None = None  # [B, V] the semantic LM's logit bias for the key label (key_logit_bias)
    semantic: Tensor | None = None  # [B, C] the semantic LM's conditioning latent (None: acoustic's, else text)


class MusicLM:
    """Args:
    conditioner: a fitted :class:`MuLaNEmbedQuantizer` (holds the MuLaN used for reranking).
    semantic_tokenizer: ``vocab_size``, ``sample_rate``, ``frame_rate``.
    codec: a ``Codec``.
    semantic_lm, coarse_lm, fine_lm: the stage LMs (``fine_lm=None`` decodes the coarse levels only).
    acoustic_lm: a frame-aligned acoustic stage instead of ``coarse_lm`` and ``fine_lm``: the masked
        token stage, or the latent stage (which needs a codec with ``decode_latents``, the SpectralCodec).
    num_coarse: codec levels modelled by the coarse stage.
    prior: a :class:`~musiclm_pytorch.lm.RetrievalPrior` over the stages' training clips. With it, a text
        conditions every stage through the audio latents of its nearest training clips (the semantic LM
        through their quantized mean, the frame-aligned stage through the mean itself), and the semantic
        LM's next-id distribution mixes in the neighbours' semantic id distribution (share ``prior.mix``).
    """

    def __init__(
        self,
        *,
        conditioner: MuLaNEmbedQuantizer,
        semantic_tokenizer: SemanticTokenizer,
        codec: Codec,
        semantic_lm: TokenLM,
        coarse_lm: TokenLM | None = None,
        fine_lm: TokenLM | None = None,
        acoustic_lm: MaskedAcousticLM | LatentAcousticLM | None = None,
        num_coarse: int = 3,
        prior: RetrievalPrior | None = None,
    ):
        self.conditioner, self.semantic_tokenizer, self.codec = conditioner, semantic_tokenizer, codec
        self.semantic_lm, self.coarse_lm, self.fine_lm, self.acoustic_lm = semantic_lm, coarse_lm, fine_lm, acoustic_lm
        self.prior = prior
        if (coarse_lm is None) == (acoustic_lm is None):
            raise ValueError("give either coarse_lm (+ fine_lm), the paper's acoustic stages, or acoustic_lm")
        if acoustic_lm is not None and fine_lm is not None:
            raise ValueError("acoustic_lm makes every codec level: fine_lm goes with coarse_lm only")
        sv, cb, nq = semantic_tokenizer.vocab_size, codec.codebook_size, codec.num_quantizers
        self.semantic_layout = SemanticLayout(sv)
        self.coarse_layout = CoarseLayout(sv, cb, num_coarse)
        self.fine_layout = FineLayout(cb, num_coarse, nq - num_coarse) if fine_lm is not None else None
        self._check("semantic_lm.vocab_size", semantic_lm.vocab_size, "semantic_tokenizer.vocab_size", sv)
        if coarse_lm is not None:
            self._check(
                "coarse_lm.vocab_size",
                coarse_lm.vocab_size,
                f"semantic vocab + {num_coarse} x codebook",
                self.coarse_layout.vocab_size,
            )
        if acoustic_lm is not None:
            self._check("acoustic_lm.semantic_vocab", acoustic_lm.semantic_vocab, "semantic_tokenizer.vocab_size", sv)
        if isinstance(acoustic_lm, LatentAcousticLM):
            if not hasattr(codec, "decode_latents"):
                raise ValueError(f"acoustic_lm is a LatentAcousticLM but codec {type(codec).__name__} has no "
                                 "decode_latents (use the SpectralCodec it was trained on)")  # fmt: skip
            latent_dim = getattr(codec, "latent_dim", None)
            self._check("acoustic_lm.latent_dim", acoustic_lm.latent_dim, "codec.latent_dim", latent_dim)
        elif acoustic_lm is not None:
            self._check("acoustic_lm.codebook_size", acoustic_lm.codebook_size, "codec.codebook_size", cb)
            if acoustic_lm.num_quantizers > nq:
                raise ValueError(
                    f"acoustic_lm.num_quantizers={acoustic_lm.num_quantizers} exceeds codec.num_quantizers={nq}"
                )
            self._check("acoustic_lm.cond_dim", acoustic_lm.cond_dim, "MuLaN dim_latent", conditioner.mulan.dim_latent)
        if fine_lm is not None and self.fine_layout is not None:
            self._check(
                "fine_lm.vocab_size", fine_lm.vocab_size, "codec levels x codebook", self.fine_layout.vocab_size
            )
        for name, lm in (("semantic_lm", semantic_lm), ("coarse_lm", coarse_lm), ("fine_lm", fine_lm)):
            if lm is None:
                continue
            self._check(f"{name}.num_cond", lm.num_cond, "conditioner.num_quantizers", conditioner.num_quantizers)
            self._check(f"{name}.cond_vocab", lm.cond_vocab, "conditioner.codebook_size", conditioner.codebook_size)
        if prior is not None:
            self._check("prior.vocab_size", prior.vocab_size, "semantic_tokenizer.vocab_size", sv)
            self._check("prior.cond_dim", prior.cond_dim, "MuLaN dim_latent", conditioner.mulan.dim_latent)
        self._check(
            "semantic_tokenizer.sample_rate", semantic_tokenizer.sample_rate, "codec.sample_rate", codec.sample_rate
        )
        ratio = codec.frame_rate / semantic_tokenizer.frame_rate
        if abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise ValueError(
                f"codec.frame_rate={codec.frame_rate} must be a whole multiple of semantic_tokenizer.frame_rate="
                f"{semantic_tokenizer.frame_rate}"
            )
        self.ratio = int(round(ratio))
        if acoustic_lm is not None:
            self._check("acoustic_lm.ratio", acoustic_lm.ratio, "codec / semantic frame rate", self.ratio)

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, lm_precision: str | None = None) -> MusicLM:  # fmt: skip
        """The model in ``folder`` (component files named in ``BUNDLE_FILES``), or with ``None`` the one
        that ships in the package (``DEFAULT_MODEL``), on ``device``; no download, ever. ``lm_precision``:
        the stage LMs' decoding precision (:func:`load_musiclm`: float32, bfloat16 or int8); ``dtype``
        (``torch.float32`` or ``torch.bfloat16``) says the same in transformers' words."""
        if dtype is not None:
            named = {torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype)
            if named is None or (lm_precision is not None and lm_precision != named):
                raise ValueError(f"dtype {dtype} with lm_precision {lm_precision!r}: give dtype torch.float32 or "
                                 "torch.bfloat16, or lm_precision alone (int8 has no dtype)")  # fmt: skip
            lm_precision = named
        folder = DEFAULT_MODEL if folder is None else folder
        return load_musiclm(folder, lm_precision=lm_precision or "float32").to(device)

    def modules(self) -> dict[str, torch.nn.Module]:
        """The components that hold weights, by name (absent ones left out)."""
        parts = {"conditioner": self.conditioner, "semantic_tokenizer": self.semantic_tokenizer, "codec": self.codec,
                 "semantic_lm": self.semantic_lm, "coarse_lm": self.coarse_lm, "fine_lm": self.fine_lm,
                 "acoustic_lm": self.acoustic_lm, "prior": self.prior}  # fmt: skip
        return {k: v for k, v in parts.items() if isinstance(v, torch.nn.Module)}

    def to(self, device: str | torch.device) -> MusicLM:
        """Move every component to ``device`` (in place, like ``nn.Module.to``; dtypes are kept)."""
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: this PyTorch build or machine has no CUDA")
        for module in self.modules().values():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.semantic_lm.parameters()).device

    @staticmethod
    def _check(a_name: str, a: object, b_name: str, b: object) -> None:
        if a != b:
            raise ValueError(f"{a_name}={a} does not match {b_name}={b}")

    @property
    def default_cfg_scale(self) -> tuple[float, float]:
        """``(semantic, acoustic)`` guidance when a caller gives none: what each stage's file stores (the
        semantic LM's ``default_cfg_scale``, the flow stage's ``mean_cfg_scale``), else 1 for the semantic
        stage and 3 for the acoustic ones."""
        sem = getattr(self.semantic_lm, "default_cfg_scale", None)
        ac = getattr(self.acoustic_lm if self.acoustic_lm is not None else self.coarse_lm, "default_cfg_scale", None)
        return 1.0 if sem is None else float(sem), 3.0 if ac is None else float(ac)

    @property
    def default_temperatures(self) -> tuple[float, float, float]:
        """``(semantic, coarse or acoustic, fine)`` sampling temperatures when a caller gives none: the
        semantic LM's stored ``default_temperature``, else the paper's 1.0, and the paper's 0.95 and 0.4."""
        sem = getattr(self.semantic_lm, "default_temperature", None)
        return 1.0 if sem is None else float(sem), 0.95, 0.4

    def sampling_temperatures(self, temperatures: tuple[float, float, float] | None) -> tuple[float, float, float]:
        """The given three temperatures, checked, or :attr:`default_temperatures` for ``None``."""
        if temperatures is None:
            return self.default_temperatures
        if len(temperatures) != 3 or min(temperatures) <= 0:
            raise ValueError(f"temperatures must be three values > 0 (semantic, coarse, fine), got {temperatures}")
        return tuple(float(t) for t in temperatures)  # type: ignore[return-value]

    def beat_grids(self, texts: list[str], beat: Tensor | None = None, text_latents: Tensor | None = None
                   ) -> Tensor | None:  # fmt: skip
        """``[B, 2]`` beat grids (period, phase in semantic frames) for a semantic LM that reads one
        (``beat_harmonics``), else ``None``: ``beat`` as given, or the tempo a text names ("140 bpm"), else
        the median period of the text's nearest training clips (a prior with beat periods and
        ``text_latents``), else period 0 (tempo unknown: the LM's null grid); grids start at frame 0."""
        if not getattr(self.semantic_lm, "beat_harmonics", 0):
            if beat is not None:
                raise ValueError("beat given, but this model's semantic LM reads no beat grid (beat_harmonics 0)")
            return None
        if beat is not None:
            if beat.shape != (len(texts), 2):
                raise ValueError(f"beat must be [B, 2] = [{len(texts)}, 2] (period, phase in frames), "
                                 f"got {tuple(beat.shape)}")  # fmt: skip
            return beat.float()
        rate = float(self.semantic_tokenizer.frame_rate)
        known = self.prior is not None and self.prior.has_beats and text_latents is not None
        near = self.prior.beat_period(text_latents).cpu() if known else torch.zeros(len(texts))  # type: ignore[union-attr,arg-type]
        grids = []
        for text, fallback in zip(texts, near.tolist()):
            found = _BPM.search(text)
            bpm = float(found.group(1)) if found else 0.0
            grids.append([60.0 * rate / bpm if 20 <= bpm <= 400 else fallback, 0.0])
        return torch.tensor(grids)

    def control_labels(self, text_latents: Tensor, conditioning: Tensor, source: str | None = None
                       ) -> Tensor | None:  # fmt: skip
        """``[B, 2]`` key and drums labels for a semantic LM that reads them (``control_classes``), else
        ``None``: MuLaN's zero-shot reading (:class:`~musiclm_pytorch.lm.controls.ControlReader`, the reader
        training used) of ``source``'s latents: ``"prior"`` the ``conditioning`` latents the LM's ids quantize
        (the retrieval prior's mean of the text's nearest training clips, or a prompt's own audio latent),
        ``"text"`` the text latents themselves (default: the LM's stored ``control_source``)."""
        if not getattr(self.semantic_lm, "control_classes", []):
            return None
        source = source or self.semantic_lm.control_source
        if source not in ("prior", "text"):
            raise ValueError(f"control source must be 'prior' or 'text', got {source!r}")
        return self.control_reader().read(conditioning if source == "prior" else text_latents)

    def control_reader(self) -> Any:
        """The :class:`~musiclm_pytorch.lm.controls.ControlReader` of this model's MuLaN (built once)."""
        if self._control_reader is None:
            from .lm.controls import ControlReader

            self._control_reader = ControlReader.from_mulan(self.conditioner.mulan)
        return self._control_reader

    def acoustic_beat(self, semantic: Tensor, controls: Tensor | None, text_latents: Tensor, *,
                      grids: Tensor | None = None, source: str | None = None) -> dict[str, Tensor]:  # fmt: skip
        """What a latent stage that reads the beat (``beat_bins``) gets beside its conditioning: ``beat [B, 2]``
        and ``drums [B]``, the drums label of ``controls [B, 2]`` where given, else MuLaN's zero-shot reading of
        ``text_latents [B, C]``; ``{}`` for any other acoustic stage. The grid (``source``, default the stage's
        stored ``beat_source``): ``"semantic"``, each row's ``grids [B, 2]`` (the grid the semantic LM was given,
        phase from frame 0) where its period is known, else the one of the row's own ids ``semantic [B, Ts]``
        (:meth:`ids_beat`); ``"ids"``, always the ids' (as training read each clip's)."""
        if not getattr(self.acoustic_lm, "beat_bins", 0):
            return {}
        source = self.acoustic_beat_source(source)
        drums = controls[:, 1] if controls is not None else self.control_reader().read(text_latents)[:, 1]
        if source == "semantic" and grids is not None:
            if grids.shape != (len(semantic), 2):
                raise ValueError(f"grids must be [B, 2] = {[len(semantic), 2]}, got {list(grids.shape)}")
            beat = grids.float().to(self.device)  # a copy: the caller's rows stay as they are
            unknown = (beat[:, 0] <= 0).nonzero()[:, 0]  # only these rows need the ids' estimate
            if len(unknown):
                beat[unknown] = self.ids_beat(semantic[unknown])
        else:
            beat = self.ids_beat(semantic)
        return {"beat": beat, "drums": drums.long().to(self.device)}

    def acoustic_beat_source(self, source: str | None) -> str:
        """``source`` checked, or the latent stage's stored ``beat_source`` for ``None`` (``"ids"`` for a stage
        that reads no beat, where it changes nothing)."""
        from .lm.regression import check_beat_source

        if source is None:
            return str(getattr(self.acoustic_lm, "beat_source", "ids"))
        return check_beat_source(source)

    def ids_beat(self, semantic: Tensor) -> Tensor:
        """``[B, 2]`` beat grids (period, phase in frames) of id sequences ``semantic [B, Ts]``, as the latent
        stage's training read each clip's (:func:`~musiclm_pytorch.semantic.beat.grid_of_ids`); fewer than 4 ids
        hold no beat to estimate: period 0 (unknown)."""
        from .semantic.beat import grid_of_ids

        rows = semantic.cpu()
        grids = [grid_of_ids(self.semantic_tokenizer, r) if len(r) >= 4 else (0.0, 0.0) for r in rows]
        return torch.tensor(grids, dtype=torch.float32).reshape(len(rows), 2).to(self.device)

    def fit_movement_gain(self, items: list[dict[str, Any]], *, alpha: float = 0.5, batch_size: int = 16,
                          bands_hz: list[float] | None = None, cap_above_hz: float | None = None
                          ) -> dict[str, Any]:  # fmt: skip
        """Fit and set the latent stage's movement gain (:meth:`LatentAcousticLM.fit_movement_gain`) on tokenized
        training clips ``items`` (``musiclm data tokenize``'s ``train.pt`` items: ``semantic``, ``codes``, ``mulan``),
        each with its own conditioning, its ids' beat grid and its latent's drums label, as the stage was trained,
        at the guidance generation uses; ``bands_hz``: the inner edges of its modulation bands in Hz (converted at
        the codec's frame rate; none: one gain per latent dimension); ``cap_above_hz``: the bands from this
        frequency up get gains of at most 1 (only the slower movement raised)."""
        stage = self.acoustic_lm
        if not isinstance(stage, LatentAcousticLM) or not stage.takes_movement_gain:
            raise ValueError(f"a movement gain is a setting of a latent acoustic stage (LatentAcousticLM); this "
                             f"model's acoustic stage is a {type(stage or self.coarse_lm).__name__}")  # fmt: skip
        missing = [k for k in ("semantic", "codes", "mulan") if items and k not in items[0]]
        if missing:
            raise ValueError(f"the tokenized clips lack {missing} (tokenize with `musiclm data tokenize`)")
        clips = []
        for it in items:
            semantic = it["semantic"].long()
            latents = self.codec.latents_from_codes(it["codes"][None].long().to(self.device))[0]  # type: ignore[attr-defined]
            cond = it["mulan"].float().to(self.device)
            extra: tuple[Tensor, ...] = ()
            if stage.beat_bins:
                drums = self.control_reader().read(cond[None])[0, 1]
                extra = (self.ids_beat(semantic[None])[0], drums)
            clips.append((semantic, latents, cond, *extra))
        bands = None
        if bands_hz:
            rate = float(self.codec.frame_rate)
            if any(not 0 < b < rate / 2 for b in bands_hz):
                raise ValueError(f"movement bands must lie between 0 and half the codec's frame rate "
                                 f"({rate / 2:g} Hz), got {bands_hz}")  # fmt: skip
            bands = [b / rate for b in bands_hz]
        cap = None if cap_above_hz is None else cap_above_hz / float(self.codec.frame_rate)
        return stage.fit_movement_gain(clips, alpha=alpha, cfg_scale=self.guidance(None)[1], batch_size=batch_size,
                                       bands=bands, cap_above=cap)  # fmt: skip

    def key_logit_bias(self, controls: Tensor | None, scale: float | None = None) -> Tensor | None:
        """``[B, V]``: ``scale`` (default the semantic LM's stored ``key_bias``) times the PMI of each id with
        the key label of ``controls [B, 2]`` over the retrieval prior's training clips (their ids counted, their
        keys read as in training; :func:`~musiclm_pytorch.lm.controls.label_pmi`), zero for an unknown key (-1);
        ``None`` without labels, a prior or a bias."""
        scale = getattr(self.semantic_lm, "key_bias", 0.0) if scale is None else scale
        if scale < 0:
            raise ValueError(f"key_bias must be >= 0, got {scale}")
        if controls is None or self.prior is None or not scale:
            return None
        if self._key_pmi is None:
            from .lm.controls import NUM_KEYS, label_pmi

            keys = self.control_reader().read(self.prior.latents)[:, 0]
            self._key_pmi = label_pmi(self.prior.counts, keys, NUM_KEYS)
        key = controls[:, 0].long().cpu()
        bias = scale * self._key_pmi[key.clamp(min=0)] * (key >= 0).float()[:, None]
        return bias.to(self.device)

    _key_pmi: Tensor | None = None

    def given_controls(self, controls: Tensor | None, batch: int) -> Tensor | None:
        """``controls [B, 2]`` checked against this model's semantic LM (``None`` passes)."""
        if controls is None:
            return None
        classes = getattr(self.semantic_lm, "control_classes", [])
        if not classes:
            raise ValueError("controls given, but this model's semantic LM reads no key and drums labels")
        if controls.shape != (batch, len(classes)):
            raise ValueError(f"controls must be [B, {len(classes)}] = [{batch}, {len(classes)}] (key, drums; -1 "
                             f"unknown), got {tuple(controls.shape)}")  # fmt: skip
        return controls.long().cpu()

    _control_reader: Any = None

    def guidance(self, cfg_scale: float | tuple[float, float] | None) -> tuple[float, float]:
        """``(semantic, acoustic)`` guidance scales from one scale, a pair, or ``None`` (the defaults)."""
        return self.default_cfg_scale if cfg_scale is None else _scales(cfg_scale)

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    def max_seconds(self) -> float:
        """The longest clip one pass can make: limited by the semantic and coarse LMs' sequence lengths."""
        frames_sem = self.semantic_lm.max_seq_len
        if self.coarse_lm is None:  # the masked acoustic stage has no cache to bound its length
            return frames_sem / self.semantic_tokenizer.frame_rate
        frames_coarse = self.coarse_lm.max_seq_len // (1 + self.ratio * self.coarse_layout.num_coarse)
        return min(frames_sem, frames_coarse) / self.semantic_tokenizer.frame_rate

    @torch.no_grad()
    def generate(
        self,
        texts: list[str],
        *,
        seconds: float,
        num_candidates: int = 1,
        temperatures: tuple[float, float, float] | None = None,
        cfg_scale: float | tuple[float, float] | None = None,
        top_k: int = 0,
        acoustic_steps: tuple[int, ...] = (8, 1),
        generator: torch.Generator | None = None,
        prior_mix: float | None = None,
        frame_blend: float | None = None,
        melody: tuple[Tensor, int] | None = None,
        beat: Tensor | None = None,
        controls: Tensor | None = None,
        key_bias: float | None = None,
        beat_source: str | None = None,
    ) -> GenerationResult:
        """Music for each text. ``temperatures``: semantic, coarse, fine (default
        :attr:`default_temperatures`: the semantic LM's stored one, else the paper's 1.0, 0.95, 0.4; with
        ``acoustic_lm`` the second is its sampling temperature; ``acoustic_steps`` its unmasking rounds per
        level).
        ``cfg_scale``: classifier-free guidance, one scale for every stage or ``(semantic, acoustic)``
        (default :attr:`default_cfg_scale`).
        ``prior_mix``: the retrieval prior's share in the semantic LM's next-id distribution (default
        ``prior.mix``). ``frame_blend``: with a latent acoustic stage and a prior that has a frame bank,
        the share of matched real frames in each predicted frame (default ``prior.frame_blend``; 0 off).
        ``melody``: ``(wav [S], sample_rate)`` of a hummed, whistled or played melody: its semantic ids
        (the tokenizer's pitch-class and onset features) replace the semantic stage's, so the acoustic
        stage renders that melody in the texts' style (semantic-id transfer; the latent stage then makes
        the same audio for every candidate).
        ``beat [B, 2]``: with a semantic LM that reads a beat grid, each text's (period, phase) in semantic
        frames (default :meth:`beat_grids`: the tempo the text names, else unknown).
        ``controls [B, 2]``: with a semantic LM that reads key and drums labels, each text's (key index of
        :func:`~musiclm_pytorch.lm.controls.key_index`, drums 0 / 1; -1 unknown) (default
        :meth:`control_labels`: MuLaN's reading of the text's conditioning). ``key_bias``: the scale of the key
        label's logit bias (:meth:`key_logit_bias`; default the semantic LM's stored one): higher keeps the
        key more often and the rhythm less (benchmarks/RESULTS.md).
        ``beat_source``: with a latent stage that reads the beat, which grid it gets (:meth:`acoustic_beat`;
        default the stage's stored ``beat_source``)."""
        sem_cfg, cfg_scale = self.guidance(cfg_scale)
        beat_source = self.acoustic_beat_source(beat_source)
        temperatures = self.sampling_temperatures(temperatures)
        if not texts:
            raise ValueError("texts is empty")
        if seconds <= 0 or seconds > self.max_seconds():
            raise ValueError(f"seconds must be in (0, {self.max_seconds():.2f}] for these stage LMs, got {seconds}")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        b, n = len(texts), num_candidates
        tc = self.text_condition(texts)
        cond, prior_lp, acoustic_cond, text, labels, id_bias = tc[:6]
        given = self.given_controls(controls, b)
        if given is not None or key_bias is not None:
            labels = given if given is not None else labels
            id_bias = self.key_logit_bias(labels, key_bias)
        if melody is not None and given is not None:
            raise ValueError("controls steer the semantic stage, which a melody replaces: give one or the other")
        mix = self.prior_mix(prior_mix)
        cond = cond.repeat_interleave(n, dim=0)  # [B*N, Q]
        frames = max(1, int(seconds * self.semantic_tokenizer.frame_rate))
        grids = None  # the semantic LM's beat grids, [B, 2]
        if melody is not None:
            semantic = self.melody_ids(*melody, frames=frames).repeat(b * n, 1)
        else:
            sem_latent = self.semantic_latent(tc)
            grids = self.beat_grids(texts, beat, text)
            semantic = self.semantic_lm.generate(
                steps=frames,
                cond_ids=cond,
                sampling=SamplingConfig(temperatures[0], top_k, 1.0, sem_cfg),
                generator=generator,
                prior_log_probs=None if prior_lp is None else prior_lp.repeat_interleave(n, dim=0),
                prior_mix=mix,
                cond_latent=None if sem_latent is None else sem_latent.repeat_interleave(n, dim=0),
                beat=None if grids is None else grids.repeat_interleave(n, dim=0),
                controls=None if labels is None else labels.repeat_interleave(n, dim=0),
                logit_bias=None if id_bias is None else id_bias.repeat_interleave(n, dim=0),
            )
        wavs: Tensor | None = None
        latents = None if acoustic_cond is None else acoustic_cond.repeat_interleave(n, dim=0)  # [B*N, C]
        if isinstance(self.acoustic_lm, LatentAcousticLM):
            rhythm = self.acoustic_beat(semantic, None if labels is None else labels.repeat_interleave(n, dim=0),
                                        text.repeat_interleave(n, dim=0), source=beat_source,
                                        grids=None if grids is None else grids.repeat_interleave(n, dim=0))  # fmt: skip
            predicted = self.acoustic_lm.generate(semantic, latents, cfg_scale=cfg_scale, generator=generator,
                                                  beat=rhythm.get("beat"), drums=rhythm.get("drums"))  # fmt: skip
            predicted = self.match_frames(text.repeat_interleave(n, dim=0), predicted, frame_blend, semantic=semantic,
                                          drums=rhythm.get("drums", None if labels is None else labels[:, 1]
                                                           .repeat_interleave(n, dim=0)))  # fmt: skip
            wavs = self.codec.decode_latents(predicted)[:, 0]  # type: ignore[attr-defined]
            codes = self.codec.quantize_latents(predicted)  # type: ignore[attr-defined]
        elif self.acoustic_lm is not None:
            codes = self.acoustic_lm.generate(
                semantic, latents, steps=acoustic_steps, cfg_scale=cfg_scale, temperature=temperatures[1],
                top_k=top_k, generator=generator,
            )  # fmt: skip
        else:
            assert self.coarse_lm is not None
            acoustic_frames = frames * self.ratio
            coarse_tokens = self.coarse_lm.generate(
                steps=acoustic_frames * self.coarse_layout.num_coarse, cond_ids=cond, prime=semantic,
                sampling=SamplingConfig(temperatures[1], top_k, 1.0, cfg_scale), generator=generator,
                allowed=self.coarse_layout.allowed(acoustic_frames),
            )  # fmt: skip
            codes = self.coarse_layout.unflatten(coarse_tokens[:, frames:])  # [B*N, Qc, T']
            if self.fine_lm is not None and self.fine_layout is not None:
                codes = self._fine(codes, cond, SamplingConfig(temperatures[2], top_k, 1.0, cfg_scale), generator)
        if wavs is None:
            wavs = self.codec.decode(codes)[:, 0]  # [B*N, S]
        wavs = wavs[:, : int(seconds * self.sample_rate)]
        scores = self.rerank_scores(wavs, texts, n)
        chosen = scores.argmax(dim=1)
        pick = torch.arange(b, device=chosen.device) * n + chosen
        return GenerationResult(wavs=wavs[pick], scores=scores, chosen=chosen, semantic=semantic[pick],
                                codes=codes[pick], candidates=wavs.reshape(b, n, -1),
                                sample_rate=self.sample_rate)  # fmt: skip

    @torch.no_grad()
    def generate_long(
        self,
        segments: list[tuple[str, float]],
        *,
        window_seconds: float | None = None,
        stride_seconds: float | None = None,
        temperatures: tuple[float, float, float] | None = None,
        cfg_scale: float | tuple[float, float] | None = None,
        top_k: int = 0,
        generator: torch.Generator | None = None,
        frame_blend: float | None = None,
        key_bias: float | None = None,
        beat_source: str | None = None,
    ) -> Tensor:
        """Long generation and story mode (MusicLM §4.4): ``segments`` are ``(text, seconds)``; one
        text for a long piece, several for a story. Each new ``stride`` is generated with the last
        ``window - stride`` seconds as prefix (paper: 15 s stride) and the current segment's text.
        Returns one waveform ``[S]``. ``cfg_scale``: one scale, or ``(semantic, acoustic)``; ``key_bias`` and
        ``beat_source``: as in :meth:`generate`.
        """
        if not segments or any(sec <= 0 for _, sec in segments):
            raise ValueError(f"segments must be non-empty (text, seconds > 0) pairs, got {segments}")
        rate = self.semantic_tokenizer.frame_rate
        # which segment's text conditions each semantic frame
        owner = torch.cat([torch.full((int(sec * rate),), i) for i, (_, sec) in enumerate(segments)])
        texts = [t for t, _ in segments]
        cond = self.text_condition(texts)
        if key_bias is not None:
            cond = cond._replace(key_bias=self.key_logit_bias(cond.controls, key_bias))
        return self._long(cond, owner, window_seconds=window_seconds, stride_seconds=stride_seconds,
                          temperatures=temperatures, cfg_scale=cfg_scale, top_k=top_k, generator=generator,
                          frame_blend=frame_blend, grids=self.beat_grids(texts, None, cond.text),
                          beat_source=beat_source)  # fmt: skip

    @torch.no_grad()
    def generate_continuation(
        self,
        prompt: Tensor,
        prompt_sample_rate: int,
        *,
        seconds: float,
        text: str | None = None,
        window_seconds: float | None = None,
        stride_seconds: float | None = None,
        temperatures: tuple[float, float, float] | None = None,
        cfg_scale: float | tuple[float, float] | None = None,
        top_k: int = 0,
        generator: torch.Generator | None = None,
        frame_blend: float | None = None,
        beat_source: str | None = None,
        prompt_blend: float | None = None,
        prompt_continuity: float | None = None,
    ) -> Tensor:
        """Continue an audio ``prompt [S]`` by ``seconds`` (AudioLM / MusicLM continuation): the prompt's
        semantic ids (its last ``window - stride`` seconds) are the semantic stage's prefix, its codec
        codes the token stages' acoustic prefix, and the stages are conditioned on the prompt's own MuLaN
        *audio* embedding, what they were trained on (or on ``text`` when given). Longer continuations go
        window by window as in :meth:`generate_long`. A latent stage takes no acoustic prefix: each frame it
        predicts is replaced by the prompt's nearest real frame (its codec latents, by latent distance and the
        distance of the two frames' semantic ids), blended by ``prompt_blend`` (default
        :data:`PROMPT_BLEND`; 0: none), so the continuation is made of the prompt's own sound; with
        ``prompt_continuity`` > 0 (default :data:`PROMPT_CONTINUITY`), by the frames of the cheapest path through
        the prompt, where its next frame is free and any other step costs that much (runs of the prompt's own
        audio, unit selection). Returns the continuation alone, ``[S']``."""
        if prompt.ndim != 1 or prompt.shape[0] == 0:
            raise ValueError(f"prompt must be mono audio [S >= 1], got shape {tuple(prompt.shape)}")
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        rate = self.semantic_tokenizer.frame_rate
        window = window_seconds or self.max_seconds()
        stride = stride_seconds or window / 2
        wav = _resample(prompt.float()[None].to(self.device), prompt_sample_rate, self.sample_rate)  # [1, S]
        keep = int((window - stride) * self.sample_rate)  # the prefix the first window sees
        wav = wav[:, -keep:] if keep > 0 else wav[:, :0]
        hop = int(round(self.sample_rate / rate))  # whole semantic frames
        wav = wav[:, wav.shape[1] % hop :]
        if wav.shape[1] < hop:
            raise ValueError(f"the prompt is shorter than one semantic frame ({1 / rate:.3f} s)")
        prefix = self.semantic_tokenizer(wav).to(self.device)  # [1, Tp]
        if text is not None:
            cond = self.text_condition([text])
        else:
            mulan = self.conditioner.mulan
            cond = self.audio_condition(mulan.get_audio_latents(_resample(wav, self.sample_rate, mulan.sample_rate)))
        latent_stage = isinstance(self.acoustic_lm, LatentAcousticLM)
        bank = None
        blend = PROMPT_BLEND if prompt_blend is None else prompt_blend
        continuity = PROMPT_CONTINUITY if prompt_continuity is None else prompt_continuity
        if not 0 <= blend <= 1:
            raise ValueError(f"prompt_blend must be in [0, 1], got {blend}")
        if not (continuity >= 0 and math.isfinite(continuity)):
            raise ValueError(f"prompt_continuity must be a finite number >= 0, got {continuity}")
        codes = self.codec.encode(wav[:, None]) if not latent_stage or blend else None
        if latent_stage and blend:  # the prompt's own frames, each with the id that covers it
            latents = self.codec.latents_from_codes(codes)  # type: ignore[attr-defined]
            ids = prefix.repeat_interleave(self.ratio, dim=1)[:, : latents.shape[1]]
            bank = (latents[:, : ids.shape[1]], ids, blend, continuity)
        owner = torch.zeros(int(seconds * rate), dtype=torch.long)
        grids = None
        if getattr(self.semantic_lm, "beat_harmonics", 0):  # the continuation keeps the prompt's own beat
            from .semantic.beat import grid_of_ids

            grids = torch.tensor([grid_of_ids(self.semantic_tokenizer, prefix[0])])
        return self._long(cond, owner, prefix=prefix, prefix_codes=None if latent_stage else codes,
                          window_seconds=window, stride_seconds=stride, temperatures=temperatures, cfg_scale=cfg_scale,
                          top_k=top_k, generator=generator, frame_blend=frame_blend, grids=grids,
                          beat_source=beat_source, prompt_bank=bank)  # fmt: skip

    def _long(
        self, cond: TextCondition, owner: Tensor, *, prefix: Tensor | None = None, prefix_codes: Tensor | None = None,
        window_seconds: float | None, stride_seconds: float | None, temperatures: tuple[float, float, float] | None,
        cfg_scale: float | tuple[float, float] | None, top_k: int, generator: torch.Generator | None,
        frame_blend: float | None, grids: Tensor | None = None, beat_source: str | None = None,
        prompt_bank: tuple[Tensor, Tensor, float, float] | None = None,
    ) -> Tensor:  # fmt: skip
        """Window-by-window generation of ``len(owner)`` new semantic frames (``owner``: the condition row
        of each) after the optional ``prefix`` ids ``[1, Tp]`` (and its codec codes); returns the new
        audio ``[S]``. ``grids [rows, 2]``: each condition row's beat grid, its phase counted from the
        first frame (of the prefix, if any); each window gets it shifted to its own first frame (the latent stage
        too, with ``beat_source`` "semantic": :meth:`acoustic_beat`). ``prompt_bank``: ``(latents [1, F, L], ids
        [1, F], blend, continuity)``, a continuation prompt's real frames, which a latent stage's frames are matched to
        (:meth:`generate_continuation`) instead of the prior's frame bank."""
        sem_cfg, ac_cfg = self.guidance(cfg_scale)
        beat_source = self.acoustic_beat_source(beat_source)
        temperatures = self.sampling_temperatures(temperatures)
        window = window_seconds or self.max_seconds()
        stride = stride_seconds or window / 2
        if not 0 < stride < window <= self.max_seconds():
            raise ValueError(f"need 0 < stride ({stride}) < window ({window}) <= {self.max_seconds():.2f} s")
        rate = self.semantic_tokenizer.frame_rate
        win_f, overlap_f = int(window * rate), int((window - stride) * rate)
        conds, prior_lp, acoustic_cond, text, controls, key_bias = cond[:6]
        sem_latent = self.semantic_latent(cond)
        p0 = 0 if prefix is None else prefix.shape[1]
        owner = torch.cat([torch.zeros(p0, dtype=torch.long), owner])  # the prefix frames: the first condition
        total, new_samples = len(owner), int((len(owner) - p0) / rate * self.sample_rate)
        sampling = [SamplingConfig(t, top_k, 1.0, s) for t, s in zip(temperatures, (sem_cfg, ac_cfg, ac_cfg))]
        semantic = torch.zeros(1, 0, dtype=torch.long, device=self.device) if prefix is None else prefix.long()
        while semantic.shape[1] < total:  # semantic ids, window by window
            start = semantic.shape[1]
            prime = semantic[:, max(0, start - overlap_f) :] if start else None
            steps = min(total - start, win_f - (prime.shape[1] if prime is not None else 0))
            seg = int(owner[start])
            seg_lp = None if prior_lp is None else prior_lp[seg][None]
            seg_latent = None if sem_latent is None else sem_latent[seg][None]
            seg_beat = None
            if grids is not None:  # the grid from the window's first frame
                period, phase = grids[seg].tolist()
                first = max(0, start - overlap_f)
                seg_beat = torch.tensor([[period, (phase - first) % period if period > 0 else 0.0]])
            new = self.semantic_lm.generate(steps=steps, cond_ids=conds[seg][None], prime=prime, sampling=sampling[0],
                                            generator=generator, prior_mix=self.prior_mix(None),
                                            prior_log_probs=seg_lp, cond_latent=seg_latent, beat=seg_beat,
                                            logit_bias=None if key_bias is None else key_bias[seg][None],
                                            controls=None if controls is None else controls[seg][None])  # fmt: skip
            semantic = torch.cat([semantic, new[:, -steps:]], dim=1)
        if isinstance(self.acoustic_lm, LatentAcousticLM):
            assert acoustic_cond is not None
            predicted = self._latent_long(semantic, acoustic_cond, owner, win_f, overlap_f, ac_cfg, start=p0,
                                          generator=generator, controls=controls, text=text,
                                          grids=grids if beat_source == "semantic" else None)  # fmt: skip
            frame_ids = semantic[:, p0:].repeat_interleave(self.ratio, dim=1)[:, : predicted.shape[1]]
            if prompt_bank is None:  # each frame matched among its own segment's neighbours
                frame_owner = owner[p0:].repeat_interleave(self.ratio)[: predicted.shape[1]]
                for seg in frame_owner.unique().tolist():
                    at = (frame_owner == seg).to(predicted.device)
                    predicted[:, at] = self.match_frames(text[seg][None], predicted[:, at], frame_blend,
                                                         semantic=frame_ids[:, at])  # fmt: skip
            else:  # a continuation: among its prompt's own frames instead
                from .lm.prior import match_to_bank

                bank, bank_ids, blend, continuity = prompt_bank
                centers = getattr(self.semantic_tokenizer, "centers", None)
                weight = PROMPT_SEMANTIC_WEIGHT if centers is not None else 0.0
                predicted = match_to_bank(predicted, bank.to(predicted), blend=blend, continuity=continuity,
                                          semantic=frame_ids, bank_semantic=bank_ids, centers=centers,
                                          semantic_weight=weight)  # fmt: skip
            return self.codec.decode_latents(predicted)[0, 0, :new_samples]  # type: ignore[attr-defined]
        r = self.ratio
        if self.acoustic_lm is not None:
            assert acoustic_cond is not None
            start_codes = None if prefix_codes is None else prefix_codes[:, : self.acoustic_lm.num_quantizers]
            codes = self._acoustic_long(semantic, acoustic_cond, owner, win_f, overlap_f, sampling[1], generator,
                                        start=p0, start_codes=start_codes)  # fmt: skip
            return self.codec.decode(codes[..., p0 * r :])[0, 0, :new_samples]
        assert self.coarse_lm is not None
        nc = self.coarse_layout.num_coarse
        acoustic = torch.zeros(1, 0, dtype=torch.long, device=self.device)  # flattened coarse tokens, offsets included
        if prefix is not None:
            if prefix_codes is None or prefix_codes.shape[-1] < p0 * r:
                raise ValueError("a prefix for the coarse stage needs its codec codes (prefix_codes)")
            acoustic = self.coarse_layout.flatten(prefix, prefix_codes[:, :nc, : p0 * r])[0][:, p0:]
        done = p0  # semantic frames whose acoustic frames exist
        while done < total:  # coarse tokens: each window sees its semantic ids and the overlap's codes
            w0 = max(0, done - overlap_f)
            w1 = min(total, w0 + win_f)
            prime = torch.cat([semantic[:, w0:w1], acoustic[:, w0 * r * nc : done * r * nc]], dim=1)
            steps = (w1 - done) * r * nc
            new = self.coarse_lm.generate(steps=steps, cond_ids=conds[int(owner[done])][None], prime=prime,
                                          sampling=sampling[1], generator=generator,
                                          allowed=self.coarse_layout.allowed((w1 - done) * r))  # fmt: skip
            acoustic = torch.cat([acoustic, new[:, -steps:]], dim=1)
            done = w1
        codes = self.coarse_layout.unflatten(acoustic)[..., p0 * r :]
        if self.fine_lm is not None and self.fine_layout is not None:
            # the fine levels depend on the coarse ones; the first segment's text conditions them
            codes = self._fine(codes, conds[:1], sampling[2], generator)
        return self.codec.decode(codes)[0, 0, :new_samples]

    def melody_ids(self, wav: Tensor, sample_rate: int, *, frames: int) -> Tensor:
        """Semantic ids ``[1, frames]`` of the first ``frames`` semantic frames of a melody ``wav [S]``."""
        if wav.ndim != 1:
            raise ValueError(f"the melody must be mono audio [S], got shape {tuple(wav.shape)}")
        x = _resample(wav.float()[None].to(self.device), sample_rate, self.sample_rate)
        hop = int(round(self.sample_rate / self.semantic_tokenizer.frame_rate))
        if x.shape[1] < frames * hop:
            raise ValueError(f"the melody lasts {x.shape[1] / self.sample_rate:.2f} s, shorter than the "
                             f"{frames * hop / self.sample_rate:.2f} s asked for")  # fmt: skip
        return self.semantic_tokenizer(x[:, : frames * hop]).to(self.device)[:, :frames].long()

    def audio_condition(self, audio_latents: Tensor) -> TextCondition:
        """What the stages get for MuLaN *audio* latents ``[B, C]`` (continuation): what they were trained
        on, the quantized latent and, for the frame-aligned stage, the latent itself; the retrieval prior's
        id distribution and frame bank use the audio latent's neighbours."""
        cond, _ = self.conditioner.quantize(audio_latents)
        prior_lp = None if self.prior is None else self.prior.token_log_prior(audio_latents)
        labels = self.control_labels(audio_latents, audio_latents)
        return TextCondition(cond, prior_lp, audio_latents if self.acoustic_lm is not None else None, audio_latents,
                             labels, self.key_logit_bias(labels))  # fmt: skip

    def text_condition(self, texts: list[str]) -> TextCondition:
        """What the stages get for ``texts``: a :class:`TextCondition` of the semantic LM's ``cond_ids
        [B, Q]``, the retrieval prior's log distribution over semantic ids ``[B, V]`` or ``None``, the
        frame-aligned stage's latent ``[B, C]`` or ``None``, the text latents ``[B, C]``, and the key and drums
        labels ``[B, 2]`` of a semantic LM that reads them (:meth:`control_labels`) or ``None``, and the key
        label's logit bias ``[B, V]`` (:meth:`key_logit_bias`) or ``None``.

        With a retrieval prior, the first three come from the text's nearest training clips (module
        docstring of :mod:`.lm.prior`): the ids quantize their mean audio latent, as the semantic LM's
        training ids quantize a clip's own. Without one, the ids quantize the text latent itself and
        the frame-aligned stage uses its own text prior (or the text latent)."""
        text = self.conditioner.mulan.get_text_latents(raw_texts=texts)
        if self.prior is None:
            cond, _ = self.conditioner.quantize(text)  # what get_cond_ids(raw_texts=...) does, text encoded once
            acoustic = self.acoustic_lm.text_prior(text) if self.acoustic_lm is not None else None
            return TextCondition(cond, None, acoustic, text, self.control_labels(text, text))  # no prior: no key bias
        latent = self.prior.latent(text)
        cond, _ = self.conditioner.quantize(latent)
        labels = self.control_labels(text, latent)
        acoustic = None
        if self.acoustic_lm is not None:  # the semantic LM's latent unless the family's clips condition the stage
            acoustic = self.prior.acoustic_latent(text) if self.prior.family_acoustic_only else latent
        return TextCondition(cond, self.prior.token_log_prior(text), acoustic, text, labels,
                             self.key_logit_bias(labels), latent)  # fmt: skip

    def semantic_latent(self, cond: TextCondition) -> Tensor | None:
        """The continuous conditioning of a semantic LM that reads one (``cond_latent_dim``) for ``cond``:
        its ``semantic`` latent where set (with a prior, the nearest training clips' mean audio latent,
        :meth:`RetrievalPrior.latent`, as the LM trained on a clip's own audio latent, while the acoustic stage
        may get its family's clips), else the latent the acoustic stage gets, else the text latent; ``None``
        for an LM of ids only."""
        if not getattr(self.semantic_lm, "cond_latent_dim", 0):
            return None
        if cond.semantic is not None:
            return cond.semantic
        return cond.acoustic if cond.acoustic is not None else cond.text

    def match_frames(self, text: Tensor, predicted: Tensor, frame_blend: float | None = None, *,
                     semantic: Tensor | None = None, drums: Tensor | None = None) -> Tensor:  # fmt: skip
        """The latent stage's prediction ``[B, T, L]`` with its frames pulled toward real frames of the
        texts' neighbour clips (:meth:`RetrievalPrior.match_frames`); as is without a frame bank or with
        ``frame_blend=0``. ``semantic``: the ids ``[B, Ts]`` (or per frame, ``[B, T]``) it was made from.
        ``drums [B]``: each text's drums label for a drums-only bank (default MuLaN's reading of ``text``)."""
        if self.prior is None or not self.prior.has_frames or frame_blend == 0:
            if frame_blend and (self.prior is None or not self.prior.has_frames):
                raise ValueError(f"frame_blend={frame_blend} needs a retrieval prior with a frame bank")
            return predicted
        ids = None
        if semantic is not None:
            ids = semantic if semantic.shape[1] == predicted.shape[1] else semantic.repeat_interleave(self.ratio, 1)
            ids = ids[:, : predicted.shape[1]]
        centers = getattr(self.semantic_tokenizer, "centers", None)
        if self.prior.frame_drums_only and drums is None:
            drums = self.control_reader().read(text)[:, 1]
        return self.prior.match_frames(text, predicted, self.codec, blend=frame_blend, semantic=ids, centers=centers,
                                       drums=drums)  # fmt: skip

    def prior_mix(self, prior_mix: float | None) -> float:
        """The retrieval prior's share in the semantic LM's next-id distribution: ``prior_mix``, or the
        prior's own default for ``None``; 0 without a prior."""
        if self.prior is None:
            return 0.0
        mix = self.prior.mix if prior_mix is None else prior_mix
        if not 0 <= mix < 1:
            raise ValueError(f"prior_mix must be in [0, 1), got {mix}")
        return mix

    def _latent_long(
        self,
        semantic: Tensor,
        latents: Tensor,
        owner: Tensor,
        win_f: int,
        overlap_f: int,
        cfg_scale: float,
        start: int = 0,
        generator: torch.Generator | None = None,
        controls: Tensor | None = None,
        text: Tensor | None = None,
        grids: Tensor | None = None,
    ) -> Tensor:
        """The latent stage window by window (it takes no prompt): each window after the first starts half
        an overlap before the frames it adds, so they are made with that much of the music before them as
        context; the text of the segment a window starts in conditions it (and, for a stage that reads the
        beat, gives the drums label from ``controls [segments, 2]`` or ``text [segments, C]``; the grid is the
        segment's row of ``grids [segments, 2]`` (the semantic LM's, phase from frame 0) where its period is known,
        else the one of the segment's whole id sequence, shifted to each window's first frame, as training shifts
        a clip's grid to its crop)."""
        assert isinstance(self.acoustic_lm, LatentAcousticLM)
        r, total = self.ratio, semantic.shape[1]
        grid_of: dict[int, tuple[float, float]] = {}  # segment -> (period, phase counted from frame 0)
        if getattr(self.acoustic_lm, "beat_bins", 0):
            for seg in owner[:total].unique().tolist():
                if grids is not None and float(grids[seg, 0]) > 0:
                    grid_of[seg] = (float(grids[seg, 0]), float(grids[seg, 1]))
                    continue
                frames = (owner[:total] == seg).nonzero()[:, 0]
                grid = self.ids_beat(semantic[:, frames])[0].tolist()
                grid_of[seg] = (grid[0], grid[1] + int(frames[0]))
        parts: list[Tensor] = []
        done = start  # semantic frames whose latents are kept (from ``start``: those before are a given prefix)
        while done < total:
            w0 = max(0, done - overlap_f // 2) if done else 0
            w1 = min(total, w0 + win_f)
            seg = int(owner[done])
            rhythm: dict[str, Tensor] = {}
            if grid_of:
                assert text is not None
                period, phase = grid_of[seg]
                beat = torch.tensor([[period, (phase - w0) % period if period > 0 else 0.0]], device=self.device)
                if controls is not None:
                    drums = controls[seg][None, 1]
                else:
                    drums = self.control_reader().read(text[seg][None])[:, 1]
                rhythm = {"beat": beat, "drums": drums.long().to(self.device)}
            made = self.acoustic_lm.generate(semantic[:, w0:w1], latents[seg][None], cfg_scale=cfg_scale,
                                             generator=generator, beat=rhythm.get("beat"),
                                             drums=rhythm.get("drums"))  # fmt: skip
            parts.append(made[:, (done - w0) * r :])
            done = w1
        return torch.cat(parts, dim=1)

    def _acoustic_long(
        self, semantic: Tensor, latents: Tensor, owner: Tensor, win_f: int, overlap_f: int, sampling: SamplingConfig,
        generator: torch.Generator | None, start: int = 0, start_codes: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """Every codec level window by window: each window sees its semantic ids and, as a prompt, the
        codes of its overlap with the windows before; the text of the segment it starts in conditions it.
        ``start_codes``: the codes of the first ``start`` semantic frames, given."""
        assert isinstance(self.acoustic_lm, MaskedAcousticLM)
        r, total = self.ratio, semantic.shape[1]
        codes = torch.zeros(1, self.acoustic_lm.num_quantizers, 0, dtype=torch.long, device=self.device)
        if start:
            if start_codes is None or start_codes.shape[-1] < start * r:
                raise ValueError("a prefix for the acoustic stage needs its codec codes")
            codes = start_codes[..., : start * r].long()
        done = start
        while done < total:
            w0 = max(0, done - overlap_f)
            w1 = min(total, w0 + win_f)
            new = self.acoustic_lm.generate(
                semantic[:, w0:w1], latents[int(owner[done])][None], prompt=codes[..., w0 * r : done * r],
                cfg_scale=sampling.cfg_scale, temperature=sampling.temperature, top_k=sampling.top_k,
                generator=generator,
            )  # fmt: skip
            codes = torch.cat([codes, new[..., (done - w0) * r :]], dim=-1)
            done = w1
        return codes

    def _fine(
        self, coarse: Tensor, cond: Tensor, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Tensor:
        """Sample the fine levels frame by frame, forcing the coarse levels, in chunks the fine LM knows."""
        assert self.fine_lm is not None and self.fine_layout is not None
        layout, lm = self.fine_layout, self.fine_lm
        chunk = max(1, lm.max_seq_len // layout.levels)
        out = []
        for start in range(0, coarse.shape[-1], chunk):
            part = coarse[..., start : start + chunk]  # [B, Qc, t]
            b, _, t = part.shape
            level = torch.arange(t * layout.levels) % layout.levels  # the codec level of each position
            ids = torch.arange(layout.vocab_size)
            allowed = (ids[None] // layout.codebook_size == level[:, None])[None].repeat(b, 1, 1)  # [B, steps, V]
            # force the given coarse ids: one allowed id at every coarse position
            coarse_pos = (level < layout.num_coarse).nonzero().flatten()
            given = part.transpose(1, 2).reshape(b, -1)  # [B, t * Qc], frame-major like the layout
            given = given + (torch.arange(layout.num_coarse) * layout.codebook_size).repeat(t)[None]
            allowed[:, coarse_pos] = False
            allowed[torch.arange(b)[:, None], coarse_pos[None], given] = True
            tokens = lm.generate(steps=t * layout.levels, cond_ids=cond, sampling=sampling, generator=generator,
                                 allowed=allowed)  # fmt: skip
            out.append(layout.unflatten(tokens))
        return torch.cat(out, dim=-1)

    @torch.no_grad()
    def rerank_scores(self, wavs: Tensor, texts: list[str], n: int) -> Tensor:
        """MuLaN cosine between each candidate and its text: ``[B, N]``."""
        mulan = self.conditioner.mulan
        audio = mulan.get_audio_latents(_resample(wavs, self.sample_rate, mulan.sample_rate))
        text = mulan.get_text_latents(raw_texts=texts)
        return (audio.reshape(len(texts), n, -1) * text[:, None]).sum(-1)


def _scales(cfg_scale: float | tuple[float, float]) -> tuple[float, float]:
    """``(semantic, acoustic)`` guidance scales from one scale or a pair."""
    if isinstance(cfg_scale, tuple | list):
        if len(cfg_scale) != 2:
            raise ValueError(f"cfg_scale must be one scale or (semantic, acoustic), got {cfg_scale}")
        return float(cfg_scale[0]), float(cfg_scale[1])
    return float(cfg_scale), float(cfg_scale)


def _resample(wavs: Tensor, orig: int, target: int) -> Tensor:
    if orig == target:
        return wavs
    from .audio import resample

    flat = wavs.reshape(-1, wavs.shape[-1])  # one soxr call for the whole batch (rows as channels)
    out = torch.from_numpy(resample(flat, orig, target))
    return out.reshape(*wavs.shape[:-1], out.shape[-1]).to(wavs.device)


BUNDLE_FILES = {
    "conditioner": "conditioning.safetensors",
    "semantic_tokenizer": "semantic_tokenizer.safetensors",
    "codec": "codec.safetensors",
    "semantic_lm": "semantic_lm.safetensors",
    "coarse_lm": "coarse_lm.safetensors",  # the paper's acoustic stages: coarse_lm (+ fine_lm) ...
    "fine_lm": "fine_lm.safetensors",
    "acoustic_lm": "acoustic_lm.safetensors",  # ... or a frame-aligned acoustic stage
    "prior": "retrieval_prior.safetensors",  # optional: the text -> training clips bridge (lm/prior.py)
}
REQUIRED_FILES = ("conditioner", "semantic_tokenizer", "codec", "semantic_lm")


LM_PRECISIONS = ("float32", "bfloat16", "int8")
# a latent stage's continuation: each predicted frame replaced by a real frame of the prompt, blended by this share
# (MusicLM.generate_continuation), the distance adding this weight times the distance of the frames' semantic ids
# (their tokenizer centres), the frames chosen as the cheapest path through the prompt where a jump costs
# PROMPT_CONTINUITY; chosen on 100 validation continuations: the highest sum of judged agreement among costs that
# replay no more than a tenth of the continuation in runs of 2.5 s or longer (benchmarks/RESULTS.md)
PROMPT_BLEND = 1.0
PROMPT_SEMANTIC_WEIGHT = 0.5
PROMPT_CONTINUITY = 10.0

# the model that ships in the package (its model card: README.md there): what ``musiclm generate`` and
# ``MusicLM.from_pretrained()`` use when no folder is given
DEFAULT_MODEL = Path(__file__).resolve().parent / "pretrained" / "musiclm_small"


def load_musiclm(folder: str | Path, *, lm_precision: str = "float32") -> MusicLM:
    """A :class:`MusicLM` from a folder of component checkpoints (names in ``BUNDLE_FILES``; the
    number of coarse levels is read from the coarse LM's vocabulary). ``lm_precision`` sets the stage
    LMs' decoding precision: ``bfloat16``, or ``int8`` weights with bf16 activations
    (:meth:`TokenLM.quantize_int8`), both faster than ``float32`` on CPU (benchmarks/RESULTS.md)."""
    from .checkpoint import check_identity, identity, load, read_header, stage_identity

    if lm_precision not in LM_PRECISIONS:
        raise ValueError(f"lm_precision must be one of {LM_PRECISIONS}, got {lm_precision!r}")
    folder = Path(folder)
    if not folder.is_dir():
        shipped = " (the shipped model: is this a checkout without it? see README)" if folder == DEFAULT_MODEL else ""
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist{shipped}")
    missing = [BUNDLE_FILES[k] for k in REQUIRED_FILES if not (folder / BUNDLE_FILES[k]).is_file()]
    acoustic = [BUNDLE_FILES[k] for k in ("coarse_lm", "acoustic_lm") if (folder / BUNDLE_FILES[k]).is_file()]
    if missing or len(acoustic) != 1:
        raise FileNotFoundError(
            f"model folder {str(folder)!r} needs {[BUNDLE_FILES[k] for k in REQUIRED_FILES]} and one acoustic stage: "
            f"{BUNDLE_FILES['acoustic_lm']} or {BUNDLE_FILES['coarse_lm']} (+ optional {BUNDLE_FILES['fine_lm']}); "
            f"missing {missing}, acoustic stages found {acoustic}"
        )
    parts: dict[str, Any] = {k: load(folder / f).eval() for k, f in BUNDLE_FILES.items() if (folder / f).is_file()}
    kinds: dict[str, Any] = {"conditioner": MuLaNEmbedQuantizer, "semantic_tokenizer": SemanticTokenizer,
                             "codec": Codec, "semantic_lm": TokenLM, "coarse_lm": TokenLM, "fine_lm": TokenLM,
                             "acoustic_lm": (MaskedAcousticLM, LatentAcousticLM), "prior": RetrievalPrior}  # fmt: skip
    for key, part in parts.items():
        if not isinstance(part, kinds[key]):
            raise ValueError(f"{BUNDLE_FILES[key]} in {str(folder)!r} holds a {part.component_name!r}, not a {key}")
    # a stage trained on other tokenizers is refused (only those it reads: STAGE_INPUTS); each hashed once
    checked = ("semantic_lm", "coarse_lm", "fine_lm", "acoustic_lm", "prior")
    trained_with = {name: read_header(folder / BUNDLE_FILES[name])["extra"].get("identity")
                    for name in checked if name in parts}  # fmt: skip
    if any(trained_with.values()):
        actual = {"conditioner": identity(parts["conditioner"]), "semantic": identity(parts["semantic_tokenizer"]),
                  "codec": identity(parts["codec"]), "mulan": identity(parts["conditioner"].mulan)}  # fmt: skip
        for name, expected in trained_with.items():
            try:
                check_identity(stage_identity(name.removesuffix("_lm"), expected or {}), **actual)
            except ValueError as e:
                raise ValueError(f"{BUNDLE_FILES[name]} in {str(folder)!r}: {e}") from e
    sem_vocab, codebook = parts["semantic_tokenizer"].vocab_size, parts["codec"].codebook_size
    if "prior" in parts and ("mulan" not in (trained_with.get("prior") or {})):
        raise ValueError(f"{BUNDLE_FILES['prior']} in {str(folder)!r} records no identity of the MuLaN it was built "
                         "with: rebuild it with `musiclm train retrieval-prior`")  # fmt: skip
    if "acoustic_lm" in parts:
        if lm_precision == "bfloat16":
            parts["acoustic_lm"].to(torch.bfloat16)
        parts["semantic_lm"] = _with_precision(parts["semantic_lm"], lm_precision)
        return MusicLM(**parts)
    num_coarse, rest = divmod(parts["coarse_lm"].vocab_size - sem_vocab, codebook)
    if rest:
        raise ValueError(
            f"coarse_lm.vocab_size={parts['coarse_lm'].vocab_size} is not semantic vocab {sem_vocab} + k x {codebook}"
        )
    for name in ("semantic_lm", "coarse_lm", "fine_lm"):
        if name in parts:
            parts[name] = _with_precision(parts[name], lm_precision)
    return MusicLM(num_coarse=num_coarse, **parts)


def _with_precision(lm: TokenLM, lm_precision: str) -> TokenLM:
    if lm_precision == "int8":
        return lm.quantize_int8()
    return lm.to(torch.bfloat16) if lm_precision == "bfloat16" else lm

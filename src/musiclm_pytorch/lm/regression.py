"""A frame-aligned regression acoustic stage: semantic ids + MuLaN embedding -> the codec's latents.

Why it exists beside the token stages (benchmarks/RESULTS.md, "An acoustic stage that reads its
conditioning"): a token stage learns from one 1,024-way choice per frame and level, and on CPU
budgets neither the paper's coarse stage nor the masked stage (:mod:`.masked`) learned to read the
MuLaN conditioning (true and shuffled conditioning gave the same loss after hundreds of steps). A
magnitude codec (:class:`~musiclm_pytorch.codec.SpectralCodec`) has a continuous latent per frame
that its decoder renders directly: the principal components of the log-magnitude spectrum. This
stage predicts that latent with an L1 loss, a dense signal on every dimension of every frame, from
the same inputs as the masked stage (each 50 Hz frame reads the 25 Hz semantic id that covers it,
and the clip's continuous MuLaN embedding through a zero-initialised projection, with noise and
dropout in training), plus direct linear paths from the conditioning and from each semantic id to
the output, fitted in closed form before training (:meth:`LatentAcousticLM.fit_direct`: Adam, whose
steps are bounded by the learning rate, would take thousands of steps to grow those weights), which
the transformer then refines. One bidirectional forward makes 10 s; classifier-free guidance extrapolates
the conditioned prediction away from the null one, ``null + s * (cond - null)``, in one batched
forward (as diffusion models guide their noise estimates).

Guidance on the spectral envelope only (:meth:`LatentAcousticLM.set_guidance_envelope`): the conditioning
acts on this stage's prediction as an almost constant shift of the log spectrum (an equaliser per clip:
averaging ``cond - null`` over time changes no judged attribute, RESULTS.md), so plain guidance multiplies
that shift, fine structure included, and the exaggerated ripple buries the partials that carry the key
and the transients that carry the drums. With an envelope of ``k`` coefficients, the difference is
mapped to log-magnitudes, kept only below quefrency ``k`` (the first ``k`` coefficients of its
orthonormal DCT-II over frequency: the cepstral envelope, liftering as in Oppenheim and Schafer) and
mapped back: ``cond + (s - 1) * envelope(cond - null)``. The guided prediction keeps the conditioned
prediction's fine structure and exaggerates only its envelope, the instrument's colour.

The beat and the drums (``beat_bins > 0``): a drum hit whose frame the stage cannot pin down is averaged
away by the regression, so its mean holds no beat the judge hears (drums where asked 0.25 of 32 validation
clips with their *true* ids). The hits of the corpus sit at fixed phases of the beat grid the ids imply
(:func:`~musiclm_pytorch.semantic.beat.grid_of_ids`, the grid the semantic LM reads): the residual the stage
leaves on drum clips, averaged per beat-phase bin, rises by about 1 in log magnitude above 4 kHz at the beat
and the half beat and is flat on drumless clips (``benchmarks/beat_residual_probe.py``). So the stage reads
the grid ``beat [B, 2]`` (period, phase in semantic frames) and a drums label ``drums [B]`` (MuLaN's
zero-shot reading of the clip's audio latent in training, of the text at generation, as the semantic LM's
labels): a direct path, a table of latent offsets per (drums label, phase bin) fitted in closed form like
the others, and the grid's phase features and the label's vector at the transformer's input. The label is
part of the condition (unknown in guidance's null branch, dropped with the conditioning in training); the
grid stays in both branches, so guidance amplifies the difference a drums label makes at each phase.

It predicts the conditional *mean* spectrum: the variety of a piece comes from the semantic stage,
which samples; the spectra are smoother than real ones, and they move less over time: on training clips the
prediction's standard deviation over time is about a quarter of the real latents' (``benchmarks/family_loss_probe.py``),
so the partials that carry the key are faint. With a movement gain (:meth:`LatentAcousticLM.fit_movement_gain`) the
prediction's deviation from its clip mean is scaled per latent dimension by ``g ** alpha``, ``g`` the median over
training clips of the real to the predicted standard deviation over time (key tonic 0.60 -> 0.69 on 200 validation
prompts at ``alpha`` 0.5; ``alpha`` 1 raises the key further and costs tempo and drums, RESULTS.md).
Its codes, where tokens are wanted, are the codec's quantization of the prediction (``SpectralCodec.quantize_latents``).

Shape letters: B batch, T codec frames, Ts semantic frames, D model dim, L latent dim, C conditioning dim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frame_aligned import FrameAlignedStage
from .prior import dct_matrix, envelope_projector

# where the pipeline takes a beat-reading stage's grid at generation (LatentAcousticLM's ``beat_source``)
BEAT_SOURCES = ("semantic", "ids")


def check_beat_source(source: str) -> str:
    """``source`` if it is one of :data:`BEAT_SOURCES`, else a ``ValueError`` naming them."""
    if source not in BEAT_SOURCES:
        raise ValueError(f"beat_source must be one of {BEAT_SOURCES}, got {source!r}")
    return source


class LatentAcousticLM(FrameAlignedStage):
    """Bidirectional transformer regressing the codec latent of every frame (module docstring).

    Args:
        semantic_vocab: semantic ids.
        latent_dim: the codec's latent size (``SpectralCodec.dim``).
        ratio: codec frames per semantic frame (50 Hz / 25 Hz = 2).
        cond_dim: size of the conditioning embedding (MuLaN: 128).
        dim, depth, heads, dim_head, ff_hidden, dropout: transformer sizes.
        cond_drop_prob: probability of the null condition per training example (guidance).
        cond_noise: largest per-dimension std of the Gaussian noise added to the (unit) conditioning in
            training, drawn uniformly per example; 0 disables.
        prior_size, prior_k: training audio latents kept for the text prior, and how many are averaged
            (:mod:`.frame_aligned`); 0: generation from text uses the text latent itself.
        guidance_envelope: cepstral coefficients of the envelope that guidance acts on (0: plain guidance
            on the whole latent); set with :meth:`set_guidance_envelope`, which needs the codec's basis.
        beat_bins: with ``> 0``, the stage reads a beat grid and a drums label (module docstring): bins of the
            phase table per beat (``beat_cycle`` must be 1: a grid from ids knows its phase modulo one beat, so
            a longer cycle would start on an arbitrary beat); ``beat_harmonics`` phase features at the input;
            the grid is dropped in training with ``beat_drop_prob``.
        beat_source: which grid :class:`~musiclm_pytorch.MusicLM` gives this stage at generation (a choice of the
            pipeline, not of training, kept in the config; :meth:`set_beat_source`): ``"semantic"``, the grid the
            semantic LM was asked to follow wherever its period is known (the tempo the text names or the
            prior's, a continuation prompt's own), else the one estimated from the generated ids; ``"ids"``, always
            the one estimated from the generated ids, as training read each clip's true ids.
        movement_gain_alpha: with ``> 0``, :meth:`generate` scales its prediction's deviation from the clip mean by
            the stored gains ``movement_gain [L]`` (module docstring), fitted with :meth:`fit_movement_gain` or set with
            :meth:`set_movement_gain`; kept in the config and the weights. ``movement_bands``: the inner edges of its
            modulation-frequency bands (cycles per codec frame; none: one gain per dimension).
    """

    component_name = "latent_acoustic_lm"
    # a subclass whose generate does not go through scale_movement (the flow stage) sets this False
    takes_movement_gain = True
    guidance_filter: Tensor | None
    movement_gain: Tensor | None

    def __init__(
        self, *, semantic_vocab: int, latent_dim: int, ratio: int = 2, cond_dim: int = 128, dim: int = 256,
        depth: int = 6, heads: int = 4, dim_head: int = 64, ff_hidden: int | None = None, dropout: float = 0.1,
        cond_drop_prob: float = 0.1, cond_noise: float = 0.0,
        prior_size: int = 0, prior_k: int = 8, guidance_envelope: int = 0, beat_bins: int = 0, beat_cycle: int = 1,
        beat_harmonics: int = 3, beat_drop_prob: float = 0.1, beat_source: str = "semantic",
        movement_gain_alpha: float = 0.0, movement_bands: Sequence[float] | None = None,
    ):  # fmt: skip
        super().__init__()
        ff_hidden = ff_hidden or 4 * dim
        self.save_config(
            semantic_vocab=semantic_vocab, latent_dim=latent_dim, ratio=ratio, cond_dim=cond_dim, dim=dim, depth=depth,
            heads=heads, dim_head=dim_head, ff_hidden=ff_hidden, dropout=dropout, cond_drop_prob=cond_drop_prob,
            cond_noise=cond_noise, prior_size=prior_size, prior_k=prior_k, guidance_envelope=guidance_envelope,
            **({"beat_bins": beat_bins, "beat_cycle": beat_cycle, "beat_harmonics": beat_harmonics,
                "beat_drop_prob": beat_drop_prob, "beat_source": beat_source} if beat_bins else {}),
            **({"movement_gain_alpha": movement_gain_alpha} if movement_gain_alpha else {}),
            **({"movement_bands": list(movement_bands)} if movement_bands and movement_gain_alpha else {}),
        )  # fmt: skip
        self._init_trunk(semantic_vocab=semantic_vocab, ratio=ratio, cond_dim=cond_dim, dim=dim, depth=depth,
                         heads=heads, dim_head=dim_head, ff_hidden=ff_hidden, dropout=dropout,
                         cond_drop_prob=cond_drop_prob, cond_noise=cond_noise, prior_size=prior_size,
                         prior_k=prior_k)  # fmt: skip
        self.latent_dim = latent_dim
        self.phase_emb = nn.Embedding(ratio, dim)  # which of the ``ratio`` frames under one semantic id
        self.to_latent = nn.Linear(dim, latent_dim)
        # direct linear paths from the conditioning and from each semantic id to the output (zero-initialised):
        # a linear map from the MuLaN embedding already predicts much of a clip's mean spectrum (RESULTS.md),
        # and through these it is learned in tens of steps instead of through the whole transformer
        self.cond_to_latent = nn.Linear(cond_dim, latent_dim)
        self.null_latent = nn.Parameter(torch.zeros(latent_dim))
        self.semantic_to_latent = nn.Embedding(semantic_vocab, latent_dim)
        # and the transformer's own output starts at zero, so training starts from the direct paths' fit
        for p in (self.cond_to_latent.weight, self.cond_to_latent.bias, self.semantic_to_latent.weight,
                  self.to_latent.weight, self.to_latent.bias):  # fmt: skip
            nn.init.zeros_(p)
        # [L, L]: the projection of a latent difference onto its spectral envelope (set_guidance_envelope;
        # a saved stage restores it from its file)
        self.register_buffer("guidance_filter", torch.eye(latent_dim) if guidance_envelope else None)
        # [L]: the gains on the prediction's movement around its clip mean (fit_movement_gain; a saved stage restores
        # them from its file)
        if not (movement_gain_alpha >= 0 and math.isfinite(movement_gain_alpha)):
            raise ValueError(f"movement_gain_alpha must be a finite number >= 0, got {movement_gain_alpha}")
        bands = check_bands(movement_bands) if movement_gain_alpha else []
        shape = (len(bands) + 1, latent_dim) if bands else (latent_dim,)
        self.register_buffer("movement_gain", torch.ones(shape) if movement_gain_alpha else None)
        if beat_bins < 0 or beat_cycle != 1 or beat_harmonics < 1 or not 0.0 <= beat_drop_prob < 1.0:
            raise ValueError(f"need beat_bins >= 0, beat_cycle 1, beat_harmonics >= 1, 0 <= beat_drop_prob < 1; "
                             f"got {beat_bins}, {beat_cycle}, {beat_harmonics}, {beat_drop_prob}")  # fmt: skip
        self.beat_bins, self.beat_cycle = beat_bins, beat_cycle
        self.beat_harmonics, self.beat_drop_prob = beat_harmonics, beat_drop_prob
        self.beat_source = check_beat_source(beat_source)
        if beat_bins:
            # drums label 0 (none), 1 (drums), 2 (unknown: guidance's null branch, a dropped condition)
            self.drums_emb = nn.Embedding(3, dim)
            nn.init.normal_(self.drums_emb.weight, std=0.02)
            self.beat_proj = nn.Linear(2 * beat_harmonics + 2, dim, bias=False)
            nn.init.zeros_(self.beat_proj.weight)
            # [3 labels, bins, L]: the direct path, the mean residual per (drums label, phase bin) (fit_direct)
            self.beat_table = nn.Parameter(torch.zeros(3, beat_bins, latent_dim))

    @torch.no_grad()
    def set_guidance_envelope(self, basis: Tensor | None, coefficients: int) -> LatentAcousticLM:
        """Make guidance act on the spectral envelope of the conditioning's effect only (module docstring):
        ``basis [F, L]`` is the codec's map from latents to log-magnitude deviations (``SpectralCodec.basis``,
        orthonormal columns), ``coefficients`` the envelope's DCT coefficients over the ``F`` bins (with
        ``n_fft`` 1,280, 20 keep ripples no narrower than 64 bins, 800 Hz at 16 kHz); 0 restores plain
        guidance. Kept in the config and the weights, so a saved stage keeps it."""
        if coefficients == 0:
            self.guidance_filter = None
            self._config["guidance_envelope"] = 0
            return self
        if basis is None or basis.ndim != 2 or basis.shape[1] != self.latent_dim:
            got = None if basis is None else tuple(basis.shape)
            raise ValueError(f"basis must be [F, {self.latent_dim}] (the codec's latent basis), got {got}")
        bins = basis.shape[0]
        if not 1 <= coefficients <= bins:
            raise ValueError(f"coefficients must be in [0, {bins}] (the basis has {bins} frequency bins), "
                             f"got {coefficients}")  # fmt: skip
        self.guidance_filter = envelope_projector(basis, coefficients).to(self.null_latent)
        self._config["guidance_envelope"] = int(coefficients)
        return self

    def set_beat_source(self, source: str) -> LatentAcousticLM:
        """Which beat grid the pipeline gives this stage at generation (``beat_source`` in the class docstring),
        kept in the config, so a saved stage keeps it."""
        if not self.beat_bins:
            raise ValueError("beat_source is a setting of a latent stage that reads the beat (beat_bins > 0); "
                             "this one reads none")  # fmt: skip
        self.beat_source = self._config["beat_source"] = check_beat_source(source)
        return self

    @torch.no_grad()
    def set_movement_gain(self, gain: Tensor | None, alpha: float = 1.0, *,
                          bands: Sequence[float] | None = None) -> LatentAcousticLM:  # fmt: skip
        """Make :meth:`generate` scale its prediction's deviation from the clip mean by ``gain ** alpha``
        (module docstring): ``gain [L]``, one factor per latent dimension, or with ``bands`` (the inner edges of
        modulation-frequency bands, in cycles per codec frame, ascending in ``(0, 0.5)``) ``gain [len(bands) + 1,
        L]``, one per band and dimension (:func:`filter_movement`). ``None`` or ``alpha`` 0 removes it. Kept in the
        config and the weights, so a saved stage keeps it."""
        if gain is None or alpha == 0:
            self.movement_gain = None
            self._config.pop("movement_gain_alpha", None)
            self._config.pop("movement_bands", None)
            return self
        self._check_takes_movement_gain()
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        edges = check_bands(bands)
        shape = (len(edges) + 1, self.latent_dim) if edges else (self.latent_dim,)
        if gain.shape != shape or not bool(torch.isfinite(gain).all()) or bool((gain <= 0).any()):
            per = "band and latent dimension" if edges else "latent dimension"
            raise ValueError(f"gain must be {list(shape)} finite positive numbers (one per {per}), got shape "
                             f"{tuple(gain.shape)}")  # fmt: skip
        self.movement_gain = (gain.double() ** alpha).to(self.null_latent)
        self._config["movement_gain_alpha"] = float(alpha)
        if edges:
            self._config["movement_bands"] = edges
        else:
            self._config.pop("movement_bands", None)
        return self

    def _check_takes_movement_gain(self) -> None:
        if not self.takes_movement_gain:
            raise ValueError(f"a {type(self).__name__} takes no movement gain (its generate samples around the mean "
                             "stage's prediction and does not scale it)")  # fmt: skip

    @property
    def movement_gain_alpha(self) -> float:
        """The power of the fitted gains that :meth:`generate` applies to its movement (0: none)."""
        return float(self._config.get("movement_gain_alpha", 0.0))

    @property
    def movement_bands(self) -> list[float]:
        """The inner edges of the movement gain's modulation bands, in cycles per codec frame (``[]``: one band)."""
        return list(self._config.get("movement_bands", []))

    @torch.no_grad()
    def fit_movement_gain(self, clips: Iterable[tuple[Tensor, ...]], *, alpha: float = 0.5, cfg_scale: float = 1.0,
                          batch_size: int = 16, bands: Sequence[float] | None = None,
                          cap_above: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Fit and set the movement gain (:meth:`set_movement_gain`): per latent dimension the median over ``clips``
        of the ratio of the real latents' standard deviation over time to the prediction's, at guidance
        ``cfg_scale`` (the one generation uses), raised to ``alpha``; with ``bands``, per band and dimension, the
        ratio of the real to the predicted amplitude in that band of modulation frequencies (square root of the
        summed power of the Hann-windowed deviation from the clip mean), as the modulation-spectrum postfilter of
        statistical speech synthesis matches an over-smoothed trajectory's modulation spectrum to natural speech's
        (Takamichi et al., ICASSP 2014); ``cap_above`` (cycles per frame): the bands whose lower edge is at or above
        it get gains of at most 1, so that only the slower movement is raised. ``clips`` yields what
        :meth:`fit_direct` reads (training clips, each with its own conditioning, as the stage was trained).
        Returns the gains' range, the prediction's standard deviation over time relative to the real one (mean over
        clips and dimensions) before and after, and with bands each band's share of the real and the predicted
        movement."""
        clips = list(clips)
        self._check_takes_movement_gain()
        if len(clips) < 2:
            raise ValueError(f"fit_movement_gain needs at least 2 clips, got {len(clips)}")
        if self.beat_bins and any(len(c) != 5 for c in clips):
            raise ValueError("this stage reads a beat grid and a drums label: clips must be (semantic, latents, cond, "
                             "beat, drums)")  # fmt: skip
        edges = check_bands(bands)
        if cap_above is not None and not edges:
            raise ValueError("cap_above caps the gains of the faster modulation bands: it needs bands")
        ratios, powers, before, after = [], [], [], []
        pairs = []
        for i in range(0, len(clips), batch_size):
            part = clips[i : i + batch_size]
            if len({(c[0].shape, c[1].shape) for c in part}) > 1:  # clips of other lengths: one at a time
                groups = [[c] for c in part]
            else:
                groups = [part]
            for group in groups:
                semantic = torch.stack([c[0].long() for c in group])
                real = torch.stack([c[1].float() for c in group]).cpu()
                cond = torch.stack([c[2].float() for c in group])
                beat = torch.stack([c[3].float() for c in group]) if self.beat_bins else None
                drums = torch.stack([c[4].long().reshape(()) for c in group]) if self.beat_bins else None
                pred = self._predict(semantic, cond, frames=real.shape[1], cfg_scale=cfg_scale, beat=beat,
                                     drums=drums).float().cpu()  # fmt: skip
                pairs.append((real, pred))
                if edges:
                    pr, pp = band_power(real, edges), band_power(pred, edges)  # [B, K, L]
                    ratios.append((pr / pp.clamp_min(1e-12)).sqrt())
                    powers.append((pr.sum((0, 2)), pp.sum((0, 2))))
                else:
                    ratios.append(real.std(1) / pred.std(1).clamp_min(1e-6))
        gain = torch.cat(ratios).median(0).values.clamp_min(1e-3)  # [L] or [K, L]
        if cap_above is not None:
            fast = torch.tensor([0.0, *edges]) >= cap_above  # [K]: each band's lower edge
            gain[fast] = gain[fast].clamp(max=1.0)
        self.set_movement_gain(gain, alpha, bands=edges)
        for real, pred in pairs:
            before.append(pred.std(1) / real.std(1).clamp_min(1e-6))
            after.append(self.scale_movement(pred).std(1) / real.std(1).clamp_min(1e-6))
        report: dict[str, Any] = {"clips": len(clips), "alpha": float(alpha), "gain_min": float(gain.min()),
                                  "gain_max": float(gain.max()),
                                  "predicted_std_over_real_before": float(torch.cat(before).mean()),
                                  "predicted_std_over_real_after": float(torch.cat(after).mean())}  # fmt: skip
        if edges:
            real_p = torch.stack([p[0] for p in powers]).sum(0)
            pred_p = torch.stack([p[1] for p in powers]).sum(0)
            report["bands"] = edges
            report["cap_above"] = cap_above
            report["real_share_per_band"] = (real_p / real_p.sum()).tolist()
            report["predicted_share_per_band"] = (pred_p / pred_p.sum()).tolist()
        return report

    def scale_movement(self, latents: Tensor) -> Tensor:
        """``latents [B, T, L]`` with their deviation from the mean over ``T`` scaled by the movement gain (as they
        are without one)."""
        if self.movement_gain is None:
            return latents
        mean = latents.mean(1, keepdim=True)
        if self.movement_gain.ndim == 1:
            return mean + (latents - mean) * self.movement_gain.to(latents)
        return mean + filter_movement(latents - mean, self.movement_gain, self.movement_bands)

    @property
    def guidance_envelope(self) -> int:
        """Cepstral coefficients of the envelope that guidance acts on (0: plain guidance)."""
        return int(self._config.get("guidance_envelope", 0))

    def forward(self, semantic: Tensor, cond: Tensor | None, *, frames: int | None = None, drop: Tensor | None = None,
                beat: Tensor | None = None, drums: Tensor | None = None) -> Tensor:  # fmt: skip
        """Latents ``[B, T, L]`` (``T = frames`` or ``Ts * ratio``) for ``semantic [B, Ts]`` and ``cond
        [B, C]`` (``None``: null); with ``beat_bins``, the beat grid ``beat [B, 2]`` and drums label ``drums
        [B]`` (:meth:`beat_inputs`)."""
        return self.features(semantic, cond, frames=frames, drop=drop, beat=beat, drums=drums)[1]

    def features(self, semantic: Tensor, cond: Tensor | None, *, frames: int | None = None,
                 drop: Tensor | None = None, beat: Tensor | None = None, drums: Tensor | None = None
                 ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """``(hidden [B, T, D], latents [B, T, L])``: the transformer's last (normalised) states and the
        prediction of :meth:`forward` (a sampling stage on top reads both, :mod:`.flow`)."""
        if semantic.ndim != 2 or semantic.shape[1] == 0:
            raise ValueError(f"semantic must be [B, Ts >= 1], got shape {tuple(semantic.shape)}")
        self._check_semantic(semantic)
        b, ts = semantic.shape
        t = frames or ts * self.ratio
        if t > ts * self.ratio:
            raise ValueError(f"frames={t} exceed the {ts} semantic ids x ratio {self.ratio}")
        if cond is not None and cond.shape != (b, self.cond_dim):
            raise ValueError(f"cond must be [B={b}, {self.cond_dim}], got shape {tuple(cond.shape)}")
        sem = semantic.long().repeat_interleave(self.ratio, dim=1)[:, :t]
        phase = torch.arange(t, device=semantic.device) % self.ratio
        x = self.semantic_emb(sem) + self.phase_emb(phase)[None] + self.condition(cond, b, drop=drop)[:, None]
        beat_x, beat_direct = self.beat_inputs(beat, drums, b, t, drop=drop)
        if beat_x is not None:
            x = x + beat_x
        x = self._transform(x)
        direct = self.null_latent.expand(b, -1)
        if cond is not None:
            c = self.cond_to_latent(cond.to(self.null_latent.dtype))
            direct = c if drop is None else torch.where(drop[:, None], direct, c)
        out = self.to_latent(x) + direct[:, None] + self.semantic_to_latent(sem)
        return x, out if beat_direct is None else out + beat_direct

    def beat_inputs(self, beat: Tensor | None, drums: Tensor | None, batch: int, frames: int, *,
                    drop: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
        """``(input [B, T, D], direct [B, T, L])`` that the beat grid ``beat [B, 2]`` (period, phase in semantic
        frames; ``None`` or period <= 0: unknown, no phase term) and the drums label ``drums [B]`` (0, 1; -1,
        ``None`` or a ``drop`` row: unknown) add; ``(None, None)`` for a stage without ``beat_bins``."""
        if not self.beat_bins:
            if beat is not None or drums is not None:
                raise ValueError("beat or drums given, but this latent stage reads neither (beat_bins 0)")
            return None, None
        ref = self.null_latent
        label = torch.full((batch,), 2, dtype=torch.long, device=ref.device)
        if drums is not None:
            if drums.shape != (batch,) or bool(((drums < -1) | (drums > 1)).any()):
                raise ValueError(f"drums must be [B={batch}] labels in {{-1, 0, 1}}, got shape {tuple(drums.shape)}")
            d = drums.to(ref.device).long()
            label = torch.where(d < 0, label, d)
        if drop is not None:
            label = torch.where(drop.to(ref.device), torch.full_like(label, 2), label)
        x = self.drums_emb(label)[:, None].expand(batch, frames, -1)
        if beat is None:
            return x, None
        if beat.shape != (batch, 2):
            raise ValueError(f"beat must be [B, 2] = [{batch}, 2] (period, phase in semantic frames), got "
                             f"{tuple(beat.shape)}")  # fmt: skip
        from ..semantic.beat import beat_features

        beat = beat.to(ref.device).float()
        known = (beat[:, 0] > 0).to(ref.dtype)[:, None, None]
        period = torch.where(beat[:, 0] > 0, beat[:, 0], torch.ones_like(beat[:, 0]))
        t = torch.arange(frames, device=ref.device, dtype=torch.float32) / self.ratio  # in semantic frames
        feats = beat_features(t, period, beat[:, 1], self.beat_harmonics).to(ref.dtype)
        bins = beat_phase_bins(t, period, beat[:, 1], self.beat_bins, self.beat_cycle)  # [B, T]
        direct = self.beat_table[label[:, None], bins] * known
        return x + self.beat_proj(feats) * known, direct

    @torch.no_grad()
    def fit_direct(self, clips: Iterable[tuple[Tensor, ...]]) -> dict[str, float]:
        """Set the direct paths in closed form before training (as the codecs fit their quantizers): the
        conditioning path to the least-squares map from a clip's conditioning to its mean latent, the null
        latent to the mean over clips, and each semantic id's path to the mean residual of the frames it
        covers. ``clips`` yields ``(semantic [Ts], latents [T, L], cond [C])`` and is read twice (pass a
        list); with ``beat_bins``, ``(semantic, latents, cond, beat [2], drums [])``, and the phase table is
        set to the mean residual left by the other paths per (drums label, phase bin), the unknown label's
        row over all clips. Returns the frame L1 of the direct paths alone: conditioning only, with the ids,
        and (with ``beat_bins``) with the phase table."""
        clips = list(clips)
        if len(clips) < 2:
            raise ValueError(f"fit_direct needs at least 2 clips, got {len(clips)}")
        if self.beat_bins and any(len(c) != 5 for c in clips):
            raise ValueError("this stage reads a beat grid and a drums label: clips must be (semantic, latents, cond, "
                             "beat, drums)")  # fmt: skip
        cond = torch.stack([c[2].float() for c in clips])  # [N, C]
        means = torch.stack([c[1].float().mean(0) for c in clips])  # [N, L]
        x = torch.cat([cond, torch.ones(len(cond), 1)], dim=1)
        w = torch.linalg.lstsq(x.double(), means.double()).solution.float()  # [C + 1, L]
        self.cond_to_latent.weight.copy_(w[:-1].T)
        self.cond_to_latent.bias.copy_(w[-1])
        self.null_latent.copy_(means.mean(0))
        sums = torch.zeros(self.semantic_vocab, self.latent_dim)
        counts = torch.zeros(self.semantic_vocab)
        l1_cond, l1_both, frames = 0.0, 0.0, 0
        predicted = x @ w
        for (sem, lat, *_), pred in zip(clips, predicted):
            ids = sem.long().repeat_interleave(self.ratio)[: len(lat)]
            resid = lat.float() - pred
            sums.index_add_(0, ids, resid)
            counts += torch.bincount(ids, minlength=self.semantic_vocab).float()
            l1_cond += float(resid.abs().sum()) / self.latent_dim
            frames += len(lat)
        table = sums / counts.clamp(min=1)[:, None]
        self.semantic_to_latent.weight.copy_(table)
        report = {"fit_l1_conditioning_only": l1_cond / frames}
        beat_sums = torch.zeros(3, self.beat_bins, self.latent_dim)
        beat_counts = torch.zeros(3, self.beat_bins)
        placed = []
        for clip, pred in zip(clips, predicted):
            sem, lat = clip[0], clip[1]
            ids = sem.long().repeat_interleave(self.ratio)[: len(lat)]
            resid = lat.float() - pred - table[ids]
            l1_both += float(resid.abs().sum()) / self.latent_dim
            if self.beat_bins and float(clip[3][0]) > 0:
                t = torch.arange(len(lat), dtype=torch.float32) / self.ratio
                bins = beat_phase_bins(t, clip[3][:1].float(), clip[3][1:].float(), self.beat_bins, self.beat_cycle)[0]
                for label in {int(clip[4]), 2} if int(clip[4]) >= 0 else {2}:
                    beat_sums[label].index_add_(0, bins, resid)
                    beat_counts[label] += torch.bincount(bins, minlength=self.beat_bins).float()
                placed.append((resid, max(int(clip[4]), -1) % 3, bins))
        report["fit_l1_with_semantic_ids"] = l1_both / frames
        if self.beat_bins:
            beat_table = beat_sums / beat_counts.clamp(min=1)[..., None]
            self.beat_table.copy_(beat_table)
            gain = sum(float(r.abs().sum() - (r - beat_table[d][b]).abs().sum()) for r, d, b in placed)
            report["fit_l1_with_beat_table"] = report["fit_l1_with_semantic_ids"] - gain / self.latent_dim / frames
        return report

    def training_inputs(self, cond: Tensor | None, *, generator: torch.Generator | None = None
                        ) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
        """``(cond, drop)`` for a training forward: noise and dropout in training mode, as given otherwise."""
        if cond is None or not self.training:
            return cond, None
        drop = (torch.rand(cond.shape[0], generator=generator) < self.cond_drop_prob).to(cond.device)
        return self.noisy(cond, generator), drop

    def training_beat(self, beat: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor | None:
        """``beat [B, 2]`` with each row's grid dropped (period 0: unknown) with ``beat_drop_prob`` in training
        mode, so that generation without a grid is something the stage has seen."""
        if beat is None or not self.training or not self.beat_drop_prob:
            return beat
        keep = torch.rand(beat.shape[0], generator=generator) >= self.beat_drop_prob
        return beat * keep.to(beat)[:, None]

    def loss(self, semantic: Tensor, latents: Tensor, cond: Tensor | None, *,
             generator: torch.Generator | None = None, beat: Tensor | None = None,
             drums: Tensor | None = None) -> Tensor:  # fmt: skip
        """Mean absolute error of the predicted latents against ``latents [B, T, L]``."""
        cond, drop = self.training_inputs(cond, generator=generator)
        beat = self.training_beat(beat, generator=generator)
        pred = self(semantic, cond, frames=latents.shape[1], drop=drop, beat=beat, drums=drums)
        return F.l1_loss(pred.float(), latents.float())

    @torch.no_grad()
    def generate(self, semantic: Tensor, cond: Tensor | None = None, *, frames: int | None = None,
                 cfg_scale: float = 1.0, generator: torch.Generator | None = None, beat: Tensor | None = None,
                 drums: Tensor | None = None) -> Tensor:  # fmt: skip
        """Latents ``[B, T, L]``; with ``cfg_scale != 1`` the conditioned and null rows run in one batched
        forward and the prediction is ``null + cfg_scale * (cond - null)``, or with a guidance envelope
        (:meth:`set_guidance_envelope`) ``cond + (cfg_scale - 1) * envelope(cond - null)``. ``generator`` is unused (the
        regression is deterministic): every latent stage is called alike, and a sampling one uses it. With
        ``beat_bins``, ``beat [B, 2]`` and ``drums [B]`` as in :meth:`forward`; the null branch keeps the grid
        and reads the drums label as unknown. With a movement gain (:meth:`set_movement_gain`), the prediction's
        movement around its mean over ``T`` is scaled by it, after guidance."""
        return self.scale_movement(self._predict(semantic, cond, frames=frames, cfg_scale=cfg_scale, beat=beat,
                                                 drums=drums))  # fmt: skip

    @torch.no_grad()
    def _predict(self, semantic: Tensor, cond: Tensor | None, *, frames: int | None, cfg_scale: float,
                 beat: Tensor | None, drums: Tensor | None) -> Tensor:  # fmt: skip
        """:meth:`generate` before the movement gain."""
        was_training = self.training
        self.eval()
        semantic = semantic.to(self.null_cond.device)
        if cond is None or cfg_scale == 1.0:
            out = self(semantic, None if cond is None else cond.to(semantic.device), frames=frames, beat=beat,
                       drums=None if cond is None else drums)  # fmt: skip
        else:
            b = semantic.shape[0]
            drop = torch.arange(2 * b, device=semantic.device) >= b
            both = self(torch.cat([semantic, semantic]), torch.cat([cond, cond]).to(semantic.device), frames=frames,
                        drop=drop, beat=None if beat is None else torch.cat([beat, beat]),
                        drums=None if drums is None else torch.cat([drums, drums]))  # fmt: skip
            out = self.guide(both[:b], both[b:], cfg_scale)
        self.train(was_training)
        return out

    def guide(self, cond: Tensor, null: Tensor, scale: float) -> Tensor:
        """The guided prediction from the conditioned and null ones ``[B, T, L]``: ``null + scale * (cond -
        null)``, or with a guidance envelope ``cond + (scale - 1) * envelope(cond - null)``."""
        if self.guidance_filter is None:
            return null + scale * (cond - null)
        return cond + (scale - 1) * (cond - null) @ self.guidance_filter.to(cond.dtype)


def beat_phase_bins(t: Tensor, period: Tensor, phase: Tensor, bins: int, cycle: int = 1) -> Tensor:
    """``[B, N]`` bin in ``[0, bins)`` of each time ``t [N]`` (semantic frames) within a cycle of ``cycle``
    beats of the grids ``period, phase [B]`` (frames; beats at ``phase + k period``)."""
    u = ((t[None, :].double() - phase[:, None].double()) / period[:, None].double()) % cycle / cycle
    return (u * bins).long().clamp(0, bins - 1)


def check_bands(bands: Sequence[float] | None) -> list[float]:
    """``bands`` as a list of floats if they are ascending inner band edges in ``(0, 0.5)`` cycles per frame, else a
    ``ValueError``; ``[]`` for ``None``."""
    edges = [float(b) for b in bands or []]
    if any(not 0 < b < 0.5 for b in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
        raise ValueError(f"movement bands must be ascending edges in (0, 0.5) cycles per frame, got {edges}")
    return edges


def band_power(x: Tensor, edges: Sequence[float]) -> Tensor:
    """``[B, K, L]``: the power of ``x [B, T, L]``'s deviation from its mean over ``T`` (Hann window) in each of the
    ``K = len(edges) + 1`` bands of modulation frequency that the inner ``edges`` (cycles per frame) bound."""
    t, dev = x.shape[1], x.device
    window = torch.hann_window(t, periodic=False, dtype=torch.float64, device=dev)[None, :, None]
    d = (x - x.mean(1, keepdim=True)).double() * window
    power = torch.fft.rfft(d, dim=1).abs() ** 2  # [B, F, L]
    freqs = torch.fft.rfftfreq(t, dtype=torch.float64, device=dev)
    band = torch.bucketize(freqs, torch.tensor(list(edges), dtype=torch.float64, device=dev), right=True)  # [F]
    out = torch.zeros(x.shape[0], len(edges) + 1, x.shape[2], dtype=torch.float64, device=dev)
    out.index_add_(1, band, power)
    return out


def filter_movement(d: Tensor, gains: Tensor, edges: Sequence[float]) -> Tensor:
    """``d [B, T, L]`` (a deviation from the mean over ``T``) filtered over time by a gain per modulation band and
    dimension ``gains [K, L]`` (``K = len(edges) + 1``): each frequency's gain interpolated linearly between the
    bands' centres (constant beyond the first and the last), applied to the spectrum of ``d`` extended by mirror
    images of half its length on each side (so that the filter does not wrap one end into the other)."""
    t = d.shape[1]
    pad = min(t // 2, t - 1)
    x = torch.cat([d[:, 1 : pad + 1].flip(1), d, d[:, t - 1 - pad : t - 1].flip(1)], dim=1) if pad else d
    n, dev = x.shape[1], d.device
    bounds = [0.0, *edges, 0.5]
    centres = torch.tensor([(a + b) / 2 for a, b in zip(bounds, bounds[1:])], dtype=torch.float64, device=dev)
    freqs = torch.fft.rfftfreq(n, dtype=torch.float64, device=dev)
    g = gains.double().to(dev)
    if len(centres) == 1:
        per_freq = g.expand(len(freqs), -1)
    else:
        pos = torch.bucketize(freqs, centres).clamp(1, len(centres) - 1)  # [F]: the centre above
        lo, hi = centres[pos - 1], centres[pos]
        w = ((freqs - lo) / (hi - lo)).clamp(0, 1)[:, None]
        per_freq = g[pos - 1] * (1 - w) + g[pos] * w  # [F, L]
    spec = torch.fft.rfft(x.double(), dim=1) * per_freq[None]
    return torch.fft.irfft(spec, n=n, dim=1)[:, pad : pad + t].to(d.dtype)


__all__ = ["LatentAcousticLM", "band_power", "beat_phase_bins", "dct_matrix", "filter_movement"]

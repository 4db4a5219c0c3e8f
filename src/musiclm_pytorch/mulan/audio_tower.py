"""MuLaN's audio tower: an Audio Spectrogram Transformer (Gong et al. 2021) over 16 x 16 patches.

Front ends:
- ``frontend="linear"`` (the seed README's toy setting: ``spec_n_fft=128``, ``spec_win_length=24``,
  hop ``win_length // 2``): a linear power spectrogram.
- ``frontend="mel"`` (AST and MuLan): 128 log-mel bins at a 10 ms hop.
- ``frontend="logfreq"`` (our ``small`` preset): one bin per semitone from C1 (``n_bins`` 96 up to B8)
  at a 10 ms hop on a 2048-point STFT, with ``patch_size=(12, 16)`` so that a patch row is one octave.
  Mel bands are wider than a semitone below ~400 Hz, so key and mode are out of a mel tower's reach.
All are log-compressed before patching.

Patching rule (documented, never silent): trailing frequency bins and time frames that do not fill
a whole patch are dropped, e.g. the 65 bins of ``n_fft=128`` give 4 patch rows (64 bins, Nyquist
dropped). Audio shorter than one patch raises ``ValueError``.

Training-only augmentation (MuLan §3.2 uses SpecAugment):
- time stretch by a phase vocoder on the *complex* STFT, rate drawn per batch from
  ``[min(f, 1/f), max(f, 1/f)]`` for ``spec_aug_stretch_factor=f``;
- ``spec_aug_num_masks`` frequency and time masks per example, widths ``U[0, min(param, len / 2))``,
  filled with that example's mean log-spectrogram value;
- patch dropout (Liu et al. 2022, FLIP): a random ``patch_dropout_prob`` fraction of patches is
  removed per example; rotary positions keep the true location of the ones kept.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from ..audio import LogFrequencySpectrogram, MelSpectrogram, Spectrogram, phase_vocoder
from ..checkpoint import Component
from .transformer import RotaryEmbedding, Transformer

Frontend = Literal["linear", "mel", "logfreq"]


def _pair(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    if len(x) != 2:
        raise ValueError(f"patch_size must be an int or a pair, got {x!r}")
    return (int(x[0]), int(x[1]))


class AudioSpectrogramTransformer(Component):
    """Audio tower: ``wavs [B, S] -> pooled [B, dim]``.

    Args:
        dim, depth, heads, dim_head, ff_mult, attn_dropout, ff_dropout: transformer sizes.
        sample_rate: rate of the waveforms it receives (used by the mel front end and by MuLaN's
            windowed embedding of long audio).
        frontend: ``"linear"`` or ``"mel"`` (see module docstring).
        spec_n_fft, spec_win_length, spec_hop_length, spec_power, spec_center, spec_pad_mode: STFT.
            ``spec_win_length`` defaults to ``spec_n_fft``, ``spec_hop_length`` to half the window.
        n_mels, f_min, f_max: mel front end only (``f_min`` is also the log-frequency front end's lowest bin).
        bins_per_octave, n_bins: log-frequency front end only.
        patch_size: int or (freq, time) patch size.
        spec_aug_stretch_factor: time-stretch range; ``None`` or 1 disables.
        spec_aug_freq_mask, spec_aug_time_mask: maximum mask widths (bins, frames); 0 disables.
        spec_aug_num_masks: masks of each kind per example.
        patch_dropout_prob: fraction of patches dropped in training.
        accept_spec: inputs are spectrograms instead of waveforms.
        accept_spec_time_first: spectrogram inputs are ``[B, T, F]`` (else ``[B, F, T]``).
    """

    component_name = "audio_spectrogram_transformer"

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int = 8,
        dim_head: int = 64,
        *,
        ff_mult: int = 4,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        sample_rate: int = 16000,
        frontend: Frontend = "linear",
        spec_n_fft: int = 128,
        spec_win_length: int | None = 24,
        spec_hop_length: int | None = None,
        spec_power: float = 2.0,
        spec_center: bool = True,
        spec_pad_mode: str = "constant",
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        bins_per_octave: int = 12,
        n_bins: int = 96,
        patch_size: int | tuple[int, int] = 16,
        spec_aug_stretch_factor: float | None = 0.8,
        spec_aug_freq_mask: int = 80,
        spec_aug_time_mask: int = 80,
        spec_aug_num_masks: int = 2,
        patch_dropout_prob: float = 0.25,
        accept_spec: bool = False,
        accept_spec_time_first: bool = True,
    ):
        super().__init__()
        self.save_config(
            dim=dim,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            sample_rate=sample_rate,
            frontend=frontend,
            spec_n_fft=spec_n_fft,
            spec_win_length=spec_win_length,
            spec_hop_length=spec_hop_length,
            spec_power=spec_power,
            spec_center=spec_center,
            spec_pad_mode=spec_pad_mode,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            bins_per_octave=bins_per_octave,
            n_bins=n_bins,
            patch_size=patch_size,
            spec_aug_stretch_factor=spec_aug_stretch_factor,
            spec_aug_freq_mask=spec_aug_freq_mask,
            spec_aug_time_mask=spec_aug_time_mask,
            spec_aug_num_masks=spec_aug_num_masks,
            patch_dropout_prob=patch_dropout_prob,
            accept_spec=accept_spec,
            accept_spec_time_first=accept_spec_time_first,
        )
        if not 0.0 <= patch_dropout_prob < 1.0:
            raise ValueError(f"patch_dropout_prob must be in [0, 1), got {patch_dropout_prob}")
        if spec_aug_stretch_factor is not None and spec_aug_stretch_factor <= 0:
            raise ValueError(f"spec_aug_stretch_factor must be positive, got {spec_aug_stretch_factor}")
        self.dim = dim
        self.sample_rate = sample_rate
        self.frontend = frontend
        self.spec: Spectrogram
        if frontend == "linear":
            self.spec = Spectrogram(
                n_fft=spec_n_fft,
                win_length=spec_win_length,
                hop_length=spec_hop_length,
                power=spec_power,
                center=spec_center,
                pad_mode=spec_pad_mode,
            )
        elif frontend == "mel":
            self.spec = MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=spec_n_fft,
                win_length=spec_win_length,
                hop_length=spec_hop_length,
                n_mels=n_mels,
                f_min=f_min,
                f_max=f_max,
                power=spec_power,
                center=spec_center,
                pad_mode=spec_pad_mode,
            )
        elif frontend == "logfreq":
            self.spec = LogFrequencySpectrogram(
                sample_rate=sample_rate,
                n_fft=spec_n_fft,
                win_length=spec_win_length,
                hop_length=spec_hop_length,
                f_min=f_min or 32.703,
                bins_per_octave=bins_per_octave,
                n_bins=n_bins,
                power=spec_power,
                center=spec_center,
                pad_mode=spec_pad_mode,
            )
        else:
            raise ValueError(f"frontend must be 'linear', 'mel' or 'logfreq', got {frontend!r}")
        self.patch_size = _pair(patch_size)
        if self.spec.num_bins < self.patch_size[0]:
            raise ValueError(
                f"front end has {self.spec.num_bins} frequency bins, fewer than patch_size[0]={self.patch_size[0]}"
            )
        self.stretch_factor = spec_aug_stretch_factor
        self.freq_mask, self.time_mask, self.num_masks = (
            spec_aug_freq_mask,
            spec_aug_time_mask,
            spec_aug_num_masks,
        )
        self.patch_dropout_prob = patch_dropout_prob
        self.accept_spec = accept_spec
        self.accept_spec_time_first = accept_spec_time_first

        patch_dim = self.patch_size[0] * self.patch_size[1]
        self.to_patch_tokens = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.rotary = RotaryEmbedding(dim_head, num_axes=2)
        self.transformer = Transformer(
            dim,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
        )

    @property
    def hop_length(self) -> int:
        return self.spec.hop_length

    @property
    def patch_dtype(self) -> torch.dtype:
        return self.to_patch_tokens[1].weight.dtype  # type: ignore[return-value]

    @property
    def min_samples(self) -> int:
        """The shortest waveform that yields one patch."""
        frames = self.patch_size[1]
        return (frames - 1) * self.spec.hop_length + (0 if self.spec.args.center else self.spec.args.n_fft)

    # ---- front end -------------------------------------------------------------------------
    def spectrogram(self, wavs: Tensor, *, augment: bool = False) -> Tensor:
        """Log-compressed spectrogram ``[B, F, T]`` of ``wavs [B, S]`` (time-stretched if ``augment``)."""
        spec = self.spec.complex_stft(wavs)
        if augment and self.stretch_factor not in (None, 1.0):
            lo, hi = sorted((float(self.stretch_factor), 1.0 / float(self.stretch_factor)))
            rate = lo + (hi - lo) * float(torch.rand(()))
            spec = phase_vocoder(spec, rate, self.spec.hop_length)
        return torch.log(self.spec.from_complex(spec).clamp(min=1e-10) + 1e-6)

    def _mask_(self, spec: Tensor) -> Tensor:
        """SpecAugment frequency and time masks, per example, in place on a copy."""
        spec = spec.clone()
        b, f, t = spec.shape
        fill = spec.mean(dim=(1, 2))
        for axis, max_width, length in ((1, self.freq_mask, f), (2, self.time_mask, t)):
            limit = min(max_width, length // 2)
            if limit < 1:
                continue
            for _ in range(self.num_masks):
                width = torch.randint(0, limit, (b,), device=spec.device)
                start = (torch.rand(b, device=spec.device) * (length - width + 1)).long()
                pos = torch.arange(length, device=spec.device)
                m = (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])  # [B, L]
                m = m[:, :, None] if axis == 1 else m[:, None, :]
                spec = torch.where(m, fill[:, None, None], spec)
        return spec

    # ---- patches ---------------------------------------------------------------------------
    def patchify(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, F, T] -> (patches [B, N, pf*pt], positions [B, N, 2])`` (freq index, time index)."""
        pf, pt = self.patch_size
        b, f, t = spec.shape
        rows, cols = f // pf, t // pt
        if rows == 0 or cols == 0:
            raise ValueError(
                f"spectrogram of {f} bins x {t} frames is smaller than one patch {self.patch_size}; "
                f"audio needs at least {self.min_samples} samples"
            )
        spec = spec[:, : rows * pf, : cols * pt]
        patches = rearrange(spec, "b (h p1) (w p2) -> b (h w) (p1 p2)", p1=pf, p2=pt)
        grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), dim=-1).to(
            spec.device
        )
        positions = rearrange(grid, "h w a -> (h w) a")[None].expand(b, -1, -1)
        return patches, positions

    def _patch_dropout(self, tokens: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = tokens.shape
        keep = max(1, int(n * (1.0 - self.patch_dropout_prob)))
        idx = torch.rand(b, n, device=tokens.device).topk(keep, dim=-1).indices.sort(dim=-1).values
        tokens = tokens.gather(1, idx[..., None].expand(-1, -1, tokens.shape[-1]))
        positions = positions.gather(1, idx[..., None].expand(-1, -1, positions.shape[-1]))
        return tokens, positions

    def _check_input(self, x: Tensor) -> Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"wavs must be a torch.Tensor, got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise ValueError(f"wavs must be a floating-point tensor, got dtype {x.dtype}")
        if self.accept_spec:
            if x.ndim != 3:
                raise ValueError(f"spectrogram input must be [B, T, F] or [B, F, T], got shape {tuple(x.shape)}")
            return x.transpose(1, 2) if self.accept_spec_time_first else x
        if x.ndim == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 2:
            raise ValueError(f"wavs must be [B, S] (or [B, 1, S]), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("wavs is an empty batch (B = 0)")
        if x.shape[-1] < self.min_samples:
            raise ValueError(
                f"wavs have {x.shape[-1]} samples, shorter than one patch: need at least {self.min_samples} "
                f"samples ({self.min_samples / self.sample_rate:.3f} s at {self.sample_rate} Hz)"
            )
        return x

    @torch.no_grad()
    def frame_states(self, wavs: Tensor) -> Tensor:
        """Time-resolved output states ``[B, T_patch, dim]``: the last layer's patch tokens averaged over
        the frequency rows of each patch column (one vector per ``patch_size[1] * hop`` samples, e.g.
        160 ms), without augmentation or patch dropout. A candidate feature for semantic tokens."""
        x = self._check_input(wavs)
        spec = torch.log(x.float().clamp(min=1e-10) + 1e-6) if self.accept_spec else self.spectrogram(x)
        patches, positions = self.patchify(spec)
        rows = int(positions[0, :, 0].max()) + 1
        tokens = self.transformer(self.to_patch_tokens(patches.to(self.patch_dtype)), rotary=self.rotary(positions))
        return rearrange(tokens, "b (h w) d -> b h w d", h=rows).mean(dim=1)

    def forward(self, x: Tensor, *, force_no_patch_dropout: bool = False) -> Tensor:
        """``x [B, S]`` waveforms (or spectrograms if ``accept_spec``) -> pooled ``[B, dim]``."""
        x = self._check_input(x)
        augment = self.training
        if self.accept_spec:
            spec = torch.log(x.float().clamp(min=1e-10) + 1e-6)
        else:
            spec = self.spectrogram(x, augment=augment)
        if augment and (self.freq_mask > 0 or self.time_mask > 0) and self.num_masks > 0:
            spec = self._mask_(spec)
        patches, positions = self.patchify(spec)
        tokens = self.to_patch_tokens(patches.to(self.patch_dtype))
        if augment and self.patch_dropout_prob > 0 and not force_no_patch_dropout:
            tokens, positions = self._patch_dropout(tokens, positions)
        tokens = self.transformer(tokens, rotary=self.rotary(positions))
        return tokens.mean(dim=1)

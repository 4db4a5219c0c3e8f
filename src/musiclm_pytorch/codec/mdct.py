"""A transform-domain neural codec: MDCT analysis, learned causal encoder/decoder, residual VQ.

Why it exists beside :class:`~musiclm_pytorch.codec.SoundStream`: a time-domain SEANet codec has to
learn oscillators and phase from scratch, which takes tens of thousands of GPU steps (measured in
benchmarks/RESULTS.md: after 1,000 CPU steps its SI-SNR on music is -36 dB). Here the waveform goes
through a fixed orthogonal lapped transform first, so the networks only decide *which* coefficients
to keep; the waveform and its phase come back exactly from the inverse transform.

- MDCT: sine window of ``2 * hop`` samples, hop ``hop`` (320 at 16 kHz: 50 Hz frames, the frame rate
  of the SoundStream preset), orthonormal (time-domain aliasing cancellation): frames ``[B, T, hop]``
  hold exactly the energy of the waveform, so an L2 error on coefficients is the waveform's L2 error.
  Frame ``t`` covers samples ``[(t - 1) * hop, (t + 1) * hop)``: causal, one frame of look-back.
- Encoder: a linear projection of each frame to ``dim`` plus a causal residual network over frames
  (gain-normalised input, output zero-initialised), so training starts from the linear codec.
- Residual VQ (vector-quantize-pytorch): EMA codebooks, dead-code replacement, quantizer dropout
  (bitrate scalability). :meth:`MDCTCodec.fit_init` sets the projection to the principal
  components of the data's frames and the codebooks to residual k-means over many frames, before
  any gradient step: the untrained codec is already a working transform codec.
- Decoder: the transposed projection plus a causal residual network (zero-initialised) whose output
  is scaled by the frame's level, then the inverse MDCT (overlap-add).

Length rule: ``encode`` right-pads ``S`` samples to a multiple of ``hop`` (as SoundStream) and makes
``T = ceil(S / hop) + 1`` frames: the extra last frame covers the last real hop a second time, so its
aliasing cancels like everywhere else. ``decode`` of ``T`` frames returns the ``(T - 1) * hop`` samples
that two frames cover, and nothing uncancelled: ``decode(encode(wav))`` has the padded length of
``wav``. Frame ``t`` completes samples ``[(t - 1) * hop, t * hop)``: a streaming decoder emits one hop
per frame.

Shape letters: B batch, S samples, T frames, N = hop coefficients, Q quantizers, D latent dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import Component
from .base import RVQCodec, residual_vq


def mdct_basis(hop: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[2 * hop, hop]`` orthonormal MDCT basis with the sine window (Princen-Bradley)."""
    n = torch.arange(2 * hop, dtype=torch.float64)
    k = torch.arange(hop, dtype=torch.float64)
    window = torch.sin(math.pi / (2 * hop) * (n + 0.5))
    cos = torch.cos(math.pi / hop * (n[:, None] + 0.5 + hop / 2) * (k[None] + 0.5))
    return (math.sqrt(2 / hop) * window[:, None] * cos).to(dtype)


class MDCT(nn.Module):
    """``analysis(wav [B, S]) -> [B, S / hop + 1, hop]`` and ``synthesis`` back to ``[B, S]``, exactly.

    Every sample lies in two frames (time-domain aliasing cancellation needs both): the analysis
    zero-pads one hop on each side, so the first and last real hops are covered twice, and the
    synthesis returns only the samples its frames cover twice (``(T - 1) * hop`` of them).
    """

    basis: Tensor

    def __init__(self, hop: int):
        super().__init__()
        self.hop = hop
        self.register_buffer("basis", mdct_basis(hop), persistent=False)

    def analysis(self, wav: Tensor) -> Tensor:
        """``wav [B, S]`` (``S`` a multiple of ``hop``) ``-> coeffs [B, S / hop + 1, N]``."""
        if wav.shape[-1] % self.hop:
            raise ValueError(f"MDCT input length {wav.shape[-1]} is not a multiple of the hop {self.hop}")
        x = F.pad(wav, (self.hop, self.hop))
        frames = x.unfold(-1, 2 * self.hop, self.hop)  # [B, T, 2N], frame t over [(t - 1) * N, (t + 1) * N)
        return frames @ self.basis

    def synthesis(self, coeffs: Tensor) -> Tensor:
        """``coeffs [B, T, N] -> wav [B, (T - 1) * N]``: the overlap-add of the frames, without the half
        frames at either end that only one frame covers (their aliasing has no partner to cancel it)."""
        frames = coeffs @ self.basis.T  # [B, T, 2N]
        b, t, _ = frames.shape
        out = F.fold(
            frames.transpose(1, 2), output_size=(1, (t + 1) * self.hop), kernel_size=(1, 2 * self.hop),
            stride=(1, self.hop),
        )  # fmt: skip
        return out.reshape(b, -1)[:, self.hop : t * self.hop]


class CausalBlock(nn.Module):
    """Pre-norm causal convolution over frames (kernel 3, dilated) + a feed-forward layer."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, 3, dilation=dilation)
        self.ff = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:  # [B, T, C]
        h = F.pad(self.norm(x).transpose(1, 2), (2 * self.dilation, 0))
        x = x + F.gelu(self.conv(h).transpose(1, 2))
        return x + self.ff(x)


def _residual_net(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    out = nn.Linear(width, d_out)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    blocks = [CausalBlock(width, 2 ** (i % 4)) for i in range(depth)]
    return nn.Sequential(nn.Linear(d_in, width), *blocks, nn.LayerNorm(width), out)


def _gain_features(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame RMS ``[B, T, 1]`` and the features a network sees: the frame divided by its RMS, and
    the log RMS (so loud and quiet music look alike to the network)."""
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-10).sqrt()
    return rms, torch.cat([x / rms, torch.log(rms) / 5], dim=-1)


class MDCTCodec(RVQCodec, Component):
    """Neural transform codec with the ``Codec`` interface (see :mod:`musiclm_pytorch.codec`).

    ``encode(wav [B, 1, S]) -> codes [B, Q, ceil(S / hop) + 1]`` and ``decode(codes [B, Q', T]) -> wav
    [B, 1, (T - 1) * hop]``: one frame more than hops, so that every decoded sample is exact (the module's
    length rule).

    Args:
        sample_rate: audio rate.
        hop: MDCT hop (frame rate = sample_rate / hop); the window is ``2 * hop``.
        dim: latent (codebook vector) size.
        width, depth: the causal residual networks of the encoder and of the decoder.
        num_quantizers, codebook_size: residual VQ (8 x 1024 at 50 Hz = 4 kbps).
        quantizer_dropout, ema_decay, dead_code_threshold, commitment_weight: as in SoundStream.
    """

    component_name = "mdct_codec"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        hop: int = 320,
        dim: int = 64,
        width: int = 256,
        depth: int = 4,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        quantizer_dropout: bool = True,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 2.0,
        commitment_weight: float = 1.0,
    ):
        super().__init__()
        self.save_config(
            sample_rate=sample_rate, hop=hop, dim=dim, width=width, depth=depth, num_quantizers=num_quantizers,
            codebook_size=codebook_size, quantizer_dropout=quantizer_dropout, ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold, commitment_weight=commitment_weight,
        )  # fmt: skip
        if hop < 2 or dim < 1 or dim > hop:
            raise ValueError(f"need hop >= 2 and 1 <= dim <= hop, got hop={hop}, dim={dim}")
        self._sample_rate, self.hop = sample_rate, hop
        self._num_quantizers, self._codebook_size = num_quantizers, codebook_size
        self.mdct = MDCT(hop)
        self.project = nn.Linear(hop, dim, bias=False)  # frame -> latent; fit_init: principal components
        self.unproject = nn.Linear(dim, hop, bias=False)  # latent -> frame; fit_init: their transpose
        self.encoder = _residual_net(hop + 1, width, depth, dim)
        self.decoder = _residual_net(dim + 1, width, depth, hop)
        self.rvq = residual_vq(
            dim=dim, num_quantizers=num_quantizers, codebook_size=codebook_size, ema_decay=ema_decay,
            kmeans_init=True, dead_code_threshold=dead_code_threshold, quantizer_dropout=quantizer_dropout,
            commitment_weight=commitment_weight,
        )  # fmt: skip

    # ---- the two networks ------------------------------------------------------------------------
    def _latents(self, wav: Tensor) -> Tensor:
        """``wav -> [B, T, D]``: the linear projection plus the encoder's correction, in the same units."""
        frames = self.mdct.analysis(self._prepare(wav)[:, 0])
        rms, feats = _gain_features(frames)
        return self.project(frames) + rms * self.encoder(feats)

    def _synthesize(self, latents: Tensor) -> Tensor:
        """``[B, T, D] -> wav [B, 1, (T - 1) * hop]`` (see the module's length rule)."""
        frames = self.unproject(latents)
        rms, _ = _gain_features(frames)
        _, feats = _gain_features(latents)
        frames = frames + rms * self.decoder(feats)
        return self.mdct.synthesis(frames)[:, None]

    # ---- initialisation from data ----------------------------------------------------------------
    @torch.no_grad()
    def fit_init(
        self, wavs: Tensor | Sequence[Tensor], *, max_frames: int = 100_000, seed: int = 0
    ) -> dict[str, float]:
        """Set the projection to the principal components of the MDCT frames of ``wavs`` (``[B, 1, S]``,
        ``[B, S]``, or a list of 1-D clips of any lengths) and each codebook to k-means over the
        residual left by the levels before it. Returns the fraction of frame energy the projection
        keeps and the latent energy left after each level. Call before training (the trainer does, on
        a sample of the training clips)."""
        clips = [wavs] if isinstance(wavs, Tensor) else [w.reshape(1, -1) for w in wavs]
        frames = torch.cat([self.mdct.analysis(self._prepare(w)[:, 0]).reshape(-1, self.hop) for w in clips])
        if len(frames) < self.codebook_size:
            raise ValueError(f"fit_init needs at least codebook_size={self.codebook_size} frames, got {len(frames)}")
        gen = torch.Generator().manual_seed(seed)
        frames = frames[torch.randperm(len(frames), generator=gen)[:max_frames]].double()
        _, eigvecs = torch.linalg.eigh(frames.T @ frames / len(frames))
        basis = eigvecs[:, -self.project.out_features :].flip(-1).float()  # [N, D], largest first
        self.project.weight.copy_(basis.T)
        self.unproject.weight.copy_(basis)
        frames = frames.float()
        kept = float((frames @ basis).pow(2).sum() / frames.pow(2).sum())
        residual = frames @ basis
        total = float(residual.pow(2).sum())
        report = {"energy_kept_by_projection": kept}
        for q, layer in enumerate(self.rvq.layers):
            codebook = _ema_codebook(layer)
            codebook.initted.fill_(False)
            codebook.init_embed_(residual[None])
            embed = codebook.embed[0]
            nearest = torch.cdist(residual, embed).argmin(-1)
            residual = residual - embed[nearest]
            report[f"latent_energy_left_after_level{q + 1}"] = float(residual.pow(2).sum()) / total
        return report


# tested with vector-quantize-pytorch 1.32 (pyproject pins ~=1.32.0): fit_init sets each level's EMA codebook
# directly, through attributes the package does not document as public
_VQ_PRIVATE = ("_codebook", "initted", "init_embed_", "embed")


def _ema_codebook(layer: nn.Module) -> Any:
    """The EMA codebook of one ``ResidualVQ`` level, or an error naming the installed version when this
    vector-quantize-pytorch keeps it elsewhere."""
    codebook = getattr(layer, "_codebook", None)
    if codebook is None or not all(hasattr(codebook, a) for a in _VQ_PRIVATE[1:]):
        from importlib.metadata import version

        raise RuntimeError(
            f"vector-quantize-pytorch {version('vector-quantize-pytorch')} keeps its codebooks differently from "
            f"1.32 (needs {', '.join(_VQ_PRIVATE)}): install vector-quantize-pytorch~=1.32.0 as pyproject.toml pins"
        )
    return codebook

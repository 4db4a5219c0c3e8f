"""MuLaN (Huang et al. 2022): audio and text towers trained contrastively into one 128-d space.

``mulan(wavs, texts) -> loss``; ``get_audio_latents(wavs) -> [B, 128]``;
``get_text_latents(texts | raw_texts) -> [B, 128]``; both L2-normalised.

Long audio (MuLan §3.1, MusicLM §3.1): ``get_audio_latents(wavs, windowed=True)`` embeds windows of
``window_seconds`` (10 s) at a ``window_hop_seconds`` (1 s) stride and averages them; audio no longer
than one window is embedded whole. The mean is re-normalised onto the unit sphere.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import Component
from .audio_tower import AudioSpectrogramTransformer
from .losses import LOSSES, Negatives
from .text_tower import PretrainedTextTransformer, TextTransformer

LossName = Literal["softmax", "dcl", "sigmoid"]
TextTower = TextTransformer | PretrainedTextTransformer


class MuLaN(Component):
    """Two-tower audio-text model.

    Args:
        audio_transformer: the audio tower (``.dim`` features out).
        text_transformer: a :class:`TextTransformer` or :class:`PretrainedTextTransformer`.
        dim_latent: joint space size (paper: 128).
        loss: ``"softmax"`` (InfoNCE), ``"dcl"`` or ``"sigmoid"`` (SigLIP).
        decoupled_contrastive_learning, sigmoid_contrastive_loss: the reference's boolean switches,
            kept for compatibility; they select ``"dcl"`` / ``"sigmoid"``.
        window_seconds, window_hop_seconds: windowed embedding of long audio.
        window_batch_size: windows embedded per forward pass in the windowed mode.
    """

    component_name = "mulan"

    def __init__(
        self,
        audio_transformer: AudioSpectrogramTransformer,
        text_transformer: TextTower,
        dim_latent: int = 128,
        *,
        loss: LossName = "softmax",
        decoupled_contrastive_learning: bool = False,
        sigmoid_contrastive_loss: bool = False,
        window_seconds: float = 10.0,
        window_hop_seconds: float = 1.0,
        window_batch_size: int = 16,
    ):
        super().__init__()
        if decoupled_contrastive_learning and sigmoid_contrastive_loss:
            raise ValueError("choose one of decoupled_contrastive_learning or sigmoid_contrastive_loss")
        if decoupled_contrastive_learning:
            loss = "dcl"
        if sigmoid_contrastive_loss:
            loss = "sigmoid"
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if window_seconds <= 0 or window_hop_seconds <= 0:
            raise ValueError(
                f"window_seconds and window_hop_seconds must be positive, got {window_seconds}, {window_hop_seconds}"
            )
        self.save_config(
            audio_transformer=audio_transformer,
            text_transformer=text_transformer,
            dim_latent=dim_latent,
            loss=loss,
            window_seconds=window_seconds,
            window_hop_seconds=window_hop_seconds,
            window_batch_size=window_batch_size,
        )
        self.audio = audio_transformer
        self.text = text_transformer
        self.dim_latent = dim_latent
        self.audio_to_latents = nn.Linear(audio_transformer.dim, dim_latent)
        self.text_to_latents = nn.Linear(text_transformer.dim, dim_latent)
        self.contrast = LOSSES[loss]()
        self.sample_rate = audio_transformer.sample_rate
        self.window_seconds = window_seconds
        self.window_hop_seconds = window_hop_seconds
        self.window_batch_size = window_batch_size

    # ---- embeddings ------------------------------------------------------------------------
    def get_audio_latents(self, wavs: Tensor, *, windowed: bool = False) -> Tensor:
        """``wavs [B, S]`` at ``sample_rate`` -> L2-normalised ``[B, dim_latent]``."""
        if windowed:
            return self._windowed_audio_latents(wavs)
        return F.normalize(self.audio_to_latents(self.audio(wavs)), dim=-1)

    def _windowed_audio_latents(self, wavs: Tensor) -> Tensor:
        if wavs.ndim == 3 and wavs.shape[1] == 1:
            wavs = wavs[:, 0]
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be [B, S], got shape {tuple(wavs.shape)}")
        win = int(round(self.window_seconds * self.sample_rate))
        hop = int(round(self.window_hop_seconds * self.sample_rate))
        if wavs.shape[-1] <= win:
            return self.get_audio_latents(wavs)
        # windows at 0, hop, 2*hop, ... plus one flush with the end so the tail is never ignored
        starts = list(range(0, wavs.shape[-1] - win + 1, hop))
        if starts[-1] != wavs.shape[-1] - win:
            starts.append(wavs.shape[-1] - win)
        windows = torch.stack([wavs[:, s : s + win] for s in starts], dim=1)  # [B, W, win]
        b, w = windows.shape[:2]
        flat = windows.reshape(b * w, win)
        latents = torch.cat([self.get_audio_latents(chunk) for chunk in flat.split(self.window_batch_size)], dim=0)
        return F.normalize(latents.reshape(b, w, -1).mean(dim=1), dim=-1)

    def get_text_latents(
        self, texts: Tensor | None = None, *, raw_texts: list[str] | None = None, truncate: bool = False
    ) -> Tensor:
        """Token ids ``[B, N]`` or ``raw_texts`` -> L2-normalised ``[B, dim_latent]``."""
        feats = self.text(texts, raw_texts=raw_texts, truncate=truncate)
        return F.normalize(self.text_to_latents(feats), dim=-1)

    def with_text_tower(self, text_transformer: TextTower) -> MuLaN:
        """A MuLaN sharing this one's audio tower, audio projection and temperature, with another text
        tower and a fresh text projection (``training.mulan_text`` then fits them to the audio side)."""
        cfg = dict(self._config)
        cfg["text_transformer"] = text_transformer
        new = MuLaN(**cfg)
        new.audio = self.audio
        new.audio_to_latents = self.audio_to_latents
        new.contrast.load_state_dict(self.contrast.state_dict())
        return new

    # ---- training --------------------------------------------------------------------------
    def forward(
        self,
        wavs: Tensor,
        texts: Tensor | None = None,
        *,
        raw_texts: list[str] | None = None,
        keys: Tensor | None = None,
        extra: Negatives | None = None,
        return_latents: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Contrastive loss over the (global) batch of ``(wavs [B, S], texts [B, N] | raw_texts)`` pairs.

        ``keys [B]``: pairs with equal keys are positives of each other (multi-positive target);
        ``extra``: more negatives, e.g. a feature queue (see :mod:`musiclm_pytorch.mulan.losses`).
        """
        n_text = len(raw_texts) if raw_texts is not None else (texts.shape[0] if texts is not None else 0)
        if texts is not None and raw_texts is not None:
            raise ValueError("pass exactly one of texts (token ids) or raw_texts")
        if wavs.shape[0] != n_text:
            raise ValueError(f"wavs has batch size {wavs.shape[0]} but texts has {n_text}; they must pair up")
        audio_latents = self.get_audio_latents(wavs)
        text_latents = self.get_text_latents(texts, raw_texts=raw_texts)
        loss = self.contrast(audio_latents, text_latents, keys=keys, extra=extra)
        if return_latents:
            return loss, audio_latents, text_latents
        return loss

    @torch.no_grad()
    def similarity(self, wavs: Tensor, texts: Tensor | None = None, *, raw_texts: list[str] | None = None) -> Tensor:
        """Cosine similarity matrix ``[B_audio, B_text]``."""
        return self.get_audio_latents(wavs) @ self.get_text_latents(texts, raw_texts=raw_texts).t()

"""Pretrained neural codecs (EnCodec, DAC) from a local ``transformers`` folder, behind the ``Codec`` interface.

Nothing is downloaded: ``path`` is a folder written by ``save_pretrained`` (or a snapshot copied from
the Hub by hand), e.g. ``facebook/encodec_24khz`` (75 Hz, 1024-code books, 2-32 levels by bandwidth) or
``descript/dac_16khz`` (50 Hz, 12 x 1024). The stage LMs only need the interface, so a pretrained codec
can replace our SoundStream for the acoustic tokens.

- EnCodec: ``bandwidth`` (kbps) picks the number of levels, as in the model (default: the largest of
  ``config.target_bandwidths``). Checkpoints that normalise or chunk the input (the 48 kHz model) need
  per-chunk scales at decode time that codes alone do not carry: they are refused with a clear error.
- DAC: ``num_quantizers`` uses the first levels (default: all ``config.n_codebooks``).

``encode`` right-pads the waveform with zeros to a multiple of the hop; ``decode`` returns
``T * hop`` samples, as :class:`~musiclm_pytorch.codec.SoundStream` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .base import CodecBase

SUPPORTED = ("encodec", "dac")


class PretrainedCodec(CodecBase, nn.Module):
    """EnCodec or DAC weights from a local folder as a :class:`~musiclm_pytorch.codec.Codec`.

    Args:
        path: a ``transformers`` model folder (``config.json`` + weights).
        bandwidth: EnCodec only, kbps; sets the number of levels.
        num_quantizers: DAC only; the first levels are used.
    """

    component_name = "pretrained_codec"

    def __init__(self, path: str | Path, *, bandwidth: float | None = None, num_quantizers: int | None = None):
        super().__init__()
        from transformers import AutoConfig

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no pretrained codec at {str(folder)!r}: expected a transformers folder with config.json"
            )
        cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
        self.kind = cfg.model_type
        if self.kind not in SUPPORTED:
            raise ValueError(
                f"{str(folder)!r} holds a {self.kind!r} model; a pretrained codec must be one of {SUPPORTED}"
            )
        self.path = str(folder)
        self.model: Any  # transformers' EncodecModel or DacModel (their output types are unions)
        self._sample_rate = int(cfg.sampling_rate)
        if self.kind == "encodec":
            from transformers import EncodecModel

            if cfg.normalize or cfg.chunk_length_s:
                raise ValueError(
                    f"EnCodec checkpoint {str(folder)!r} normalises/chunks its input (normalize={cfg.normalize}, "
                    f"chunk_length_s={cfg.chunk_length_s}): its decoder needs per-chunk scales that codes do not "
                    "carry; use a non-chunked model such as encodec_24khz"
                )
            if num_quantizers is not None:
                raise ValueError("EnCodec picks its levels by bandwidth=; num_quantizers= is for DAC")
            self.model = EncodecModel.from_pretrained(folder, local_files_only=True)
            self.hop = math.prod(cfg.upsampling_ratios)
            bandwidths = [float(b) for b in cfg.target_bandwidths]
            self.bandwidth = float(bandwidth) if bandwidth is not None else max(bandwidths)
            if self.bandwidth not in bandwidths:
                raise ValueError(f"bandwidth {self.bandwidth} kbps is not one of this EnCodec's {bandwidths}")
            self._codebook_size = int(cfg.codebook_size)
            bits = math.log2(self._codebook_size)
            self._num_quantizers = max(1, int(1000 * self.bandwidth // (self.frame_rate * bits)))
        else:
            from transformers import DacModel

            if bandwidth is not None:
                raise ValueError("DAC picks its levels by num_quantizers=; bandwidth= is for EnCodec")
            self.model = DacModel.from_pretrained(folder, local_files_only=True)
            self.hop = int(cfg.hop_length)
            self._codebook_size = int(cfg.codebook_size)
            total = int(cfg.n_codebooks)
            self._num_quantizers = num_quantizers or total
            if not 1 <= self._num_quantizers <= total:
                raise ValueError(f"num_quantizers must be in [1, {total}] for this DAC, got {num_quantizers}")
            self.bandwidth = self.bitrate() / 1000
        self.model.eval()
        self.model.requires_grad_(False)

    # ---- identity (stage checkpoints record the tokenizers they were trained with) ---------------
    @property
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "bandwidth": self.bandwidth,
            "num_quantizers": self.num_quantizers,
        }

    @torch.no_grad()
    def encode(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, S] -> codes [B, Q, T]`` (``T = ceil(S / hop)``)."""
        x = self._prepare(wav).float()
        if self.kind == "encodec":
            codes = self.model.encode(x, bandwidth=self.bandwidth).audio_codes[0]  # [1, B, Q, T] -> [B, Q, T]
        else:
            codes = self.model.encode(x, n_quantizers=self.num_quantizers).audio_codes[:, : self.num_quantizers]
        return codes.long()

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, Q', T] -> wav [B, 1, T * hop]``; ``Q' <= num_quantizers`` uses the first levels."""
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.num_quantizers:
            raise ValueError(f"codes must be [B, Q <= {self.num_quantizers}, T], got shape {tuple(codes.shape)}")
        if torch.is_floating_point(codes) or torch.is_complex(codes):
            raise ValueError(f"codes must be integer ids, got dtype {codes.dtype}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"codes must be in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        codes = codes.long()
        if self.kind == "encodec":
            wav = self.model.decode(codes[None], [None]).audio_values
        else:
            wav = self.model.decode(audio_codes=codes).audio_values
        wav = wav if wav.ndim == 3 else wav[:, None]
        return wav[..., : codes.shape[-1] * self.hop]

"""musiclm-pytorch: MusicLM (text to music) in PyTorch.

The seed API::

    from musiclm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer

The exports load on first use (PEP 562), so ``import musiclm_pytorch`` and the CLI's ``--help`` and
``info`` do not import torch (about 2 s of start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "MuLaN": ".mulan",
    "AudioSpectrogramTransformer": ".mulan",
    "TextTransformer": ".mulan",
    "PretrainedTextTransformer": ".mulan",
    "MuLaNEmbedQuantizer": ".conditioning",
    "AudioLoadError": ".audio",
    "MelSpectrogram": ".audio",
    "Spectrogram": ".audio",
    "load_audio": ".audio",
    "save_audio": ".audio",
    "CheckpointError": ".checkpoint",
    "load": ".checkpoint",
    "save": ".checkpoint",
    "build_mulan": ".presets",
    "mulan_presets": ".presets",
    "MusicLM": ".pipeline",
    "load_musiclm": ".pipeline",
}

__all__ = [
    "MuLaN",
    "AudioSpectrogramTransformer",
    "TextTransformer",
    "PretrainedTextTransformer",
    "MuLaNEmbedQuantizer",
    "AudioLoadError",
    "MelSpectrogram",
    "Spectrogram",
    "load_audio",
    "save_audio",
    "CheckpointError",
    "load",
    "save",
    "build_mulan",
    "mulan_presets",
    "MusicLM",
    "load_musiclm",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from .audio import AudioLoadError, MelSpectrogram, Spectrogram, load_audio, save_audio
    from .checkpoint import CheckpointError, load, save
    from .conditioning import MuLaNEmbedQuantizer
    from .mulan import AudioSpectrogramTransformer, MuLaN, PretrainedTextTransformer, TextTransformer
    from .pipeline import MusicLM, load_musiclm
    from .presets import build_mulan, mulan_presets

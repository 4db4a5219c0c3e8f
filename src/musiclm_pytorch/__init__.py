"""musiclm-pytorch: MusicLM (text to music) in PyTorch.

The seed API::

    from musiclm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer
"""

from .audio import AudioLoadError, MelSpectrogram, Spectrogram, load_audio, save_audio
from .checkpoint import CheckpointError, load, save
from .conditioning import MuLaNEmbedQuantizer
from .mulan import (
    AudioSpectrogramTransformer,
    MuLaN,
    PretrainedTextTransformer,
    TextTransformer,
)
from .presets import build_mulan, mulan_presets

__version__ = "0.1.0"

__all__ = [
    "MuLaN",
    "AudioSpectrogramTransformer",
    "TextTransformer",
    "PretrainedTextTransformer",
    "MuLaNEmbedQuantizer",
    "AudioLoadError",
    "CheckpointError",
    "MelSpectrogram",
    "Spectrogram",
    "load_audio",
    "save_audio",
    "load",
    "save",
    "build_mulan",
    "mulan_presets",
]

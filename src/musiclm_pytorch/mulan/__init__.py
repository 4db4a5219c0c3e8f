"""MuLaN: the audio-text joint embedding (towers, losses, model)."""

from .audio_tower import AudioSpectrogramTransformer
from .losses import DecoupledContrastiveLoss, SigmoidContrastiveLoss, SoftmaxContrastiveLoss, gather_with_grad
from .model import MuLaN
from .text_tower import BUILTIN_MINILM, PretrainedTextTransformer, TextTransformer, WordPieceTokenizer

__all__ = [
    "AudioSpectrogramTransformer",
    "TextTransformer",
    "PretrainedTextTransformer",
    "WordPieceTokenizer",
    "MuLaN",
    "SoftmaxContrastiveLoss",
    "DecoupledContrastiveLoss",
    "SigmoidContrastiveLoss",
    "gather_with_grad",
    "BUILTIN_MINILM",
]

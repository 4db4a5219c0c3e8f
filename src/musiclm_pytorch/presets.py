"""Named configurations. Constructor defaults are the single source of truth; presets override them.

MuLaN presets:

| name | audio tower | text tower | use |
|---|---|---|---|
| ``tiny`` | dim 64, depth 2, 32 log-mel bins | from scratch, dim 64, depth 2 | tests, docs |
| ``seed`` | the seed README (dim 512, depth 6, linear spec n_fft 128) | from scratch, 512 x 6 | compatibility |
| ``small`` | dim 256, depth 4, 96 semitone bins at 10 ms, octave-row patches | MiniLM-L6 (frozen) | CPU training |
| ``small-mel`` | as ``small`` on 128 log-mel bins (first checkpoint) | MiniLM-L6 (frozen) | ablation |
| ``small-scratch`` | as ``small`` | from scratch, dim 256, depth 4 | ablation of the text tower |
| ``base`` | dim 512, depth 6, 128 log-mel at 10 ms | from scratch, 512 x 6 | training from scratch |
| ``base-minilm`` | as ``base`` | MiniLM-L6 (shipped, frozen) | small captioned corpora |
| ``paper`` | AST-base: dim 768, depth 12, 12 heads, 128 log-mel | MiniLM-L6, fine-tuned | closest to MuLan |

The paper's MuLan uses a ResNet-50 audio tower and BERT-base text tower (unreleased weights); ``paper``
replaces them with an AST (as the seed does) and the MiniLM that ships offline.
"""

from __future__ import annotations

import copy
from typing import Any

from .mulan import AudioSpectrogramTransformer, MuLaN, PretrainedTextTransformer, TextTransformer
from .mulan.text_tower import BUILTIN_MINILM

_MEL = dict(frontend="mel", sample_rate=16000, spec_n_fft=400, spec_win_length=400, spec_hop_length=160)
# One bin per semitone (C1-B8), one octave per patch row. No time stretch: it would change the tempo that
# captions state; frequency masks of at most one octave (80 of 96 bins would hide the music).
_LOGFREQ = dict(
    frontend="logfreq",
    sample_rate=16000,
    spec_n_fft=2048,
    spec_win_length=2048,
    spec_hop_length=160,
    n_bins=96,
    bins_per_octave=12,
    patch_size=(12, 16),
    spec_aug_stretch_factor=None,
    spec_aug_freq_mask=12,
    spec_aug_time_mask=40,
)

MULAN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "audio": dict(dim=64, depth=2, heads=2, dim_head=32, n_mels=32, **_MEL),
        "text": dict(kind="scratch", dim=64, depth=2, heads=2, dim_head=32, max_seq_len=64),
        "mulan": dict(dim_latent=128),
    },
    "seed": {
        "audio": dict(
            dim=512,
            depth=6,
            heads=8,
            dim_head=64,
            spec_n_fft=128,
            spec_win_length=24,
            spec_aug_stretch_factor=0.8,
        ),
        "text": dict(kind="scratch", dim=512, depth=6, heads=8, dim_head=64),
        "mulan": dict(dim_latent=128),
    },
    "small": {
        "audio": dict(dim=256, depth=4, heads=4, dim_head=64, patch_dropout_prob=0.5, **_LOGFREQ),
        "text": dict(kind="pretrained", path=BUILTIN_MINILM, freeze=True, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
    "small-mel": {
        "audio": dict(dim=256, depth=4, heads=4, dim_head=64, n_mels=128, patch_dropout_prob=0.5, **_MEL),
        "text": dict(kind="pretrained", path=BUILTIN_MINILM, freeze=True, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
    "small-scratch": {
        "audio": dict(dim=256, depth=4, heads=4, dim_head=64, patch_dropout_prob=0.5, **_LOGFREQ),
        "text": dict(kind="scratch", dim=256, depth=4, heads=4, dim_head=64, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
    "base": {
        "audio": dict(dim=512, depth=6, heads=8, dim_head=64, n_mels=128, **_MEL),
        "text": dict(kind="scratch", dim=512, depth=6, heads=8, dim_head=64, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
    "base-minilm": {
        "audio": dict(dim=512, depth=6, heads=8, dim_head=64, n_mels=128, **_MEL),
        "text": dict(kind="pretrained", path=BUILTIN_MINILM, freeze=True, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
    "paper": {
        "audio": dict(dim=768, depth=12, heads=12, dim_head=64, n_mels=128, **_MEL),
        "text": dict(kind="pretrained", path=BUILTIN_MINILM, freeze=False, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
}


def mulan_presets() -> list[str]:
    return sorted(MULAN_PRESETS)


def build_mulan(preset: str = "base", **mulan_overrides: Any) -> MuLaN:
    """A randomly initialised :class:`MuLaN` of a named preset (see the module table)."""
    if preset not in MULAN_PRESETS:
        raise ValueError(f"unknown MuLaN preset {preset!r}; choose from {mulan_presets()}")
    spec = copy.deepcopy(MULAN_PRESETS[preset])
    audio = AudioSpectrogramTransformer(**spec["audio"])
    text_args = spec["text"]
    kind = text_args.pop("kind")
    text: TextTransformer | PretrainedTextTransformer
    text = TextTransformer(**text_args) if kind == "scratch" else PretrainedTextTransformer(**text_args)
    return MuLaN(audio_transformer=audio, text_transformer=text, **{**spec["mulan"], **mulan_overrides})

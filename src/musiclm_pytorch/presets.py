"""Named configurations. Constructor defaults are the single source of truth; presets override them.

MuLaN presets:

| name | audio tower | text tower | use |
|---|---|---|---|
| ``tiny`` | dim 64, depth 2, 32 log-mel bins | from scratch, dim 64, depth 2 | tests, docs |
| ``seed`` | the seed README (dim 512, depth 6, linear spec n_fft 128) | from scratch, 512 x 6 | compatibility |
| ``small`` | dim 256, depth 4, 128 log-mel at 10 ms, patch dropout 0.5 | MiniLM-L6 (shipped, frozen) | CPU training |
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
        "audio": dict(dim=256, depth=4, heads=4, dim_head=64, n_mels=128, patch_dropout_prob=0.5, **_MEL),
        "text": dict(kind="pretrained", path=BUILTIN_MINILM, freeze=True, max_seq_len=128),
        "mulan": dict(dim_latent=128),
    },
    "small-scratch": {
        "audio": dict(dim=256, depth=4, heads=4, dim_head=64, n_mels=128, patch_dropout_prob=0.5, **_MEL),
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

"""Fit the MuLaN conditioning quantizer on a trained MuLaN and measure text/audio token agreement.

``musiclm train conditioning --mulan mulan.safetensors --data corpus/ --out cond.safetensors``

MusicLM trains its stages on the tokens of the clip's *audio* embedding and generates from the
tokens of the *text* embedding, so what the stages learn transfers only as far as the two agree.
This fits the residual VQ on the audio latents of every training clip (windowed: the mean over 10 s
windows at a 1 s stride), then reports, on held-out clips, per level: how often the text tokens (of
the clip's full caption) equal the audio tokens, and the code usage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load, save
from ..conditioning import MuLaNEmbedQuantizer
from ..data.datasets import manifest_rows
from ..evaluation.mulan_eval import embed_rows, text_latents
from ..mulan.model import MuLaN


@torch.no_grad()
def token_agreement(quantizer: MuLaNEmbedQuantizer, audio: torch.Tensor, text: torch.Tensor) -> dict[str, Any]:
    """Per level: P(text id == audio id), and P(all levels up to this one agree)."""
    a_ids, _ = quantizer.quantize(audio)
    t_ids, _ = quantizer.quantize(text)
    same = a_ids == t_ids
    prefix = same.cumprod(dim=1).bool()
    return {
        "per_level": [round(float(same[:, q].float().mean()), 4) for q in range(same.shape[1])],
        "prefix": [round(float(prefix[:, q].float().mean()), 4) for q in range(same.shape[1])],
        # a looser view: how close the text's quantized vector lands to the audio's
        "cosine_quantized_text_vs_audio": round(
            float(
                torch.nn.functional.cosine_similarity(quantizer.quantize(text)[1], quantizer.quantize(audio)[1]).mean()
            ),
            4,
        ),
    }


def fit_conditioning(
    *,
    mulan_path: str,
    data: str,
    out: str,
    num_quantizers: int = 12,
    codebook_size: int = 1024,
    conditioning_dims: tuple[int, ...] = (),
    namespaces: tuple[str, ...] = (),
    max_val: int = 1000,
    latents_cache: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit and save the quantizer. Without ``namespaces`` it holds no embedding tables: the stage LMs
    own (and train) their conditioning tables, and the file stays small (MuLaN + codebooks)."""
    start = time.perf_counter()
    mulan = load(mulan_path, expected=MuLaN).eval()
    root = Path(data)
    train_rows, _ = manifest_rows(root / "train.jsonl")
    val_rows, _ = manifest_rows(root / "val.jsonl")
    cache = Path(latents_cache) if latents_cache else None
    if cache is not None and cache.is_file():  # the same MuLaN's latents, to try several codebook sizes
        saved = torch.load(cache, weights_only=False)
        train_audio, val_audio, val_text, skipped_report = saved["train"], saved["val"], saved["text"], saved["skipped"]
    else:
        train_audio, _, skipped = embed_rows(mulan, train_rows, progress=progress)
        val_audio, val_kept, _ = embed_rows(mulan, val_rows[:max_val], progress=progress)
        val_text = text_latents(mulan, [r.get("full_caption") or r["captions"][0] for r in val_kept])
        skipped_report = skipped.report()
        if cache is not None:
            torch.save({"train": train_audio, "val": val_audio, "text": val_text, "skipped": skipped_report,
                        "mulan": mulan_path}, cache)  # fmt: skip
    quantizer = MuLaNEmbedQuantizer(
        mulan,
        conditioning_dims=conditioning_dims,
        namespaces=namespaces,
        num_quantizers=num_quantizers,
        codebook_size=codebook_size,
    )
    errors = quantizer.fit(train_audio, progress=progress)
    save(quantizer, out)
    report = {
        "mulan": mulan_path,
        "train_latents": len(train_audio),
        "train_skipped": skipped_report,
        "num_quantizers": num_quantizers,
        "codebook_size": codebook_size,
        "train_residual_mse": [round(float(e), 5) for e in errors],
        "val_clips": len(val_audio),
        "val_code_usage": quantizer.code_usage(val_audio),
        "val_text_audio_agreement": token_agreement(quantizer, val_audio, val_text),
        "val_cosine_text_vs_audio_latent": round(float((val_audio * val_text).sum(-1).mean()), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
    Path(out).with_suffix(".json").write_text(json.dumps(report, indent=2))
    return report

"""``musiclm data tokenize``: pre-tokenize a corpus once, so that no training epoch re-runs the tokenizers.

Every clip -> MuLaN conditioning ids (of the clip's own audio: the mean over 10 s windows) and its MuLaN
latent, 25 Hz semantic ids and 50 Hz codec codes, saved per split in one ``.pt`` file (``train.pt``,
``val.pt``, and with ``test=True`` the sealed test split's ``test.pt``). The file records the identity
(component + config hash) of every tokenizer; a stage trained on it stores them, and loading a stage
beside different tokenizers is an error (:func:`~musiclm_pytorch.checkpoint.check_identity`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..audio import resample
from ..checkpoint import identity
from ..data.datasets import CaptionedAudioDataset, ClipOptions, SkipStats, manifest_rows
from .common import atomic_torch_save


def _as_is(item: Any) -> Any:
    return item


@torch.no_grad()
def tokenize_corpus(
    *,
    conditioner: Any,
    semantic: Any,
    codec: Any,
    data: str,
    out: str,
    max_clips: int | None = None,
    max_val_clips: int | None = None,
    test: bool = False,
    num_workers: int = 1,
    reuse: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize ``data/{train,val}.jsonl`` into ``out/{split}.pt`` (the first ``max_clips`` training and
    ``max_val_clips`` validation rows; ``num_workers`` processes decode audio while this one tokenizes).
    ``test``: also the sealed test split, all of ``data/test.jsonl`` into ``out/test.pt`` (read by
    ``eval stage --split test`` and ``eval acoustic --split test``, never by a trainer).

    ``reuse``: an earlier tokens folder. Each of the three token kinds (MuLaN conditioning ids, semantic
    ids, codec codes) whose component has the same identity (weights hash) there is copied for the
    clips it holds instead of recomputed: retokenizing for a new codec then costs the codec alone."""
    if semantic.sample_rate != codec.sample_rate:
        raise ValueError(f"semantic tokenizer rate {semantic.sample_rate} != codec rate {codec.sample_rate}")
    ratio = codec.frame_rate / semantic.frame_rate
    if abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(
            f"codec frame rate {codec.frame_rate} is not a multiple of semantic rate {semantic.frame_rate}"
        )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = {
        "conditioner": identity(conditioner),
        "semantic": identity(semantic),
        "codec": identity(codec),
        "mulan": identity(conditioner.mulan),
    }
    summary: dict[str, Any] = {"identity": ids, "splits": {}}
    if test and not (Path(data) / "test.jsonl").is_file():
        raise FileNotFoundError(f"{str(data)!r} has no test.jsonl (a sealed test split: data synth --test-fraction)")
    for split in ("train", "val", "test") if test else ("train", "val"):
        path = Path(data) / f"{split}.jsonl"
        if not path.is_file():
            continue
        rows, _ = manifest_rows(path)
        limit = {"train": max_clips, "val": max_val_clips}.get(split)
        rows = rows[:limit] if limit is not None else rows
        if not rows:  # none in the split (a test-only corpus, --max-val-clips 0): no {split}.pt
            continue
        ds = CaptionedAudioDataset(rows, ClipOptions(sample_rate=codec.sample_rate, crop_seconds=None, min_seconds=1.0))
        loader = DataLoader(ds, batch_size=None, num_workers=num_workers, collate_fn=_as_is)
        old, reusable = _reusable(reuse, split, ids, len(ds))
        items, skipped, reused = [], SkipStats(), dict.fromkeys(reusable, 0)
        pending: list[dict[str, Any]] = []
        for index, item in enumerate(tqdm(loader, total=len(ds), desc=f"tokenizing {split}", disable=not progress)):
            if not isinstance(item, dict):
                skipped.update([item])
                continue
            prior = old.get(str(item["path"]), old.get(index, {}))
            for key in reusable:
                reused[key] += key in prior
            pending.append({**item, "index": index, "prior": prior})
            if len(pending) == batch_size:
                items += _tokenize_clips(pending, semantic=semantic, codec=codec, conditioner=conditioner,
                                         ratio=int(round(ratio)))  # fmt: skip
                pending = []
        items += _tokenize_clips(pending, semantic=semantic, codec=codec, conditioner=conditioner,
                                 ratio=int(round(ratio)))  # fmt: skip
        items.sort(key=lambda it: it.pop("index"))
        atomic_torch_save({"identity": ids, "ratio": int(round(ratio)), "items": items,
                           "semantic_vocab": semantic.vocab_size, "codebook_size": codec.codebook_size,
                           "num_quantizers": codec.num_quantizers, "cond_vocab": conditioner.codebook_size,
                           "num_cond": conditioner.num_quantizers, "semantic_rate": semantic.frame_rate},
                          out_dir / f"{split}.pt")  # fmt: skip
        summary["splits"][split] = len(items)
        if reused:
            summary.setdefault("reused", {})[split] = reused
        summary.setdefault("skipped", {})[split] = skipped.report()
    (out_dir / "tokens.json").write_text(json.dumps(summary, indent=2))
    return summary


_TOKEN_KINDS = {"conditioner": ("cond_ids", "mulan"), "semantic": ("semantic",), "codec": ("codes",)}


_KEYS = tuple(k for keys in _TOKEN_KINDS.values() for k in keys)  # every item key a tokenizer makes


@torch.no_grad()
def _tokenize_clips(clips: list[dict[str, Any]], *, semantic: Any, codec: Any, conditioner: Any,
                    ratio: int) -> list[dict[str, Any]]:  # fmt: skip
    """Token items of ``clips`` (dataset items with their row ``index`` and the ``prior`` ids an earlier
    tokens folder holds for them). Clips of equal length run through each tokenizer as one batch: the
    semantic features cost several times less per clip in batches than one by one."""
    out = []
    for group in _equal_length_groups(clips):
        todo = [i for i, it in enumerate(group) if not all(k in it["prior"] for k in _KEYS)]
        fresh: dict[int, dict[str, Tensor]] = {i: {} for i in todo}
        if todo:
            wavs = torch.stack([group[i]["wav"] for i in todo]).float()
            if any("semantic" not in group[i]["prior"] for i in todo):
                for j, ids in zip(todo, semantic(wavs)):
                    fresh[j]["semantic"] = ids
            if any("codes" not in group[i]["prior"] for i in todo):
                for j, codes in zip(todo, codec.encode(wavs[:, None])):
                    fresh[j]["codes"] = codes
            if any(k not in group[i]["prior"] for i in todo for k in ("mulan", "cond_ids")):
                # MuLaN listens at its own rate (a 24 kHz codec's audio would otherwise be heard slowed)
                heard = torch.from_numpy(resample(wavs, codec.sample_rate, conditioner.mulan.sample_rate))
                latents = conditioner.mulan.get_audio_latents(heard, windowed=True)
                for j, latent, ids in zip(todo, latents, conditioner.quantize(latents)[0]):
                    fresh[j].update(mulan=latent, cond_ids=ids)
        for i, it in enumerate(group):
            got = {**it["prior"], **fresh.get(i, {})}
            frames = min(len(got["semantic"]), got["codes"].shape[-1] // ratio)
            out.append({
                "cond_ids": got["cond_ids"].short(),
                "mulan": got["mulan"].half(),
                "semantic": got["semantic"][:frames].short(),
                "codes": got["codes"][:, : frames * ratio].short(),
                "source": (it["tags"] or {}).get("source", it["path"]),
                "path": str(it["path"]),
                "index": it["index"],
            })  # fmt: skip
    return out


def _equal_length_groups(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``items`` (each with a 1-D ``wav``) grouped by length, in order of first appearance."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(it["wav"].shape[-1], []).append(it)
    return list(groups.values())


def _reusable(
    folder: str | None, split: str, ids: dict[str, Any], rows: int
) -> tuple[dict[Any, dict[str, Any]], list[str]]:
    """Items of an earlier ``folder/{split}.pt`` by audio path, keeping only the token kinds whose
    component identity equals ``ids``; and the names of those kinds. Files written before items
    recorded their path are matched by position, only when they hold exactly ``rows`` items (the
    same rows, none skipped)."""
    if folder is None:
        return {}, []
    path = Path(folder) / f"{split}.pt"
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"tokens folder to reuse {folder!r} not found")
    if not path.is_file():
        return {}, []
    data = torch.load(path, weights_only=False)
    kinds = [k for part, keys in _TOKEN_KINDS.items() if data.get("identity", {}).get(part) == ids[part] for k in keys]
    if all("path" in it for it in data["items"]):  # older files lack the "mulan" latents: those are recomputed
        return {it["path"]: {k: it[k] for k in kinds if k in it} for it in data["items"]}, kinds
    if len(data["items"]) != rows:
        raise ValueError(f"{path} records no audio paths and holds {len(data['items'])} items for {rows} rows: "
                         "its ids cannot be matched to the clips; tokenize without --reuse")  # fmt: skip
    return {i: {k: it[k] for k in kinds if k in it} for i, it in enumerate(data["items"])}, kinds


def load_split_tokens(folder: str | Path, split: str) -> dict[str, Any]:
    """What an evaluation reads from a tokens folder: ``val.pt``, or with ``split="test"`` the sealed test
    split's ``test.pt`` (written only by :func:`tokenize_corpus` with ``test=True``)."""
    from ..data.datasets import SPLITS

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(folder) / f"{split}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no tokens at {str(path)!r}: run `musiclm data tokenize` first"
                                + (" (with --test)" if split == "test" else ""))  # fmt: skip
    return torch.load(path, weights_only=False)


__all__ = ["load_split_tokens", "tokenize_corpus"]

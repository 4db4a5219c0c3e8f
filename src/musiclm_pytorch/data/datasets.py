"""Captioned audio datasets for every trainer: manifests, audio folders, WebDataset shards.

Every source yields ``{"wav": [S] float32, "caption": str, "tags": dict, "path": str}`` at the
model's sample rate, mono, cropped to ``crop_seconds``. Bad rows never crash training and are never
silent: a row that cannot be used becomes a :class:`BadRow`, :func:`collate` moves it to
``batch["skipped"]``, and a :class:`SkipStats` in the training loop counts them by reason and reports
them at the end of each epoch. Rows whose problem is visible without decoding (bad JSON, no caption,
missing file) are counted when the source is read.

Crop rule: ``crop="random"`` (training) picks a uniform offset, ``"center"`` or ``"start"`` are fixed
(validation). A clip shorter than ``min_seconds`` (default: ``crop_seconds``) is a bad row
(``"too short"``); one between ``min_seconds`` and ``crop_seconds`` is zero-padded at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, IterableDataset

from ..audio import AudioLoadError, load_audio, resample

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
Crop = Literal["random", "center", "start"]


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped, and why."""

    source: str
    reason: str


@dataclass
class SkipStats:
    """Counts of skipped rows by reason, with a few examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, bad: BadRow) -> None:
        key = bad.reason.split(":")[0]
        self.counts[key] += 1
        self.examples.setdefault(key, [])
        if len(self.examples[key]) < 3:
            self.examples[key].append(f"{bad.source}: {bad.reason}")

    def update(self, bads: Sequence[BadRow]) -> None:
        for bad in bads:
            self.add(bad)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def why_empty(self) -> str:
        """Why a source gave no usable rows: the skipped rows, or that it holds none."""
        return self.report() if self.total else "it holds no rows"

    def report(self) -> str:
        if not self.total:
            return "no rows skipped"
        parts = [f"{n} {reason}" for reason, n in self.counts.most_common()]
        return f"{self.total} rows skipped ({', '.join(parts)}); e.g. " + "; ".join(
            ex for exs in self.examples.values() for ex in exs[:1]
        )


def _stable_fraction(key: str, seed: int) -> float:
    return int(hashlib.sha1(f"{seed}|{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


# ---- row sources ---------------------------------------------------------------------------
def manifest_rows(manifest: str | Path, *, require_caption: bool = True) -> tuple[list[dict[str, Any]], list[BadRow]]:
    """Rows of a JSONL manifest (``path`` relative to the manifest's folder or absolute, ``caption``
    or ``captions``, optional ``tags``, ``start``, ``duration``). Returns ``(rows, bad_rows)``.
    ``require_caption=False`` (audio-only training, e.g. the codec) keeps rows without a caption."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {str(manifest)!r} not found")
    rows, bad = [], []
    for n, raw in enumerate(manifest.read_bytes().splitlines(), start=1):
        where = f"{manifest.name}:{n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:  # one bad byte costs its row, not the manifest
            bad.append(BadRow(where, f"not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}"))
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(BadRow(where, f"invalid JSON: {e.msg}"))
            continue
        if not isinstance(row, dict) or not row.get("path"):
            bad.append(BadRow(where, "no path"))
            continue
        captions = row.get("captions") or ([row["caption"]] if row.get("caption") else [])
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if not captions and require_caption:
            bad.append(BadRow(where, "empty caption"))
            continue
        captions = captions or [""]
        path = Path(row["path"])
        path = path if path.is_absolute() else manifest.parent / path
        if not path.is_file():
            bad.append(BadRow(f"{where} ({path})", "missing file"))
            continue
        rows.append({**row, "key": str(row["path"]), "path": str(path), "captions": captions})
    return rows, bad


SPLITS = ("val", "test")  # what an evaluation reads: the validation split, or (asked for) the sealed test split


def check_split(rows: Sequence[dict[str, Any]], split: str, source: str | Path) -> None:
    """The sealed test split is read only when asked for: rows of it (``"split": "test"``, as ``data
    synth --test-fraction`` writes them) under ``split="val"`` are an error, and so is ``split="test"``
    on rows that are not all of it. Its figures are reported, never used to choose."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    found = {r.get("split") for r in rows}
    if split != "test" and "test" in found:
        raise ValueError(f"{str(source)!r} holds rows of the sealed test split: pass --split test to read them (its "
                         "figures are reported, never used to choose)")  # fmt: skip
    if split == "test" and found != {"test"}:
        raise ValueError(f"--split test, but {str(source)!r} holds rows of {sorted(map(str, found - {'test'}))} "
                         "(the sealed test split is a corpus's test.jsonl, `data synth --test-fraction`)")  # fmt: skip


def data_rows(path: str | Path, *, split: str = "train", require_caption: bool = True,
              what: str = "data") -> tuple[list[dict[str, Any]], list[BadRow]]:  # fmt: skip
    """What every command reads as data: a corpus folder (its ``{split}.jsonl``), a JSONL manifest, or a
    folder of audio files with sidecar captions (:func:`folder_rows`). Returns ``(rows, bad_rows)``;
    ``what`` names the data in the error for a path that does not exist."""
    p = Path(path)
    if p.is_dir() and (p / f"{split}.jsonl").is_file():
        return manifest_rows(p / f"{split}.jsonl", require_caption=require_caption)
    if p.is_dir():
        return folder_rows(p, require_caption=require_caption)
    if p.is_file():
        return manifest_rows(p, require_caption=require_caption)
    raise FileNotFoundError(f"{what} {str(path)!r} not found")


def folder_rows(folder: str | Path, *, require_caption: bool = True) -> tuple[list[dict[str, Any]], list[BadRow]]:
    """Audio files under ``folder`` with a sidecar caption: ``x.txt`` (the caption) or ``x.json``
    (``{"caption": ..., "tags": {...}}``). Returns ``(rows, bad_rows)``. ``require_caption=False``
    keeps files without a sidecar."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder {str(folder)!r} not found")
    rows, bad = [], []
    audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not audio:
        hint = (
            f"; for a corpus pass its manifest, {str(folder / 'train.jsonl')!r}"
            if (folder / "train.jsonl").is_file()
            else ""
        )
        raise ValueError(f"audio folder {str(folder)!r} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}){hint}")
    for path in audio:
        txt, meta = path.with_suffix(".txt"), path.with_suffix(".json")
        row: dict[str, Any] = {"path": str(path)}
        try:
            if meta.is_file():
                data = json.loads(meta.read_text())
                row.update(data if isinstance(data, dict) else {})
            if txt.is_file():
                row["caption"] = txt.read_text().strip()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            bad.append(BadRow(str(path), f"unreadable sidecar: {e}"))
            continue
        captions = row.get("captions") or ([row["caption"]] if row.get("caption") else [])
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if not captions and require_caption:
            bad.append(BadRow(str(path), "empty caption: no .txt or .json sidecar with a caption"))
            continue
        captions = captions or [""]
        rows.append({**row, "key": str(path.relative_to(folder)), "path": str(path), "captions": captions})
    return rows, bad


def split_rows(rows: list[dict[str, Any]], split: str, *, val_fraction: float = 0.1, seed: int = 0) -> list[dict]:
    """Deterministic split by a hash of the row's ``source`` tag, else its ``key`` (the path as the
    manifest writes it, or relative to the folder, so moving a dataset keeps its split): the same
    source never lands in both splits. Rows that carry ``split`` already keep it."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    out = []
    for row in rows:
        if "split" in row:
            keep = row["split"] == split
        else:
            key = (row.get("tags") or {}).get("source") or row.get("key") or row["path"]
            keep = (_stable_fraction(key, seed) < val_fraction) == (split == "val")
        if keep:
            out.append(row)
    return out


# ---- cropping and loudness -----------------------------------------------------------------
@dataclass
class ClipOptions:
    """How a row becomes a waveform. ``crop_seconds=None`` keeps the whole clip."""

    sample_rate: int = 16000
    crop_seconds: float | None = 10.0
    crop: Crop = "random"
    min_seconds: float | None = None
    normalize: Literal["rms", "peak"] | None = None
    target_dbfs: float = -20.0
    caption: Literal["random", "first"] = "random"

    def __post_init__(self) -> None:
        if self.crop not in ("random", "center", "start"):
            raise ValueError(f"crop must be 'random', 'center' or 'start', got {self.crop!r}")
        if self.normalize not in (None, "rms", "peak"):
            raise ValueError(f"normalize must be None, 'rms' or 'peak', got {self.normalize!r}")
        if self.crop_seconds is not None and self.crop_seconds <= 0:
            raise ValueError(f"crop_seconds must be positive, got {self.crop_seconds}")

    @property
    def min_samples(self) -> int:
        need = self.min_seconds if self.min_seconds is not None else self.crop_seconds
        return int(round((need or 0.0) * self.sample_rate))


def normalize_loudness(wav: np.ndarray, how: str | None, target_dbfs: float = -20.0) -> np.ndarray:
    """``"rms"``: scale to ``target_dbfs`` RMS, limited so the peak stays below 0.99; ``"peak"``: peak 0.95."""
    if how is None:
        return wav
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak < 1e-8:
        return wav
    if how == "peak":
        return wav * (0.95 / peak)
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    gain = min(10 ** (target_dbfs / 20) / max(rms, 1e-8), 0.99 / peak)
    return wav * gain


def _crop_window(total: int, need: int, crop: str, rng: random.Random) -> int:
    if total <= need:
        return 0
    if crop == "random":
        return rng.randrange(total - need + 1)
    return (total - need) // 2 if crop == "center" else 0


def _finish(wav: np.ndarray, opts: ClipOptions, where: str) -> np.ndarray | BadRow:
    if not np.isfinite(wav).all():
        return BadRow(where, "unreadable audio: NaN or infinite samples")
    if len(wav) < max(opts.min_samples, 1):
        return BadRow(
            where, f"too short: {len(wav) / opts.sample_rate:.2f} s < {opts.min_samples / opts.sample_rate:.2f} s"
        )
    if opts.crop_seconds is not None:
        need = int(round(opts.crop_seconds * opts.sample_rate))
        wav = np.pad(wav[:need], (0, max(0, need - len(wav))))
    return normalize_loudness(wav.astype(np.float32), opts.normalize, opts.target_dbfs)


def _pick_caption(captions: list[str], opts: ClipOptions, rng: random.Random) -> str:
    return captions[0] if opts.caption == "first" else rng.choice(captions)


class CaptionedAudioDataset(Dataset):
    """Map-style dataset over manifest or folder rows. Items are dicts or :class:`BadRow`.

    Args:
        rows: from :func:`manifest_rows` / :func:`folder_rows` (optionally :func:`split_rows`).
        options: sample rate, crop, loudness, caption choice.
        seed: base seed for crops and caption choice (``seed + epoch * len + index`` per item with
            :meth:`set_epoch`, so runs are reproducible and every epoch differs).
    """

    def __init__(self, rows: list[dict[str, Any]], options: ClipOptions | None = None, *, seed: int = 0):
        if not rows:
            raise ValueError("dataset is empty: no usable rows (see the skipped-row report of the source)")
        self.rows = rows
        self.opts = options or ClipOptions()
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any] | BadRow:
        row = self.rows[index]
        rng = random.Random(self.seed + self.epoch * len(self.rows) + index)
        path = row["path"]
        opts = self.opts
        try:
            info = sf.info(path)
            start = float(row.get("start", 0.0))
            length = float(row.get("duration") or info.duration - start)
            length = min(length, info.duration - start)
            offset = start
            if opts.crop_seconds is not None and length > opts.crop_seconds:
                slack = length - opts.crop_seconds
                offset += (
                    rng.uniform(0, slack) if opts.crop == "random" else slack / 2 if opts.crop == "center" else 0.0
                )
                length = opts.crop_seconds
            wav_t, _ = load_audio(path, sample_rate=opts.sample_rate, offset=offset, duration=length)
        except AudioLoadError as e:
            return BadRow(path, f"unreadable audio: {e.reason}")
        except (RuntimeError, sf.LibsndfileError) as e:
            return BadRow(path, f"unreadable audio: {e}")
        wav = _finish(wav_t.numpy(), opts, path)
        if isinstance(wav, BadRow):
            return wav
        return {
            "wav": torch.from_numpy(wav),
            "caption": _pick_caption(row["captions"], opts, rng),
            "tags": row.get("tags") or {},
            "path": path,
        }


class WebDatasetSource(IterableDataset):
    """Iterate WebDataset tar shards (local paths, or URLs of your own storage through ``webdataset``).

    Each sample is ``{key}.{flac|wav|ogg|mp3}`` + ``{key}.json`` (with ``caption``/``captions`` and
    ``tags``) or ``{key}.txt``. Shards are split across DataLoader workers and, with
    ``torch.distributed``, across ranks.
    """

    def __init__(self, shards: Sequence[str], options: ClipOptions | None = None, *, seed: int = 0):
        if not shards:
            raise ValueError("no shards given")
        self.shards = list(shards)
        self.opts = options or ClipOptions()
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_shards(self) -> list[str]:
        shards = self.shards
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            shards = shards[rank::world]
        info = torch.utils.data.get_worker_info()
        if info is not None:
            shards = shards[info.id :: info.num_workers]
        return shards

    def _samples(self, shard: str) -> Iterator[dict[str, Any] | BadRow]:
        if "://" in shard or shard.startswith("pipe:"):
            import webdataset as wds

            stream = wds.WebDataset(shard, shardshuffle=False)
            groups: Iterator[tuple[str, dict[str, bytes]]] = (
                (s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")}) for s in stream
            )
        else:
            groups = _tar_groups(shard)
        for key, files in groups:
            yield self._decode(f"{shard}:{key}", files, key)

    def _decode(self, where: str, files: dict[str, bytes], key: str) -> dict[str, Any] | BadRow:
        rng = random.Random(f"{self.seed}|{self.epoch}|{key}")
        meta: dict[str, Any] = {}
        try:
            if "json" in files:
                meta = json.loads(files["json"])
            if "txt" in files:
                meta["caption"] = files["txt"].decode().strip()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return BadRow(where, f"unreadable sidecar: {e}")
        captions = meta.get("captions") or ([meta["caption"]] if meta.get("caption") else [])
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if not captions:
            return BadRow(where, "empty caption")
        audio_ext = next((e for e in ("flac", "wav", "ogg", "mp3") if e in files), None)
        if audio_ext is None:
            return BadRow(where, "missing file: no audio member")
        try:
            data, sr = sf.read(io.BytesIO(files[audio_ext]), dtype="float32", always_2d=True)
        except Exception as e:  # libsndfile raises several types
            return BadRow(where, f"unreadable audio: {e}")
        if data.shape[0] == 0:
            return BadRow(where, "unreadable audio: no samples")
        wav = resample(data.mean(axis=1), sr, self.opts.sample_rate)
        if self.opts.crop_seconds is not None:
            need = int(round(self.opts.crop_seconds * self.opts.sample_rate))
            start = _crop_window(len(wav), need, self.opts.crop, rng)
            wav = wav[start : start + need]
        out = _finish(wav, self.opts, where)
        if isinstance(out, BadRow):
            return out
        return {"wav": torch.from_numpy(out), "caption": _pick_caption(captions, self.opts, rng),
                "tags": meta.get("tags") or {}, "path": where}  # fmt: skip

    def __iter__(self) -> Iterator[dict[str, Any] | BadRow]:
        for shard in self._my_shards():
            yield from self._samples(shard)


def _tar_groups(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive members of a local tar by key (WebDataset convention: key = name up to the
    first dot of the base name)."""
    import tarfile

    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"cannot open shard {path!r}: {e}") from e
    with tar:
        key, files = None, {}
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if key is not None and k != key:
                yield key, files
                files = {}
            key = k
            f = tar.extractfile(member)
            files[ext.lower()] = f.read() if f else b""
        if key is not None:
            yield key, files


def collate(samples: Sequence[dict[str, Any] | BadRow]) -> dict[str, Any]:
    """Stack good samples (equal lengths: set ``crop_seconds``); bad ones go to ``skipped``."""
    good = [s for s in samples if not isinstance(s, BadRow)]
    skipped = [s for s in samples if isinstance(s, BadRow)]
    if good and len({s["wav"].shape[-1] for s in good}) > 1:
        raise ValueError(
            f"cannot batch clips of different lengths {sorted({s['wav'].shape[-1] for s in good})}; set crop_seconds"
        )
    return {
        "wavs": torch.stack([s["wav"] for s in good]) if good else torch.zeros(0, 0),
        "captions": [s["caption"] for s in good],
        "tags": [s["tags"] for s in good],
        "paths": [s["path"] for s in good],
        "skipped": skipped,
    }

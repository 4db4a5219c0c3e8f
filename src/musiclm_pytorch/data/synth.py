"""Build a synthetic captioned music corpus: ``musiclm data synth OUT --num-clips N``.

Everything is planned in the main process from one seed (so the corpus does not depend on the
number of workers), then rendered by workers that each keep one FluidSynth alive.

Splits are held out by *source*: every render of a composition lands in the split of its
composition. Validation also holds out caption templates (``HELDOUT_TEMPLATES``) and a fixed set
of (family, tempo class, drums) combinations that training never sees.

With ``test_fraction`` a third split, the sealed test split, is drawn the same way as validation
(held-out templates and combinations) from generated compositions only: the Bach chorales are one
finite list that every seed draws from, so a chorale can never be unseen. It is written to
``test.jsonl``, which no trainer reads; evaluation commands read it only when told ``--split test``,
and its figures steer no choice (``musiclm data synth TEST --seed 11 --val-fraction 0 --test-fraction 1
--bach-fraction 0`` makes a test-only corpus whose compositions no other seed's corpus holds).

Output folder::

    OUT/corpus.json            config, counts, timing, tag schema version
    OUT/train.jsonl, val.jsonl rows: id, path (relative to OUT), caption, captions, full_caption,
                               tags, duration, sample_rate, split
    OUT/test.jsonl             with test_fraction > 0 only
    OUT/audio/{split}/{id}.flac
    OUT/shards/{split}-000000.tar  (with --shards: WebDataset shards of {id}.flac + {id}.json)
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing as mp
import os
import random
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from .captions import caption, full_caption
from .compose import Composition, arrange, bach_chorale, form_string, generate_composition, usable_chorales
from .tags import (
    BASS_PROGRAMS,
    LEAD_FAMILIES,
    LEAD_PROGRAMS,
    PITCH_CLASSES,
    REGISTERS,
    SCHEMA_VERSION,
    family_of,
    instrument_name,
    moods_for,
    tempo_class,
    validate_tags,
)


@dataclass
class SynthConfig:
    """How to build a corpus. Every default here is the one the CLI uses."""

    num_clips: int = 1000
    seconds: float = 10.0
    sample_rate: int = 16000
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.0  # the sealed test split (generated compositions only; module docstring)
    renders_per_source: int = 2
    bach_fraction: float = 0.15
    drums_prob: float = 0.5
    bass_prob: float = 0.6
    tempo_range: tuple[float, float] = (60.0, 180.0)
    captions_per_clip: int = 4
    audio_format: str = "flac"
    soundfonts: list[str] | None = None
    workers: int = 2
    shard_size: int = 0  # clips per WebDataset shard; 0 = no shards

    def __post_init__(self) -> None:
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.test_fraction <= 1 - self.val_fraction:
            raise ValueError(f"test_fraction must be in [0, 1 - val_fraction = {1 - self.val_fraction:g}], got "
                             f"{self.test_fraction}")  # fmt: skip
        if self.audio_format not in ("flac", "wav", "ogg"):
            raise ValueError(f"audio_format must be flac, wav or ogg, got {self.audio_format!r}")


def _stable_hash(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def heldout_combo(family: str, tempo: str, drums: bool) -> bool:
    """About 1 in 8 (family, tempo class, drums) combinations are validation-only."""
    return _stable_hash(f"{family}|{tempo}|{drums}") % 8 == 0


@dataclass
class ClipSpec:
    id: str
    split: str
    source: str
    tags: dict[str, Any]
    seconds: float
    render_seed: int
    soundfont: str | None
    bass_program: int | None
    captions: list[str] = field(default_factory=list)
    full_caption: str = ""


def _sample_tags(rng: random.Random, cfg: SynthConfig, source: str, kind: str, mode: str, val: bool) -> dict:
    force_heldout = val and rng.random() < 0.5
    for _ in range(1000):
        family = rng.choice(LEAD_FAMILIES)
        bpm = round(rng.uniform(*cfg.tempo_range), 1)
        drums = rng.random() < cfg.drums_prob
        held = heldout_combo(family, tempo_class(bpm), drums)
        if held == force_heldout or (val and not force_heldout):
            break
    program = rng.choice(sorted(LEAD_PROGRAMS[family]))
    dynamics = rng.choice(("soft", "medium", "loud"))
    tags = {
        "schema": SCHEMA_VERSION,
        "program": program,
        "instrument": instrument_name(program),
        "family": family_of(program),
        "tempo_bpm": bpm,
        "tempo_class": tempo_class(bpm),
        "tonic": rng.choice(PITCH_CLASSES),
        "mode": mode,
        "drums": drums,
        "bass": rng.random() < cfg.bass_prob,
        "dynamics": dynamics,
        "register": rng.choice(REGISTERS),
        "moods": moods_for(mode=mode, tempo=tempo_class(bpm), family=family, drums=drums, dynamics=dynamics),
        "source": source,
        "source_kind": kind,
        "form": "",
        "time_signature": "4/4",
    }
    return tags


def plan(cfg: SynthConfig) -> list[ClipSpec]:
    """Every clip's attributes, split and captions, from ``cfg.seed`` alone."""
    rng = random.Random(cfg.seed)
    chorales = usable_chorales() if cfg.bach_fraction > 0 else []
    num_sources = -(-cfg.num_clips // cfg.renders_per_source)
    specs: list[ClipSpec] = []
    gen_seed = cfg.seed * 1_000_003
    for s in range(num_sources):
        if chorales and rng.random() < cfg.bach_fraction:
            source, kind = f"bach-{rng.choice(chorales)}", "bach_chorale"
            mode = "unknown"  # read from the score when rendered
        else:
            source, kind = f"gen-{gen_seed + s}", "generated"
            mode = generate_composition(gen_seed + s).mode
        draw = _stable_hash(f"{cfg.seed}|{source}") % 10_000
        val = draw < cfg.val_fraction * 10_000
        test = not val and kind == "generated" and draw < (cfg.val_fraction + cfg.test_fraction) * 10_000
        for _ in range(cfg.renders_per_source):
            if len(specs) == cfg.num_clips:
                break
            split = "val" if val else "test" if test else "train"
            tags = _sample_tags(rng, cfg, source, kind, mode if mode != "unknown" else "major", val or test)
            bass = rng.choice(sorted(BASS_PROGRAMS)) if tags["bass"] else None
            specs.append(
                ClipSpec(
                    id=f"{split}-{len(specs):06d}",
                    split=split,
                    source=source,
                    tags=tags,
                    seconds=cfg.seconds,
                    render_seed=rng.randrange(2**31),
                    soundfont=None,
                    bass_program=bass,
                )
            )
    return specs


@functools.lru_cache(maxsize=64)
def _composition(source: str) -> Composition:
    kind, _, num = source.partition("-")
    return bach_chorale(int(num)) if kind == "bach" else generate_composition(int(num))


def _finish_tags(spec: ClipSpec, comp: Composition) -> None:
    """Fill what only the composition knows (a chorale's mode, the form), then write the captions."""
    tags = spec.tags
    tags["mode"] = comp.mode
    tags["moods"] = moods_for(mode=comp.mode, tempo=tags["tempo_class"], family=tags["family"], drums=tags["drums"],
                              dynamics=tags["dynamics"])  # fmt: skip
    tags["form"] = form_string(comp)
    validate_tags(tags)


_RENDERER: Any = None
_CFG: SynthConfig | None = None
_OUT: Path | None = None


def _init_worker(cfg: SynthConfig, out: str) -> None:
    global _RENDERER, _CFG, _OUT
    from .render import FluidRenderer

    _RENDERER = FluidRenderer(sample_rate=cfg.sample_rate, soundfonts=cfg.soundfonts)
    _CFG, _OUT = cfg, Path(out)


def render_spec(spec: ClipSpec, renderer: Any, *, captions_per_clip: int = 4) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one planned clip: ``(wav [S], row without path)``. Completes ``spec`` (mode, form,
    soundfont, captions). Raises ``ValueError`` / ``ImportError`` when its source cannot be used."""
    comp = _composition(spec.source)
    _finish_tags(spec, comp)
    rng = random.Random(spec.render_seed)
    soundfont = rng.choice(sorted(renderer.soundfonts))
    spec.tags["soundfont"] = soundfont
    heldout = spec.split in ("val", "test")
    spec.captions = [caption(spec.tags, rng, heldout=heldout) for _ in range(captions_per_clip)]
    spec.full_caption = full_caption(spec.tags, rng, heldout=heldout)
    t = spec.tags
    arrangement = arrange(
        comp,
        tonic=t["tonic"],
        bpm=t["tempo_bpm"],
        program=t["program"],
        register=t["register"],
        dynamics=t["dynamics"],
        drums=t["drums"],
        bass_program=spec.bass_program,
        seconds=spec.seconds,
        seed=spec.render_seed,
    )
    wav = renderer.render(arrangement, soundfont=soundfont)
    row = {
        "id": spec.id,
        "caption": spec.captions[0],
        "captions": spec.captions,
        "full_caption": spec.full_caption,
        "tags": spec.tags,
        "duration": len(wav) / renderer.sample_rate,
        "sample_rate": renderer.sample_rate,
        "split": spec.split,
    }
    return wav, row


def _render_one(spec: ClipSpec) -> dict[str, Any]:
    """Render and write one clip; its manifest row, or ``{"id", "error"}`` if its source fails."""
    assert _RENDERER is not None and _CFG is not None and _OUT is not None
    try:
        wav, row = render_spec(spec, _RENDERER, captions_per_clip=_CFG.captions_per_clip)
    except (ValueError, ImportError) as e:  # e.g. a corpus file that is not a 4-part chorale
        return {"id": spec.id, "source": spec.source, "error": f"{type(e).__name__}: {e}"}
    rel = Path("audio") / spec.split / f"{spec.id}.{_CFG.audio_format}"
    path = _OUT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, _CFG.sample_rate, format=_CFG.audio_format.upper())
    return {"id": row["id"], "path": str(rel), **{k: v for k, v in row.items() if k != "id"}}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def write_shards(out: Path, rows: list[dict[str, Any]], split: str, shard_size: int) -> list[Path]:
    """Pack a split into WebDataset tar shards: ``{id}.{ext}`` audio + ``{id}.json`` (row without path)."""
    shard_dir = out / "shards"
    shard_dir.mkdir(exist_ok=True)
    paths = []
    for i in range(0, len(rows), shard_size):
        path = shard_dir / f"{split}-{i // shard_size:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for row in rows[i : i + shard_size]:
                audio = out / row["path"]
                tar.add(audio, arcname=f"{row['id']}{audio.suffix}")
                meta = json.dumps({k: v for k, v in row.items() if k != "path"}).encode()
                info = tarfile.TarInfo(f"{row['id']}.json")
                info.size = len(meta)
                tar.addfile(info, io.BytesIO(meta))
        paths.append(path)
    return paths


def synthesize(cfg: SynthConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Plan, render and write a corpus to ``out``. Returns the summary also written to corpus.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .render import find_soundfonts

    find_soundfonts(cfg.soundfonts)  # fail early, in the main process, with the install hint
    start = time.perf_counter()
    specs = plan(cfg)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs), desc="rendering", unit="clip", disable=not progress)
    # sources sorted so each worker meets a chorale once (its parse is cached per worker)
    order = sorted(range(len(specs)), key=lambda i: specs[i].source)
    if cfg.workers <= 1:
        _init_worker(cfg, str(out))
        for i in order:
            rows.append(_render_one(specs[i]))
            bar.update()
    else:
        ctx = mp.get_context("spawn" if os.environ.get("MUSICLM_SPAWN") else "fork")
        with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg, str(out))) as pool:
            for row in pool.imap_unordered(_render_one, [specs[i] for i in order], chunksize=8):
                rows.append(row)
                bar.update()
    bar.close()
    render_seconds = time.perf_counter() - start
    failed = [r for r in rows if "error" in r]
    rows = sorted((r for r in rows if "error" not in r), key=lambda r: r["id"])
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    if not splits["test"] and not cfg.test_fraction:
        del splits["test"]  # no test.jsonl unless asked for
    for split, split_rows in splits.items():
        _write_jsonl(out / f"{split}.jsonl", split_rows)
    shards = {}
    if cfg.shard_size > 0:
        shards = {
            s: [str(p.relative_to(out)) for p in write_shards(out, r, s, cfg.shard_size)] for s, r in splits.items()
        }
    summary = {
        "schema": SCHEMA_VERSION,
        "config": asdict(cfg),
        "counts": {s: len(r) for s, r in splits.items()},
        "sources": {s: len({r["tags"]["source"] for r in rs}) for s, rs in splits.items()},
        "render_seconds": round(render_seconds, 2),
        "clips_per_second": round(len(rows) / render_seconds, 2),
        "audio_hours": round(sum(r["duration"] for r in rows) / 3600, 3),
        "shards": shards,
        "failed": len(failed),
        "failures": failed[:20],
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2))
    return summary

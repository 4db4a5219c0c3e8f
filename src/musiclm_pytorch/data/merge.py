"""Merge corpora into one, without leaking held-out music: ``musiclm data merge OUT BASE EXTRA...``.

More data is the cheapest cure for a contrastive model that overfits a corpus: render another one with
a new seed (``musiclm data synth OUT2 --seed 1 --val-fraction 0``) and merge it into the first. The
merged corpus keeps BASE's validation split unchanged, so its figures stay comparable with earlier
ones, and takes the *training* rows of BASE and of every EXTRA corpus:

- an EXTRA row whose composition (``tags.source``) is held out in BASE's validation split is dropped
  (a new seed draws Bach chorales from the same list, and its own split puts them elsewhere);
- EXTRA validation rows are never trained on (their captions use the held-out wordings);
- paths become absolute, so the manifests work from any folder; ids are prefixed with their corpus
  folder's name when they would collide.
- the sealed test split stays sealed: BASE's ``test.jsonl`` is kept unchanged like its validation split,
  its compositions are dropped from every corpus's training rows, and an EXTRA test split is never
  trained on nor merged (a test split is one corpus's, whole).

It writes ``OUT/train.jsonl``, ``OUT/val.jsonl`` (and ``OUT/test.jsonl`` when BASE has one) and
``OUT/merge.json`` (what came from where, what was dropped and why). No audio is copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .datasets import manifest_rows


def _corpus_rows(folder: Path, split: str) -> list[dict[str, Any]]:
    manifest = folder / f"{split}.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"corpus {str(folder)!r} has no {split}.jsonl")
    rows, bad = manifest_rows(manifest)
    if bad:
        raise ValueError(f"{manifest}: {len(bad)} unusable rows (first: {bad[0].source}: {bad[0].reason}); "
                         "run `musiclm data check` on it")  # fmt: skip
    # manifest_rows adds "key" (the path as written); the merged rows are the originals with absolute paths
    return [{**{k: v for k, v in r.items() if k != "key"}, "path": str(Path(r["path"]).resolve())} for r in rows]


def _source(row: dict[str, Any]) -> str | None:
    tags = row.get("tags")
    return tags.get("source") if isinstance(tags, dict) else None


def merge_corpora(out: str | Path, base: str | Path, extras: list[str | Path]) -> dict[str, Any]:
    """Write the merged corpus to ``out`` and return its summary (also ``out/merge.json``)."""
    if not extras:
        raise ValueError("give at least one corpus to merge into the base")
    base, out = Path(base), Path(out)
    folders = [base, *map(Path, extras)]
    if len({f.resolve() for f in folders}) != len(folders):
        raise ValueError("a corpus is named twice")
    if out.resolve() in {f.resolve() for f in folders}:
        raise ValueError(f"out {str(out)!r} is one of the corpora being merged")
    val = _corpus_rows(base, "val")
    test = _corpus_rows(base, "test") if (base / "test.jsonl").is_file() else None
    held_out = {s for s in map(_source, [*val, *(test or [])]) if s is not None}
    train, ids = [], set()
    summary: dict[str, Any] = {"base": str(base), "val_rows": len(val), "test_rows": len(test or []),
                               "held_out_sources": len(held_out), "corpora": []}  # fmt: skip
    for folder in folders:
        rows = _corpus_rows(folder, "train")
        kept = [r for r in rows if _source(r) not in held_out]
        for r in kept:
            if r["id"] in ids:
                r["id"] = f"{folder.name}/{r['id']}"
            if r["id"] in ids:
                raise ValueError(f"row id {r['id']!r} is not unique even with its corpus name")
            ids.add(r["id"])
        train.extend(kept)
        summary["corpora"].append({"folder": str(folder), "train_rows": len(rows), "kept": len(kept),
                                   "dropped_held_out_source": len(rows) - len(kept)})  # fmt: skip
    summary["train_rows"] = len(train)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    for name, rows in splits.items():
        tmp = out / f"{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out / f"{name}.jsonl")
    (out / "merge.json").write_text(json.dumps(summary, indent=2))
    return summary

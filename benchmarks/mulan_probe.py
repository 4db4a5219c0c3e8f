"""How much of each attribute do a MuLaN's audio latents carry? Linear probes, training clips -> held-out clips.

Zero-shot tagging can be no better than what the audio latents hold; a linear probe (logistic
regression) trained on the latents of training clips and scored on held-out clips measures that
ceiling. It reads the whole-clip audio latents that ``musiclm train mulan-text`` caches in its output
folder (``audio_latents.pt``: training clips, ``val_audio_latents.pt``: held-out clips), so it costs
seconds, and the rows' tags from the corpus manifests (``train.jsonl`` / ``val.jsonl``).

    python benchmarks/mulan_probe.py --run /work/runs/mulan_s7_text --data /work/data/synth10k \\
        --out benchmarks/mulan_probe_stage6.json

Prints and writes, per attribute, the probe's held-out accuracy, and for instrument family the most
frequent confusions by instrument (true instrument -> predicted family).
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

ATTRIBUTES = ("family", "instrument", "drums", "tempo_class", "mode", "tonic")


def _cached(path: Path) -> tuple[np.ndarray, list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point --run at a `musiclm train mulan-text` output folder")
    blob = torch.load(path, weights_only=False)
    rows = [blob["key"]["rows"][i] for i in blob["kept"]]
    return blob["latents"].float().numpy(), rows


def _tags(data: Path) -> dict[str, dict[str, Any]]:
    from musiclm_pytorch.data.datasets import manifest_rows

    manifests = [data / f"{split}.jsonl" for split in ("train", "val") if (data / f"{split}.jsonl").is_file()]
    return {row["path"]: row["tags"] for m in manifests for row in manifest_rows(m)[0] if row.get("tags")}


def probe(run: Path, data: Path, *, c: float = 10.0) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    x_train, rows_train = _cached(run / "audio_latents.pt")
    x_val, rows_val = _cached(run / "val_audio_latents.pt")
    tags = _tags(data)
    missing = [r for r in rows_train + rows_val if r not in tags]
    if missing:
        raise ValueError(f"{len(missing)} cached rows have no tags in {data} (first: {missing[0]}): wrong --data?")
    report: dict[str, Any] = {"run": str(run), "train_clips": len(rows_train), "val_clips": len(rows_val)}
    for attribute in ATTRIBUTES:
        y_train = np.array([str(tags[r][attribute]) for r in rows_train])
        y_val = np.array([str(tags[r][attribute]) for r in rows_val])
        pred = LogisticRegression(max_iter=3000, C=c).fit(x_train, y_train).predict(x_val)
        report[attribute] = round(float((pred == y_val).mean()), 4)
        if attribute == "family":
            misses = collections.Counter(
                f"{tags[r]['instrument']} -> {p}" for r, t, p in zip(rows_val, y_val, pred) if t != p
            )
            report["family_misses"] = dict(misses.most_common(10))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a `musiclm train mulan-text` output folder")
    parser.add_argument("--data", required=True, help="the corpus folder (train.jsonl / val.jsonl with tags)")
    parser.add_argument("--out", default=None, help="write the report here (JSON)")
    args = parser.parse_args()
    report = probe(Path(args.run), Path(args.data))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

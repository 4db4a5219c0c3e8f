"""Does transposing real frames in the magnitude codec's latent space keep the judge's family and move its tonic?

For the first ``--per-family`` validation clips of each family, the codec's 16-level latents of the clip, and the
same moved by +2 and -3 semitones (``family_units_probe.transpose``: the log spectrum's fine structure resampled
along frequency; with ``--envelope 0`` the whole log spectrum, formants included): the judge's family, and its
tonic against the clip's tonic moved by the same shift.

    python benchmarks/transpose_probe.py --per-family 8 --envelope 20     # 96 clips, 9 min on 2 threads
    python benchmarks/transpose_probe.py --per-family 8 --envelope 0
"""

from __future__ import annotations

import argparse
import json

import torch
from family_loss_probe import first_per_family, true_latents, validation_clips
from family_units_probe import transpose

from musiclm_pytorch.data.tags import PITCH_CLASSES
from musiclm_pytorch.evaluation.judge import Judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-family", type=int, default=8)
    ap.add_argument("--envelope", type=int, default=20, help="cepstral coefficients kept in place (0: none)")
    ap.add_argument("--shifts", type=int, nargs="+", default=[0, 2, -3])
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ns = argparse.Namespace(model=None, tokens=args.tokens, data=args.data, threads=args.threads)
    model, val, matched = validation_clips(ns, 100_000)
    items, rows, _ = first_per_family(val, matched, args.per_family)
    chosen = list(zip(items, rows))
    judge = Judge()
    res = {k: {"family": 0, "tonic": 0, "clips": 0} for k in args.shifts}
    with torch.no_grad():
        for i in range(0, len(chosen), 16):
            part = chosen[i : i + 16]
            lat = true_latents(model, [p[0] for p in part], 500)
            for k in args.shifts:
                x = transpose(lat, model.codec, k, envelope=args.envelope)
                for w, (_, row) in zip(model.codec.decode_latents(x)[:, 0], part):  # type: ignore[attr-defined]
                    pred, tags = judge.predict(w.numpy(), model.sample_rate), row["tags"]
                    res[k]["clips"] += 1
                    res[k]["family"] += pred["family"] == tags["family"]
                    if tags.get("tonic") in PITCH_CLASSES:
                        want = PITCH_CLASSES[(PITCH_CLASSES.index(tags["tonic"]) + k) % 12]
                        res[k]["tonic"] += pred["tonic"] == want
            print(i + len(part), res, flush=True)
    print(json.dumps({"envelope": args.envelope, "per_shift": res}))


if __name__ == "__main__":
    main()

"""How much of a latent stage's continuation is its prompt replayed: the runs of unit selection through the prompt.

``MusicLM.generate_continuation`` with ``prompt_continuity`` > 0 makes each frame of the continuation a frame of the
prompt, chosen as the cheapest path where the prompt's next frame is free and a jump costs ``prompt_continuity``.
The judge's agreement with the prompt rewards a replay of the prompt as much as a continuation of it, so this probe
reports, for each cost, how long the runs of consecutive prompt frames are (seconds), the share of the continuation
in runs of at least 2.5 s, and the longest run, on the first 5 s of validation clips continued by 5 s (as
``musiclm eval continuation``, same clips and seed).

    python benchmarks/prompt_run_probe.py --data /work/data/synth10k/val.jsonl --clips 50 --continuity 4 20 \
        --out benchmarks/results/prompt_runs_val50.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

import musiclm_pytorch.lm.prior as prior_module
from musiclm_pytorch import MusicLM
from musiclm_pytorch.audio import load_audio
from musiclm_pytorch.data.datasets import manifest_rows


def runs_of(path: torch.Tensor) -> list[int]:
    """Lengths of the runs of consecutive indices (each step +1) in ``path [T]``."""
    breaks = (path.diff() != 1).nonzero()[:, 0].tolist()
    bounds = [0, *[b + 1 for b in breaks], len(path)]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--data", required=True, help="manifest of held-out clips (e.g. corpus/val.jsonl)")
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--continuity", type=float, nargs="+", default=[4.0, 20.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model) if args.model else MusicLM.from_pretrained()
    rows = [r for r in manifest_rows(args.data, require_caption=False)[0] if float(r.get("duration", 10)) >= 10]
    rows = random.Random(args.seed).sample(rows, min(args.clips, len(rows)))
    rate = float(model.codec.frame_rate)
    paths: list[torch.Tensor] = []
    select = prior_module.select_units

    def recording(cost: torch.Tensor, run: int, jump: float) -> torch.Tensor:
        path = select(cost, run, jump)
        paths.append(path[0].cpu())
        return path

    prior_module.select_units = recording  # type: ignore[assignment]
    report: dict[str, dict[str, float]] = {}
    for c in args.continuity:
        gen = torch.Generator().manual_seed(args.seed)
        del paths[:]
        for row in rows:
            wav, sr = load_audio(Path(args.data).parent / row["path"], sample_rate=model.sample_rate)
            model.generate_continuation(wav[: 5 * sr], sr, seconds=5.0, generator=gen, prompt_blend=1.0,
                                        prompt_continuity=c)  # fmt: skip
        runs = [r for p in paths for r in runs_of(p)]
        frames = sum(runs)
        report[f"{c:g}"] = {
            "clips": len(paths),
            "mean_run_seconds": frames / len(runs) / rate,
            "median_run_seconds": float(torch.tensor(runs, dtype=torch.float).median()) / rate,
            "longest_run_seconds": max(runs) / rate,
            "share_in_runs_ge_2.5s": sum(r for r in runs if r >= 2.5 * rate) / frames,
            "runs_per_clip": len(runs) / len(paths),
        }
        print(c, report[f"{c:g}"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"clips": len(rows), "continuity": report}, indent=1))


if __name__ == "__main__":
    main()

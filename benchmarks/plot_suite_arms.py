"""Bars of the end-to-end suite's reports side by side: per attribute the judge's accuracy on the generations, its
shuffled-prompt control (hatched) and the real clips' (the ceiling, a line):

    python benchmarks/plot_suite_arms.py --out benchmarks/results/text_frames_valgen200.png \
        --report shipped=benchmarks/results/gain_valgen200_a0.5.json \
        --report "envelope, c3"=benchmarks/results/text_frames_valgen_n8_c3_env20.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ATTRIBUTES = ("family", "key_tonic", "tempo_class", "drums_yes", "drums_no", "drums_balanced")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", action="append", required=True, metavar="NAME=JSON")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = []
    for spec in args.report:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--report {spec!r}: write NAME=JSON")
        arms.append((name, json.loads(Path(path).read_text())))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(ATTRIBUTES), 4.5))
    for i, (name, rep) in enumerate(arms):
        xs = [a + (i - (len(arms) - 1) / 2) * width for a in range(len(ATTRIBUTES))]
        got = [rep["judge"][a]["accuracy"] for a in ATTRIBUTES]
        shuffled = [rep["judge_shuffled_prompts"][a]["accuracy"] for a in ATTRIBUTES]
        ax.bar(xs, got, width, label=name)
        ax.bar(xs, shuffled, width, fill=False, hatch="//", edgecolor="white", linewidth=0)
    real = arms[0][1]["judge_real_clips"]
    for a, attr in enumerate(ATTRIBUTES):
        ax.hlines(real[attr]["accuracy"], a - 0.45, a + 0.45, colors="k", linewidth=1.5)
    ax.set_xticks(range(len(ATTRIBUTES)), [a.replace("_", " ") for a in ATTRIBUTES])
    ax.set_ylim(0, 1)
    ax.set_ylabel("judge accuracy (hatched: shuffled prompts; line: real clips)")
    ax.set_title(args.title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()

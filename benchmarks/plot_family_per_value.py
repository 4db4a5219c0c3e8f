"""Per asked instrument family, how often the judge hears it: generated against real clips, one or more reports.

    python benchmarks/plot_family_per_value.py benchmarks/results/test500_s11_frame_bank_drums.json \
        benchmarks/results/test500_s11_family_prior_acoustic.json --labels "before" "family latent (shipped)" \
        --out benchmarks/results/test500_s11_family_per_value.png

Reads ``family_per_value`` (and ``family_per_value_real_clips`` of the last report) written by ``musiclm eval
generate``; families sorted by the real clips' rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    labels = args.labels or [Path(r).stem for r in args.reports]
    if len(labels) != len(args.reports):
        raise SystemExit(f"{len(labels)} labels for {len(args.reports)} reports")
    reports = [json.loads(Path(r).read_text()) for r in args.reports]
    missing = [r for r, d in zip(args.reports, reports) if "family_per_value" not in d]
    if missing:
        raise SystemExit(f"no family_per_value in {missing[0]} (made before `eval generate` reported it)")
    real = reports[-1].get("family_per_value_real_clips", {})
    families = sorted(reports[-1]["family_per_value"], key=lambda f: -real.get(f, {}).get("accuracy", 0.0))
    rows = [[d["family_per_value"].get(f, {}).get("accuracy", np.nan) for f in families] for d in reports]
    if real:
        rows.append([real[f]["accuracy"] for f in families])
        labels = [*labels, "real clips"]
    x = np.arange(len(families))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, (row, label) in enumerate(zip(rows, labels)):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, row, width, label=label,
               color="0.7" if label == "real clips" else None)  # fmt: skip
    n = [reports[-1]["family_per_value"][f]["n"] for f in families]
    ax.set_xticks(x, [f"{f.replace(' ', chr(10))}\n(n={k})" for f, k in zip(families, n)], fontsize=8)
    ax.set_ylabel("judge hears the asked family")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("instrument family per asked value")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()

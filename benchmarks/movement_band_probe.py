"""End to end: the latent stage's movement gain fitted per band of modulation frequency (a modulation postfilter).

The stage's prediction lacks slow movement far more than fast: on 128 training clips the real latents' movement
below 0.5 Hz is 3.7 times the prediction's in amplitude (energy-weighted over dimensions) and a third of all real
movement, against 1.5-1.7 times in the 2-8 Hz band where the beat table's hits sit; in the four loudest dimensions
the prediction moves *more* than real music at 2-25 Hz. One gain per dimension (the shipped movement gain) cannot
follow that. This probe fits the gains per band and dimension (``MusicLM.fit_movement_gain(bands_hz=...)``, on
training clips, as the bundle does) and runs the generation suite, against the shipped model on the same prompts
and seed.

    python benchmarks/movement_band_probe.py --prompts /work/data/synth10k/val_generated.jsonl --num-prompts 200 \\
        --tokens /work/runs/tokens_spec --bands 0.5 1 2 4 8 12.5 --alpha 1 \\
        --out benchmarks/results/band_valgen200_a1.json
"""

from __future__ import annotations

from pathlib import Path

import torch
from grid_source_probe import probe_args, run_suite  # benchmarks/ is on the path when run as a script

from musiclm_pytorch import MusicLM


def main() -> None:
    ap = probe_args(__doc__.split("\n\n")[0])
    ap.add_argument("--bands", type=float, nargs="*", default=[], help="inner band edges in Hz (none: one band)")
    ap.add_argument("--alpha", type=float, default=1.0, help="the gains raised to this power")
    ap.add_argument("--slow-only-above", type=float, default=None, metavar="HZ",
                    help="cap the gains of the bands above HZ at 1 (restore only the slow movement)")  # fmt: skip
    ap.add_argument("--tokens", required=True, help="tokens folder (train.pt) made with the model's components")
    ap.add_argument("--fit-clips", type=int, default=256, help="training clips (tokens' train.pt) the gains are fit on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model) if args.model else MusicLM.from_pretrained()
    items = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"][: args.fit_clips]
    fit = model.fit_movement_gain(items, alpha=args.alpha, bands_hz=args.bands or None,
                                  cap_above_hz=args.slow_only_above)  # fmt: skip
    print(fit, flush=True)
    run_suite(model, args, alpha=args.alpha, bands=args.bands, fit=fit)


if __name__ == "__main__":
    main()

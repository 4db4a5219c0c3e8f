"""The ``musiclm`` command line.

Subcommands:
    demo        train a tiny MuLaN on synthetic captioned tones and report retrieval (no data, no download)
    similarity  MuLaN cosine similarity between audio files and captions, from a checkpoint
    info        print a checkpoint's component and config
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import save
    from .demo import CLASSES, run_demo

    torch.set_num_threads(args.threads)
    print(
        "musiclm demo: no trained text-to-music model ships yet, so this trains a tiny MuLaN (audio-text\n"
        f"joint embedding) for {args.steps} steps on synthetic tones and measures text->audio retrieval.\n"
    )
    mulan, result = run_demo(steps=args.steps, seed=args.seed, progress=not args.quiet)
    report: dict[str, object] = {
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "loss_first_10pct": round(result.first_loss, 3),
        "loss_last_10pct": round(result.last_loss, 3),
        "retrieval_top1_before": result.accuracy_before,
        "retrieval_top1_after": result.accuracy_after,
        "chance": round(1 / len(CLASSES), 3),
    }
    if args.out:
        report["checkpoint"] = str(save(mulan, args.out))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_similarity(args: argparse.Namespace) -> int:
    import torch

    from .audio import load_audio
    from .checkpoint import load
    from .mulan.model import MuLaN

    mulan = load(args.checkpoint, expected=MuLaN).eval()
    wavs = [load_audio(p, sample_rate=mulan.sample_rate)[0] for p in args.audio]
    with torch.inference_mode():
        audio = torch.cat([mulan.get_audio_latents(w[None], windowed=True) for w in wavs])
        text = mulan.get_text_latents(raw_texts=args.text)
    sims = (audio @ text.t()).tolist()
    print(json.dumps({"audio": args.audio, "text": args.text, "cosine": sims}, indent=2))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import read_header

    print(json.dumps(read_header(args.checkpoint), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musiclm", description="MusicLM (text to music) in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a tiny MuLaN on synthetic tones (about 20 s on 2 CPU threads)")
    demo.add_argument("--steps", type=int, default=400)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=2)
    demo.add_argument("--out", help="save the trained MuLaN checkpoint here (.safetensors)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser("similarity", help="MuLaN cosine similarity between audio files and captions")
    sim.add_argument("--checkpoint", required=True)
    sim.add_argument("--audio", nargs="+", required=True)
    sim.add_argument("--text", nargs="+", required=True)
    sim.set_defaults(func=_cmd_similarity)

    info = sub.add_parser("info", help="print a checkpoint's component and config")
    info.add_argument("checkpoint")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:  # user errors: one line, no traceback
        print(f"musiclm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

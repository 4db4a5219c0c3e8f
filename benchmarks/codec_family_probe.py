"""What the shipped codec keeps of each instrument family: the judge's family on originals, on the unquantized
latents' round trip (what the latent stage decodes) and on the 16 coded levels, per family.

    python benchmarks/codec_family_probe.py --per-family 12
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import soundfile as sf
import torch

from musiclm_pytorch import checkpoint
from musiclm_pytorch.evaluation.judge import Judge

MODEL = Path(__file__).resolve().parents[1] / "src/musiclm_pytorch/pretrained/musiclm_small"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--per-family", type=int, default=12, help="the first N validation clips of each family")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = checkpoint.load(MODEL / "codec.safetensors").eval()
    judge = Judge()
    rows = [json.loads(line) for line in open(Path(args.data) / "val.jsonl")]
    chosen: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        if len(chosen[row["tags"]["family"]]) < args.per_family:
            chosen[row["tags"]["family"]].append(row)
    total: collections.Counter = collections.Counter()
    with torch.no_grad():
        for family, picked in sorted(chosen.items()):
            right: collections.Counter = collections.Counter()
            for row in picked:
                y, sr = sf.read(Path(args.data) / row["path"], dtype="float32")
                wav = torch.from_numpy(y)[None, None]
                versions = {"original": y, "latents": codec.decode_latents(codec.latents(wav))[0, 0].numpy(),
                            "16 levels": codec.decode(codec.encode(wav))[0, 0].numpy()}  # fmt: skip
                for name, audio in versions.items():
                    right[name] += judge.predict(audio, sr)["family"] == family
            total.update(right)
            print(f"{family:22s} n {len(picked):3d}  " + "  ".join(f"{k} {v}" for k, v in right.items()), flush=True)
    print("all", dict(total), sum(len(v) for v in chosen.values()))


if __name__ == "__main__":
    main()

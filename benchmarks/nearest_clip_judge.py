"""What copying the nearest training clip would give: the judge on each prompt's nearest training clip.

For each prompt, the training clip whose MuLaN audio latent lies nearest the prompt's text latent (the
retrieval prior's first neighbour) is decoded by the model's codec from its tokens, whole (10 s) and as
its frame-bank window looped to the same length, and judged against the prompt's tags. Also the share
of prompts whose nearest clips (by rank) carry the prompt's tags, from the corpus manifest.

    python benchmarks/nearest_clip_judge.py --model DIR --tokens /work/runs/tokens_spec \
        --data /work/data/synth10k --num-prompts 48
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from musiclm_pytorch.evaluation.guidance import load_prompts
from musiclm_pytorch.evaluation.judge import Judge, accuracy, score
from musiclm_pytorch.pipeline import load_musiclm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder whose prior has a frame bank")
    ap.add_argument("--tokens", required=True, help="the prior's tokens folder (train.pt)")
    ap.add_argument("--data", required=True, help="corpus folder (train.jsonl, val.jsonl)")
    ap.add_argument("--num-prompts", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON report path")
    args = ap.parse_args()
    torch.set_num_threads(2)

    model, judge = load_musiclm(args.model), Judge()
    prior, codec = model.prior, model.codec
    if prior is None or not prior.has_frames:
        raise SystemExit(f"{args.model}: its retrieval prior has no frame bank")
    items = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"]
    root = Path(args.data)
    tags = {str(root / r["path"]): r["tags"] for r in map(json.loads, (root / "train.jsonl").read_text().splitlines())}
    prompts = load_prompts(root / "val.jsonl", args.num_prompts, seed=args.seed)
    text = model.conditioner.mulan.get_text_latents(raw_texts=[p["text"] for p in prompts])
    neighbours = prior.neighbours(text)  # [P, K]

    attributes = ("family", "tonic", "tempo_class", "drums")
    tag_agree: dict[str, list[float]] = {a: [0.0] * neighbours.shape[1] for a in attributes}
    whole, looped = [], []
    for p, nb in zip(prompts, neighbours.tolist()):
        for rank, i in enumerate(nb):
            t = tags[str(items[i]["path"])]
            for a in tag_agree:
                tag_agree[a][rank] += float(t[a] == p["tags"][a]) / len(prompts)
        first = nb[0]
        lat = codec.latents_from_codes(items[first]["codes"].long()[None]).float()  # [1, T, L]
        whole.append(score(judge.predict(codec.decode_latents(lat)[0, 0].numpy(), codec.sample_rate), p["tags"]))
        window = codec.latents_from_codes(prior.frame_codes[first].long().T[None]).float()
        window = window.repeat(1, -(-lat.shape[1] // window.shape[1]), 1)[:, : lat.shape[1]]
        looped.append(score(judge.predict(codec.decode_latents(window)[0, 0].numpy(), codec.sample_rate), p["tags"]))
    report = {
        "model": args.model, "prompts": len(prompts), "seed": args.seed,
        "neighbour_tags_agree_by_rank": {a: [round(v, 3) for v in vs] for a, vs in tag_agree.items()},
        "judge_nearest_clip_whole": accuracy(whole),
        "judge_nearest_clip_window_looped": accuracy(looped),
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

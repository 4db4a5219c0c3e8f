"""The acoustic oracle for sampling settings: the regression (latent) stage beside a flow stage, on the same
held-out clips, in one run.

Every version gets the clips' *true* semantic ids and the conditioning generation uses: the mean MuLaN audio
latent of the 8 training clips nearest the caption's text latent (the retrieval prior); one sample, no
reranking. Versions: the codec round trip of the clips' own codes (the ceiling); the latent stage (mean,
guidance ``--mean-cfg``); the flow stage at each ``--settings`` entry ``temperature:flow_cfg:steps``; the
flow's first setting with no conditioning (the floor) and with the clip's own audio latent; and a caption
swap (the caption's instrument changed to another family) for the latent stage and the flow's first setting.
Scored by MuLaN (caption R@1, cycle consistency) and the independent judge, as ``musiclm eval acoustic``.

    python benchmarks/flow_oracle.py --flow /work/runs/flow/flow.safetensors \
        --latent src/musiclm_pytorch/pretrained/musiclm_small/acoustic_lm.safetensors \
        --codec src/musiclm_pytorch/pretrained/musiclm_small/codec.safetensors \
        --mulan src/musiclm_pytorch/pretrained/musiclm_small/conditioning.safetensors --tokens /work/runs/tokens_spec \
        --data /work/data/synth10k/val.jsonl --clips 128 --out benchmarks/results/flow_oracle_val128.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from musiclm_pytorch.checkpoint import load
from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.acoustic_oracle import _swapped, knn_prior, plot_versions
from musiclm_pytorch.evaluation.codec_eval import score_versions
from musiclm_pytorch.evaluation.judge import Judge, score
from musiclm_pytorch.mulan.model import MuLaN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flow", required=True)
    ap.add_argument("--latent", required=True)
    ap.add_argument("--codec", required=True)
    ap.add_argument("--mulan", required=True)
    ap.add_argument("--tokens", required=True, help="tokens folder: val.pt (the clips), train.pt (the prior's bank)")
    ap.add_argument("--data", required=True, help="the manifest of the clips (captions, tags)")
    ap.add_argument("--split", default="val", help="which tokens file holds the clips: val (val.pt) or train")
    ap.add_argument("--bank", help="tokens folder whose train.pt is the prior's bank (default --tokens)")
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--mean-cfg", type=float, default=3.0, help="guidance of the mean (the shipped model's: 3)")
    ap.add_argument(
        "--settings",
        nargs="+",
        default=["1:1:16"],
        help="flow settings temperature:flow_cfg:steps[:mean_cfg] (mean_cfg default --mean-cfg)",
    )
    ap.add_argument("--knn", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--examples", type=int, default=4, help="clips drawn as spectrograms (PNG beside --out)")
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    items = torch.load(Path(args.tokens) / f"{args.split}.pt", weights_only=False)["items"][: args.clips]
    bank_items = torch.load(Path(args.bank or args.tokens) / "train.pt", weights_only=False)["items"]
    bank = torch.stack([it["mulan"].float() for it in bank_items])
    rows, _ = manifest_rows(Path(args.data), require_caption=False)
    by_path = {str(Path(r["path"]).resolve()): r for r in rows}
    matched = [by_path[str(Path(it["path"]).resolve())] for it in items]
    texts = [r.get("full_caption") or r["caption"] for r in matched]
    tags = [r["tags"] for r in matched]
    flow, latent, codec = (load(p).eval() for p in (args.flow, args.latent, args.codec))
    mulan = load(args.mulan, expected=MuLaN).eval()  # a MuLaN file, or the conditioning file that holds one
    judge = Judge()
    frames = min(len(it["semantic"]) for it in items)
    semantic = torch.stack([it["semantic"][:frames].long() for it in items])
    codes = torch.stack([it["codes"][:, : frames * flow.ratio].long() for it in items])
    own = torch.stack([it["mulan"].float() for it in items])

    def text_prior(strings: list[str]) -> torch.Tensor:
        text = torch.cat([mulan.get_text_latents(raw_texts=strings[i : i + 64]) for i in range(0, len(strings), 64)])
        return knn_prior(text, bank, args.knn)

    def render(stage, cond, **kw) -> torch.Tensor:
        gen = torch.Generator().manual_seed(args.seed)
        out = []
        for i in range(0, len(items), args.batch_size):
            part = None if cond is None else cond[i : i + args.batch_size]
            out.append(
                codec.decode_latents(stage.generate(semantic[i : i + args.batch_size], part, generator=gen, **kw))
            )
        return torch.cat(out)

    prior = text_prior(texts)
    settings = [(*(float(x) for x in s.split(":")), args.mean_cfg)[:4] for s in args.settings]
    versions = {"codec_ceiling": torch.cat([codec.decode(c) for c in codes.split(args.batch_size)])}
    versions["latent"] = render(latent, prior, cfg_scale=args.mean_cfg)
    flow_names = []
    for temp, fcfg, steps, mcfg in settings:
        name = f"flow_t{temp:g}_cfg{fcfg:g}_steps{int(steps)}_mean{mcfg:g}"
        flow_names.append(name)
        versions[name] = render(flow, prior, cfg_scale=mcfg, temperature=temp, flow_cfg_scale=fcfg, steps=int(steps))
    temp, fcfg, steps, mcfg = settings[0]
    first = dict(temperature=temp, flow_cfg_scale=fcfg, steps=int(steps))
    versions["flow_from_audio"] = render(flow, own, cfg_scale=mcfg, **first)
    versions["flow_null"] = render(flow, None, **first)
    report: dict = {"clips": len(items), "tokens": args.tokens, "split": args.split, "flow": args.flow,
                    "seconds": round(frames * flow.ratio / codec.frame_rate, 3), "mean_cfg": args.mean_cfg,
                    "settings": args.settings, "knn": args.knn}  # fmt: skip
    report.update(score_versions(versions, texts, tags, sample_rate=codec.sample_rate, mulan=mulan, judge=judge))
    for name in versions:
        report[name].pop("judge_predictions", None)

    swap_texts, swap_tags = _swapped(texts, tags, args.seed)
    swap_prior = text_prior(swap_texts)
    changed = [i for i in range(len(items)) if swap_texts[i] != texts[i]]
    ceiling = report["codec_ceiling"]["judge"].get("family", {}).get("accuracy")
    swaps = {"latent": render(latent, swap_prior, cfg_scale=args.mean_cfg),
             flow_names[0]: render(flow, swap_prior, cfg_scale=mcfg, **first)}  # fmt: skip
    report["caption_swap"] = {"clips": len(changed), "ceiling_own_family_heard": ceiling}
    for name, audio in swaps.items():
        heard = [score(judge.predict(audio[i, 0].numpy(), codec.sample_rate), {"family": swap_tags[i]["family"]})
                 for i in changed]  # fmt: skip
        report["caption_swap"][name] = round(sum(h["family"] for h in heard) / max(len(heard), 1), 4)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    shown = {k: versions[k] for k in ("codec_ceiling", "latent", flow_names[0], "flow_null")}
    plot_versions(shown, texts[: args.examples], codec.sample_rate, out.with_suffix(".png"))
    summary = {name: {"r1": report[name]["caption_r1"], "mcc": report[name]["mcc"],
                      **{k: v.get("accuracy") for k, v in report[name]["judge"].items() if isinstance(v, dict)},
                      "drum_flips": report[name]["drum_flips"]["rate"]} for name in versions}  # fmt: skip
    print(json.dumps({"summary": summary, "caption_swap": report["caption_swap"]}, indent=2))


if __name__ == "__main__":
    main()

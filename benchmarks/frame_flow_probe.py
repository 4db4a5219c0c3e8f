"""A per-frame flow head on the frozen latent stage: does sampling each frame's residual give the instrument back?

The twelfth session's flow stage (:class:`~musiclm_pytorch.lm.FlowAcousticLM`) sampled the residual the latent
stage's mean leaves with a transformer over all frames at once (7.5M weights, 1.3 s a CPU step). This probe trains a
much cheaper sampler on the *shipped* stage (its beat grid, drums label and family conditioning included): a
rectified flow over each frame's residual ``(latents - mean) / std``, an MLP (3 residual blocks of width 384) that
reads the noisy residual, the time and the frozen trunk's state and mean for that frame, trained on random frames of
the training clips (their own conditioning, the ids' grid, the latent's drums label), 0.07 s a step on 2 threads.
Then the acoustic oracle: validation clips' true ids, the caption's conditioning through the shipped prior, the
guided mean plus a sampled residual (noise independent per frame, shared over the clip, or smoothed over about
60 ms), scored by the judge.

    python benchmarks/frame_flow_probe.py --phase extract --work /work/runs/frame_flow   # 3,000 clips, 2 min
    python benchmarks/frame_flow_probe.py --phase train --work /work/runs/frame_flow --steps 4000   # 5 min
    python benchmarks/frame_flow_probe.py --phase oracle --work /work/runs/frame_flow --val-clips 96 \
        --out benchmarks/results/frame_flow_val96.json                                             # 14 min
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from family_loss_probe import true_latents, validation_clips
from torch import nn

from musiclm_pytorch.evaluation.judge import Judge, accuracy, score


class Head(nn.Module):
    """Velocity of the per-frame residual flow from ``(x_t, t, trunk state, mean)``."""

    def __init__(self, hidden: int, latent: int, width: int, blocks: int):
        super().__init__()
        self.inp = nn.Linear(2 * latent + hidden, width)
        self.time = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, latent))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        angles = 1000 * t[..., None] * torch.exp(-math.log(1e4) * torch.arange(32) / 32)
        z = self.inp(torch.cat([x, h, m], -1)) + self.time(torch.cat([angles.sin(), angles.cos()], -1))
        for block in self.blocks:
            z = z + block(z)
        return self.out(z)


def extract(args: argparse.Namespace, work: Path) -> None:
    from musiclm_pytorch import MusicLM

    model = MusicLM.from_pretrained()
    stage = model.acoustic_lm
    assert stage is not None
    stage.eval()
    items = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"][: args.clips]
    hs, ms, rs = [], [], []
    with torch.no_grad():
        for i in range(0, len(items), 16):
            part = items[i : i + 16]
            sem = torch.stack([it["semantic"].long() for it in part])
            cond = torch.stack([it["mulan"].float() for it in part])
            rhythm = model.acoustic_beat(sem, None, cond, source="ids")
            h, m = stage.features(sem, cond, beat=rhythm["beat"], drums=rhythm["drums"])
            x = true_latents(model, part, m.shape[1])
            hs.append(h.half().flatten(0, 1))
            ms.append(m.half().flatten(0, 1))
            rs.append((x - m).half().flatten(0, 1))
    r = torch.cat(rs)
    torch.save({"h": torch.cat(hs), "m": torch.cat(ms), "r": r, "std": r.float().std(0)}, work / "feats.pt")
    print(f"{len(r)} frames of {len(items)} clips")


def train(args: argparse.Namespace, work: Path) -> None:
    d = torch.load(work / "feats.pt")
    h, m, r, std = d["h"], d["m"], d["r"], d["std"]
    perm = torch.randperm(len(r), generator=torch.Generator().manual_seed(0))
    held, used = perm[: min(20000, len(r) // 10)], perm[min(20000, len(r) // 10) :]
    head = Head(h.shape[1], r.shape[1], args.width, args.blocks)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        target = r[idx].float() / std
        noise = torch.randn(target.shape, generator=g)
        t = torch.sigmoid(torch.randn(len(idx), generator=g))  # logit-normal times
        return (1 - t[:, None]) * noise + t[:, None] * target, t, h[idx].float(), m[idx].float(), target - noise

    probe, log, start = batch(held[:4096]), [], time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 200) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x, t, hh, mm, v = batch(used[torch.randint(len(used), (args.batch,), generator=g)])
        loss = F.mse_loss(head(x, t, hh, mm), v)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.steps:
            with torch.no_grad():
                held_loss = F.mse_loss(head(*probe[:4]), probe[4]).item()
            log.append((step, round(loss.item(), 4), round(held_loss, 4)))
            print(*log[-1], f"{time.time() - start:.0f} s", flush=True)
            torch.save({"head": head.state_dict(), "std": std, "width": args.width, "blocks": args.blocks, "log": log},
                       work / "head.pt")  # fmt: skip


def run_oracle(args: argparse.Namespace, make: Callable[..., dict[str, torch.Tensor]],
               training_log: list) -> None:  # fmt: skip
    """The acoustic oracle both flow probes share: the first ``args.val_clips`` validation clips, their true ids, the
    caption's conditioning through the shipped prior; ``make(h, m, guided, shipped, i)`` (the frozen trunk's state and
    mean, the guided prediction, what ``generate`` returns, the batch's first clip index) gives the sampled versions
    beside ``shipped`` and ``ceiling``; the judge scores each, the report goes to ``args.out`` with ``training_log``."""
    ns = argparse.Namespace(model=None, tokens=args.tokens, data=args.data, threads=args.threads)
    model, val, matched = validation_clips(ns, args.val_clips)
    stage = model.acoustic_lm
    assert stage is not None
    scale = model.guidance(None)[1]
    texts = [r.get("full_caption") or r["caption"] for r in matched]
    cond = model.text_condition(texts).acoustic
    judge = Judge()
    versions: dict[str, list[dict[str, bool]]] = {}
    with torch.no_grad():
        for i in range(0, len(val), 16):
            part, tags = val[i : i + 16], [r["tags"] for r in matched[i : i + 16]]
            sem = torch.stack([it["semantic"].long() for it in part])
            c = cond[i : i + 16]
            rhythm = model.acoustic_beat(sem, None, c, source="ids")
            beat, drums = rhythm["beat"], rhythm["drums"]
            guided = stage._predict(sem, c, frames=None, cfg_scale=scale, beat=beat, drums=drums)
            shipped = stage.scale_movement(guided)  # what generate returns, without a second forward
            h, m = stage.features(sem, c, beat=beat, drums=drums)
            made = {"shipped": shipped, "ceiling": true_latents(model, part, m.shape[1]),
                    **make(h, m, guided, shipped, i)}  # fmt: skip
            for name, lat in made.items():
                for w, tag in zip(model.codec.decode_latents(lat)[:, 0], tags):  # type: ignore[attr-defined]
                    versions.setdefault(name, []).append(score(judge.predict(w.numpy(), model.sample_rate), tag))
            print(i + len(part), {k: round(accuracy(v)["family"]["accuracy"], 3) for k, v in versions.items()},
                  flush=True)  # fmt: skip
    kept = ("family", "key_tonic", "tempo_class", "drums_balanced")
    report = {k: {a: round(b["accuracy"], 3) for a, b in accuracy(v).items() if a in kept} for k, v in versions.items()}
    report["training_log"] = training_log  # type: ignore[assignment]
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def oracle(args: argparse.Namespace, work: Path) -> None:
    ck = torch.load(work / "head.pt")
    std = ck["std"]
    head: Head | None = None
    kernel = torch.exp(-0.5 * (torch.arange(-9, 10) / 3.0) ** 2)
    kernel = kernel / kernel.norm()

    def make(h: torch.Tensor, m: torch.Tensor, guided: torch.Tensor, shipped: torch.Tensor,
             i: int) -> dict[str, torch.Tensor]:  # fmt: skip
        nonlocal head
        if head is None:  # the trunk's width is known once it has run
            head = Head(h.shape[-1], m.shape[-1], ck["width"], ck["blocks"])
            head.load_state_dict(ck["head"])
            head.eval()

        def sample(noise: torch.Tensor, steps: int = 16) -> torch.Tensor:
            assert head is not None
            x = noise
            for s in range(steps):
                x = x + head(x, torch.full(x.shape[:-1], s / steps), h, m) / steps
            return x * std

        b, t, dim = m.shape
        gen = torch.Generator().manual_seed(i)
        indep = torch.randn(b, t, dim, generator=gen)
        shared = torch.randn(b, 1, dim, generator=gen).expand(b, t, dim)
        rows = F.pad(indep.transpose(1, 2).reshape(-1, 1, t), (9, 9), mode="reflect")
        smooth = F.conv1d(rows, kernel[None, None]).reshape(b, dim, t).transpose(1, 2)
        return {"guided+indep": guided + sample(indep), "guided+shared": guided + sample(shared),
                "guided+smooth": guided + sample(smooth), "mean+indep": m + sample(indep),
                "guided+indep0.7": guided + sample(0.7 * indep),
                "gain+indep0.5": shipped + sample(0.5 * indep)}  # fmt: skip

    run_oracle(args, make, ck["log"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", required=True, choices=("extract", "train", "oracle"))
    ap.add_argument("--work", required=True, help="folder for the extracted frames and the head")
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--clips", type=int, default=4000, help="training clips to extract (at most all)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=1024, help="frames per step")
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-clips", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="frame_flow_oracle.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    {"extract": extract, "train": train, "oracle": oracle}[args.phase](args, work)


if __name__ == "__main__":
    main()

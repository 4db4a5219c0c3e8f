"""Does the latent stage's transformer add anything to its closed-form direct paths? Ablation and a trunk-only run.

``LatentAcousticLM`` predicts the codec latents as ``to_latent(transformer(...)) + direct`` where ``direct`` is the
sum of linear paths fitted in closed form before training (per semantic id, from the conditioning, the beat table).
``--ablate STAGE...`` prints each stage's validation L1 (the first 64 validation clips, their own audio latent, the
ids' grid, as the trainer's validation) in full and with ``to_latent`` zeroed, i.e. the direct paths alone.
``--train STAGE --out FILE`` trains only the transformer and ``to_latent`` (direct paths frozen), no conditioning
noise, 10 % null conditioning, with ``--loss mse|l1`` on the error (``--norm``: per latent dimension over its
standard deviation), and writes the stage with its log.

    python benchmarks/latent_trunk_probe.py \
        --ablate src/musiclm_pytorch/pretrained/musiclm_small/acoustic_lm.safetensors
    python benchmarks/latent_trunk_probe.py --train /work/runs/s26/latent_nonoise/latent.safetensors \
        --out /work/runs/s26/trunk_mse.safetensors --steps 300 --loss mse --norm        # 13 min on 2 threads
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch
from safetensors import safe_open

from musiclm_pytorch import MusicLM
from musiclm_pytorch.checkpoint import load, save

DIRECT = ("semantic_to_latent", "cond_to_latent", "null_latent", "beat_table")


def batch_inputs(model: MusicLM, part: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """``(ids, own audio latent, true latents, grid, drums label)`` of tokenized clips, as the trainer reads them."""
    sem = torch.stack([it["semantic"].long() for it in part])
    cond = torch.stack([it["mulan"].float() for it in part])
    x = model.codec.latents_from_codes(torch.stack([it["codes"].long() for it in part]))  # type: ignore[attr-defined]
    with torch.no_grad():
        rhythm = model.acoustic_beat(sem, None, cond, source="ids")
    return sem, cond, x, rhythm["beat"], rhythm["drums"]


def val_l1(stage: Any, batches: list[tuple[torch.Tensor, ...]], *, direct_only: bool = False) -> float:
    was = stage.training
    stage.eval()
    saved = (stage.to_latent.weight.clone(), stage.to_latent.bias.clone())
    total = 0.0
    with torch.no_grad():
        if direct_only:
            stage.to_latent.weight.zero_()
            stage.to_latent.bias.zero_()
        for sem, cond, x, beat, drums in batches:
            total += (stage(sem, cond, frames=x.shape[1], beat=beat, drums=drums) - x).abs().mean().item()
        stage.to_latent.weight.copy_(saved[0])
        stage.to_latent.bias.copy_(saved[1])
    stage.train(was)
    return total / len(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ablate", nargs="+", default=None, metavar="STAGE")
    ap.add_argument("--train", default=None, metavar="STAGE")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--loss", choices=("mse", "l1"), default="mse")
    ap.add_argument("--norm", action="store_true")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if (args.ablate is None) == (args.train is None) or (args.train and not args.out):
        ap.error("give --ablate STAGE..., or --train STAGE with --out FILE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MusicLM.from_pretrained()
    val = torch.load(f"{args.tokens}/val.pt", weights_only=False)["items"][:64]
    vb = [batch_inputs(model, val[i : i + 16]) for i in range(0, 64, 16)]
    if args.ablate:
        for path in args.ablate:
            stage = load(path)
            norm = stage.to_latent.weight.float().norm().item()
            print(json.dumps({"stage": path, "val_l1": round(val_l1(stage, vb), 5),
                              "val_l1_direct_paths_only": round(val_l1(stage, vb, direct_only=True), 5),
                              "to_latent_weight_norm": round(norm, 4)}))  # fmt: skip
        return
    stage = load(args.train)
    stage.train()
    for name, p in stage.named_parameters():
        p.requires_grad = not name.startswith(DIRECT)
    train = torch.load(f"{args.tokens}/train.pt", weights_only=False)["items"]
    sd = torch.cat([b[2] for b in vb]).flatten(0, 1).std(0)
    params = [p for p in stage.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    log: list[tuple[Any, ...]] = [(0, None, round(val_l1(stage, vb), 5))]
    start = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 30) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(train), (args.batch,), generator=g)
        sem, cond, x, beat, drums = batch_inputs(model, [train[int(i)] for i in idx])
        drop = torch.rand(args.batch, generator=g) < 0.1
        err = stage(sem, cond, frames=x.shape[1], drop=drop, beat=beat, drums=drums) - x
        err = err / sd if args.norm else err
        loss = err.pow(2).mean() if args.loss == "mse" else err.abs().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps:
            log.append((step, round(loss.item(), 4), round(val_l1(stage, vb), 5)))
            print(*log[-1], f"{time.time() - start:.0f} s", flush=True)
    with safe_open(args.train, "pt") as f:
        extra = json.loads(f.metadata()["extra"])
    extra["trunk_probe"] = {"loss": args.loss, "norm": args.norm, "steps": args.steps, "lr": args.lr, "log": log}
    save(stage, args.out, extra=extra)
    print(json.dumps({"val_l1_direct_paths_only": round(val_l1(stage, vb, direct_only=True), 5), "log": log}))


if __name__ == "__main__":
    main()

"""Train the acoustic stage on what generation gives it: each clip conditioned on its family neighbours' mean latent.

The shipped pipeline conditions the latent acoustic stage on the mean audio latent of the text's nearest training
clips of its instrument family (:meth:`RetrievalPrior.acoustic_latent`), and the acoustic oracle shows the stage
hears the family better from that mean than from a clip's own latent, the one it was trained on (0.43 against
0.25; RESULTS.md, "The acoustic oracle through the shipped prior"). This writes a tokens folder whose clips carry,
as their MuLaN latent, the same kind of mean: of the clip's ``--pool`` nearest *other* training clips (by audio
latent), those of its own family first (the prior's zero-shot reading of each clip), the first ``--k``; the key and
drums labels stay those read from the clip's own latent (stored as ``controls``, which the training launcher below
keeps instead of reading them again from the replaced latent). Then train the stage with the shipped recipe:

    python benchmarks/family_cond_tokens.py --tokens /work/runs/tokens_spec --out /work/runs/tokens_famcond
    python benchmarks/family_cond_tokens.py --train --tokens /work/runs/tokens_famcond --out /work/runs/latent_famcond

(the second runs ``musiclm train stage --stage latent`` with the shipped recipe's flags, keeping the stored labels;
the shipped stage is its step 250 of the 1,000-step schedule, so stop it there), then bundle it with the shipped
files (`musiclm bundle ... --acoustic-lm /work/runs/latent_famcond/latent.safetensors --movement-gain-tokens
/work/runs/tokens_famcond`, the model card's other flags).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from musiclm_pytorch import MusicLM
from musiclm_pytorch.lm.prior import nearest_rows

PRETRAINED = Path(__file__).resolve().parents[1] / "src/musiclm_pytorch/pretrained/musiclm_small"


def family_means(queries: torch.Tensor, query_family: torch.Tensor, bank: torch.Tensor, bank_family: torch.Tensor,
                 pool: int, k: int, exclude_self: bool) -> torch.Tensor:  # fmt: skip
    """``[N, C]``: for each query latent, the normalised mean of its first ``k`` of the ``pool`` nearest bank rows
    (itself left out where ``exclude_self``: row i of the bank is query i), its family's first, nearest first."""
    q = F.normalize(queries.float(), dim=-1)
    near = nearest_rows(q, bank, pool + int(exclude_self))
    if exclude_self:
        keep = near != torch.arange(len(q))[:, None]
        near = torch.stack([row[m][:pool] for row, m in zip(near, keep)])
    other = (bank_family[near].long() != query_family[:, None]).long()
    order = torch.argsort(other * near.shape[1] + torch.arange(near.shape[1]), dim=1)
    return F.normalize(bank[near.gather(1, order)[:, :k]].mean(1), dim=-1)


def make_tokens(args: argparse.Namespace) -> None:
    model = MusicLM.from_pretrained()
    prior = model.prior
    assert prior is not None and prior.family_pool
    reader = model.control_reader()
    src, out = Path(args.tokens), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = torch.load(src / "train.pt", weights_only=False)
    own = torch.stack([it["mulan"].float() for it in train["items"]])
    bank = F.normalize(own, dim=-1)
    if not torch.allclose(bank[: len(prior.latents)], prior.latents.float(), atol=1e-3):
        raise ValueError("the shipped prior's bank is not these tokens' training clips")
    bank_family = prior.read_family(bank)
    report = {}
    for name, split in (("train", train), ("val", torch.load(src / "val.pt", weights_only=False))):
        lat = torch.stack([it["mulan"].float() for it in split["items"]])
        labels = reader.read(lat)
        fam = prior.read_family(lat)
        means = family_means(lat, fam, bank, bank_family, args.pool, args.k, exclude_self=name == "train")
        nearest_other = nearest_rows(F.normalize(lat, dim=-1), bank, 2)[:, 1 if name == "train" else 0]
        same = (bank_family[nearest_other] == fam).float().mean()
        for it, m, row in zip(split["items"], means, labels):
            it["mulan"], it["controls"] = m.to(it["mulan"].dtype), row
        torch.save(split, out / f"{name}.pt")
        report[name] = {"clips": len(lat), "cos_own_to_mean": round(float((F.normalize(lat, dim=-1) * means).sum(-1)
                                                                         .mean()), 4),
                        "nearest_other_same_family": round(float(same), 4)}  # fmt: skip
    if (src / "tokens.json").is_file():
        shutil.copy(src / "tokens.json", out / "tokens.json")
    (out / "family_cond.json").write_text(json.dumps({"pool": args.pool, "k": args.k, **report}, indent=2))
    print(json.dumps(report, indent=2))


def train(args: argparse.Namespace) -> None:
    import musiclm_pytorch.training.stages as stages
    from musiclm_pytorch.cli import main

    real = stages.add_controls

    def keep(items, reader):  # type: ignore[no-untyped-def]
        if "controls" not in items[0]:  # the labels read from each clip's own latent stay
            real(items, reader)

    stages.add_controls = keep  # type: ignore[assignment]
    tok = str(PRETRAINED / "semantic_tokenizer.safetensors")
    cond = str(PRETRAINED / "conditioning.safetensors")
    main(["train", "stage", "--stage", "latent", "--codec", str(PRETRAINED / "codec.safetensors"), "--tokens",
          args.tokens, "--out", args.out, "--dim", "256", "--depth", "4", "--heads", "4", "--dim-head", "64",
          "--dropout", "0.1", "--crop-seconds", "10", "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "50",
          "--max-steps", "1000", "--cond-noise", "0.1", "--cond-drop-prob", "0.1", "--eval-every", "100",
          "--eval-items", "64", "--checkpoint-every", "50", "--threads", "2", "--beat-from", tok,
          "--controls-from", cond])  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pool", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--train", action="store_true", help="train the latent stage on --tokens (a folder this made)")
    a = ap.parse_args()
    train(a) if a.train else make_tokens(a)

"""The acoustic stage's family conditioning, tuned: how many of the text's family neighbours to average, and how hard
the stage's envelope guidance pulls toward them.

Since the twenty-fourth session the acoustic stage reads the mean audio latent of the text's 8 nearest clips of its
instrument family (:meth:`RetrievalPrior.acoustic_latent`), with the envelope guidance 3 chosen when that latent
blended families (RESULTS.md, "Envelope guidance end to end": guidance 5 traded key for instrument then). A mean of 8
latents lies inside the family's cloud, where the stage, trained on single clips' latents, may hear less of the
instrument than from fewer clips' (``--family-k``); a purer conditioning may bear more guidance (``--acoustic-cfg``).
The end-to-end suite (one candidate, no reranking) scores it:

    python benchmarks/acoustic_family_probe.py --prompts /work/data/synth10k/val_generated.jsonl --num-prompts 200 \
        --family-k 2 --threads 1 --out benchmarks/results/acoustic_family_valgen200_k2.json
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from grid_source_probe import probe_args, run_suite

from musiclm_pytorch import MusicLM
from musiclm_pytorch.lm.prior import RetrievalPrior, nearest_rows


def family_k(prior: RetrievalPrior, k: int, pool: int | None = None, push: float = 0.0) -> None:
    """Make ``prior.acoustic_latent`` the normalised mean of the text's first ``k`` family neighbours (the same order
    as :meth:`RetrievalPrior.family_neighbours`: of its ``pool`` (default ``family_pool``) nearest clips, its family's
    first); with ``push``, moved that many times its difference from the mean latent of the whole bank further away
    from it (toward what sets the family's clips apart), normalised again."""
    pool = pool or prior.family_pool
    centre = F.normalize(prior.latents.float().mean(0), dim=-1)
    if not (prior.family_pool and prior.family_acoustic_only) or not 1 <= k <= pool:
        raise ValueError(f"needs a prior with family_acoustic_only and 1 <= k <= pool={pool}, got k={k}")

    def acoustic_latent(self: RetrievalPrior, text_latents: torch.Tensor) -> torch.Tensor:
        query = F.normalize(text_latents.float(), dim=-1)
        near = nearest_rows(query, self.latents, pool)
        other = (self.bank_family[near].long() != self.read_family(query)[:, None]).long()
        order = torch.argsort(other * near.shape[1] + torch.arange(near.shape[1]), dim=1)
        idx = near.gather(1, order)[:, :k]
        latent = F.normalize(self.latents[idx].mean(1), dim=-1)
        if push:
            latent = F.normalize(latent + push * (latent - centre), dim=-1)
        return latent.to(text_latents.dtype)

    prior.acoustic_latent = types.MethodType(acoustic_latent, prior)  # type: ignore[method-assign]


def main() -> None:
    ap = probe_args(__doc__.split("\n\n")[0])
    ap.add_argument("--family-k", type=int, default=8, help="family neighbours averaged (8: as shipped)")
    ap.add_argument("--pool", type=int, default=None, help="nearest clips the family's come first among (32)")
    ap.add_argument("--push", type=float, default=0.0, help="move the latent this many times its difference from the "
                    "bank's mean further from it (0: as shipped)")  # fmt: skip
    ap.add_argument("--acoustic-cfg", type=float, default=None, help="the acoustic stage's guidance (default: 3)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model) if args.model else MusicLM.from_pretrained()
    assert model.prior is not None and model.acoustic_lm is not None
    family_k(model.prior, args.family_k, args.pool, args.push)
    if args.acoustic_cfg is not None:
        model.acoustic_lm.default_cfg_scale = args.acoustic_cfg  # type: ignore[assignment]
    run_suite(
        model,
        args,
        family_k=args.family_k,
        pool=args.pool or model.prior.family_pool,
        push=args.push,
        acoustic_cfg=model.default_cfg_scale[1],
    )


if __name__ == "__main__":
    main()

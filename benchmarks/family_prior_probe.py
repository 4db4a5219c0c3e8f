"""Neighbours of one instrument: does a retrieval prior whose neighbours share the text's family condition the stages
toward the instrument?

The retrieval prior conditions both stages on the mean audio latent of the text's 8 nearest training clips; on 200
valgen prompts 73 % of those neighbours share the prompt's family (the majority does for 90 %, the nearest for 85 %),
so the conditioning is a blend of instruments. Here the neighbours are the text's ``--pool`` nearest clips, those
whose family (MuLaN's zero-shot reading of the clip's audio latent) agrees with the text's (the reading of the text
latent) first, nearest first; every use of the neighbours follows (the latent, the pooled ids, the beat period, the
frame bank). The end-to-end suite (one candidate, no reranking) scores it:

    python benchmarks/family_prior_probe.py --prompts /work/data/synth10k/val_generated.jsonl --num-prompts 200 \
        --pool 32 --out benchmarks/results/family_prior_valgen200_pool32.json
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from grid_source_probe import probe_args, run_suite

from musiclm_pytorch import MusicLM
from musiclm_pytorch.lm.controls import family_class_latents
from musiclm_pytorch.lm.prior import RetrievalPrior, knn_mean, nearest_rows


def family_reader(model: MusicLM):  # type: ignore[no-untyped-def]
    """``latents [B, C] -> family index [B]``: MuLaN's zero-shot reading (the package's
    :func:`~musiclm_pytorch.lm.controls.family_class_latents`, prompt ensembles as the suite's)."""
    _, value = family_class_latents(model.conditioner.mulan)
    return lambda latents: (F.normalize(latents.float().cpu(), dim=-1) @ value.T).argmax(1)


def same_family_neighbours(prior: RetrievalPrior, read, pool: int,  # type: ignore[no-untyped-def]
                           latent_only: bool = False) -> dict[str, float]:  # fmt: skip
    """Make ``prior``'s neighbours prefer clips of the text's family among its ``pool`` nearest (module docstring);
    with ``latent_only``, only for the conditioning latent (the beat period, pooled ids and frame bank keep the
    nearest clips). Returns how many families the bank's readings hold."""
    bank_family = read(prior.latents)

    def neighbours(self: RetrievalPrior, text_latents: torch.Tensor) -> torch.Tensor:
        self._check(text_latents)
        near = nearest_rows(F.normalize(text_latents.float(), dim=-1), self.latents, pool)
        cost = torch.linspace(0, 0.5, near.shape[1]).expand(len(near), -1).clone()
        cost += (bank_family[near] != read(text_latents)[:, None]).float()
        return near.gather(1, cost.argsort(dim=1))[:, : self.k]

    def latent(self: RetrievalPrior, text_latents: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.latents[neighbours(self, text_latents)].mean(1), dim=-1).to(text_latents.dtype)

    if not latent_only:
        prior.neighbours = types.MethodType(neighbours, prior)  # type: ignore[method-assign]
    prior.latent = types.MethodType(latent, prior)  # type: ignore[method-assign]
    return {"bank_families": int(bank_family.unique().numel())}


def acoustic_only(model: MusicLM) -> None:
    """Give the family neighbours' latent to the acoustic stage alone: the semantic LM's conditioning ids and latent
    from the nearest clips, as shipped (its ids set the key)."""
    prior = model.prior
    assert prior is not None

    def plain(text: torch.Tensor) -> torch.Tensor:
        return knn_mean(F.normalize(text.float(), dim=-1), prior.latents, prior.k).to(text.dtype)

    condition = model.text_condition

    def text_condition(texts):  # type: ignore[no-untyped-def]
        tc = condition(texts)
        cond, _ = model.conditioner.quantize(plain(tc.text))
        return tc._replace(cond_ids=cond)

    model.text_condition = text_condition  # type: ignore[method-assign]
    model.semantic_latent = lambda cond: plain(cond.text)  # type: ignore[method-assign]


def main() -> None:
    ap = probe_args(__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=32, help="nearest clips among which the text's family comes first")
    ap.add_argument(
        "--latent-only",
        action="store_true",
        help="the conditioning latent alone from the family's clips (tempo, ids, frames: nearest)",
    )
    ap.add_argument("--acoustic-only", action="store_true",
                    help="with --latent-only: the family latent for the acoustic stage alone")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model) if args.model else MusicLM.from_pretrained()
    assert model.prior is not None
    info = same_family_neighbours(model.prior, family_reader(model), args.pool, args.latent_only)
    if args.acoustic_only:
        acoustic_only(model)
    run_suite(model, args, pool=args.pool, latent_only=args.latent_only, acoustic_only=args.acoustic_only, **info)


if __name__ == "__main__":
    main()

"""Real frames of the text's instrument: does the frame bank's spectral envelope, taken from the text's nearest clips
of its family, make the instrument heard where the shipped model leaves the prediction as is?

The shipped prior (twenty-fourth session) conditions the acoustic stage on the mean latent of the text's nearest
clips of its instrument family, and colours the predicted frames with the spectral envelope of real frames of the
8 nearest clips (any family) only where the text asks for drums: everywhere, from the nearest clips, the envelope had
cost instrument (RESULTS.md, "Text -> music made of real frames' envelopes"), those clips blending families and drums.
Here the frames come from the text's family neighbours (:meth:`RetrievalPrior.family_neighbours`, 97.6 % of one
family on validation): ``--drumless family`` matches them for the texts that ask for no drums too, ``--drums family``
takes the drum texts' frames from them as well. The end-to-end suite (one candidate, no reranking) scores it:

    python benchmarks/family_frames_probe.py --prompts /work/data/synth10k/val_generated.jsonl --num-prompts 200 \
        --drumless family --threads 1 --out benchmarks/results/family_frames_valgen200_drumless.json
"""

from __future__ import annotations

import types

import torch
from grid_source_probe import probe_args, run_suite

from musiclm_pytorch import MusicLM
from musiclm_pytorch.lm.prior import RetrievalPrior


def family_frames(prior: RetrievalPrior, drumless: str, drums: str) -> None:
    """Make ``prior.match_frames`` take drumless rows' frames per ``drumless`` (``none``: the prediction as is,
    ``family``: the family neighbours' frames) and drum rows' per ``drums`` (``nearest`` as shipped, ``family``)."""
    if not (prior.family_pool and prior.frame_drums_only):
        raise ValueError("the probe needs a prior with family_pool and a drums-only frame bank (the shipped one)")
    match = prior.match_frames
    nearest = prior.neighbours

    def match_frames(self: RetrievalPrior, text_latents, predicted, codec, *, drums=None, **kw):  # type: ignore[no-untyped-def]
        assert drums is not None
        out = predicted.clone()
        for want, source in ((True, drums_source), (False, drumless)):
            rows = ((drums > 0) == want).nonzero()[:, 0]
            if not len(rows) or source == "none":
                continue
            self.neighbours = self.family_neighbours if source == "family" else nearest  # type: ignore[method-assign]
            part = {k: (v[rows] if k == "semantic" and v is not None else v) for k, v in kw.items()}
            out[rows] = match(text_latents[rows], predicted[rows], codec, drums=torch.ones_like(drums[rows]), **part)
            self.neighbours = nearest  # type: ignore[method-assign]
        return out

    drums_source = drums
    prior.match_frames = types.MethodType(match_frames, prior)  # type: ignore[method-assign]


def main() -> None:
    ap = probe_args(__doc__.split("\n\n")[0])
    ap.add_argument("--drumless", choices=("none", "family"), default="family",
                    help="frames for the texts that ask for no drums (none: the prediction, as shipped)")  # fmt: skip
    ap.add_argument("--drums", choices=("nearest", "family"), default="nearest",
                    help="frames for the texts that ask for drums (nearest: the 8 nearest, as shipped)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = MusicLM.from_pretrained(args.model) if args.model else MusicLM.from_pretrained()
    assert model.prior is not None
    family_frames(model.prior, args.drumless, args.drums)
    run_suite(model, args, drumless=args.drumless, drums=args.drums)


if __name__ == "__main__":
    main()

"""Acoustic oracle: real frames of the text's instrument family along the latent stage's prediction.

The shipped latent stage renders reed and pipe prompts as other families even from the clips' true semantic ids
(RESULTS.md, twenty-fifth session). This probe asks what real frames of the caption's family neighbours
(:meth:`RetrievalPrior.family_neighbours`, their 16-level codec latents from the tokens' training items) give in
place of the prediction: held one per run of equal semantic ids (``seghold``), or along the cheapest path through
them (``units``: :func:`select_units`, latent distance + 0.5 x the ids' centre distance [+ a chroma distance], a
jump costing ``--jump``), with the prediction's loudness (the envelope's coefficient 0) put back in full, at half
its movement around the frames' own level, or not at all; ``drumless_*``: only for the texts whose drums label says
none (the drum texts keep the prediction). Validation clips, their true ids, the caption's conditioning through the
shipped prior; the judge scores each version:

    python benchmarks/family_units_probe.py --clips 96 --out benchmarks/results/family_units_val96.json
    python benchmarks/family_units_probe.py --clips 24 --fams pipe reed \
        --out benchmarks/results/family_units_winds24.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from family_loss_probe import true_latents, validation_clips

from musiclm_pytorch.evaluation.judge import Judge, accuracy, score
from musiclm_pytorch.lm.controls import family_class_latents
from musiclm_pytorch.lm.prior import dct_matrix, envelope_projector, frame_chroma, frame_distance, select_units

# name -> (how, jump, loudness: 1 full prediction's / 0.5 half its movement / 0 the frames' own, chroma weight,
# drumless only)
VARIANTS = {
    "seghold": ("hold", 0.0, 1.0, 0.0, False),
    "seghold_noloud": ("hold", 0.0, 0.0, 0.0, False),
    "units_j3": ("units", 3.0, 1.0, 0.0, False),
    "units_j10": ("units", 10.0, 1.0, 0.0, False),
    "units_j10_noloud": ("units", 10.0, 0.0, 0.0, False),
    "units_j10_halfloud": ("units", 10.0, 0.5, 0.0, False),
    "drumless_j10_noloud": ("units", 10.0, 0.0, 0.0, True),
    "drumless_j10_halfloud": ("units", 10.0, 0.5, 0.0, True),
    "drumless_j3_noloud": ("units", 3.0, 0.0, 0.0, True),
    "drumless_j10_chroma1": ("units", 10.0, 0.0, 1.0, True),
    "drumless_j10_chroma4": ("units", 10.0, 0.0, 4.0, True),
    "drumless_j3_chroma1": ("units", 3.0, 0.0, 1.0, True),
}
# transposed family frames (drumless texts only, the frames' own loudness, no semantic-id term: the ids of a
# transposed frame are not its own): name -> (jump, chroma weight, semitone shifts of the bank)
TRANSPOSED = {
    "drumless_j10_tr0_chroma1": (10.0, 1.0, (0,)),
    "drumless_j10_tr2_chroma1": (10.0, 1.0, (-2, -1, 0, 1, 2)),
    "drumless_j10_tr2_chroma4": (10.0, 4.0, (-2, -1, 0, 1, 2)),
    "drumless_j10_tr3_chroma4": (10.0, 4.0, (-3, -2, -1, 0, 1, 2, 3)),
    # only where MuLaN reads the text's family as one the stage never makes (twenty-sixth session's table)
    "route_j10_tr2_chroma1": (10.0, 1.0, (-2, -1, 0, 1, 2)),
}
ROUTED_FAMILIES = ("pipe", "reed", "organ", "chromatic percussion", "piano")


def transpose(latents: torch.Tensor, codec, semitones: int, envelope: int = 20) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Magnitude-codec latents ``[..., L]`` moved by ``semitones``: the log spectrum's fine structure (all but its
    first ``envelope`` cepstral coefficients) resampled along frequency, its envelope (the instrument's formants)
    kept."""
    if semitones == 0:
        return latents
    log_mag = latents.float() @ codec.basis.T.float() + codec.mean.float()
    bins = log_mag.shape[-1]
    d = dct_matrix(bins)[:envelope].float()
    env = log_mag @ d.T @ d
    fine = log_mag - env
    src = torch.arange(bins) / 2 ** (semitones / 12)  # output bin j reads input bin j / ratio
    lo = src.floor().long().clamp(max=bins - 1)
    hi = (lo + 1).clamp(max=bins - 1)
    w = (src - lo).clamp(0, 1)
    return (env + fine[..., lo] * (1 - w) + fine[..., hi] * w - codec.mean.float()) @ codec.basis.float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--skip", type=int, default=0, help="leave out the first SKIP validation clips (a fresh sample)")
    ap.add_argument("--fams", nargs="*", default=[], help="only validation clips of these families")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *TRANSPOSED])
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ns = argparse.Namespace(model=None, tokens=args.tokens, data=args.data, threads=args.threads)
    model, val, matched = validation_clips(ns, 100_000 if args.fams else args.skip + args.clips)
    chosen = [(it, r) for it, r in list(zip(val, matched))[args.skip :]
              if not args.fams or r["tags"]["family"] in args.fams][: args.clips]  # fmt: skip
    items, rows = [c[0] for c in chosen], [c[1] for c in chosen]
    train = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"]
    stage, codec, prior = model.acoustic_lm, model.codec, model.prior
    assert stage is not None and prior is not None
    scale = model.guidance(None)[1]
    centers = model.semantic_tokenizer.centers  # type: ignore[attr-defined]
    texts = [r.get("full_caption") or r["caption"] for r in rows]
    tc = model.text_condition(texts)
    loud = envelope_projector(codec.basis, 1).float()  # type: ignore[attr-defined]
    names, _ = family_class_latents(model.conditioner.mulan)
    read = [names[int(f)] for f in prior.read_family(tc.text)]  # the family MuLaN reads in each text

    def bank_for(text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = prior.family_neighbours(text[None])[0]
        codes = torch.stack([train[j]["codes"][:, :500].long() for j in idx])
        lat = codec.latents_from_codes(codes).float()  # type: ignore[attr-defined]
        ids = torch.stack([train[j]["semantic"].long().repeat_interleave(2)[:500] for j in idx])
        return lat.reshape(-1, lat.shape[-1]), ids.reshape(-1)

    def render(how: str, p: torch.Tensor, sem: torch.Tensor, bank: torch.Tensor, ids: torch.Tensor,
               bank_chroma: torch.Tensor, jump: float, loudness: float, chroma: float) -> torch.Tensor:  # fmt: skip
        if how == "hold":
            out = torch.empty_like(p)
            cuts = [0] + [t for t in range(1, len(sem)) if sem[t] != sem[t - 1]] + [len(sem)]
            for s, e in zip(cuts[:-1], cuts[1:]):
                d = frame_distance(p[s:e].mean(0)[None, None], bank[None], semantic=sem[s : s + 1][None],
                                   bank_semantic=ids[None], centers=centers, semantic_weight=0.5)[0, 0]  # fmt: skip
                out[s:e] = bank[d.argmin()]
        else:
            extra = None
            if chroma:
                extra = chroma * torch.cdist(frame_chroma(p[None], codec), bank_chroma).square()
            d = frame_distance(p[None], bank[None], extra=extra, semantic=sem[None], bank_semantic=ids[None],
                               centers=centers, semantic_weight=0.5)  # fmt: skip
            out = bank[select_units(d, 500, jump)[0]]
        if loudness == 1.0:
            return out + (p - out) @ loud.T
        if loudness:
            lq, lp = out @ loud.T, p @ loud.T
            return out - lq + lq.mean(0) + (lp - lp.mean(0)) * loudness
        return out

    judge = Judge()
    versions: dict[str, list[dict[str, bool]]] = collections.defaultdict(list)
    per_family: dict[str, dict[str, list[bool]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    with torch.no_grad():
        for i in range(0, len(items), 12):
            part = items[i : i + 12]
            sem = torch.stack([it["semantic"].long() for it in part])
            cond = tc.acoustic[i : i + 12]
            rhythm = model.acoustic_beat(sem, None, cond, source="ids")
            p = stage.generate(sem, cond, cfg_scale=scale, beat=rhythm["beat"], drums=rhythm["drums"]).float()
            made = {"shipped": p, "ceiling": true_latents(model, part, p.shape[1])}
            rendered: dict[str, list[torch.Tensor]] = {name: [] for name in args.variants}
            for j in range(len(part)):  # each clip's bank (and its chroma) once, for every variant
                bank, ids = bank_for(tc.text[i + j])
                chroma_wanted = any(VARIANTS[n][3] for n in args.variants if n in VARIANTS)
                bank_chroma = frame_chroma(bank[None], codec) if chroma_wanted else bank
                shifted: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
                sem2 = sem[j].repeat_interleave(2)[: p.shape[1]]
                for name in args.variants:
                    if name in TRANSPOSED:
                        jump, chroma, shifts = TRANSPOSED[name]
                        routed_away = name.startswith("route") and read[i + j] not in ROUTED_FAMILIES
                        if bool(rhythm["drums"][j] > 0) or routed_away:
                            rendered[name].append(p[j])
                            continue
                        if shifts not in shifted:
                            tb = torch.cat([transpose(bank, codec, k) for k in shifts])
                            shifted[shifts] = (tb, frame_chroma(tb[None], codec))
                        tb, tc_ = shifted[shifts]
                        extra = chroma * torch.cdist(frame_chroma(p[j][None], codec), tc_).square()
                        d = frame_distance(p[j][None], tb[None], extra=extra)
                        rendered[name].append(tb[select_units(d, 500, jump)[0]])
                        continue
                    how, jump, loudness, chroma, drumless = VARIANTS[name]
                    if drumless and bool(rhythm["drums"][j] > 0):
                        rendered[name].append(p[j])
                    else:
                        rendered[name].append(render(how, p[j], sem2, bank, ids, bank_chroma, jump, loudness, chroma))
            made.update({name: torch.stack(out) for name, out in rendered.items()})
            for name, lat in made.items():
                for w, row in zip(codec.decode_latents(lat)[:, 0], rows[i : i + 12]):  # type: ignore[attr-defined]
                    s = score(judge.predict(w.numpy(), model.sample_rate), row["tags"])
                    versions[name].append(s)
                    per_family[name][row["tags"]["family"]].append(s["family"])
            print(i + len(part), {k: round(accuracy(v)["family"]["accuracy"], 3) for k, v in versions.items()},
                  flush=True)  # fmt: skip
    kept = ("family", "key_tonic", "tempo_class", "drums_yes", "drums_no", "drums_balanced")
    report: dict[str, dict] = {}
    for name, scores in versions.items():
        report[name] = {k: round(v["accuracy"], 3) for k, v in accuracy(scores).items() if k in kept}
        report[name]["per_family"] = {f: f"{sum(v)}/{len(v)}" for f, v in sorted(per_family[name].items())}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    for name, r in report.items():
        print(name.ljust(24), {k: v for k, v in r.items() if k != "per_family"})


if __name__ == "__main__":
    sys.exit(main())

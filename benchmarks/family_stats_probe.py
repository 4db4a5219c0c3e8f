"""The family neighbours' real latent statistics on the stage's prediction: colour and movement of the instrument.

The feature swap (``family_feature_swap.py``) found the latent stage's output about one standard deviation off the
codec's round trip in every group of the judge's timbre features, with no single group's repair giving the winds back.
Every borrowed-frame arm brought the instrument and lost the key (the frames carry their own pitches). This probe
borrows only statistics: the retrieval prior's family neighbours of the caption (the clips whose mean latent already
conditions the stage) give, per latent dimension, their real latents' mean over time and standard deviation over time
(the codec's 16-level latents of the bank's training clips). On the acoustic oracle (true ids, the caption's
conditioning through the shipped prior, one sample; the first ``--per-family`` validation clips of each family):

* ``sd``: the guided prediction's movement around its clip mean scaled per dimension to the neighbours' mean standard
  deviation (``** alpha``), in place of the shipped global movement gain;
* ``env``: the clip mean moved toward the neighbours' mean only within the spectral envelope (the stage's guidance
  envelope projector: cepstral coefficients below 20), so the colour is the family's and the partials stay the stage's.

    python benchmarks/family_stats_probe.py --per-family 12 --out benchmarks/results/family_stats_val144.json
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
from family_loss_probe import first_per_family, true_latents, validation_clips

from musiclm_pytorch.evaluation.judge import Judge, accuracy, score


def bank_stats(model, tokens: str, frames: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    items = torch.load(Path(tokens) / "train.pt", weights_only=False)["items"]
    assert model.prior is not None and len(items) >= model.prior.latents.shape[0]
    mus, sds = [], []
    for i in range(0, model.prior.latents.shape[0], 64):
        x = true_latents(model, items[i : i + 64], frames)
        mus.append(x.mean(1))
        sds.append(x.std(1))
    return torch.cat(mus), torch.cat(sds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-family", type=int, default=12)
    ap.add_argument("--variants", nargs="*", default=["sd1", "sd0.5", "env1", "env0.5", "env1+sd0.5", "env1+gain"])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--tokens", default="/work/runs/tokens_spec")
    ap.add_argument("--data", default="/work/data/synth10k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ns = argparse.Namespace(model=args.model, tokens=args.tokens, data=args.data, threads=args.threads)
    model, val, matched = validation_clips(ns, 100_000)
    items, rows, per = first_per_family(val, matched, args.per_family)
    stage, prior = model.acoustic_lm, model.prior
    assert stage is not None and prior is not None and stage.guidance_filter is not None
    scale = model.guidance(None)[1]
    texts = [r.get("full_caption") or r["caption"] for r in rows]
    tc = model.text_condition(texts)
    fam_mu = fam_sd = torch.empty(len(items), 0)
    if args.variants:  # the bank's statistics (3,000 clips decoded) only where a variant reads them
        mu, sd = bank_stats(model, args.tokens, items[0]["codes"].shape[1])
        idx = prior.family_neighbours(tc.text)
        fam_mu, fam_sd = mu[idx].mean(1), sd[idx].mean(1)  # [N, L]
    env = stage.guidance_filter.float()
    judge = Judge()
    versions: dict[str, list[dict[str, bool]]] = collections.defaultdict(list)
    fams: list[str] = []
    with torch.no_grad():
        for i in range(0, len(items), 16):
            part = items[i : i + 16]
            sem = torch.stack([it["semantic"].long() for it in part])
            c = tc.acoustic[i : i + 16]
            rhythm = model.acoustic_beat(sem, None, c, source="ids")
            guided = stage._predict(sem, c, frames=None, cfg_scale=scale, beat=rhythm["beat"], drums=rhythm["drums"])
            shipped = stage.scale_movement(guided)
            g_mu = guided.mean(1, keepdim=True)
            dev = guided - g_mu
            g_sd = guided.std(1, keepdim=True).clamp_min(1e-4)
            f_mu, f_sd = fam_mu[i : i + 16, None], fam_sd[i : i + 16, None]
            made = {"shipped": shipped, "ceiling": true_latents(model, part, guided.shape[1])}
            for v in args.variants:
                lat_mu, lat_dev = g_mu, stage.scale_movement(guided) - g_mu
                for p in v.split("+"):
                    if p.startswith("sd"):
                        lat_dev = dev * (f_sd / g_sd) ** float(p[2:])
                    elif p.startswith("env"):
                        lat_mu = g_mu + float(p[3:]) * (f_mu - g_mu) @ env
                    elif p != "gain":
                        raise ValueError(f"unknown variant part {p!r}")
                made[v] = lat_mu + lat_dev
            for name, lat in made.items():
                for w, row in zip(model.codec.decode_latents(lat)[:, 0], rows[i : i + 16]):  # type: ignore[attr-defined]
                    versions[name].append(score(judge.predict(w.numpy(), model.sample_rate), row["tags"]))
            fams += [r["tags"]["family"] for r in rows[i : i + 16]]
            print(i + len(part), {k: round(accuracy(v)["family"]["accuracy"], 3) for k, v in versions.items()},
                  flush=True)  # fmt: skip
    kept = ("family", "key_tonic", "tempo_class", "drums_balanced")
    report: dict[str, dict] = {}
    for name, v in versions.items():
        report[name] = {a: round(b["accuracy"], 3) for a, b in accuracy(v).items() if a in kept}
        report[name]["per_family"] = {f: round(sum(s["family"] for s, g in zip(v, fams) if g == f) / per[f], 2)
                                      for f in sorted(per)}  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=1))
    for name, r in report.items():
        print(f"{name:14s}", {k: v for k, v in r.items() if k != "per_family"}, r["per_family"])


if __name__ == "__main__":
    main()

"""Does a table of latent offsets per instrument family (and note age, beat phase or semantic id) give the
instrument back to the latent stage's mean?

The latent stage regresses the codec latents' conditional mean; the instrument is lost in how each frame's
spectrum moves (RESULTS.md, "Which timbre features lose the instrument": the MFCC standard deviations over time
and the loudness rise and fall). The drums label became audible once the stage had a direct path, a table of
latent offsets per (drums label, beat-phase bin) fitted in closed form. This probe asks whether the same kind of
direct path per *family* gives the instrument back: on ``--fit-clips`` training clips it fits the mean residual
``latents - prediction`` (the stage as generation runs it: its guidance and movement gain, each clip's own
conditioning, the ids' beat grid) per family and

- ``family``: nothing else (the family's mean colour);
- ``age``: the age of the current note in codec frames, from the onsets in the ids (the onset-strength feature
  of each id's centre, local peaks above ``--onset-threshold``): attack, sustain and decay per family;
- ``phase``: the bin of the ids' beat grid (16 per beat);
- ``id``: the frame's semantic id (shrunk toward the family's mean with weight ``--shrink``);

and ``age_any``: the age table over all families (what the note shape adds without the family). The family of a
training clip is MuLaN's zero-shot reading of its audio latent (trained from audio alone, like the drums label);
of a validation clip, the reading of its caption's text latent (``text``, what generation has) or its tag
(``tag``, the oracle), and a shuffled family (``shuffled``, the control). The validation clips are rendered from
their *true* ids with the caption's conditioning (the acoustic oracle) and judged:

    python benchmarks/family_table_probe.py --tokens /work/runs/tokens_spec --data /work/data/synth10k --clips 160 \
        --fit-clips 1000 --out benchmarks/results/family_table_probe_val160.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from family_loss_probe import oracle_args, predict, true_latents, validation_clips

from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.judge import Judge, accuracy, score
from musiclm_pytorch.lm.controls import family_class_latents
from musiclm_pytorch.lm.regression import beat_phase_bins

AGE_EDGES = torch.tensor([2, 4, 6, 8, 12, 16, 24, 36])  # codec frames (50 Hz) since the note's onset
ONSET_FEATURE = 24  # chroma 12 + melody 12, then onset strength (MusicalFeatureExtractor)


def note_age_bins(semantic: torch.Tensor, centers: torch.Tensor, frames: int, threshold: float) -> torch.Tensor:
    """``[B, frames]`` age bin of each codec frame's note: onsets are the semantic frames whose id's standardised
    onset strength is a local peak above ``threshold``; codec frame ``f`` lies in semantic frame ``f * Ts //
    frames``; before the first onset, the last bin."""
    o = centers[semantic.long(), ONSET_FEATURE]  # [B, Ts]
    prev = F.pad(o, (1, 0), value=-1e9)[:, :-1]
    nxt = F.pad(o, (0, 1), value=-1e9)[:, 1:]
    onset = (o > threshold) & (o >= prev) & (o > nxt)
    ts = semantic.shape[1]
    idx = torch.arange(ts).expand_as(o)
    last = torch.where(onset, idx, torch.full_like(idx, -(10**6))).cummax(1).values  # [B, Ts]
    f = torch.arange(frames)
    sem = (f * ts) // frames
    start = last[:, sem] * frames / ts  # the onset's codec frame
    age = (f[None] - start).clamp_max(10**5)
    return torch.bucketize(age, AGE_EDGES, right=True)  # [B, frames] in [0, len(AGE_EDGES)]


def phase_bins(model: Any, semantic: torch.Tensor, frames: int, bins: int = 16) -> torch.Tensor:
    """``[B, frames]``: the beat-phase bin of each codec frame on the ids' grid; ``bins`` where it is unknown."""
    grid = model.ids_beat(semantic).cpu()
    t = torch.arange(frames).double() * semantic.shape[1] / frames
    out = beat_phase_bins(t, grid[:, 0].clamp_min(1e-3), grid[:, 1], bins)
    return torch.where((grid[:, 0] > 0)[:, None], out, torch.full_like(out, bins))


class Table:
    """Mean residual per (family, index), shrunk toward the family's mean by ``shrink`` pseudo-frames."""

    def __init__(self, families: int, size: int, dim: int):
        self.sums = torch.zeros(families, size, dim, dtype=torch.float64)
        self.counts = torch.zeros(families, size, dtype=torch.float64)

    def add(self, family: torch.Tensor, index: torch.Tensor, residual: torch.Tensor) -> None:
        fam = family[:, None].expand_as(index).reshape(-1)
        flat = fam * self.counts.shape[1] + index.reshape(-1)
        self.sums.view(-1, self.sums.shape[-1]).index_add_(0, flat, residual.reshape(-1, residual.shape[-1]).double())
        self.counts.view(-1).index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))

    def table(self, shrink: float) -> torch.Tensor:
        fam_mean = self.sums.sum(1) / self.counts.sum(1, keepdim=True).clamp_min(1)  # [F, L]
        return ((self.sums + shrink * fam_mean[:, None]) / (self.counts[..., None] + shrink)).float()

    def offsets(self, family: torch.Tensor, index: torch.Tensor, shrink: float) -> torch.Tensor:
        return self.table(shrink)[family[:, None].expand_as(index), index]


def main() -> None:
    ap = oracle_args(__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=160)
    ap.add_argument("--fit-clips", type=int, default=1000)
    ap.add_argument("--onset-threshold", type=float, default=0.5)
    ap.add_argument("--shrink", type=float, default=50.0)
    ap.add_argument("--scale", type=float, nargs="+", default=[1.0], help="table offsets times these")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model, val, matched = validation_clips(args, args.clips)
    scale = model.guidance(None)[1]
    train = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"][: args.fit_clips]
    centers = model.semantic_tokenizer.centers.float().cpu()

    mulan = model.conditioner.mulan
    names, value = family_class_latents(mulan)

    def read_family(latents: torch.Tensor) -> torch.Tensor:
        return (F.normalize(latents.float().cpu(), dim=-1) @ value.T).argmax(1)

    nf = len(names)
    ages = len(AGE_EDGES) + 1
    tables = {"family": Table(nf, 1, 0), "age": Table(nf, ages, 0), "phase": Table(nf, 17, 0),
              "id": Table(nf, centers.shape[0], 0), "age_any": Table(1, ages, 0)}  # fmt: skip
    train_rows, _ = manifest_rows(Path(args.data) / "train.jsonl", require_caption=False)
    tag_of = {str(Path(r["path"]).resolve()): r["tags"]["family"] for r in train_rows}
    agree = []
    for i in range(0, len(train), 16):
        part = train[i : i + 16]
        cond = torch.stack([it["mulan"].float() for it in part])
        p = predict(model, part, cond, scale).float().cpu()
        x = true_latents(model, part, p.shape[1]).float().cpu()
        r = x - p
        if tables["family"].sums.shape[-1] == 0:
            for t in tables.values():
                t.sums = torch.zeros(*t.counts.shape, r.shape[-1], dtype=torch.float64)
        fam = read_family(cond)
        agree += [names[int(f)] == tag_of.get(str(Path(it["path"]).resolve())) for f, it in zip(fam, part)]
        sem = torch.stack([it["semantic"].long() for it in part])
        age = note_age_bins(sem, centers, p.shape[1], args.onset_threshold)
        tables["family"].add(fam, torch.zeros_like(age), r)
        tables["age"].add(fam, age, r)
        tables["age_any"].add(torch.zeros_like(fam), age, r)
        tables["phase"].add(fam, phase_bins(model, sem, p.shape[1]), r)
        tables["id"].add(fam, sem.repeat_interleave(p.shape[1] // sem.shape[1], dim=1)[:, : p.shape[1]], r)
        print(f"fit {i + len(part)} / {len(train)}", flush=True)

    judge = Judge()
    texts = [r.get("full_caption") or r["caption"] for r in matched]
    tags = [r["tags"] for r in matched]
    with torch.no_grad():
        text_lat = mulan.get_text_latents(raw_texts=texts).float().cpu()
    fam_text = read_family(text_lat)
    fam_tag = torch.tensor([names.index(t["family"]) for t in tags])
    fam_shuf = fam_text[torch.randperm(len(fam_text), generator=torch.Generator().manual_seed(0))]
    cond_text = model.text_condition(texts).acoustic
    versions: dict[str, list[dict[str, bool]]] = {}
    for i in range(0, len(val), 16):
        part, part_tags = val[i : i + 16], tags[i : i + 16]
        p = predict(model, part, cond_text[i : i + 16], scale).float().cpu()
        sem = torch.stack([it["semantic"].long() for it in part])
        t = p.shape[1]
        index = {"family": torch.zeros(len(part), t, dtype=torch.long),
                 "age": note_age_bins(sem, centers, t, args.onset_threshold), "phase": phase_bins(model, sem, t),
                 "id": sem.repeat_interleave(t // sem.shape[1], dim=1)[:, :t]}  # fmt: skip
        made = {"prediction": p, "codec_ceiling": true_latents(model, part, t).float().cpu()}
        for s in args.scale:
            for name, ix in index.items():
                for fname, fam in (("text", fam_text), ("tag", fam_tag), ("shuffled", fam_shuf)):
                    if name != "age" and fname != "text":
                        continue
                    off = tables[name].offsets(fam[i : i + 16], ix, args.shrink)
                    made[f"{name}_{fname}_x{s:g}"] = p + s * off
            made[f"age_any_x{s:g}"] = p + s * tables["age_any"].offsets(torch.zeros(len(part), dtype=torch.long),
                                                                        index["age"], args.shrink)  # fmt: skip
        for name, latents in made.items():
            wavs = model.codec.decode_latents(latents)[:, 0]  # type: ignore[attr-defined]
            for w, tg in zip(wavs, part_tags):
                versions.setdefault(name, []).append(score(judge.predict(w.numpy(), model.sample_rate), tg))
        print(f"{i + len(part)} / {len(val)} clips", flush=True)
    kept = ("family", "key_tonic", "tempo_class", "drums_balanced")
    report: dict[str, Any] = {
        "clips": len(val), "fit_clips": len(train), "cfg_scale": scale, "onset_threshold": args.onset_threshold,
        "shrink": args.shrink, "train_family_reading_agrees_with_tag": sum(agree) / len(agree),
        "text_family_reading_agrees_with_tag": float((fam_text == fam_tag).float().mean()),
        "versions": {n: {k: v["accuracy"] for k, v in accuracy(s).items() if k in kept} for n, s in versions.items()},
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

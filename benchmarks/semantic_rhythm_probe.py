"""Rhythm in semantic ids: do the ids the semantic LM generates keep the onset grid of real ids?

The semantic tokenizer's features hold the onset strength of each 25 Hz frame: read through the k-means
centers (``semantic.beat.onset_from_ids``), an id sequence gives an onset curve; its normalised
autocorrelation peak over beat lags (60-250 bpm) is the pulse clarity, and the lag of that peak a tempo.
For validation clips this compares, by whether the caption asks for drums:

- the clips' true ids (the ceiling) and ids generated for their captions at each sampling setting
  (``--settings temperature:top_k[:prior_mix]``, the prior's share defaulting to the model's), with
  shuffled captions as the control;
- with ``--render``, what the shipped acoustic stage makes of each id set, by the independent judge
  (drums where asked / not, tempo class): whether a cleaner onset grid reaches the audio;
- with ``--beats`` and a semantic LM that reads a beat grid (``train stage --beat-from``), the first
  setting again with each grid source: ``ids`` the grid estimated from the clip's true ids (the oracle),
  ``tags`` the tempo of the clip's tags on a grid from frame 0, ``text`` what the caption names
  (``MusicLM.beat_grids``), ``none`` the null grid.

    python benchmarks/semantic_rhythm_probe.py --tokens /work/runs/tokens_spec \
        --manifest /work/data/synth10k/val.jsonl --clips 96 --settings 1:0 1:0:0 0.8:0 0.6:0 1:20 --render \
        --out benchmarks/results/semantic_rhythm_val96.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.judge import Judge, accuracy, score
from musiclm_pytorch.lm.regression import LatentAcousticLM
from musiclm_pytorch.pipeline import MusicLM
from musiclm_pytorch.semantic.beat import grid_of_ids, onset_from_ids

LAGS = range(6, 26)  # 250 to 60 bpm at 25 Hz


def rhythm_stats(ml: MusicLM, ids: torch.Tensor, tags: list[dict], frame_rate: float) -> list[dict]:
    out = []
    for o, t, seq in zip(onset_from_ids(ml.semantic_tokenizer, ids), tags, ids.cpu().numpy()):
        x = o - o.mean()
        r0 = float((x * x).sum()) + 1e-8
        ac = np.array([(x[lag:] * x[:-lag]).sum() / r0 for lag in LAGS])
        best = int(ac.argmax())
        bpm = 60.0 * frame_rate / LAGS[best]
        truth = float(t["tempo_bpm"])
        octave_ok = any(abs(bpm * f - truth) / truth <= 0.08 for f in (0.5, 1.0, 2.0))
        out.append({
            "mean_onset": float(o.mean()),
            "onset_std": float(o.std()),
            "pulse_clarity": float(ac[best]),
            "tempo_any_octave_8pct": octave_ok,
            "repeat_rate": float((seq[1:] == seq[:-1]).mean()),
            "distinct_ids": int(len(np.unique(seq))),
        })  # fmt: skip
    return out


def summarise(stats: list[dict], tags: list[dict]) -> dict:
    res: dict[str, dict] = {}
    for group, keep in (("drums", True), ("no_drums", False)):
        sel = [s for s, t in zip(stats, tags) if bool(t.get("drums")) is keep]
        res[group] = {k: round(float(np.mean([s[k] for s in sel])), 4) for k in sel[0]} | {"n": len(sel)}
    return res


def judge_wavs(judge: Judge, wavs: torch.Tensor, sr: int, tags: list[dict]) -> dict:
    preds = [judge.predict(w.float().numpy(), sr) for w in wavs]
    acc = accuracy([score(p, t) for p, t in zip(preds, tags)])
    keys = ("drums_yes", "drums_no", "drums_balanced", "tempo_class", "tempo_any_octave", "family", "key_tonic")
    return {k: round(acc[k]["accuracy"], 4) for k in keys if k in acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--tokens", type=Path, required=True, help="token folder with val.pt (musiclm data tokenize)")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest whose rows the tokens came from")
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--settings", nargs="+", default=["1:0"], help="temperature:top_k[:prior_mix] of the semantic LM")
    ap.add_argument("--render", action="store_true", help="render every id set and judge the audio")
    ap.add_argument("--beats", nargs="*", default=[], choices=["ids", "tags", "text", "none"],
                    help="beat grid sources for a semantic LM that reads one (first setting only)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ml = MusicLM.from_pretrained(args.model)
    items = torch.load(args.tokens / "val.pt", weights_only=False)["items"][: args.clips]
    rows, _ = manifest_rows(args.manifest, require_caption=False)
    by_path = {str(Path(r["path"]).resolve()): r for r in rows}
    matched = [by_path[str(Path(it["path"]).resolve())] for it in items]
    texts = [r.get("full_caption") or r["caption"] for r in matched]
    tags = [r["tags"] for r in matched]
    shuffled = texts[1:] + texts[:1]  # each clip scored against its own tags with another clip's caption
    fr = float(ml.semantic_tokenizer.frame_rate)
    frames = int(10 * fr)
    judge = Judge() if args.render else None
    report: dict = {"clips": len(items), "drum_clips": sum(bool(t.get("drums")) for t in tags), "sets": {}}
    t0 = time.time()

    def record(name: str, ids: torch.Tensor, wavs: torch.Tensor | None) -> None:
        entry = summarise(rhythm_stats(ml, ids, tags, fr), tags)
        if wavs is not None and judge is not None:
            entry["judge"] = judge_wavs(judge, wavs, ml.sample_rate, tags)
        report["sets"][name] = entry
        print(name, json.dumps(entry), f"{time.time() - t0:.0f}s", flush=True)

    true = torch.stack([it["semantic"][:frames].long() for it in items])
    true_wavs = None
    if args.render:
        assert isinstance(ml.acoustic_lm, LatentAcousticLM), "--render renders true ids with a latent stage only"
        _, ac_scale = ml.default_cfg_scale
        parts = []
        with torch.no_grad():
            for i in range(0, len(items), args.batch):
                acoustic = ml.text_condition(texts[i : i + args.batch]).acoustic
                lat = ml.acoustic_lm.generate(true[i : i + args.batch], acoustic, cfg_scale=ac_scale)
                parts.append(ml.codec.decode_latents(lat)[:, 0])  # type: ignore[operator]
        true_wavs = torch.cat(parts)
    record("true", true, true_wavs)
    for setting in args.settings:
        fields = setting.split(":")
        temp, top_k = float(fields[0]), int(fields[1])
        mix = float(fields[2]) if len(fields) > 2 else None
        name = f"t{temp:g}_k{top_k}" + (f"_mix{mix:g}" if mix is not None else "")
        for label, prompts in (("", texts), ("shuffled/", shuffled)):
            if label and setting != args.settings[0]:
                continue  # the control once, at the first setting
            gen = torch.Generator().manual_seed(args.seed)
            ids, wavs = [], []
            for i in range(0, len(items), args.batch):
                res = ml.generate(prompts[i : i + args.batch], seconds=10, temperatures=(temp, 1.0, 1.0),
                                  top_k=top_k, prior_mix=mix, generator=gen)  # fmt: skip
                ids.append(res.semantic[:, :frames])
                wavs.append(res.wavs)
            record(label + name, torch.cat(ids), torch.cat(wavs) if args.render else None)
    if args.beats:
        temp, top_k = float(args.settings[0].split(":")[0]), int(args.settings[0].split(":")[1])
        grids = {
            "ids": torch.tensor([grid_of_ids(ml.semantic_tokenizer, t) for t in true]),
            "tags": torch.tensor([[60.0 * fr / float(t["tempo_bpm"]), 0.0] for t in tags]),
            "none": torch.zeros(len(items), 2),
        }
        for source in args.beats:
            gen = torch.Generator().manual_seed(args.seed)
            ids, wavs = [], []
            for i in range(0, len(items), args.batch):
                beat = None if source == "text" else grids[source][i : i + args.batch]
                res = ml.generate(texts[i : i + args.batch], seconds=10, temperatures=(temp, 1.0, 1.0), top_k=top_k,
                                  generator=gen, beat=beat)  # fmt: skip
                ids.append(res.semantic[:, :frames])
                wavs.append(res.wavs)
            record(f"beat_{source}", torch.cat(ids), torch.cat(wavs) if args.render else None)
    args.out.write_text(json.dumps(report, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()

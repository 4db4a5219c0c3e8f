"""Do the key and drums labels reach the generated semantic ids, and does a label-conditional id bias help?
(eighteenth session)

Semantic ids only (no acoustic stage, no audio): for validation prompts, the ids a model's semantic LM
generates are scored by the key their cluster centres' mean chroma gives (`evaluation.guidance.semantic_key`,
against the prompt's key) and, for prompts that ask for drums / none, by the pulse clarity of the onset curve
the ids imply (`semantic.beat.estimate_beat` strength: the real ids of drum clips 0.63, of drumless ones 0.36).

Settings `bk:bd` add a logit bias to every step: ``bk * PMI(id; key label) + bd * PMI(id; drums label)``, where
PMI is log p(id | label) / p(id) counted over the training clips' ids with their labels read from their
audio latents (the labels the LM trained with), so each step favours the ids typical of the asked key and
drums without mixing in a unigram distribution (which breaks the beat, RESULTS.md).

    python benchmarks/label_bias_probe.py --model /work/runs/model_ctl_prior --tokens /work/runs/tokens_spec \\
        --prompts /work/data/synth10k/val_generated.jsonl --num-prompts 200 --settings 0:0 0.5:0 1:0 0:1 \\
        --out benchmarks/results/label_bias_valgen200.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from musiclm_pytorch.evaluation.guidance import load_prompts, semantic_key
from musiclm_pytorch.evaluation.judge import accuracy, key_scores
from musiclm_pytorch.lm import SamplingConfig
from musiclm_pytorch.lm.controls import CONTROL_CLASSES, ControlReader, label_pmi
from musiclm_pytorch.pipeline import MusicLM
from musiclm_pytorch.semantic.beat import estimate_beat, onset_from_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model folder whose semantic LM reads key and drums labels")
    ap.add_argument("--tokens", type=Path, required=True, help="the training tokens (ids and audio latents)")
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--num-prompts", type=int, default=200)
    ap.add_argument("--settings", nargs="+", default=["0:0", "1:0", "0:1"], help="bk:bd pairs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ml = MusicLM.from_pretrained(args.model)
    tok, lm = ml.semantic_tokenizer, ml.semantic_lm
    items = torch.load(args.tokens / "train.pt", weights_only=False)["items"]
    reader = ControlReader.from_mulan(ml.conditioner.mulan)
    labels = reader.read(torch.stack([it["mulan"].float() for it in items]))
    counts = torch.stack([torch.bincount(it["semantic"].long(), minlength=lm.vocab_size) for it in items])
    key_pmi, drum_pmi = (label_pmi(counts, labels[:, col], n) for col, n in enumerate(CONTROL_CLASSES))
    prompts = load_prompts(args.prompts, args.num_prompts, seed=args.seed)
    texts = [p["text"] for p in prompts]
    frames = int(10 * tok.frame_rate)
    temperature = ml.default_temperatures[0]
    report: dict = {"prompts": len(prompts), "temperature": temperature, "settings": {}}
    for setting in args.settings:
        bk, bd = (float(v) for v in setting.split(":"))
        gen = torch.Generator().manual_seed(args.seed)
        made = []
        for i in range(0, len(texts), 50):
            part = texts[i : i + 50]
            cond = ml.text_condition(part)
            ctl = cond.controls if cond.controls is not None else reader.read(ml.prior.latent(cond.text))
            bias = bk * key_pmi[ctl[:, 0]] + bd * drum_pmi[ctl[:, 1]]
            made.append(lm.generate(steps=frames, cond_ids=cond.cond_ids, prior_log_probs=cond.prior_log_probs,
                                    prior_mix=ml.prior_mix(None),
                                    sampling=SamplingConfig(temperature, 0, 1.0, ml.default_cfg_scale[0]),
                                    generator=gen, cond_latent=ml.semantic_latent(cond),
                                    beat=ml.beat_grids(part, None, cond.text), logit_bias=bias,
                                    controls=cond.controls))  # fmt: skip
        ids = torch.cat(made)
        keyed = [key_scores(*semantic_key(row, tok), p["tags"]["tonic"], p["tags"]["mode"])  # type: ignore[misc]
                 for row, p in zip(ids, prompts) if "tonic" in p["tags"]]  # fmt: skip
        pulse = [estimate_beat(onset_from_ids(tok, row), float(tok.frame_rate))[2] for row in ids]
        drums = [bool(p["tags"].get("drums")) for p in prompts]
        report["settings"][setting] = {
            "semantic_key": accuracy(keyed),
            "pulse_drums": round(float(np.mean([s for s, d in zip(pulse, drums) if d])), 3),
            "pulse_no_drums": round(float(np.mean([s for s, d in zip(pulse, drums) if not d])), 3),
            "distinct_ids": round(float(np.mean([len(set(r.tolist())) for r in ids])), 1),
        }
        print(setting, json.dumps(report["settings"][setting]), flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

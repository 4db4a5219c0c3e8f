# ruff: noqa
# Session-14 experiment script, run from the repo root (figures in RESULTS.md); to be folded into musiclm eval.
"""Drums: the same flow stage on true vs generated semantic ids (same clips, same conditioning)."""

import json, sys, time
from pathlib import Path
import torch
from musiclm_pytorch.checkpoint import load
from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.judge import Judge, score
from musiclm_pytorch.pipeline import MusicLM
from musiclm_pytorch.lm.transformer import SamplingConfig

torch.set_num_threads(2)
N = int(sys.argv[1])
out_path = sys.argv[2]
items = torch.load("/work/runs/tokens_spec/val.pt", weights_only=False)["items"][:N]
rows, _ = manifest_rows(Path("/work/data/synth10k/val.jsonl"), require_caption=False)
by = {str(Path(r["path"]).resolve()): r for r in rows}
m = [by[str(Path(it["path"]).resolve())] for it in items]
texts = [r.get("full_caption") or r["caption"] for r in m]
tags = [r["tags"] for r in m]
ml = MusicLM.from_pretrained()
codec = ml.codec
frames = 250
true = torch.stack([it["semantic"][:frames].long() for it in items])
gen = torch.Generator().manual_seed(1)
with torch.no_grad():
    tc = ml.text_condition(texts)
    cond, prior_lp, acoustic, text = tc
    semlat = ml.semantic_latent(acoustic, text)
    made = torch.cat(
        [
            ml.semantic_lm.generate(
                steps=frames,
                cond_ids=cond[i : i + 16],
                sampling=SamplingConfig(1.0, 0, 1.0, 3.0),
                generator=gen,
                prior_log_probs=prior_lp[i : i + 16],
                prior_mix=0.25,
                cond_latent=semlat[i : i + 16],
            )
            for i in range(0, N, 16)
        ]
    )
flows = {a: load(p).eval() for a, p in [(a, p) for a, p in (x.split("=") for x in sys.argv[3:])]}
judge = Judge()
rep = {}


def judge_all(wavs):
    preds = [judge.predict(w[0].numpy(), codec.sample_rate) for w in wavs]
    yes = [p["drums"] for p, t in zip(preds, tags) if t.get("drums")]
    no = [not p["drums"] for p, t in zip(preds, tags) if t.get("drums") is False]
    acc = __import__("musiclm_pytorch.evaluation.judge", fromlist=["accuracy"]).accuracy(
        [score(p, t) for p, t in zip(preds, tags)]
    )
    return {
        "drums_yes": sum(yes) / len(yes),
        "drums_no": sum(no) / len(no),
        "n_yes": len(yes),
        "family": acc["family"]["accuracy"],
        "key_tonic": acc["key_tonic"]["accuracy"],
        "tempo_class": acc["tempo_class"]["accuracy"],
    }


import numpy as np
from scipy.fft import dct

Bm = codec.basis.float()
F_ = Bm.shape[0]
D = torch.from_numpy(dct(np.eye(F_), norm="ortho", axis=0)).float()
mask = torch.zeros(F_)
mask[:20] = 1
M20 = Bm.T @ D.T @ torch.diag(mask) @ D @ Bm


def env3(st, s, c):
    b = s.shape[0]
    drop = torch.arange(2 * b) >= b
    y = st(torch.cat([s, s]), torch.cat([c, c]), drop=drop)
    return y[:b] + 2 * (y[:b] - y[b:]) @ M20


t0 = time.time()
for ids_name, ids in (("true", true), ("generated", made)):
    for name, st in [("latent_g3", ml.acoustic_lm), ("latent_env3", ml.acoustic_lm)] + list(flows.items()):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if name == "latent_g3":
                w = torch.cat(
                    [
                        codec.decode_latents(st.generate(ids[i : i + 16], acoustic[i : i + 16], cfg_scale=3.0))
                        for i in range(0, N, 16)
                    ]
                )
            elif name == "latent_env3":
                w = torch.cat(
                    [
                        codec.decode_latents(env3(st.float(), ids[i : i + 16], acoustic[i : i + 16]))
                        for i in range(0, N, 16)
                    ]
                )
            else:
                w = torch.cat(
                    [
                        codec.decode_latents(
                            st.generate(
                                ids[i : i + 16],
                                acoustic[i : i + 16],
                                cfg_scale=1.0,
                                flow_cfg_scale=2.0,
                                temperature=1.0,
                                steps=16,
                                generator=g,
                            )
                        )
                        for i in range(0, N, 16)
                    ]
                )
        rep[f"{ids_name}/{name}"] = judge_all(w)
        print(ids_name, name, rep[f"{ids_name}/{name}"], round(time.time() - t0), flush=True)
Path(out_path).write_text(json.dumps(rep, indent=1))

# ruff: noqa
# Session-14 experiment script, run from the repo root (figures in RESULTS.md); to be folded into musiclm eval.
import json, sys, time
from pathlib import Path
import numpy as np, torch
from scipy.fft import dct
from musiclm_pytorch.checkpoint import load
from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.evaluation.acoustic_oracle import knn_prior
from musiclm_pytorch.evaluation.codec_eval import score_versions
from musiclm_pytorch.evaluation.judge import Judge
from musiclm_pytorch.mulan.model import MuLaN

torch.set_num_threads(2)
M = "src/musiclm_pytorch/pretrained/musiclm_small/"
N = int(sys.argv[1])
out_path = sys.argv[2]
items = torch.load("/work/runs/tokens_spec/val.pt", weights_only=False)["items"][:N]
bank = torch.stack(
    [it["mulan"].float() for it in torch.load("/work/runs/tokens_spec/train.pt", weights_only=False)["items"]]
)
rows, _ = manifest_rows(Path("/work/data/synth10k/val.jsonl"), require_caption=False)
by = {str(Path(r["path"]).resolve()): r for r in rows}
m = [by[str(Path(it["path"]).resolve())] for it in items]
texts = [r.get("full_caption") or r["caption"] for r in m]
tags = [r["tags"] for r in m]
latent = load(M + "acoustic_lm.safetensors").eval().float()
codec = load(M + "codec.safetensors").eval()
mulan = load(M + "conditioning.safetensors", expected=MuLaN).eval()
frames = min(len(it["semantic"]) for it in items)
sem = torch.stack([it["semantic"][:frames].long() for it in items])
codes = torch.stack([it["codes"][:, : frames * 2].long() for it in items])
with torch.no_grad():
    text = torch.cat([mulan.get_text_latents(raw_texts=texts[i : i + 64]) for i in range(0, len(texts), 64)])
prior = knn_prior(text, bank, 8)
B = codec.basis.float()  # [F, L]
F_ = B.shape[0]
D = torch.from_numpy(dct(np.eye(F_), norm="ortho", axis=0)).float()  # [F,F] rows: cosines


def lifter_matrix(k):
    mask = torch.zeros(F_)
    mask[:k] = 1
    S = D.T @ torch.diag(mask) @ D
    return B.T @ S @ B  # [L, L]


@torch.no_grad()
def both(s, c):
    b = s.shape[0]
    drop = torch.arange(2 * b) >= b
    y = latent(torch.cat([s, s]), torch.cat([c, c]), drop=drop)
    return y[:b], y[b:]


@torch.no_grad()
def render(fn):
    outs = []
    for i in range(0, N, 16):
        c, n = both(sem[i : i + 16], prior[i : i + 16])
        outs.append(codec.decode_latents(fn(c, n)))
    return torch.cat(outs)


def g(s):
    return lambda c, n: n + s * (c - n)


def env(s, k):
    Mk = lifter_matrix(k)
    return lambda c, n: c + (s - 1) * (c - n) @ Mk


def tmean(s):
    return lambda c, n: c + (s - 1) * (c - n).mean(1, keepdim=True)


def env_tmean(s, k):
    Mk = lifter_matrix(k)
    return lambda c, n: c + (s - 1) * (c - n).mean(1, keepdim=True) @ Mk


def sharpen(s, a):  # guided, then temporal deviations amplified by a
    return lambda c, n: (lambda x: x.mean(1, keepdim=True) + a * (x - x.mean(1, keepdim=True)))(n + s * (c - n))


arms = {
    "g3": g(3),
    "g1": g(1),
    "env3_k20": env(3, 20),
    "env3_k40": env(3, 40),
    "tmean3": tmean(3),
    "env5_k20": env(5, 20),
    "envtmean3_k20": env_tmean(3, 20),
    "g3_sharp1.5": sharpen(3, 1.5),
}
sel = sys.argv[3].split(",") if len(sys.argv) > 3 else list(arms)
t0 = time.time()
versions = {"codec_ceiling": torch.cat([codec.decode(c) for c in codes.split(16)])}
for a in sel:
    versions[a] = render(arms[a])
rep = score_versions(versions, texts, tags, sample_rate=codec.sample_rate, mulan=mulan, judge=Judge())
for k in versions:
    rep[k].pop("judge_predictions", None)
rep["wall"] = time.time() - t0
Path(out_path).write_text(json.dumps(rep, indent=1))
for k in versions:
    j = rep[k]["judge"]
    print(
        k,
        "r1",
        rep[k]["caption_r1"],
        "mcc",
        rep[k]["mcc"],
        {a: (v.get("accuracy") if isinstance(v, dict) else v) for a, v in j.items()},
        "flips",
        rep[k]["drum_flips"]["rate"],
    )

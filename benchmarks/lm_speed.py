"""Stage-LM decoding and training speed on CPU at the reference's size (ARCHITECTURE.md §5).

Usage::

    python benchmarks/lm_speed.py [--threads 2] [--tokens 256]

Reference (lucidrains audiolm-pytorch, dim 512, depth 6, heads 8, batch 1, CFG 3, KV cache, 1 thread
fp32): semantic 22 tok/s, coarse 18 tok/s, fine 17 tok/s; train step 4 x 512 tokens 6.4 s. Ours: the
same dims, 12 MuLaN conditioning tokens, CFG 3 (cond + null rows in one batched forward), one JSON
line per case. ``int8`` is :meth:`TokenLM.quantize_int8` (bf16 activations, int8 weight matrices);
bf16 and int8 lines carry the KL divergence of their next-token distributions from fp32's.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from musiclm_pytorch.lm import SamplingConfig, TokenLM

REFERENCE_TOK_S = {"semantic": 22.0, "coarse": 18.0, "fine": 17.0}
VOCAB = {"semantic": 500, "coarse": 500 + 3 * 1024, "fine": 8 * 1024}


def _lm(stage: str, tokens: int, precision: str) -> TokenLM:
    torch.manual_seed(0)
    lm = TokenLM(vocab_size=VOCAB[stage], dim=512, depth=6, heads=8, dim_head=64, num_cond=12, cond_vocab=1024,
                 max_seq_len=tokens + 8).eval()  # fmt: skip
    if precision == "int8":
        return lm.quantize_int8()
    return lm.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[precision])


@torch.no_grad()
def fidelity(stage: str, precision: str) -> dict:
    """How far the next-token distributions of ``precision`` are from fp32 (random weights, 4 x 128 tokens)."""
    ref, lm = _lm(stage, 128, "float32"), _lm(stage, 128, precision)
    g = torch.Generator().manual_seed(1)
    tokens, cond = torch.randint(0, VOCAB[stage], (4, 128), generator=g), torch.randint(0, 1024, (4, 12), generator=g)
    p, q = ref(tokens, cond).float().log_softmax(-1), lm(tokens, cond).float().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    agree = (p.argmax(-1) == q.argmax(-1)).float().mean().item()
    return {"kl_vs_fp32": round(kl, 6), "top1_agreement_vs_fp32": round(agree, 4)}


def decode(stage: str, tokens: int, precision: str) -> dict:
    lm = _lm(stage, tokens, precision)
    cond = torch.randint(0, 1024, (1, 12))
    sampling = SamplingConfig(temperature=1.0, cfg_scale=3.0)
    lm.generate(steps=8, cond_ids=cond, sampling=sampling)  # warm-up
    t0 = time.perf_counter()
    lm.generate(steps=tokens, cond_ids=cond, sampling=sampling, generator=torch.Generator().manual_seed(0))
    sec = time.perf_counter() - t0
    return {"case": f"{stage}_decode", "dtype": precision, "tokens": tokens,
            "tokens_per_s": round(tokens / sec, 1), "reference_tokens_per_s": REFERENCE_TOK_S[stage],
            "speedup": round(tokens / sec / REFERENCE_TOK_S[stage], 1)}  # fmt: skip


def train_step(bf16: bool) -> dict:
    torch.manual_seed(0)
    lm = TokenLM(vocab_size=500, dim=512, depth=6, heads=8, dim_head=64, num_cond=12, cond_vocab=1024,
                 max_seq_len=512).train()  # fmt: skip
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    tokens, cond = torch.randint(0, 500, (4, 512)), torch.randint(0, 1024, (4, 12))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = lm.loss(tokens, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[1]
    return {"case": "semantic_train_step_4x512", "dtype": "bf16-autocast" if bf16 else "float32",
            "seconds": round(sec, 3), "tokens_per_s": round(4 * 512 / sec), "reference_seconds": 6.4,
            "speedup": round(6.4 / sec, 1),
            "parameters_M": round(sum(p.numel() for p in lm.parameters()) / 1e6, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for stage in ("semantic", "coarse", "fine"):
        for precision in ("float32", "bfloat16", "int8"):
            extra = fidelity(stage, precision) if precision != "float32" else {}
            print(json.dumps({**decode(stage, a.tokens, precision), **extra, "threads": a.threads}), flush=True)
    for bf16 in (False, True):
        print(json.dumps({**train_step(bf16), "threads": a.threads}), flush=True)


if __name__ == "__main__":
    main()

"""Does a short CPU run teach the `small` codec the waveform (SI-SNR), and is the RVQ the bottleneck?

A stripped training loop over clips held in memory (random crops), printing one JSON line every
``--eval-every`` steps: losses, and lag-aligned SI-SNR / log-mel MAE on held-out clips (the same
functions as ``musiclm eval codec``). ``--no-quantizer`` trains the encoder + decoder as a plain
autoencoder (no RVQ), ``--complex-stft-weight`` adds an L1 on the real and imaginary STFT parts
(512 and 2048 points), a phase-sensitive loss. ``--sines`` replaces the corpus by four fixed tones:
the overfitting sanity check that the architecture can learn phase at all.

    python benchmarks/codec_phase_probe.py --corpus /work/data/synth10k --steps 400 --wave-weight 50 \
        --lr 1e-3 --beta1 0.9 --no-quantizer
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from musiclm_pytorch.audio import resample
from musiclm_pytorch.codec.losses import MultiScaleMelLoss
from musiclm_pytorch.codec.soundstream import SoundStream
from musiclm_pytorch.evaluation.codec_eval import align, log_mel_mae, si_snr
from musiclm_pytorch.training.codec import CODEC_PRESETS

SR = 16000


def load_clips(corpus: Path, manifest: str, n: int) -> list[torch.Tensor]:
    out = []
    for line in (corpus / manifest).read_text().splitlines()[:n]:
        row = json.loads(line)
        x, sr = sf.read(corpus / row["path"], dtype="float32")
        x = x.mean(1) if x.ndim > 1 else x
        out.append(torch.from_numpy(resample(x, sr, SR) if sr != SR else x))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=Path("/work/data/synth10k"))
    p.add_argument("--train-clips", type=int, default=300)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-seconds", type=float, default=0.5)
    p.add_argument("--wave-weight", type=float, default=1.0)
    p.add_argument("--complex-stft-weight", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--no-quantizer", action="store_true")
    p.add_argument("--sines", action="store_true")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    crop = int(SR * args.crop_seconds)
    if args.sines:
        t = torch.arange(crop) / SR
        train = [0.3 * torch.sin(2 * math.pi * f * t) for f in (220.0, 330.0, 440.0, 523.0)]
        val = train[:1]
    else:
        train = load_clips(args.corpus, "train.jsonl", args.train_clips)
        val = [v[: SR * 3] for v in load_clips(args.corpus, "val.jsonl", 6)]
    codec = SoundStream(**CODEC_PRESETS["small"])
    mel = MultiScaleMelLoss(sample_rate=SR)
    opt = torch.optim.AdamW(codec.parameters(), lr=args.lr, betas=(args.beta1, 0.99 if args.beta1 > 0.6 else 0.9))
    g = torch.Generator().manual_seed(0)

    def reconstruct(wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if args.no_quantizer:
            return codec.decoder(codec._latents(wav).transpose(1, 2)), wav.new_zeros(())
        recon, _, commit = codec(wav)
        return recon, commit

    t0 = time.time()
    for step in range(1, args.steps + 1):
        if args.sines:
            wav = torch.stack(train)[:, None]
        else:
            idx = torch.randint(len(train), (args.batch_size,), generator=g).tolist()
            starts = [int(torch.randint(len(train[i]) - crop, (1,), generator=g)) for i in idx]
            wav = torch.stack([train[i][s : s + crop] for i, s in zip(idx, starts)])[:, None]
        recon, commit = reconstruct(wav)
        recon = recon[..., :crop]
        loss_mel, loss_wave = mel(recon, wav), F.l1_loss(recon, wav)
        loss = (0.0 if args.sines else 1.0) * loss_mel + args.wave_weight * loss_wave + commit
        for n_fft in (512, 2048) if args.complex_stft_weight else ():
            win = torch.hann_window(n_fft)
            a = torch.stft(recon[:, 0], n_fft, n_fft // 4, window=win, return_complex=True)
            b = torch.stft(wav[:, 0], n_fft, n_fft // 4, window=win, return_complex=True)
            loss = loss + args.complex_stft_weight * (torch.view_as_real(a) - torch.view_as_real(b)).abs().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            codec.eval()
            scores = []
            for v in val:
                with torch.no_grad():
                    y = reconstruct(v[None, None])[0][0, 0, : len(v)].numpy()
                shifted, lag = align(y, v.numpy())
                scores.append((si_snr(shifted, v.numpy()), log_mel_mae(torch.from_numpy(shifted), v, sample_rate=SR)))
            codec.train()
            si, mae = (round(float(np.mean([s[k] for s in scores])), 3) for k in (0, 1))
            record = {"step": step, "seconds": round(time.time() - t0), "mel": round(loss_mel.item(), 3),
                      "wave_l1": round(loss_wave.item(), 4), "val_si_snr_db": si, "val_log_mel_mae": mae}  # fmt: skip
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

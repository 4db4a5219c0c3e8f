"""Train a codec: ``musiclm train codec --data corpus/ --out runs/codec [--preset mdct]``.

Two architectures share this loop (``CODEC_PRESETS``): the MDCT transform codec (our default,
:class:`~musiclm_pytorch.codec.MDCTCodec`) and the SoundStream time-domain codec. A fresh MDCT codec
is first fitted to a sample of the training clips (principal components + residual k-means,
``MDCTCodec.fit_init``), so step 0 is already a working codec. Then one loop: the generator
(encoder + RVQ + decoder) minimises multi-scale mel + waveform SNR and L1 (which pin phase and
delay, so SI-SNR can rise) + commitment, and, from
``adversarial_start`` on, hinge adversarial + feature-matching losses against the multi-scale STFT
discriminator, which trains in the same step. Accelerate for devices and processes; atomic
checkpoints (``codec.safetensors`` + ``train_state.pt`` with both optimizers, step, data position,
RNG); rerunning the command resumes. Every ``eval_every`` steps: SI-SNR and log-mel distance per
number of levels on held-out clips, and a spectrogram comparison PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..checkpoint import load, save
from ..codec.losses import (
    MultiScaleMelLoss,
    STFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)
from ..codec.mdct import MDCTCodec
from ..codec.soundstream import SoundStream
from ..data.datasets import BadRow, CaptionedAudioDataset, ClipOptions, SkipStats, collate, data_rows
from ..evaluation.codec_eval import evaluate_codec
from .common import EpochCursor, atomic_torch_save, load_config, make_accelerator
from .core import RunSettings, TrainRun

CODEC_CLASSES: dict[str, type[SoundStream] | type[MDCTCodec]] = {"soundstream": SoundStream, "mdct_codec": MDCTCodec}
CODEC_PRESETS: dict[str, dict[str, Any]] = {
    # the default: MDCT transform codec, 16 kHz / 320 = 50 Hz, 8 x 1024 codes = 4 kbps (coarse 3 = 1.5 kbps)
    "mdct": dict(
        arch="mdct_codec", sample_rate=16000, hop=320, dim=64, width=256, depth=4, num_quantizers=8, codebook_size=1024
    ),  # fmt: skip
    "mdct_tiny": dict(arch="mdct_codec", hop=32, dim=8, width=16, depth=1, num_quantizers=3, codebook_size=16),
    # SoundStream (SEANet) presets
    "tiny": dict(strides=[2, 4], channels=8, dim=16, num_quantizers=3, codebook_size=16),
    # 16 kHz / 320 = 50 Hz, 8 x 1024 codes = 4 kbps (coarse 3 levels = 1.5 kbps)
    "small": dict(sample_rate=16000, strides=[2, 4, 5, 8], channels=16, dim=128, num_quantizers=8, codebook_size=1024),
    # MusicLM: 24 kHz / 480 = 50 Hz, 12 x 1024 = 6 kbps
    "paper": dict(sample_rate=24000, strides=[3, 4, 5, 8], channels=32, dim=256, num_quantizers=12, codebook_size=1024),
}


@dataclass
class CodecTrainConfig(RunSettings):
    data: str = ""
    val_data: str | None = None
    out: str = "runs/codec"
    preset: str = "mdct"
    batch_size: int = 16
    crop_seconds: float = 1.0
    lr: float = 3e-4
    disc_lr: float = 3e-4
    max_steps: int = 5000
    adversarial_start: int = 1000
    mel_weight: float = 1.0
    wave_weight: float = 1.0  # L1 on the waveform: the mel loss alone leaves phase and delay free (SI-SNR)
    snr_weight: float = 0.1  # minus the per-clip SNR in dB (what SI-SNR measures, loud and quiet clips alike)
    init_clips: int = 512  # MDCT codec: clips whose frames fit the projection and codebooks before training
    adversarial_weight: float = 0.1
    feature_weight: float = 1.0
    grad_clip: float = 1.0
    num_workers: int = 2
    eval_every: int = 500
    eval_clips: int = 16

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data is required: a corpus folder, a JSONL manifest or an audio folder")
        if self.preset not in CODEC_PRESETS:
            raise ValueError(f"unknown codec preset {self.preset!r}; choose from {sorted(CODEC_PRESETS)}")


def _rows(path: str, val: bool = False) -> tuple[list[dict[str, Any]], list[BadRow]]:
    try:
        return data_rows(path, split="val" if val else "train", require_caption=False, what="codec data")
    except ValueError:  # a folder without audio files: nothing to validate on (train rows still must exist)
        if val and Path(path).is_dir():
            return [], []
        raise


def build_codec(preset: str) -> SoundStream | MDCTCodec:
    """A fresh codec of the named preset (``CODEC_PRESETS``)."""
    if preset not in CODEC_PRESETS:
        raise ValueError(f"unknown codec preset {preset!r}; choose from {sorted(CODEC_PRESETS)}")
    kwargs = dict(CODEC_PRESETS[preset])
    return CODEC_CLASSES[kwargs.pop("arch", "soundstream")](**kwargs)


def snr_loss(recon: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
    """Mean over clips of ``10 log10(|recon - wav|^2 / |wav|^2)``: minus the SNR in dB, each clip
    weighted alike whatever its loudness (floored at -40 dB so silent clips do not dominate)."""
    err = (recon - wav).pow(2).flatten(1).sum(-1)
    sig = wav.pow(2).flatten(1).sum(-1)
    return (10 * torch.log10(err / (sig + 1e-8) + 1e-4)).mean()


def _fit_init(codec: MDCTCodec, rows: list[dict[str, Any]], cfg: CodecTrainConfig) -> dict[str, float]:
    """Fit a fresh MDCT codec's projection and codebooks on ``cfg.init_clips`` training clips."""
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.init_clips]
    opts = ClipOptions(sample_rate=codec.sample_rate, crop_seconds=4.0, crop="random", min_seconds=0.1)
    dataset = CaptionedAudioDataset([rows[i] for i in order.tolist()], opts, seed=cfg.seed)
    wavs = [item["wav"] for item in (dataset[i] for i in range(len(dataset))) if isinstance(item, dict)]
    if not wavs:
        raise ValueError("no readable clip to fit the MDCT codec on")
    return codec.fit_init(wavs, seed=cfg.seed)


def spectrogram_png(codec: SoundStream | MDCTCodec, wav: torch.Tensor, path: Path) -> Path:
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = codec.encode(wav.reshape(1, 1, -1))
    recon = codec.decode(codes)[0, 0, : wav.shape[-1]]
    coarse = codec.decode(codes[:, : max(1, codec.num_quantizers // 2)])[0, 0]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    mels = [librosa.feature.melspectrogram(y=x.numpy(), sr=codec.sample_rate, n_mels=80)
            for x in (wav, recon, coarse[: wav.shape[-1]])]  # fmt: skip
    peak = float(mels[0].max()) or 1.0  # dB relative to the original's loudest bin, the same for all three
    levels = (f"all {codec.num_quantizers} levels", f"first {max(1, codec.num_quantizers // 2)} levels")
    for ax, mel, title in zip(axes, mels, ("original", *levels)):
        ax.imshow(librosa.power_to_db(mel, ref=peak), origin="lower", aspect="auto", vmin=-80, vmax=0)
        ax.set_title(title)
        ax.set_ylabel("mel band")
    axes[-1].set_xlabel("frame (hop 512)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def train_codec(cfg: CodecTrainConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    rows, bad = _rows(cfg.data)
    skipped = SkipStats()
    skipped.update(bad)
    if not rows:
        raise ValueError(f"codec data {cfg.data!r} has no usable rows: {skipped.why_empty()}")
    accelerator = make_accelerator()
    run = TrainRun(cfg, out=out, accelerator=accelerator, desc="codec", model_file="codec.safetensors")
    val_rows = (
        _rows(cfg.val_data or cfg.data, val=True)[0][: cfg.eval_clips]
        if (cfg.val_data or Path(cfg.data).is_dir())
        else []
    )
    disc_path = out / "discriminator.pt"
    torch.manual_seed(cfg.seed)
    codec = load(run.model_file) if run.resuming else build_codec(cfg.preset)
    if not isinstance(codec, (SoundStream, MDCTCodec)):
        raise ValueError(f"{run.model_file} holds a {type(codec).__name__}, not a codec this trainer trains")
    if not run.resuming and isinstance(codec, MDCTCodec) and cfg.init_clips:
        fitted = _fit_init(codec, rows, cfg)
        (out / "fit_init.json").write_text(json.dumps(fitted, indent=2))
        accelerator.print(f"MDCT codec fitted on {cfg.init_clips} clips: {fitted}")
    disc = STFTDiscriminator()
    mel_loss = MultiScaleMelLoss(sample_rate=codec.sample_rate)
    opt_g = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
    cursor = EpochCursor(len(rows), batch_size=cfg.batch_size, num_processes=accelerator.num_processes, seed=cfg.seed)
    state = run.restore(model=codec, disc=disc, opt_g=opt_g, opt_d=opt_d, cursor=cursor)
    if run.resuming and "disc" not in state and disc_path.is_file():  # train states that kept it beside
        disc.load_state_dict(torch.load(disc_path, weights_only=True))
    codec, disc, mel_loss, opt_g, opt_d = accelerator.prepare(codec, disc, mel_loss, opt_g, opt_d)
    model: SoundStream | MDCTCodec = accelerator.unwrap_model(codec)
    opts = ClipOptions(sample_rate=model.sample_rate, crop_seconds=cfg.crop_seconds, crop="random")
    dataset = CaptionedAudioDataset(rows, opts, seed=cfg.seed)
    report: dict[str, Any] = {}

    def make_loader(epoch: int, order: list[int]) -> Any:
        dataset.set_epoch(epoch)
        return accelerator.prepare(DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, collate_fn=collate,
                                              num_workers=cfg.num_workers, drop_last=True))  # fmt: skip

    def validate() -> dict[str, Any]:
        val = CaptionedAudioDataset(
            val_rows, ClipOptions(sample_rate=model.sample_rate, crop_seconds=None, min_seconds=0.5)
        )
        wavs = [item["wav"] for item in (val[i] for i in range(len(val))) if isinstance(item, dict)]
        result = evaluate_codec(model, wavs)
        flat = {f"val_si_snr_q{q}": v["si_snr_db"] for q, v in result["per_levels"].items()}
        flat.update({f"val_mel_q{q}": v["log_mel_mae"] for q, v in result["per_levels"].items()})
        run.write(flat)
        (out / f"eval_step{run.step}.json").write_text(json.dumps(result, indent=2))
        if wavs:
            spectrogram_png(model, wavs[0][: model.sample_rate * 5], out / "spectrograms.png")
        return result

    def export() -> None:
        save(model, run.model_file, extra={"step": run.step})
        # the discriminator's weights are in the train state: this copy is for users who fine-tune on
        atomic_torch_save(accelerator.unwrap_model(disc).state_dict(), disc_path)

    if val_rows and not run.resuming and run.is_main:  # step 0: what the initialisation gives
        report = validate()
    batches = cursor.batches(make_loader) if run.running else iter(())
    for batch in batches:
        skipped.update(batch["skipped"])
        if len(batch["paths"]) == 0:
            continue
        wav = batch["wavs"][:, None]
        codec.train()
        recon, _, commit = codec(wav)
        recon = recon[..., : wav.shape[-1]]
        adversarial = run.step >= cfg.adversarial_start
        if adversarial:  # discriminator step on detached reconstructions
            d_loss = discriminator_hinge_loss(disc(wav), disc(recon.detach()))
            run.update(d_loss, opt_d, disc.parameters(), what="discriminator loss")
        g_mel = mel_loss(recon, wav)
        g_wave = F.l1_loss(recon, wav)
        g_snr = snr_loss(recon, wav)
        g_loss = cfg.mel_weight * g_mel + cfg.wave_weight * g_wave + cfg.snr_weight * g_snr + commit
        record: dict[str, Any] = {
            "mel": g_mel.item(), "wave": g_wave.item(), "snr_db": -g_snr.item(), "commit": commit.item(),
        }  # fmt: skip
        if adversarial:
            fake, real = disc(recon), disc(wav)
            g_adv, g_fm = generator_hinge_loss(fake), feature_matching_loss(real, fake)
            g_loss = g_loss + cfg.adversarial_weight * g_adv + cfg.feature_weight * g_fm
            record.update(adv=g_adv.item(), fm=g_fm.item(), disc=d_loss.item())
        # a NaN never reaches the weights or a checkpoint
        run.update(g_loss, opt_g, codec.parameters(), grad_clip=cfg.grad_clip)
        run.advance(items=wav.shape[0])
        if run.due(cfg.log_every):
            run.log(record, rate="clips_per_s", postfix=("mel",))
        if val_rows and run.due(cfg.eval_every) and run.is_main:
            report = validate()
        if run.due(cfg.checkpoint_every):
            keys = ["mel", "snr_db", "commit", "adv", "fm", "disc", "val_si_snr_q1",
                    f"val_si_snr_q{model.num_quantizers}"]  # fmt: skip
            run.checkpoint(export, curves=keys, title=f"codec {cfg.preset}")
        if not run.running:
            break
    run.close(model)
    accelerator.print(f"codec training done at step {run.step}; data: {skipped.report()}")
    return report


def main_from_args(config_path: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    return train_codec(load_config(CodecTrainConfig, config_path, overrides))

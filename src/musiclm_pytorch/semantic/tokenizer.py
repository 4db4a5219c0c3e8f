"""Semantic tokens: k-means ids over 25 Hz features that carry harmony, melody and rhythm, not timbre.

MusicLM takes k-means (1024) over w2v-BERT layer-7 features at 25 Hz. Without a downloadable
self-supervised model, the built-in extractor uses musical features that are timbre-poor by
construction: CQT chroma (harmony), the pitch class of the most salient CQT bin (the melody line),
onset strength and its local periodicity (rhythm), each frame standardised.
A local self-supervised model folder can replace it (``features="hf"``, :class:`HFFeatureExtractor`):
HuBERT, wav2vec 2.0, WavLM, data2vec-audio or w2v-BERT 2.0 through ``transformers``, one hidden layer,
its 50 Hz frames averaged down to 25 Hz. Nothing is downloaded: the folder must exist locally.

Shape letters: B batch, S samples, T frames (25 Hz), D feature dim, K clusters.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import librosa
import numpy as np
import torch
from torch import Tensor

from ..checkpoint import Component


class MusicalFeatureExtractor:
    """``wav [S] -> features [T, 27]`` at ``frame_rate`` Hz (chroma 12 + melody chroma 12 + rhythm 3)."""

    def __init__(self, *, sample_rate: int = 16000, frame_rate: float = 25.0):
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.hop = int(round(sample_rate / frame_rate))
        if abs(sample_rate / self.hop - frame_rate) > 1e-6:
            raise ValueError(f"sample_rate {sample_rate} is not a multiple of frame_rate {frame_rate}")
        self.dim = 27

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        y = np.asarray(wav, dtype=np.float32)
        frames = len(y) // self.hop
        if frames == 0:
            raise ValueError(f"audio of {len(y)} samples is shorter than one {self.hop}-sample frame")
        # a 4x finer hop for the CQT, pooled to 25 Hz: chroma needs the time resolution of notes
        sub = self.hop // 4 if self.hop % 4 == 0 else self.hop
        # 6 octaves from C2, 12 bins per octave: bin b has pitch class b % 12
        cqt = np.abs(librosa.cqt(y, sr=self.sample_rate, hop_length=sub, n_bins=72, bins_per_octave=12, fmin=65.406))
        chroma = cqt.reshape(6, 12, -1).sum(axis=0)
        chroma = chroma / (chroma.max(axis=0, keepdims=True) + 1e-8)
        # the melody: the pitch class of the most salient bin (fundamentals dominate in most timbres)
        melody = np.zeros_like(chroma)
        peak = cqt.argmax(axis=0)
        level = cqt.max(axis=0)
        melody[peak % 12, np.arange(cqt.shape[1])] = level / (level.max() + 1e-8)
        onset = librosa.onset.onset_strength(y=y, sr=self.sample_rate, hop_length=sub)[None]
        per = self.hop // sub

        def pool(x: np.ndarray) -> np.ndarray:
            x = x[:, : frames * per]
            if x.shape[1] < frames * per:
                x = np.pad(x, ((0, 0), (0, frames * per - x.shape[1])))
            return x.reshape(x.shape[0], frames, per).mean(axis=2)

        chroma, melody, onset = pool(chroma), pool(melody), pool(onset)
        onset = onset / (onset.max() + 1e-8)
        # rhythm context: onset strength at this frame and one and two beats of 120 bpm earlier
        lag = int(round(self.frame_rate * 0.5))
        rhythm = np.concatenate([onset, np.roll(onset, lag, axis=1), np.roll(onset, 2 * lag, axis=1)])
        feats = np.concatenate([chroma, melody, rhythm]).T  # [T, 27]
        return feats.astype(np.float32)


class HFFeatureExtractor:
    """``wav [S] -> features [T, hidden]`` from one hidden layer of a local ``transformers`` speech/music model.

    Args:
        path: a folder written by ``save_pretrained`` (``config.json`` + weights, and the
            ``preprocessor_config.json`` of its feature extractor if it has one: w2v-BERT needs it).
        layer: hidden state to use (0 = the input embeddings; MusicLM uses w2v-BERT layer 7).
        sample_rate: rate of the audio given; resampled to the model's rate.
        frame_rate: output rate; the model's frames (50 Hz for HuBERT / wav2vec 2.0 / w2v-BERT, 75 Hz
            for MERT) are average-pooled to it.
    """

    def __init__(self, path: str | Path, *, layer: int = 7, sample_rate: int = 16000, frame_rate: float = 25.0):
        from transformers import AutoFeatureExtractor, AutoModel

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no feature model at {str(folder)!r}: expected a transformers folder with config.json"
            )
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        layers = int(self.model.config.num_hidden_layers)
        if not 0 <= layer <= layers:
            raise ValueError(
                f"layer must be in [0, {layers}] for {str(folder)!r} ({layers} hidden layers), got {layer}"
            )
        self.preprocess = (
            AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
            if (folder / "preprocessor_config.json").is_file()
            else None
        )
        self.model_rate = int(getattr(self.preprocess, "sampling_rate", 16000))
        self.layer, self.sample_rate, self.frame_rate = layer, sample_rate, frame_rate
        self.hop = int(round(sample_rate / frame_rate))
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, wav: np.ndarray) -> np.ndarray:
        y = np.asarray(wav, dtype=np.float32)
        frames = len(y) // self.hop
        if frames == 0:
            raise ValueError(f"audio of {len(y)} samples is shorter than one {self.hop}-sample frame")
        if self.sample_rate != self.model_rate:
            y = librosa.resample(y, orig_sr=self.sample_rate, target_sr=self.model_rate)
        if self.preprocess is not None:
            inputs = dict(self.preprocess(y, sampling_rate=self.model_rate, return_tensors="pt"))
            inputs.pop("attention_mask", None)
        else:
            inputs = {"input_values": torch.from_numpy(y)[None]}
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states[self.layer][0]  # [T', D]
        pooled = torch.nn.functional.adaptive_avg_pool1d(hidden.T[None].float(), frames)[0].T
        return pooled.numpy().astype(np.float32)


class SemanticTokenizer(Component):
    """K-means over 25 Hz features: ``wav [B, S] -> ids [B, T]``.

    Args:
        sample_rate: audio rate.
        vocab_size: clusters (paper 1024; fewer for small corpora).
        frame_rate: ids per second (paper 25).
        features: ``"musical"`` (:class:`MusicalFeatureExtractor`, built in) or ``"hf"``
            (:class:`HFFeatureExtractor` over the local model folder ``features_path``, hidden layer
            ``features_layer``). The folder's weights are not stored in the tokenizer's checkpoint:
            its path is, and it must exist where the tokenizer is loaded.
    """

    component_name = "semantic_tokenizer"
    centers: Tensor
    mean: Tensor
    std: Tensor
    fitted: Tensor

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        vocab_size: int = 512,
        frame_rate: float = 25.0,
        features: str = "musical",
        features_path: str | None = None,
        features_layer: int = 7,
    ):
        super().__init__()
        self.save_config(sample_rate=sample_rate, vocab_size=vocab_size, frame_rate=frame_rate, features=features,
                         features_path=features_path, features_layer=features_layer)  # fmt: skip
        self.extractor: MusicalFeatureExtractor | HFFeatureExtractor
        if features == "musical":
            self.extractor = MusicalFeatureExtractor(sample_rate=sample_rate, frame_rate=frame_rate)
        elif features == "hf":
            if not features_path:
                raise ValueError('features="hf" needs features_path: a local transformers model folder')
            self.extractor = HFFeatureExtractor(
                features_path, layer=features_layer, sample_rate=sample_rate, frame_rate=frame_rate
            )
        else:
            raise ValueError(f"features must be 'musical' or 'hf', got {features!r}")
        self.sample_rate, self.vocab_size, self.frame_rate = sample_rate, vocab_size, frame_rate
        d = self.extractor.dim
        self.register_buffer("centers", torch.zeros(vocab_size, d))
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.register_buffer("fitted", torch.tensor(False))

    def features(self, wavs: Tensor) -> Tensor:
        """``wavs [B, S] -> standardised features [B, T, D]``."""
        if wavs.ndim == 3 and wavs.shape[1] == 1:
            wavs = wavs[:, 0]
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be [B, S], got shape {tuple(wavs.shape)}")
        feats = np.stack([self.extractor(w.detach().cpu().numpy()) for w in wavs])
        return (torch.from_numpy(feats) - self.mean) / self.std

    def fit(self, wav_batches: Iterable[Tensor], *, seed: int = 0, batch_frames: int = 4096) -> dict[str, float]:
        """Streaming mini-batch k-means (scikit-learn) over every frame of every batch."""
        from sklearn.cluster import MiniBatchKMeans

        raw = [torch.from_numpy(np.stack([self.extractor(w.numpy()) for w in b])).reshape(-1, self.extractor.dim)
               for b in wav_batches]  # fmt: skip
        if not raw:
            raise ValueError("no audio to fit on")
        x = torch.cat(raw)
        if len(x) < self.vocab_size:
            raise ValueError(f"{len(x)} frames are fewer than vocab_size={self.vocab_size}")
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-4))
        z = ((x - self.mean) / self.std).numpy()
        km = MiniBatchKMeans(n_clusters=self.vocab_size, batch_size=batch_frames, random_state=seed, n_init=3)
        km.fit(z)
        self.centers.copy_(torch.from_numpy(km.cluster_centers_).float())
        self.fitted.fill_(True)
        counts = np.bincount(km.labels_, minlength=self.vocab_size)
        return {"frames": float(len(z)), "inertia_per_frame": float(km.inertia_ / len(z)),
                "used_fraction": float((counts > 0).mean())}  # fmt: skip

    @torch.no_grad()
    def forward(self, wavs: Tensor) -> Tensor:
        """``wavs [B, S] -> ids [B, T]`` (T = S // (sample_rate / frame_rate))."""
        if not bool(self.fitted):
            raise RuntimeError("SemanticTokenizer is not fitted: call fit(batches) first")
        feats = self.features(wavs)
        return torch.cdist(feats, self.centers[None].expand(feats.shape[0], -1, -1)).argmin(-1)

    def usage_png(self, ids: Tensor, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = np.sort(np.bincount(ids.flatten().numpy(), minlength=self.vocab_size))[::-1]
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        ax.set_xlabel("cluster (sorted by count)")
        ax.set_ylabel("frames")
        ax.set_title(f"semantic token usage: {int((counts > 0).sum())} of {self.vocab_size} used")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

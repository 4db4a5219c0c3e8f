"""MuLaN conditioning: residual VQ over MuLaN latents, one learned embedding table per stage.

MusicLM §3.2: the 128-d MuLaN embedding is quantized by a residual VQ of 12 quantizers x 1024 codes;
the resulting 12 ids condition each stage LM. Stages *train* on the quantized *audio* embedding of
the clip itself (M_A) and *generate* from the quantized *text* embedding (M_T), so one quantizer,
fit on audio latents, serves both.

Fitting: residual k-means (k-means++ seeding, Lloyd iterations, dead codes re-seeded) over *all*
the audio latents given, level by level on the residuals; optionally refined by streaming EMA
updates (:meth:`MuLaNEmbedQuantizer.ema_update`) for corpora too large to hold at once. We do not
use vector-quantize-pytorch's ``ResidualVQ`` here: its k-means initialisation sees only the first
batch, which is what the paper's "fit on the dataset" rules out (benchmarks/conditioning_fit.py
measures the gap).

MuLaN is frozen inside: no gradients, always in eval mode.

Shapes: latents ``[B, 128]``, ids ``[B, Q]``, conditioning ``[B, Q, D_stage]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import Component
from .mulan.model import MuLaN


def kmeans(
    x: Tensor, num_clusters: int, *, iters: int = 20, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding. ``x [N, D] -> (centroids [K, D], assignment [N])``.

    Empty clusters are re-seeded at the points farthest from their centroid.
    """
    n = x.shape[0]
    if n < num_clusters:
        raise ValueError(f"k-means needs at least num_clusters={num_clusters} points, got {n}")
    x = x.float()
    # k-means++ seeding (Arthur & Vassilvitskii 2007)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = (x - x[first]).pow(2).sum(-1)
    for _ in range(1, num_clusters):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        idx = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(-1))
    c = torch.stack(centroids)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        dist = torch.cdist(x, c)
        dmin, assign = dist.min(dim=1)
        counts = torch.bincount(assign, minlength=num_clusters)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        new_c = sums / counts.clamp(min=1)[:, None].float()
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            far = dmin.topk(len(empty)).indices
            new_c[empty] = x[far]
        if torch.allclose(new_c, c):
            c = new_c
            break
        c = new_c
    assign = torch.cdist(x, c).argmin(dim=1)
    return c, assign


class MuLaNEmbedQuantizer(Component):
    """Quantize MuLaN latents into ``num_quantizers`` ids and embed them per stage.

    Args:
        mulan: a trained :class:`MuLaN` (frozen here).
        conditioning_dims: embedding size for each stage in ``namespaces``. Default none: the stage LMs of
            this package embed the ids themselves, and per-stage tables of 12 x 1,024 codes x 1,024 dims
            cost 12.6M parameters each (the reference's layout; ask for them to get ``forward``'s
            embeddings, e.g. ``conditioning_dims=(1024,) * 3`` with the namespaces below).
        namespaces: stage names, e.g. ``("semantic", "coarse", "fine")``.
        num_quantizers: RVQ levels (paper: 12).
        codebook_size: codes per level (paper: 1024; use fewer for a small corpus).
        ema_decay: decay of :meth:`ema_update`.
    """

    component_name = "mulan_embed_quantizer"
    inner_components = {"mulan": "mulan"}  # load(conditioning file, expected=MuLaN) gives its MuLaN
    codebooks: Tensor
    ema_counts: Tensor
    ema_sums: Tensor
    fitted: Tensor
    offsets: Tensor

    def __init__(
        self,
        mulan: MuLaN,
        *,
        conditioning_dims: Sequence[int] = (),
        namespaces: Sequence[str] = (),
        num_quantizers: int = 12,
        codebook_size: int = 1024,
        ema_decay: float = 0.99,
    ):
        super().__init__()
        if len(conditioning_dims) != len(namespaces):
            raise ValueError(
                f"conditioning_dims ({len(conditioning_dims)}) and namespaces ({len(namespaces)}) must pair up"
            )
        if num_quantizers < 1 or codebook_size < 2:
            raise ValueError(f"need num_quantizers >= 1 and codebook_size >= 2, got {num_quantizers}, {codebook_size}")
        self.save_config(
            mulan=mulan,
            conditioning_dims=list(conditioning_dims),
            namespaces=list(namespaces),
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            ema_decay=ema_decay,
        )
        self.mulan = mulan
        self.mulan.requires_grad_(False)
        self.mulan.eval()
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.ema_decay = ema_decay
        dim = mulan.dim_latent
        self.register_buffer("codebooks", torch.randn(num_quantizers, codebook_size, dim) * 0.01)
        self.register_buffer("ema_counts", torch.zeros(num_quantizers, codebook_size))
        self.register_buffer("ema_sums", torch.zeros(num_quantizers, codebook_size, dim))
        self.register_buffer("fitted", torch.tensor(False))
        self.namespaces = list(namespaces)
        self.tables = nn.ModuleDict(
            {ns: nn.Embedding(num_quantizers * codebook_size, d) for ns, d in zip(namespaces, conditioning_dims)}
        )
        self.register_buffer("offsets", torch.arange(num_quantizers) * codebook_size, persistent=False)

    def train(self, mode: bool = True) -> MuLaNEmbedQuantizer:
        super().train(mode)
        self.mulan.eval()  # frozen: no dropout, no augmentation
        return self

    # ---- fitting -----------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, latents: Tensor, *, iters: int = 20, seed: int = 0, progress: bool = False) -> Tensor:
        """Fit the codebooks by residual k-means over ``latents [N, D]`` (all of them).

        Returns the mean squared quantization error after each level, ``[Q]``.
        """
        self._check_latents(latents, "latents")
        g = torch.Generator().manual_seed(seed)
        residual = latents.detach().float().cpu()
        errors = []
        for q in tqdm(range(self.num_quantizers), desc="rvq k-means", disable=not progress):
            c, assign = kmeans(residual, self.codebook_size, iters=iters, generator=g)
            self.codebooks[q] = c.to(self.codebooks)
            self.ema_counts[q] = torch.bincount(assign, minlength=self.codebook_size).float()
            self.ema_sums[q] = c.to(self.ema_sums) * self.ema_counts[q][:, None]
            residual = residual - c[assign]
            errors.append(residual.pow(2).sum(-1).mean())
        self.fitted.fill_(True)
        return torch.stack(errors)

    @torch.no_grad()
    def fit_from_audio(
        self,
        batches: Iterable[Tensor],
        *,
        windowed: bool = False,
        iters: int = 20,
        seed: int = 0,
        progress: bool = True,
    ) -> Tensor:
        """Embed every batch of waveforms ``[B, S]`` with MuLaN, then :meth:`fit` on all the latents."""
        device = self.codebooks.device
        latents = [
            self.mulan.get_audio_latents(w.to(device), windowed=windowed).cpu()
            for w in tqdm(batches, desc="mulan audio latents", disable=not progress)
        ]
        if not latents:
            raise ValueError("batches yielded no audio")
        return self.fit(torch.cat(latents), iters=iters, seed=seed, progress=progress)

    @torch.no_grad()
    def ema_update(self, latents: Tensor, *, eps: float = 1e-5) -> None:
        """One streaming EMA step (VQ-VAE-2 style) of every level's codebook towards ``latents``."""
        self._check_fitted()
        residual = latents.float().to(self.codebooks.device)
        for q in range(self.num_quantizers):
            assign = torch.cdist(residual, self.codebooks[q]).argmin(-1)
            onehot = F.one_hot(assign, self.codebook_size).float()  # [B, K]
            self.ema_counts[q].mul_(self.ema_decay).add_(onehot.sum(0), alpha=1 - self.ema_decay)
            self.ema_sums[q].mul_(self.ema_decay).add_(onehot.t() @ residual, alpha=1 - self.ema_decay)
            n = self.ema_counts[q].sum()
            counts = (self.ema_counts[q] + eps) / (n + self.codebook_size * eps) * n  # Laplace smoothing
            self.codebooks[q] = self.ema_sums[q] / counts[:, None]
            residual = residual - self.codebooks[q][assign]

    # ---- quantizing --------------------------------------------------------------------------
    def _check_latents(self, latents: Tensor, name: str) -> None:
        if latents.ndim != 2 or latents.shape[-1] != self.mulan.dim_latent:
            raise ValueError(f"{name} must be [B, {self.mulan.dim_latent}], got shape {tuple(latents.shape)}")
        if latents.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch")

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("MuLaNEmbedQuantizer is not fitted: call fit(latents) or fit_from_audio(batches)")

    @torch.no_grad()
    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """``latents [B, D] -> (ids [B, Q], quantized [B, D])``."""
        self._check_latents(latents, "latents")
        self._check_fitted()
        residual = latents.float()
        quantized = torch.zeros_like(residual)
        ids = []
        for q in range(self.num_quantizers):
            idx = torch.cdist(residual, self.codebooks[q]).argmin(-1)
            chosen = self.codebooks[q][idx]
            quantized = quantized + chosen
            residual = residual - chosen
            ids.append(idx)
        return torch.stack(ids, dim=-1), quantized

    @torch.no_grad()
    def get_cond_ids(
        self,
        *,
        wavs: Tensor | None = None,
        texts: Tensor | None = None,
        raw_texts: list[str] | None = None,
        windowed: bool = False,
    ) -> Tensor:
        """Conditioning ids ``[B, Q]`` from audio (training) or text (generation); exactly one source."""
        given = [x is not None for x in (wavs, texts, raw_texts)]
        if sum(given) != 1:
            raise ValueError("pass exactly one of wavs, texts or raw_texts")
        if wavs is not None:
            latents = self.mulan.get_audio_latents(wavs, windowed=windowed)
        else:
            latents = self.mulan.get_text_latents(texts, raw_texts=raw_texts)
        return self.quantize(latents)[0]

    def embed(self, ids: Tensor, namespace: str) -> Tensor:
        """``ids [B, Q] -> [B, Q, D_namespace]`` through that stage's table."""
        if namespace not in self.tables:
            raise ValueError(f"unknown namespace {namespace!r}; this quantizer has {self.namespaces}")
        if ids.ndim != 2 or ids.shape[-1] != self.num_quantizers:
            raise ValueError(f"ids must be [B, {self.num_quantizers}], got shape {tuple(ids.shape)}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size:
            raise ValueError(f"ids must be in [0, {self.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]")
        return self.tables[namespace](ids + self.offsets)

    def forward(
        self,
        *,
        wavs: Tensor | None = None,
        texts: Tensor | None = None,
        raw_texts: list[str] | None = None,
        namespace: str,
        windowed: bool = False,
    ) -> Tensor:
        """Conditioning vectors ``[B, Q, D_namespace]`` for one stage."""
        ids = self.get_cond_ids(wavs=wavs, texts=texts, raw_texts=raw_texts, windowed=windowed)
        return self.embed(ids, namespace)

    # ---- diagnostics -------------------------------------------------------------------------
    @torch.no_grad()
    def code_usage(self, latents: Tensor) -> list[dict[str, float]]:
        """Per level: fraction of codes used, perplexity (effective codes), and residual MSE."""
        ids, _ = self.quantize(latents)
        residual = latents.float()
        report = []
        for q in range(self.num_quantizers):
            counts = torch.bincount(ids[:, q], minlength=self.codebook_size).float()
            p = counts / counts.sum()
            entropy = -(p[p > 0] * p[p > 0].log()).sum()
            residual = residual - self.codebooks[q][ids[:, q]]
            report.append(
                {
                    "level": q,
                    "used_fraction": float((counts > 0).float().mean()),
                    "perplexity": float(math.exp(float(entropy))),
                    "residual_mse": float(residual.pow(2).sum(-1).mean()),
                }
            )
        return report

"""Residual VQ for MuLaN conditioning: our dataset-wide residual k-means vs scikit-learn's and
vector-quantize-pytorch's.

vector-quantize-pytorch's ``ResidualVQ(kmeans_init=True)`` seeds each codebook by k-means on the
*first batch* it sees and then follows EMA updates. Ours runs k-means over all training latents.
Both are scored by the held-out quantization error (mean squared distance, latents on the unit
sphere) and code usage, on anisotropic synthetic 128-d latents (a decaying spectrum, like real
embeddings). Prints one JSON line per method.

Usage::

    python benchmarks/conditioning_fit.py [--train 20000] [--codebook-size 256] [--levels 12]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def latents(n: int, *, seed: int, clusters: int = 500) -> torch.Tensor:
    """A power-law mixture of anisotropic Gaussians on the sphere (genres, moods, instruments...)."""
    g = torch.Generator().manual_seed(1234)  # the same mixture for train and test
    basis = torch.linalg.qr(torch.randn(128, 128, generator=g))[0]
    spectrum = 1.0 / torch.arange(1, 129).float() ** 0.7
    centers = torch.randn(clusters, 128, generator=g) * spectrum
    weights = 1.0 / torch.arange(1, clusters + 1).float() ** 0.8
    gs = torch.Generator().manual_seed(seed)
    which = torch.multinomial(weights, n, replacement=True, generator=gs)
    z = centers[which] + 0.3 * torch.randn(n, 128, generator=gs) * spectrum
    return F.normalize(z @ basis.t(), dim=-1)


def usage(ids: torch.Tensor, k: int) -> float:
    return float(
        torch.stack([torch.bincount(ids[:, q], minlength=k).gt(0).float().mean() for q in range(ids.shape[1])]).mean()
    )


def ours(train: torch.Tensor, test: torch.Tensor, levels: int, k: int) -> dict:
    from musiclm_pytorch import MuLaNEmbedQuantizer, build_mulan

    q = MuLaNEmbedQuantizer(
        build_mulan("tiny"), conditioning_dims=(8,), namespaces=("x",), num_quantizers=levels, codebook_size=k
    )
    t0 = time.perf_counter()
    q.fit(train, iters=20)
    fit_s = time.perf_counter() - t0
    ids, quantized = q.quantize(test)
    return {
        "method": "ours: residual k-means over all latents",
        "fit_seconds": round(fit_s, 1),
        "test_mse": float((test - quantized).pow(2).sum(-1).mean()),
        "mean_code_usage": usage(ids, k),
    }


def sklearn_rvq(train: torch.Tensor, test: torch.Tensor, levels: int, k: int) -> dict:
    """The same residual scheme with scikit-learn's KMeans per level (k-means++, one init, at most 20
    Lloyd iterations like ours): the reference for the hand-written k-means itself."""
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    resid, books = train.double().numpy().copy(), []
    for level in range(levels):
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=20, random_state=level).fit(resid)
        books.append(torch.from_numpy(km.cluster_centers_))
        resid -= km.cluster_centers_[km.labels_]
    fit_s = time.perf_counter() - t0
    x, quantized, ids = test.double(), torch.zeros_like(test, dtype=torch.float64), []
    for book in books:
        idx = torch.cdist(x - quantized, book).argmin(1)
        quantized += book[idx]
        ids.append(idx)
    return {
        "method": "scikit-learn KMeans per residual level over all latents (k-means++, n_init 1, max_iter 20)",
        "fit_seconds": round(fit_s, 1),
        "test_mse": float((test.double() - quantized).pow(2).sum(-1).mean()),
        "mean_code_usage": usage(torch.stack(ids, 1), k),
    }


def vqp(train: torch.Tensor, test: torch.Tensor, levels: int, k: int, batch: int, ordered: bool) -> dict:
    from vector_quantize_pytorch import ResidualVQ

    rvq = ResidualVQ(dim=128, num_quantizers=levels, codebook_size=k, kmeans_init=True, kmeans_iters=20, decay=0.99)
    rvq.train()
    t0 = time.perf_counter()
    for _ in range(3):
        order = torch.arange(len(train)) if ordered else torch.randperm(len(train))
        for chunk in train[order].split(batch):
            rvq(chunk[None])
    fit_s = time.perf_counter() - t0
    rvq.eval()
    with torch.no_grad():
        quantized, ids, _ = rvq(test[None])
    how = "read in sorted order (first batch = one region)" if ordered else "shuffled"
    return {
        "method": f"vector-quantize-pytorch ResidualVQ, k-means on first batch of {batch} + EMA, 3 epochs, {how}",
        "fit_seconds": round(fit_s, 1),
        "test_mse": float((test - quantized[0]).pow(2).sum(-1).mean()),
        "mean_code_usage": usage(ids[0], k),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--levels", type=int, default=12)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    train, test = latents(a.train, seed=0), latents(a.test, seed=1)
    common = {"train": a.train, "test": a.test, "levels": a.levels, "codebook_size": a.codebook_size}
    print(json.dumps({**common, **ours(train, test, a.levels, a.codebook_size)}), flush=True)
    print(json.dumps({**common, **sklearn_rvq(train, test, a.levels, a.codebook_size)}), flush=True)
    print(json.dumps({**common, **vqp(train, test, a.levels, a.codebook_size, a.batch, False)}), flush=True)
    # a dataset read in storage order (sorted by source, genre...): the first batch is not representative
    order = (train @ torch.linalg.svd(train, full_matrices=False).Vh[0]).argsort()
    print(json.dumps({**common, **vqp(train[order], test, a.levels, a.codebook_size, a.batch, True)}), flush=True)


if __name__ == "__main__":
    main()

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import MuLaNEmbedQuantizer, load, save
from musiclm_pytorch.conditioning import kmeans


def _clustered(n_per: int = 50, k: int = 6, d: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(k, d, generator=g), dim=-1)
    x = centers.repeat_interleave(n_per, 0) + 0.01 * torch.randn(k * n_per, d, generator=g)
    return F.normalize(x, dim=-1), centers


def test_kmeans_recovers_clusters():
    x, centers = _clustered()
    c, assign = kmeans(x, 6, generator=torch.Generator().manual_seed(0))
    # every true center has a centroid within noise distance, and each cluster maps to one id
    assert torch.cdist(centers, c).min(dim=1).values.max() < 0.05
    assert all(len(set(assign[i * 50 : (i + 1) * 50].tolist())) == 1 for i in range(6))
    with pytest.raises(ValueError, match="at least num_clusters=10"):
        kmeans(x[:5], 10)


def _quantizer(mulan, **kw):
    args = dict(conditioning_dims=(32, 48), namespaces=("semantic", "coarse"), num_quantizers=4, codebook_size=16)
    args.update(kw)
    return MuLaNEmbedQuantizer(mulan, **args)


def test_residual_levels_reduce_error_and_ids_round_trip(tiny_mulan):
    q = _quantizer(tiny_mulan)
    latents = F.normalize(torch.randn(400, 128), dim=-1)
    errors = q.fit(latents)
    assert errors.shape == (4,) and torch.all(errors[1:] < errors[:-1])
    ids, quantized = q.quantize(latents)
    assert ids.shape == (400, 4) and ids.dtype == torch.long
    torch.testing.assert_close(quantized, q.codebooks[torch.arange(4), ids].sum(1))
    assert float((latents - quantized).pow(2).sum(-1).mean()) == pytest.approx(float(errors[-1]), rel=1e-4)
    usage = q.code_usage(latents)
    assert [u["level"] for u in usage] == [0, 1, 2, 3]
    assert all(0.5 < u["used_fraction"] <= 1.0 and 1.0 < u["perplexity"] <= 16 for u in usage)


def test_same_quantizer_for_audio_and_text_and_mulan_frozen(tiny_mulan):
    q = _quantizer(tiny_mulan)
    wavs = torch.randn(40, 16000)
    q.fit_from_audio(wavs.split(8), progress=False)
    q.train()
    assert not q.mulan.training and not any(p.requires_grad for p in q.mulan.parameters())
    cond = q(wavs=wavs[:3], namespace="coarse")
    assert cond.shape == (3, 4, 48)
    cond.sum().backward()  # the tables train; MuLaN does not
    assert q.tables["coarse"].weight.grad is not None
    assert all(p.grad is None for p in q.mulan.parameters())
    text_cond = q(raw_texts=["a calm piano", "loud drums"], namespace="semantic")
    assert text_cond.shape == (2, 4, 32)
    ids = q.get_cond_ids(raw_texts=["a calm piano"])
    torch.testing.assert_close(q.embed(ids, "semantic"), q.tables["semantic"](ids + torch.arange(4) * 16))


def test_ema_update_moves_codes_towards_data(tiny_mulan):
    q = _quantizer(tiny_mulan, num_quantizers=1, codebook_size=4, ema_decay=0.5)
    x, _ = _clustered(n_per=20, k=4)
    q.fit(x)
    shifted = F.normalize(x + 0.2 * F.normalize(torch.ones(128), dim=0), dim=-1)
    before = float((q.quantize(shifted)[1] - shifted).pow(2).sum(-1).mean())
    for _ in range(10):
        q.ema_update(shifted)
    after = float((q.quantize(shifted)[1] - shifted).pow(2).sum(-1).mean())
    assert after < 0.5 * before


def test_errors(tiny_mulan):
    q = _quantizer(tiny_mulan)
    with pytest.raises(RuntimeError, match="not fitted"):
        q.quantize(torch.randn(2, 128))
    with pytest.raises(ValueError, match=r"\[B, 128\]"):
        q.fit(torch.randn(100, 64))
    with pytest.raises(ValueError, match="at least num_clusters=16"):
        q.fit(torch.randn(10, 128))
    q.fit(F.normalize(torch.randn(64, 128), dim=-1))
    with pytest.raises(ValueError, match="exactly one"):
        q(namespace="semantic")
    with pytest.raises(ValueError, match="unknown namespace 'fine'"):
        q.embed(torch.zeros(1, 4, dtype=torch.long), "fine")
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        q.embed(torch.full((1, 4), 16), "semantic")
    with pytest.raises(ValueError, match="must pair up"):
        MuLaNEmbedQuantizer(tiny_mulan, conditioning_dims=(8,), namespaces=("a", "b"))


def test_checkpoint_round_trip_includes_mulan(tmp_path, tiny_mulan):
    q = _quantizer(tiny_mulan)
    q.fit(F.normalize(torch.randn(64, 128), dim=-1))
    path = save(q, tmp_path / "cond.safetensors")
    loaded = load(path, expected=MuLaNEmbedQuantizer)
    texts = ["warm strings", "fast techno"]
    torch.testing.assert_close(loaded(raw_texts=texts, namespace="coarse"), q(raw_texts=texts, namespace="coarse"))
    assert bool(loaded.fitted)

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import load
from musiclm_pytorch.lm import LatentAcousticLM


def _task(batch: int, frames: int = 20, gen: torch.Generator | None = None):
    """Latents fixed by the semantic ids up to a sign that only the conditioning tells."""
    sem = torch.randint(16, (batch, frames), generator=gen)
    cond = F.normalize(torch.randn(batch, 4, generator=gen), dim=-1)
    cond[:, 0] = cond[:, 0].sign() * 0.9
    cond = F.normalize(cond, dim=-1)
    table = torch.linspace(-1, 1, 16 * 3).reshape(16, 3)
    latents = table[sem.repeat_interleave(2, 1)] * cond[:, :1, None].sign()
    return sem, latents, cond


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = LatentAcousticLM(semantic_vocab=16, latent_dim=3, cond_dim=4, dim=64, depth=2, heads=2, dim_head=32,
                             dropout=0.0, cond_noise=0.05)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(250):
        loss = model.loss(*_task(16, gen=gen), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def test_training_lowers_the_loss_and_reads_the_conditioning(trained):
    model, losses = trained
    assert sum(losses[-20:]) / 20 < 0.25 * sum(losses[:20]) / 20
    sem, latents, cond = _task(32, gen=torch.Generator().manual_seed(3))
    err = {name: F.l1_loss(model.generate(sem, c), latents).item() for name, c in
           (("own", cond), ("flipped", -cond), ("null", None))}  # fmt: skip
    assert err["own"] < 0.5 * err["null"] < err["flipped"]  # the sign comes from the conditioning alone
    # guidance extrapolates away from the null prediction, in one batched forward
    guided = model.generate(sem, cond, cfg_scale=3.0)
    null, plain = model.generate(sem, None), model.generate(sem, cond)
    assert torch.allclose(guided, null + 3.0 * (plain - null), atol=1e-4)


def test_shapes_save_load_and_errors(trained, tmp_path):
    model, _ = trained
    sem, latents, cond = _task(2, gen=torch.Generator().manual_seed(4))
    assert model.generate(sem, cond, frames=35).shape == (2, 35, 3)
    model.save(tmp_path / "m.safetensors")
    again = load(tmp_path / "m.safetensors", expected=LatentAcousticLM)
    assert torch.equal(again.generate(sem, cond), model.generate(sem, cond))
    with pytest.raises(ValueError, match="frames=41 exceed the 20 semantic ids x ratio 2"):
        model(sem, cond, frames=41)
    with pytest.raises(ValueError, match="cond must be \\[B=2, 4\\]"):
        model(sem, cond[:, :3])
    with pytest.raises(ValueError, match="semantic ids must be in \\[0, 16\\)"):
        model(sem + 16, cond)


def test_fit_direct_recovers_an_additive_model_in_closed_form():
    gen = torch.Generator().manual_seed(0)
    a, table = torch.randn(4, 3, generator=gen), torch.randn(16, 3, generator=gen)
    clips = []
    for _ in range(40):
        sem = torch.randint(16, (10,), generator=gen)
        cond = F.normalize(torch.randn(4, generator=gen), dim=0)
        clips.append((sem, cond @ a + table[sem.repeat_interleave(2)] - table[sem.repeat_interleave(2)].mean(0), cond))
    model = LatentAcousticLM(semantic_vocab=16, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16)
    report = model.fit_direct(clips)
    assert report["fit_l1_with_semantic_ids"] < 0.35 * report["fit_l1_conditioning_only"]
    sem, lat, cond = clips[0]
    direct = model.cond_to_latent(cond[None])[0] + model.semantic_to_latent(sem.repeat_interleave(2))
    assert (direct - lat).abs().mean() < 0.5 * (lat - lat.mean(0)).abs().mean()  # without a training step
    with pytest.raises(ValueError, match="at least 2 clips"):
        model.fit_direct(clips[:1])


def test_text_prior_averages_the_nearest_training_latents():
    from musiclm_pytorch.evaluation.acoustic_oracle import knn_prior

    model = LatentAcousticLM(semantic_vocab=4, latent_dim=2, cond_dim=4, dim=16, depth=1, heads=1, dim_head=16,
                             prior_size=10, prior_k=3)  # fmt: skip
    text = F.normalize(torch.randn(5, 4), dim=-1)
    assert torch.equal(LatentAcousticLM(semantic_vocab=4, latent_dim=2, cond_dim=4, dim=16, depth=1).text_prior(text),
                       text)  # no bank: the text latents themselves  # fmt: skip
    bank = F.normalize(torch.randn(10, 4), dim=-1)
    model.set_prior_bank(bank)
    assert torch.allclose(model.text_prior(text), knn_prior(text, bank, 3))
    with pytest.raises(ValueError, match="prior bank must be \\(10, 4\\)"):
        model.set_prior_bank(bank[:5])


def test_dct_matrix_matches_scipy():
    from scipy.fft import dct

    from musiclm_pytorch.lm.regression import dct_matrix

    x = torch.randn(37, 3, dtype=torch.float64)
    assert torch.allclose(dct_matrix(37) @ x, torch.from_numpy(dct(x.numpy(), norm="ortho", axis=0)), atol=1e-10)


def test_guidance_on_the_envelope_keeps_the_fine_structure(tmp_path):
    """Envelope guidance: the conditioned prediction plus (s - 1) times the low-quefrency part of the
    difference, computed independently through scipy's DCT; a full envelope is plain guidance; the filter
    survives a save and load; bad arguments name what is wrong."""
    from scipy.fft import dct, idct

    torch.manual_seed(0)
    bins, latent_dim, k = 24, 6, 5
    basis = torch.linalg.qr(torch.randn(bins, latent_dim, dtype=torch.float64))[0].float()  # orthonormal columns
    model = LatentAcousticLM(semantic_vocab=16, latent_dim=latent_dim, cond_dim=4, dim=32, depth=1, heads=2,
                             dim_head=16, dropout=0.0).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sem, _, cond = _task(3)
    drop = torch.arange(6) >= 3
    both = model(torch.cat([sem, sem]), torch.cat([cond, cond]), drop=drop)
    c, n = both[:3].detach().double(), both[3:].detach().double()
    plain = model.generate(sem, cond, cfg_scale=3.0)
    assert torch.allclose(plain.double(), n + 3 * (c - n), atol=1e-5)

    model.set_guidance_envelope(basis, k)
    out = model.generate(sem, cond, cfg_scale=3.0).double()
    spec = ((c - n) @ basis.double().T).numpy()  # [B, T, F] log-magnitude difference
    cep = dct(spec, norm="ortho", axis=-1)
    cep[..., k:] = 0
    envelope = torch.from_numpy(idct(cep, norm="ortho", axis=-1)) @ basis.double()
    assert torch.allclose(out, c + 2 * envelope, atol=1e-5)
    assert not torch.allclose(out, plain.double(), atol=1e-3)
    assert torch.allclose(model.generate(sem, cond, cfg_scale=1.0).double(), c, atol=1e-5)  # no guidance: as is

    model.save(tmp_path / "stage.safetensors")
    back = load(tmp_path / "stage.safetensors")
    assert back.guidance_envelope == k and back.config["guidance_envelope"] == k
    assert torch.allclose(back.generate(sem, cond, cfg_scale=3.0).double(), out, atol=1e-5)

    model.set_guidance_envelope(basis, bins)  # every coefficient: the whole difference, plain guidance
    assert torch.allclose(model.generate(sem, cond, cfg_scale=3.0), plain, atol=1e-5)
    model.set_guidance_envelope(None, 0)
    assert model.guidance_filter is None and "guidance_filter" not in model.state_dict()
    with pytest.raises(ValueError, match="coefficients must be in"):
        model.set_guidance_envelope(basis, bins + 1)
    with pytest.raises(ValueError, match="basis must be"):
        model.set_guidance_envelope(basis[:, :3], k)

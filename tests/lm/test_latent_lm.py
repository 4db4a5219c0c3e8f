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


def test_beat_phase_bins_by_hand():
    from musiclm_pytorch.lm.regression import beat_phase_bins

    t = torch.arange(8, dtype=torch.float32)
    # period 4, phase 1: beats at 1, 5; 4 bins per beat, so each frame is its own bin counted from the beat
    assert beat_phase_bins(t, torch.tensor([4.0]), torch.tensor([1.0]), 4).tolist() == [[3, 0, 1, 2, 3, 0, 1, 2]]
    # a cycle of 2 beats with 2 bins: first or second beat of the pair
    assert beat_phase_bins(t, torch.tensor([2.0]), torch.tensor([0.0]), 2, cycle=2).tolist() == [[0, 0, 1, 1] * 2]


def _beat_clips(count: int, gen: torch.Generator, frames: int = 24):
    """Clips whose latents hold a hit on every beat (period 4 semantic frames, random phase) when drums = 1,
    nothing else: what only the grid and the label can tell."""
    clips = []
    for _ in range(count):
        sem = torch.randint(8, (frames,), generator=gen)
        cond = F.normalize(torch.randn(4, generator=gen), dim=0)
        drums = int(torch.randint(2, (1,), generator=gen))
        phase = float(torch.randint(4, (1,), generator=gen))
        lat = torch.zeros(frames * 2, 3)
        if drums:
            lat[(torch.arange(frames * 2) / 2 - phase) % 4 == 0, 0] = 4.0
        clips.append((sem, lat, cond, torch.tensor([4.0, phase]), torch.tensor(drums)))
    return clips


def test_beat_table_is_fitted_in_closed_form_and_places_the_hits():
    gen = torch.Generator().manual_seed(0)
    clips = _beat_clips(64, gen)
    model = LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                             beat_bins=8)  # fmt: skip
    report = model.fit_direct(clips)
    assert report["fit_l1_with_beat_table"] < 0.5 * report["fit_l1_with_semantic_ids"]
    # bin 0 of a beat (8 bins: 2 codec frames of 0.5 semantic frames each) holds the hit for drums, not without
    hit = float(model.beat_table[1, 0, 0].detach() - model.beat_table[1, 4, 0].detach())
    assert hit > 2.0 and abs(float(model.beat_table.detach()[0, 0, 0] - model.beat_table.detach()[0, 4, 0])) < 0.2
    # the unknown label's row is the mean over both
    assert torch.allclose(model.beat_table[2, 0], model.beat_table[:2, 0].mean(0), atol=0.5)
    sem, lat, cond, beat, drums = clips[0]
    with torch.no_grad():
        with_beat = model(sem[None], cond[None], beat=beat[None], drums=torch.tensor([1]))
        no_beat = model(sem[None], cond[None])
    on = (torch.arange(48) / 2 - beat[1]) % 4 == 0
    assert with_beat[0, on, 0].mean() - with_beat[0, ~on, 0].mean() > 2.0  # hits where the grid puts them
    assert abs(no_beat[0, on, 0].mean() - no_beat[0, ~on, 0].mean()) < 0.3  # none without it
    # a grid of period 0 is unknown: no phase term
    assert torch.allclose(model(sem[None], cond[None], beat=torch.zeros(1, 2), drums=torch.tensor([1])),
                          model(sem[None], cond[None], drums=torch.tensor([1])))  # fmt: skip
    with pytest.raises(ValueError, match="clips must be \\(semantic, latents, cond, beat, drums\\)"):
        model.fit_direct([c[:3] for c in clips])


def test_beat_stage_guidance_training_save_load_and_errors(tmp_path):
    gen = torch.Generator().manual_seed(1)
    clips = _beat_clips(32, gen)
    model = LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                             beat_bins=8, dropout=0.0)  # fmt: skip
    model.fit_direct(clips)
    sem = torch.stack([c[0] for c in clips[:4]])
    cond = torch.stack([c[2] for c in clips[:4]])
    beat = torch.stack([c[3] for c in clips[:4]])
    drums = torch.stack([c[4] for c in clips[:4]])
    # guidance: the null branch keeps the grid and reads the label as unknown
    guided = model.generate(sem, cond, cfg_scale=3.0, beat=beat, drums=drums)
    plain = model.generate(sem, cond, beat=beat, drums=drums)
    null = model(sem, None, beat=beat)
    assert torch.allclose(guided, null + 3.0 * (plain - null), atol=1e-4)
    unknown = model(sem, cond, beat=beat, drums=torch.full_like(drums, -1))
    assert torch.allclose(unknown, model(sem, cond, beat=beat), atol=1e-6)  # -1 = no label given
    # training from scratch (no closed-form fit) learns to place the hits, with grids dropped now and then
    torch.manual_seed(0)
    fresh = LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                             beat_bins=8, dropout=0.0)  # fmt: skip
    opt = torch.optim.AdamW(fresh.parameters(), 1e-2)
    losses = []
    for _ in range(120):
        batch = _beat_clips(8, gen)
        loss = fresh.loss(
            *(torch.stack([c[i] for c in batch]) for i in range(3)),
            generator=gen,
            beat=torch.stack([c[3] for c in batch]),
            drums=torch.stack([c[4] for c in batch]),
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])
    model.eval()
    model.save(tmp_path / "beat.safetensors")
    again = load(tmp_path / "beat.safetensors", expected=LatentAcousticLM)
    assert again.beat_bins == 8 and torch.equal(
        again(sem, cond, beat=beat, drums=drums), model(sem, cond, beat=beat, drums=drums)
    )
    with pytest.raises(ValueError, match="drums must be \\[B=4\\] labels in \\{-1, 0, 1\\}"):
        model(sem, cond, beat=beat, drums=drums + 2)
    with pytest.raises(ValueError, match="beat must be \\[B, 2\\] = \\[4, 2\\]"):
        model(sem, cond, beat=beat[:, :1], drums=drums)
    plain_stage = LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16)
    with pytest.raises(ValueError, match="reads neither \\(beat_bins 0\\)"):
        plain_stage(sem, cond, beat=beat)
    with pytest.raises(ValueError, match="beat_bins >= 0"):
        LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, beat_bins=-1)
    with pytest.raises(ValueError, match="beat_cycle 1"):  # a grid from ids knows its phase within one beat only
        LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, beat_bins=4, beat_cycle=2)


def _perturbed_beat_stage(clips, gen: torch.Generator):
    """A small beat-reading stage with random non-zero weights (its prediction moves), and the clips' ``(semantic,
    cond, beat, drums)`` stacked."""
    model = LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                             beat_bins=8, dropout=0.0).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model, tuple(torch.stack([c[i] for c in clips]) for i in (0, 2, 3, 4))


def test_movement_gain_is_fitted_in_closed_form_applied_after_guidance_and_saved(tmp_path):
    """Real latents that move around their clip mean by known per-dimension multiples of the prediction's
    movement: the fit recovers the multiples (raised to alpha), generation then makes those latents, the gain
    survives a save and load, and bad arguments name what is wrong."""
    gen = torch.Generator().manual_seed(2)
    clips = _beat_clips(6, gen)
    model, (sem, cond, beat, drums) = _perturbed_beat_stage(clips, gen)
    pred = model.generate(sem, cond, cfg_scale=2.0, beat=beat, drums=drums)
    truth = torch.tensor([1.0, 4.0, 0.5])
    real = pred.mean(1, keepdim=True) + (pred - pred.mean(1, keepdim=True)) * truth
    fit_clips = [(s, x, c, b, d) for s, x, c, b, d in zip(sem, real, cond, beat, drums)]
    report = model.fit_movement_gain(fit_clips, alpha=1.0, cfg_scale=2.0, batch_size=4)  # batches of 4 and 2
    assert torch.allclose(model.movement_gain, truth, rtol=1e-4) and model.movement_gain_alpha == 1.0
    assert report["clips"] == 6 and abs(report["predicted_std_over_real_after"] - 1.0) < 1e-4
    assert abs(report["predicted_std_over_real_before"] - float((1 / truth).mean())) < 1e-4
    assert torch.allclose(model.generate(sem, cond, cfg_scale=2.0, beat=beat, drums=drums), real, atol=1e-5)
    model.fit_movement_gain(fit_clips, alpha=0.5, cfg_scale=2.0)  # refitted from the prediction without a gain
    assert torch.allclose(model.movement_gain, truth.sqrt(), rtol=1e-4) and model.config["movement_gain_alpha"] == 0.5
    out = model.generate(sem, cond, cfg_scale=2.0, beat=beat, drums=drums)
    assert torch.allclose(out.mean(1), pred.mean(1), atol=1e-5)  # the clip mean is kept
    model.save(tmp_path / "stage.safetensors")
    back = load(tmp_path / "stage.safetensors")
    assert back.movement_gain_alpha == 0.5 and torch.equal(back.movement_gain, model.movement_gain)
    assert torch.allclose(back.generate(sem, cond, cfg_scale=2.0, beat=beat, drums=drums), out, atol=1e-6)
    model.set_movement_gain(None)
    assert model.movement_gain is None and "movement_gain" not in model.state_dict()
    assert "movement_gain_alpha" not in model.config
    assert torch.allclose(model.generate(sem, cond, cfg_scale=2.0, beat=beat, drums=drums), pred, atol=1e-6)
    with pytest.raises(ValueError, match="gain must be \\[3\\] finite positive numbers"):
        model.set_movement_gain(torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="gain must be \\[3\\]"):
        model.set_movement_gain(torch.ones(4))
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        model.set_movement_gain(torch.ones(3), alpha=-1.0)
    with pytest.raises(ValueError, match="clips must be \\(semantic, latents, cond, beat, drums\\)"):
        model.fit_movement_gain([c[:3] for c in fit_clips])
    with pytest.raises(ValueError, match="needs at least 2 clips"):
        model.fit_movement_gain(fit_clips[:1])
    with pytest.raises(ValueError, match="movement_gain_alpha must be a finite number >= 0"):
        LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                         movement_gain_alpha=float("nan"))  # fmt: skip


def test_movement_filter_per_modulation_band_by_hand():
    """One band is a plain gain; two sinusoids in two bands come out scaled by their bands' gains (measured by
    band_power against numpy's FFT of the Hann-windowed signal); the filter leaves the mean alone."""
    import numpy as np

    from musiclm_pytorch.lm.regression import band_power, filter_movement

    t = torch.arange(400.0)
    slow, fast = torch.sin(2 * torch.pi * 0.01 * t), torch.sin(2 * torch.pi * 0.3 * t)
    d = torch.stack([slow + fast, slow - 0.5 * fast], dim=-1)[None]  # [1, T, 2]
    assert torch.allclose(filter_movement(d, torch.tensor([[2.0, 0.5]]), []), d * torch.tensor([2.0, 0.5]))
    edges = [0.05, 0.1, 0.2]
    gains = torch.tensor([[4.0, 2.0], [4.0, 2.0], [1.0, 1.0], [1.0, 1.0]])  # bands' centres 0.025, 0.075, 0.15, 0.35
    out = filter_movement(d, gains, edges)
    expected = torch.stack([4 * slow + fast, 2 * slow - 0.5 * fast], dim=-1)[None]
    inner = slice(40, 360)  # away from the ends, where the mirror images meet the clip
    assert torch.allclose(out[:, inner], expected[:, inner], atol=0.05)
    # band_power: the Hann-windowed power per band, as numpy computes it
    x = d[0, :, 0].double().numpy()
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(400))) ** 2
    freqs = np.fft.rfftfreq(400)
    power = band_power(d, edges)[0, :, 0].numpy()
    bounds = [0.0, *edges, 0.51]
    assert np.allclose(power, [spec[(freqs >= a) & (freqs < b)].sum() for a, b in zip(bounds, bounds[1:])])


def test_movement_gain_per_band_is_fitted_saved_and_checked(tmp_path):
    gen = torch.Generator().manual_seed(3)
    clips = _beat_clips(6, gen, frames=64)
    model, (sem, cond, beat, drums) = _perturbed_beat_stage(clips, gen)
    pred = model.generate(sem, cond, beat=beat, drums=drums)
    # real latents: the prediction's movement with its slow part (below 0.1 cycles per frame) tripled
    low = torch.tensor([[3.0, 3.0, 3.0], [1.0, 1.0, 1.0]])
    from musiclm_pytorch.lm.regression import band_power, filter_movement

    mean = pred.mean(1, keepdim=True)
    real = mean + filter_movement(pred - mean, low, [0.1])
    fit_clips = [(s, x, c, b, d) for s, x, c, b, d in zip(sem, real, cond, beat, drums)]
    report = model.fit_movement_gain(fit_clips, alpha=1.0, bands=[0.1])
    assert model.movement_bands == [0.1] and model.movement_gain.shape == (2, 3)
    # the fitted gains: near 3 below, far less above (the filter that made the real latents interpolates its gains
    # between the bands' centres, 0.05 and 0.3, so it raised the lower part of the upper band too)
    assert (model.movement_gain[0] > 2.5).all() and (model.movement_gain[1] < 1.6).all()
    assert report["bands"] == [0.1] and len(report["real_share_per_band"]) == 2
    assert report["real_share_per_band"][0] > report["predicted_share_per_band"][0]
    out = model.generate(sem, cond, beat=beat, drums=drums)
    ratio = (band_power(out, [0.1]) / band_power(pred, [0.1])).sqrt()  # [B, 2, L]
    assert (ratio[:, 0] > 2.0).all() and (ratio[:, 1] < 2.0).all()
    model.save(tmp_path / "stage.safetensors")
    back = load(tmp_path / "stage.safetensors")
    assert back.movement_bands == [0.1] and back.config["movement_bands"] == [0.1]
    assert torch.allclose(back.generate(sem, cond, beat=beat, drums=drums), out, atol=1e-5)
    # capped from 0.1 cycles per frame up: the upper band raises nothing, the lower band as fitted
    capped = model.fit_movement_gain(fit_clips, alpha=1.0, bands=[0.1], cap_above=0.1)
    assert capped["cap_above"] == 0.1 and (model.movement_gain[1] <= 1).all() and (model.movement_gain[0] > 2.5).all()
    with pytest.raises(ValueError, match="cap_above caps the gains of the faster modulation bands: it needs bands"):
        model.fit_movement_gain(fit_clips, cap_above=0.1)
    model.set_movement_gain(torch.ones(3))  # back to one band
    assert model.movement_bands == [] and "movement_bands" not in model.config
    with pytest.raises(ValueError, match="movement bands must be ascending edges in \\(0, 0.5\\)"):
        model.set_movement_gain(torch.ones(3, 3), bands=[0.2, 0.1])
    with pytest.raises(ValueError, match="movement bands must be ascending edges"):
        model.fit_movement_gain(fit_clips, bands=[0.6])
    with pytest.raises(ValueError, match="gain must be \\[2, 3\\] finite positive numbers \\(one per band and"):
        model.set_movement_gain(torch.ones(3), bands=[0.1])


def test_a_flow_stage_refuses_a_movement_gain_it_would_not_apply():
    from musiclm_pytorch.lm import FlowAcousticLM

    flow = FlowAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                          flow_dim=32, flow_depth=1, flow_heads=2, flow_dim_head=16)  # fmt: skip
    with pytest.raises(ValueError, match="a FlowAcousticLM takes no movement gain"):
        flow.set_movement_gain(torch.ones(3))
    with pytest.raises(ValueError, match="a FlowAcousticLM takes no movement gain"):
        flow.fit_movement_gain([])

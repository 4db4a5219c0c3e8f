from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import load
from musiclm_pytorch.lm import FlowAcousticLM, LatentAcousticLM

PATTERN = torch.tensor([1.0, -1.0, 0.5])


def _task(batch: int, frames: int = 10, gen: torch.Generator | None = None):
    """Latents = a value per semantic id, plus, where the conditioning's first dimension is positive ("drums"),
    one pattern times a random sign per clip that nothing tells: its mean is 0, so a regression cannot
    make it, a sampler must draw it, and all frames of a clip share the sign."""
    sem = torch.randint(8, (batch, frames), generator=gen)
    cond = F.normalize(torch.randn(batch, 4, generator=gen), dim=-1)
    flag = (cond[:, 0] > 0).float()
    sign = torch.randint(2, (batch,), generator=gen).float() * 2 - 1
    table = torch.linspace(-1, 1, 8 * 3).reshape(8, 3)
    latents = table[sem.repeat_interleave(2, 1)] + (flag * sign)[:, None, None] * PATTERN
    return sem, latents, cond, flag, sign


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    mean = LatentAcousticLM(semantic_vocab=8, latent_dim=3, cond_dim=4, dim=32, depth=1, heads=2, dim_head=16,
                            dropout=0.0, cond_drop_prob=0.1)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    clips = [(s[0], lat[0], c[0]) for s, lat, c, _, _ in (_task(1, gen=gen) for _ in range(64))]
    mean.fit_direct(clips)  # the regression: the per-id values (the residual's mean is 0)
    flow = FlowAcousticLM(**mean.config, flow_dim=64, flow_depth=2, flow_heads=2, flow_dim_head=32, flow_steps=8)
    missing, unexpected = flow.load_state_dict(mean.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("flow_") or k == "resid_std" for k in missing)
    report = flow.fit_residual(clips)
    before = {k: v.clone() for k, v in flow.state_dict().items() if not k.startswith("flow_")}
    opt = torch.optim.AdamW(list(flow.flow_parameters()), 2e-3)
    flow.train()
    losses = []
    for _ in range(300):
        sem, latents, cond, _, _ = _task(32, gen=gen)
        cond, drop = flow.training_inputs(cond, generator=gen)
        loss = flow.flow_loss(sem, latents, cond, drop=drop, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return flow, losses, report, before


def test_flow_training_lowers_the_loss_and_leaves_the_regression_as_it_was(trained):
    flow, losses, report, before = trained
    assert sum(losses[-30:]) / 30 < 0.6 * sum(losses[:30]) / 30
    assert report["frames"] == 64 * 20 and report["resid_std_mean"] < report["latent_std_mean"]
    after = flow.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k != "resid_std")
    assert flow.training and not flow.blocks[0].training  # in training mode the frozen trunk runs without dropout


def test_samples_draw_what_the_mean_cannot_coherently_and_as_the_conditioning_says(trained):
    flow, _, _, _ = trained
    sem, latents, cond, flag, _ = _task(64, gen=torch.Generator().manual_seed(5))
    mean = flow.generate(sem, cond, temperature=0.0)
    sample = flow.generate(sem, cond, generator=torch.Generator().manual_seed(1))
    proj = ((sample - mean) * PATTERN).sum(-1) / PATTERN.pow(2).sum()  # [B, T]: the pattern's amount
    per_clip = proj.mean(1)
    drums, quiet = flag.bool(), ~flag.bool()
    # the regression's mean makes no pattern; the flow's sample does, where the conditioning asks for it
    assert ((mean - latents) * PATTERN).sum(-1).mean(1)[drums].abs().mean() > 0.5  # the truth has it ...
    assert (mean - LatentAcousticLM.generate(flow, sem, cond)).abs().max() < 1e-5  # ... the mean is the regression
    assert per_clip[drums].abs().mean() > 0.5 > 0.25 > per_clip[quiet].abs().mean()
    # both signs, each clip one sign across its frames (drawn jointly, not frame by frame)
    signs = per_clip[drums].sign()
    assert 0.2 < (signs > 0).float().mean() < 0.8
    agree = (proj[drums].sign() == signs[:, None]).float().mean()
    assert agree > 0.9
    # another seed draws other signs
    other = flow.generate(sem, cond, generator=torch.Generator().manual_seed(2))
    other_clip = (((other - mean) * PATTERN).sum(-1) / PATTERN.pow(2).sum()).mean(1)
    assert (other_clip[drums].sign() != signs).any()


def test_guidance_and_temperature_and_save_load(trained, tmp_path):
    flow, _, _, _ = trained
    sem, _, cond, _, _ = _task(4, gen=torch.Generator().manual_seed(6))
    g = torch.Generator
    plain = flow.generate(sem, cond, generator=g().manual_seed(0))
    assert plain.shape == (4, 20, 3)
    assert torch.allclose(flow.generate(sem, cond, temperature=0.0), LatentAcousticLM.generate(flow, sem, cond))
    guided = flow.generate(sem, cond, flow_cfg_scale=3.0, generator=g().manual_seed(0))
    assert not torch.allclose(guided, plain, atol=1e-3)  # velocity guidance changes the sample
    assert flow.generate(sem, cond, frames=13, generator=g().manual_seed(0)).shape == (4, 13, 3)
    flow.save(tmp_path / "f.safetensors")
    again = load(tmp_path / "f.safetensors", expected=LatentAcousticLM)  # a flow stage is a latent stage
    assert isinstance(again, FlowAcousticLM) and again.flow_steps == 8
    assert torch.equal(again.resid_std, flow.resid_std)
    assert torch.equal(again.generate(sem, cond, generator=g().manual_seed(0)), plain)
    # the generation defaults travel with the file
    assert flow.default_cfg_scale is None  # none stored: the pipeline's default guides the mean
    flow.set_sampling(temperature=0.0, steps=3, cfg_scale=2.0, mean_cfg_scale=2.5)
    flow.save(tmp_path / "g.safetensors")
    again = load(tmp_path / "g.safetensors", expected=FlowAcousticLM)
    assert (again.flow_temperature, again.flow_steps, again.flow_cfg_scale) == (0.0, 3, 2.0)
    assert again.default_cfg_scale == 2.5
    mean_guided = LatentAcousticLM.generate(flow, sem, cond, cfg_scale=2.5)
    assert torch.allclose(again.generate(sem, cond), mean_guided, atol=1e-5)  # the stored mean guidance
    assert torch.allclose(again.generate(sem, cond, cfg_scale=1.0), LatentAcousticLM.generate(flow, sem, cond),
                          atol=1e-5)  # fmt: skip
    flow.set_sampling(temperature=1.0, steps=8, cfg_scale=1.0)
    flow.mean_cfg_scale = flow._config["mean_cfg_scale"] = None  # the fixture is shared
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        flow.set_sampling(temperature=-1)
    with pytest.raises(ValueError, match="flow_steps >= 1"):
        FlowAcousticLM(**{**flow.config, "flow_steps": 0})

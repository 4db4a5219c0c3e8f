from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch import load
from musiclm_pytorch.lm import MaskedAcousticLM


def _task(batch: int, frames: int = 20, gen: torch.Generator | None = None):
    """Codes that the semantic ids fix up to a flip that only the conditioning's sign tells."""
    sem = torch.randint(16, (batch, frames), generator=gen)
    cond = F.normalize(torch.randn(batch, 4, generator=gen), dim=-1)
    cond[:, 0] = cond[:, 0].sign() * 0.9
    cond = F.normalize(cond, dim=-1)
    level0 = (sem.repeat_interleave(2, 1) + 4 * (cond[:, 0] > 0).long()[:, None]) % 8
    return sem, torch.stack([level0, (level0 * 3) % 8, (level0 + 1) % 8], 1), cond


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = MaskedAcousticLM(semantic_vocab=16, codebook_size=8, num_quantizers=3, cond_dim=4, dim=64, depth=2,
                             heads=2, dim_head=32, dropout=0.0, cond_noise=0.05)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        loss = model.loss(*_task(16, gen=gen), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def test_training_lowers_the_loss(trained):
    _, losses = trained
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:20]) / 20


def test_generation_reads_the_conditioning(trained):
    model, _ = trained
    sem, codes, cond = _task(16, gen=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(0)
    with_cond = model.generate(sem, cond, steps=(4, 1), cfg_scale=2.0, temperature=1.0, generator=gen)
    null = model.generate(sem, None, steps=(4, 1), temperature=0.0)
    assert with_cond.shape == codes.shape
    assert (with_cond == codes).float().mean() > 0.9  # the flip comes from the conditioning alone
    assert (null == codes).float().mean() < 0.8
    flipped = model.generate(sem, -cond, steps=(4, 1), cfg_scale=2.0, temperature=0.0)
    assert (flipped == codes).float().mean() < 0.2  # the opposite conditioning gives the other half
    # guidance changes the output (conditioned and null rows run in one batched forward)
    unguided = model.generate(sem, cond * 0.3, steps=(4, 1), cfg_scale=1.0, temperature=0.0)
    guided = model.generate(sem, cond * 0.3, steps=(4, 1), cfg_scale=4.0, temperature=0.0)
    assert not torch.equal(unguided, guided) or (guided == codes).all()


def test_prompt_frames_are_kept(trained):
    model, _ = trained
    sem, codes, cond = _task(2, gen=torch.Generator().manual_seed(6))
    prompt = (codes[:, :, :10] + 1) % 8  # deliberately not what the model would choose
    out = model.generate(sem, cond, prompt=prompt, steps=(2,), temperature=0.0)
    assert torch.equal(out[:, :, :10], prompt)


def test_masking_covers_one_level_and_everything_above(trained):
    model, _ = trained
    sem, codes, cond = _task(64, gen=torch.Generator().manual_seed(7))
    inputs, target, truth = model.eval().training_inputs(sem, codes, cond, generator=torch.Generator().manual_seed(0))
    level, masked = inputs["level"], inputs["codes"] == model.mask_id
    for row in range(64):
        q = int(level[row])
        assert not masked[row, :q].any() and masked[row, q + 1 :].all()
        assert torch.equal(masked[row, q], target[row]) and target[row].any()
        assert torch.equal(truth[row], codes[row, q])
    assert inputs["drop"] is None and torch.equal(inputs["cond"], cond)  # evaluation: no noise, no dropout
    assert target.all(1).float().mean() > 0.1  # the fully masked rows generation starts from


def test_save_load_and_errors(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.safetensors")
    again = load(tmp_path / "m.safetensors", expected=MaskedAcousticLM)
    sem, codes, cond = _task(2, gen=torch.Generator().manual_seed(8))
    assert torch.equal(again.generate(sem, cond, temperature=0.0), model.generate(sem, cond, temperature=0.0))
    level = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="codes must be \\[B, 3, T\\]"):
        model(sem, codes[:, :2], cond, level)
    with pytest.raises(ValueError, match="semantic must be"):
        model(sem[:, :5], codes, cond, level)
    with pytest.raises(ValueError, match="cond must be \\[B=2, 4\\]"):
        model(sem, codes, cond[:, :3], level)
    with pytest.raises(ValueError, match="semantic ids must be in \\[0, 16\\)"):
        model(sem + 16, codes, cond, level)
    with pytest.raises(ValueError, match="cond_drop_prob"):
        MaskedAcousticLM(semantic_vocab=4, codebook_size=4, num_quantizers=1, cond_drop_prob=1.0)

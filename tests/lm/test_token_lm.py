from __future__ import annotations

import pytest
import torch

from musiclm_pytorch import load, save
from musiclm_pytorch.lm import SamplingConfig, TokenLM, filter_logits


def _lm(**kw) -> TokenLM:
    args = dict(vocab_size=50, dim=32, depth=2, heads=2, dim_head=16, num_cond=3, cond_vocab=8, dropout=0.0,
                max_seq_len=40)  # fmt: skip
    args.update(kw)
    torch.manual_seed(0)
    return TokenLM(**args).eval()


@pytest.mark.parametrize("groups", [None, [10, 20, 20]])
def test_cached_decoding_equals_full_forward(groups):
    lm = _lm(token_groups=groups)
    tokens = torch.randint(0, 50, (2, 12))
    cond = torch.randint(0, 8, (2, 3))
    full = lm(tokens, cond)  # [B, N, V]: position i predicts tokens[:, i]
    cache = lm.new_cache(2)
    x = torch.cat([lm.prefix(cond, 2), lm.embed(tokens[:, :4])], dim=1)  # prefill: prefix + 4 tokens
    logits = [lm._run(x, 0, cache)[:, -5:]]
    cache.length = x.shape[1]
    for i in range(4, 11):  # then one token at a time
        logits.append(lm._run(lm.embed(tokens[:, i : i + 1]), cache.length, cache))
        cache.length += 1
    cached = torch.cat(logits, dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_guidance_scale_one_is_plain_conditional_and_other_scales_change_tokens():
    lm = _lm()
    with torch.no_grad():  # make the condition matter, as training with dropout would
        lm.cond_emb.weight.mul_(20)
    cond = torch.randint(0, 8, (4, 3))
    plain = lm.generate(steps=16, cond_ids=cond, sampling=SamplingConfig(cfg_scale=1.0),
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    again = lm.generate(steps=16, cond_ids=cond, sampling=SamplingConfig(cfg_scale=1.0),
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(plain, again)  # generator= makes sampling reproducible
    guided = lm.generate(steps=16, cond_ids=cond, sampling=SamplingConfig(cfg_scale=3.0),
                         generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert guided.shape == (4, 16) and not torch.equal(guided, plain)
    # greedy check of the guidance formula itself
    tokens = plain[:, :5]
    extended = torch.cat([tokens, torch.zeros(4, 1, dtype=torch.long)], dim=1)  # the last position predicts token 6
    c, u = lm(extended, cond)[:, -1], lm(extended, None)[:, -1]
    first = lm.generate(steps=1, cond_ids=cond, prime=tokens, sampling=SamplingConfig(temperature=0, cfg_scale=2.5))
    assert torch.equal(first[:, -1], (u + 2.5 * (c - u)).argmax(-1))


def test_conditioning_dropout_in_training_only():
    lm = _lm(cond_drop_prob=0.5)
    tokens, cond = torch.randint(0, 50, (64, 6)), torch.randint(0, 8, (64, 3))
    lm.train()
    dropped = lm(tokens, cond, drop=torch.ones(64, dtype=torch.bool))
    torch.testing.assert_close(dropped, lm(tokens, None))
    mixed = lm(tokens, cond)
    rows_null = [(mixed[i] - dropped[i]).abs().max() < 1e-6 for i in range(64)]
    assert 10 < sum(rows_null) < 54  # about half the rows saw the null condition
    lm.eval()
    assert not any((lm(tokens, cond)[i] - dropped[i]).abs().max() < 1e-6 for i in range(64))


def test_prime_continuation_and_allowed_ids():
    lm = _lm()
    prime = torch.randint(0, 50, (2, 5))
    out = lm.generate(steps=6, cond_ids=torch.zeros(2, 3, dtype=torch.long), prime=prime)
    assert torch.equal(out[:, :5], prime) and out.shape == (2, 11)
    allowed = torch.zeros(6, 50, dtype=torch.bool)
    allowed[:, 10:20] = True
    out = lm.generate(steps=6, batch=3, cond_ids=None, allowed=allowed)
    assert out.shape == (3, 6) and bool(((out >= 10) & (out < 20)).all())


def test_filters_and_errors():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, False, False, True]]
    # top_p keeps the smallest set reaching p: token 1 alone has 0.64 of the mass
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, True, True]]
    lm = _lm()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 50\)"):
        lm(torch.full((1, 3), 50))
    with pytest.raises(ValueError, match=r"cond_ids must be \[B, 3\]"):
        lm(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed max_seq_len=40"):
        lm.generate(steps=41, batch=1)


def test_training_lowers_loss_and_checkpoint_round_trip(tmp_path):
    lm = _lm(cond_drop_prob=0.1).train()
    tokens = torch.randint(0, 50, (8, 10))
    cond = torch.randint(0, 8, (8, 3))
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    first = lm.loss(tokens, cond).item()
    for _ in range(60):
        opt.zero_grad()
        lm.loss(tokens, cond).backward()
        opt.step()
    assert lm.loss(tokens, cond).item() < first / 3  # overfits one batch
    loaded = load(save(lm, tmp_path / "lm.safetensors")).eval()
    torch.testing.assert_close(loaded(tokens, cond), lm.eval()(tokens, cond))


def test_paper_size_counted_on_meta_device():
    with torch.device("meta"):
        lm = TokenLM(vocab_size=1024, dim=1024, depth=24, heads=16, dim_head=64, ff_hidden=4096, num_cond=12,
                     cond_vocab=1024, max_seq_len=1500)  # fmt: skip
    blocks = sum(p.numel() for p in lm.blocks.parameters())
    total = sum(p.numel() for p in lm.parameters())
    assert blocks == pytest.approx(24 * 16 * 1024**2, rel=0.01)  # 403M: gated FFN (see the module docstring)
    assert 410e6 < total < 440e6  # with embeddings and head: the paper's ~430M per stage


def test_eos_ends_a_row_and_stops_when_all_have_ended():
    lm = _lm()
    cond = torch.randint(0, 8, (2, 3))
    allowed = torch.ones(10, 50, dtype=torch.bool)
    allowed[:, 7] = False  # 7 is the EOS id: never sampled unless forced below
    per_row = allowed[None].repeat(2, 1, 1)
    per_row[0, 3] = False
    per_row[0, 3, 7] = True  # row 0 must end at step 3
    out = lm.generate(steps=10, cond_ids=cond, allowed=per_row, eos_id=7, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 10)
    assert (out[0, 3:] == 7).all() and (out[0, :3] != 7).all() and (out[1] != 7).all()
    # the row that has not ended samples exactly what it samples without an EOS id
    ref = lm.generate(steps=10, cond_ids=cond, allowed=per_row, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[1], ref[1]) and torch.equal(out[0, :4], ref[0, :4])
    # every row ends at step 2: decoding stops there and the rest is EOS
    calls = []
    original = lm._run
    lm._run = lambda *a: calls.append(1) or original(*a)  # type: ignore[method-assign]
    both = allowed[None].repeat(2, 1, 1)
    both[:, 2] = False
    both[:, 2, 7] = True
    out = lm.generate(steps=10, cond_ids=cond, allowed=both, eos_id=7)
    assert out.shape == (2, 10) and (out[:, 2:] == 7).all() and len(calls) == 3  # prefill + 2 steps
    with pytest.raises(ValueError, match=r"eos_id must be in \[0, 50\), got 50"):
        lm.generate(steps=2, cond_ids=cond, eos_id=50)


def test_token_groups_add_one_learned_embedding_per_id_range(tmp_path):
    lm = _lm(token_groups=[10, 20, 20])
    assert lm.group_of.tolist() == [0] * 10 + [1] * 20 + [2] * 20
    ids = torch.tensor([[0, 9, 10, 29, 30, 49]])
    expected = lm.token_emb(ids) + lm.group_emb.weight[torch.tensor([[0, 0, 1, 1, 2, 2]])]
    torch.testing.assert_close(lm.embed(ids), expected)
    assert _lm().group_emb is None and torch.equal(_lm().embed(ids), _lm().token_emb(ids))
    loaded = load(save(lm, tmp_path / "lm.safetensors")).eval()
    assert loaded.config["token_groups"] == [10, 20, 20]
    torch.testing.assert_close(loaded(ids), lm(ids))
    assert "token_groups" not in _lm().config  # checkpoints without groups keep their old config
    with pytest.raises(ValueError, match=r"token_groups \[10, 20\] must be positive sizes summing to vocab_size=50"):
        _lm(token_groups=[10, 20])


def test_a_continuous_conditioning_added_at_every_position(tmp_path):
    """cond_latent_dim: a latent that alone decides the tokens is learned and followed in generation (the
    cache adds it as the full forward does), guided against the null vector, dropped with the ids, saved."""
    lm = _lm(num_cond=0, cond_latent_dim=4, vocab_size=4, max_seq_len=8, cond_drop_prob=0.2).train()
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):  # random ids, then the latent's id k: after the random part only the latent tells
        k = torch.randint(0, 4, (32,), generator=gen)
        latent = torch.nn.functional.one_hot(k, 4).float() + 0.1 * torch.randn(32, 4, generator=gen)
        seq = k[:, None].repeat(1, 8)
        noise = torch.arange(8)[None] < torch.randint(0, 5, (32, 1), generator=gen)
        seq = torch.where(noise, torch.randint(0, 4, (32, 8), generator=gen), seq)
        loss = lm.loss(seq, cond_latent=latent)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    k = torch.arange(4).repeat(4)
    latent = torch.nn.functional.one_hot(k, 4).float()
    made = lm.generate(steps=8, cond_latent=latent, sampling=SamplingConfig(temperature=0.0))
    assert (made[:, 4:] == k[:, None]).float().mean() > 0.95
    shuffled = lm.generate(steps=8, cond_latent=latent.roll(1, 0), sampling=SamplingConfig(temperature=0.0))
    assert (shuffled[:, 4:] == k[:, None]).float().mean() < 0.1
    # cached decoding sees the same conditioning as a full forward, guided or not, step after step (a random
    # prime, so the tokens after it must come from the latent, not from copying)
    tokens = torch.randint(0, 4, (16, 4), generator=gen)
    for scale in (1.0, 2.5):
        made = lm.generate(steps=4, cond_latent=latent, prime=tokens, sampling=SamplingConfig(0, cfg_scale=scale))
        for i in range(4, 8):
            nxt = torch.cat([made[:, :i], made[:, :1]], 1)  # position i predicts token i
            c, u = lm(nxt, cond_latent=latent)[:, -1], lm(nxt)[:, -1]
            assert torch.equal(made[:, i], (u + scale * (c - u)).argmax(-1))
        assert (made[:, 4:] == k[:, None]).float().mean() > 0.9
    dropped = lm(tokens, cond_latent=latent, drop=torch.ones(16, dtype=torch.bool))
    torch.testing.assert_close(dropped, lm(tokens))  # dropped = the null vector
    again = load(save(lm, tmp_path / "lm.safetensors"), expected=TokenLM).eval()
    torch.testing.assert_close(again(tokens, cond_latent=latent), lm(tokens, cond_latent=latent))
    with pytest.raises(ValueError, match=r"cond_latent must be \[B, 4\] = \[16, 4\], got \(16, 3\)"):
        lm(tokens, cond_latent=latent[:, :3])
    with pytest.raises(ValueError, match="has no cond_latent_dim"):
        _lm()(tokens, torch.zeros(16, 3, dtype=torch.long), cond_latent=latent)

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from musiclm_pytorch.lm import RetrievalPrior, SamplingConfig, TokenLM


def _items(n: int = 6, vocab: int = 8, dim: int = 4) -> list[dict[str, torch.Tensor]]:
    """Clip i has latent e_(i mod dim) (scaled) and semantic ids all equal to i mod vocab."""
    return [{"mulan": F.one_hot(torch.tensor(i % dim), dim).float() * 3, "semantic": torch.full((10,), i % vocab)}
            for i in range(n)]  # fmt: skip


def test_neighbours_latent_and_token_prior_match_a_numpy_reference():
    prior = RetrievalPrior.from_items(_items(), vocab_size=8, k=2, smoothing=0.5)
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0], [0.0, 0.0, 0.2, 1.0]])
    # clips 0 and 4 have latent e0; clips 3 has e3 and clip 2 has e2 (nearest to the second text after e3)
    assert sorted(prior.neighbours(text)[0].tolist()) == [0, 4]
    assert prior.neighbours(text)[1].tolist() == [3, 2]
    assert torch.allclose(prior.latent(text)[0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(prior.latent(text)[1], F.normalize(torch.tensor([0.0, 0, 1, 1]), dim=0))
    counts = torch.full((8,), 2 * 0.5)  # smoothing per neighbour
    counts[0] += 10
    counts[4] += 10
    assert torch.allclose(prior.token_log_prior(text)[0], (counts / counts.sum()).log())
    assert torch.allclose(prior.token_log_prior(text).exp().sum(-1), torch.ones(2))


def test_prior_round_trips_and_names_bad_inputs(tmp_path):
    from musiclm_pytorch import load, save

    prior = RetrievalPrior.from_items(_items(), vocab_size=8, k=3, mix=0.5)
    back = load(save(prior, tmp_path / "p.safetensors"), expected=RetrievalPrior)
    assert back.mix == 0.5 and back.counts.dtype == torch.float16
    text = torch.randn(3, 4)
    assert torch.equal(back.token_log_prior(text), prior.token_log_prior(text))
    with pytest.raises(ValueError, match=r"text latents must be \[B, 4\]"):
        prior.latent(torch.randn(2, 5))
    with pytest.raises(ValueError, match="lacks 'mulan' or 'semantic'"):
        RetrievalPrior.from_items([{"semantic": torch.zeros(3)}], vocab_size=8)
    with pytest.raises(ValueError, match="smoothing > 0"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, smoothing=0)
    with pytest.raises(ValueError, match="0 <= mix < 1"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, mix=1.0)


def test_logit_bias_steers_generation():
    torch.manual_seed(0)
    lm = TokenLM(vocab_size=8, dim=16, depth=1, heads=2, dim_head=8, num_cond=0, max_seq_len=40).eval()
    gen = torch.Generator().manual_seed(0)
    plain = lm.generate(steps=40, batch=2, generator=gen)
    bias = torch.full((2, 8), -30.0)
    bias[0, 3] = 0.0  # row 0 may only take id 3, row 1 only id 6
    bias[1, 6] = 0.0
    steered = lm.generate(steps=40, batch=2, generator=torch.Generator().manual_seed(0), logit_bias=bias,
                          sampling=SamplingConfig(temperature=1.0))  # fmt: skip
    assert len(set(plain[0].tolist())) > 1
    assert set(steered[0].tolist()) == {3} and set(steered[1].tolist()) == {6}
    with pytest.raises(ValueError, match=r"logit_bias must be \[B=2, V=8\]"):
        lm.generate(steps=2, batch=2, logit_bias=torch.zeros(2, 7))


def test_prior_mixture_draws_from_the_mixed_distribution():
    """With ``prior_mix`` m, each id is drawn from (1 - m) p_lm + m p_prior: measured over many rows."""
    torch.manual_seed(0)
    lm = TokenLM(vocab_size=4, dim=16, depth=1, heads=2, dim_head=8, num_cond=0, max_seq_len=4).eval()
    nn_init = torch.nn.init
    nn_init.zeros_(lm.to_logits.weight)  # the LM alone: uniform over the 4 ids
    prior = torch.log(torch.tensor([[0.0, 0.0, 0.0, 1.0]]).clamp_min(1e-30)).expand(4000, -1)
    ids = lm.generate(steps=1, batch=4000, generator=torch.Generator().manual_seed(0), prior_log_probs=prior,
                      prior_mix=0.6)[:, 0]  # fmt: skip
    share = torch.bincount(ids, minlength=4).float() / len(ids)
    expected = torch.tensor([0.1, 0.1, 0.1, 0.7])  # 0.4 x uniform + 0.6 x all on id 3
    assert torch.allclose(share, expected, atol=0.03), share
    with pytest.raises(ValueError, match=r"prior_mix must be in \[0, 1\)"):
        lm.generate(steps=1, batch=2, prior_log_probs=prior[:2], prior_mix=1.5)


class _SumCodec:
    """latents_from_codes as the SpectralCodec's: the sum of each level's codeword."""

    def __init__(self, levels: int = 2, size: int = 16, dim: int = 3):
        self.codebooks = torch.randn(levels, size, dim, generator=torch.Generator().manual_seed(1))

    def latents_from_codes(self, codes: torch.Tensor) -> torch.Tensor:  # [B, Q, T] -> [B, T, L]
        return sum(self.codebooks[q][codes[:, q]] for q in range(codes.shape[1]))


def test_frame_bank_matches_the_nearest_real_frames_of_the_neighbour_clips(tmp_path):
    from musiclm_pytorch import load, save

    codec = _SumCodec()
    gen = torch.Generator().manual_seed(0)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen)} for it in _items()]
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=2)
    assert prior.has_frames and prior.frame_codes.shape == (6, 5, 2)
    # evenly spaced frames 0, 5, 10, 14, 19 of each clip (linspace rounded)
    assert torch.equal(prior.frame_codes[3].long(), items[3]["codes"][:, [0, 5, 10, 14, 19]].T)
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0]])  # neighbours: clips 0 and 4
    predicted = torch.randn(1, 7, 3, generator=gen)
    out = prior.match_frames(text, predicted, codec)
    # brute force: the 10 bank frames of clips 0 and 4, the 2 nearest of each predicted frame averaged
    bank = torch.cat([codec.latents_from_codes(prior.frame_codes[i].long().T[None])[0] for i in (0, 4)])
    for t in range(7):
        d = ((bank - predicted[0, t]) ** 2).sum(-1)
        assert torch.allclose(out[0, t], bank[d.argsort()[:2]].mean(0), atol=1e-5)
    half = prior.match_frames(text, predicted, codec, blend=0.5)
    assert torch.allclose(half, (out + predicted) / 2, atol=1e-6)
    back = load(save(prior, tmp_path / "p.safetensors"), expected=RetrievalPrior)
    assert torch.equal(back.frame_codes, prior.frame_codes) and back.frame_k == 2
    with pytest.raises(ValueError, match="has no frame bank"):
        RetrievalPrior.from_items(_items(), vocab_size=8).match_frames(text, predicted, codec)
    with pytest.raises(ValueError, match="needs each item's codec 'codes'"):
        RetrievalPrior.from_items(_items(), vocab_size=8, frames_per_clip=5)
    with pytest.raises(ValueError, match=r"blend must be in \[0, 1\]"):
        prior.match_frames(text, predicted, codec, blend=1.5)


def test_pitch_aware_matching_adds_a_chroma_distance():
    import librosa

    from musiclm_pytorch.lm.prior import frame_chroma

    codec = _SumCodec()
    codec.n_fft, codec.sample_rate, codec.floor = 64, 16000, 1e-2
    codec.basis = torch.randn(33, 3, generator=torch.Generator().manual_seed(2)) * 0.5
    codec.mean = torch.zeros(33)
    lat = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    mag = (lat @ codec.basis.T).exp() - codec.floor
    reference = torch.from_numpy(librosa.filters.chroma(sr=16000, n_fft=64)).float() @ mag.T  # [12, 5]
    assert torch.allclose(frame_chroma(lat, codec), F.normalize(reference.T, dim=-1), atol=1e-5)

    gen = torch.Generator().manual_seed(0)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen)} for it in _items()]
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1, frame_pitch_weight=5.0)
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0]])
    predicted = torch.randn(1, 7, 3, generator=gen)
    out = prior.match_frames(text, predicted, codec)
    bank = torch.cat([codec.latents_from_codes(prior.frame_codes[i].long().T[None])[0] for i in (0, 4)])
    for t in range(7):
        d = ((bank - predicted[0, t]) ** 2).sum(-1)
        d = d / d.mean() + 5.0 * ((frame_chroma(bank, codec) - frame_chroma(predicted[0, t], codec)) ** 2).sum(-1)
        assert torch.allclose(out[0, t], bank[d.argmin()], atol=1e-5)
    plain = prior.match_frames(text, predicted, codec, pitch_weight=0.0)
    assert not torch.equal(out, plain)  # the chroma term changes which frames are chosen here
    with pytest.raises(ValueError, match="pitch-aware matching needs a magnitude codec with 'basis'"):
        prior.match_frames(text, predicted, _SumCodec())


def test_semantic_aware_matching_adds_the_tokenizer_centre_distance():
    codec = _SumCodec()
    gen = torch.Generator().manual_seed(0)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen),
              "semantic": torch.randint(0, 8, (10,), generator=gen)} for it in _items()]  # fmt: skip
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1,
                                      frame_semantic_weight=4.0)  # fmt: skip
    # frames 0, 5, 10, 14, 19 of 20 lie in semantic ids 0, 2, 5, 7, 9 of 10
    assert torch.equal(prior.frame_semantic[3].long(), items[3]["semantic"][[0, 2, 5, 7, 9]])
    centers = torch.randn(8, 5, generator=gen)
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0]])  # neighbours: clips 0 and 4
    predicted = torch.randn(1, 7, 3, generator=gen)
    ids = torch.randint(0, 8, (1, 7), generator=gen)
    out = prior.match_frames(text, predicted, codec, semantic=ids, centers=centers)
    bank = torch.cat([codec.latents_from_codes(prior.frame_codes[i].long().T[None])[0] for i in (0, 4)])
    bank_ids = torch.cat([prior.frame_semantic[i].long() for i in (0, 4)])
    for t in range(7):
        d = ((bank - predicted[0, t]) ** 2).sum(-1)
        s = ((centers[bank_ids] - centers[ids[0, t]]) ** 2).sum(-1)
        assert torch.allclose(out[0, t], bank[(d / d.mean() + 4.0 * s / s.mean()).argmin()], atol=1e-5)
    with pytest.raises(ValueError, match=r"a semantic weight needs the generated frames' ids \[B=1, T=7\]"):
        prior.match_frames(text, predicted, codec)


def _path_cost(cost: torch.Tensor, path: list[int], run: int, jump: float) -> float:
    total = float(cost[0, path[0]])
    for t in range(1, len(path)):
        free = path[t] == path[t - 1] + 1 and path[t] % run != 0
        total += float(cost[t, path[t]]) + (0.0 if free else jump)
    return total


def test_select_units_finds_the_cheapest_path_by_brute_force():
    import itertools

    from musiclm_pytorch.lm.prior import select_units

    gen = torch.Generator().manual_seed(0)
    run, t = 3, 4
    cost = torch.rand(2, t, 2 * run, generator=gen)  # two clips of three frames
    for jump in (0.0, 0.3, 5.0):
        path = select_units(cost, run, jump)
        for b in range(2):
            best = min(_path_cost(cost[b], list(p), run, jump) for p in itertools.product(range(2 * run), repeat=t))
            assert _path_cost(cost[b], path[b].tolist(), run, jump) == pytest.approx(best)
    # a large jump cost makes one run of consecutive frames within a clip (no run crosses into the next clip)
    long_path = select_units(cost, run, 100.0)[0].tolist()
    assert sum(1 for a, b in zip(long_path, long_path[1:]) if b != a + 1 or b % run == 0) == 1  # t 4 > run 3
    assert torch.equal(select_units(cost, run, 0.0), cost.argmin(-1))  # free jumps: frame by frame
    with pytest.raises(ValueError, match="6 bank frames are not whole clips of 4"):
        select_units(cost, 4, 1.0)


def test_frame_window_keeps_consecutive_frames_and_continuity_copies_runs():
    codec = _SumCodec()
    gen = torch.Generator().manual_seed(0)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen)} for it in _items()]
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=6, frame_k=1, frame_window=True,
                                      frame_continuity=50.0)  # fmt: skip
    assert torch.equal(prior.frame_codes[3].long(), items[3]["codes"][:, 7:13].T)  # the middle 6 of 20
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0]])  # neighbours: clips 0 and 4
    predicted = torch.randn(1, 5, 3, generator=gen)
    out = prior.match_frames(text, predicted, codec)
    bank = {i: codec.latents_from_codes(prior.frame_codes[i].long().T[None])[0] for i in (0, 4)}
    # with jumps this expensive the output is 5 consecutive real frames of one neighbour clip
    assert any(torch.allclose(out[0], bank[i][s : s + 5]) for i in (0, 4) for s in (0, 1))
    free = prior.match_frames(text, predicted, codec, continuity=0.0)
    assert not torch.equal(out, free)
    with pytest.raises(ValueError, match="frame_k == 1 with a continuity cost"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, frames_per_clip=4, frame_levels=2, frame_k=2,
                       frame_continuity=1.0)  # fmt: skip


def test_frame_neighbours_match_only_the_nearest_clips_frames():
    codec = _SumCodec()
    gen = torch.Generator().manual_seed(1)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen)} for it in _items()]
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=6, frame_k=1, frame_neighbours=1)
    assert prior.config["frame_neighbours"] == 1
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0]])  # neighbours: clips 0 (nearest) and 4
    assert prior.neighbours(text)[0].tolist() == [0, 4]
    out = prior.match_frames(text, torch.randn(1, 30, 3, generator=gen), codec)
    nearest = codec.latents_from_codes(prior.frame_codes[0].long().T[None])[0]  # [6, 3]
    assert all(any(torch.allclose(o, f) for f in nearest) for o in out[0])  # every frame one of clip 0's
    both = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=6, frame_k=1)
    other = codec.latents_from_codes(both.frame_codes[4].long().T[None])[0]
    taken = both.match_frames(text, torch.randn(1, 30, 3, generator=torch.Generator().manual_seed(1)), codec)
    assert any(any(torch.allclose(o, f) for f in other) for o in taken[0])  # with k=2 clip 4's frames are used
    with pytest.raises(ValueError, match="frame_neighbours must be in"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, k=2, frame_neighbours=3)


def test_beat_periods_give_a_text_its_neighbours_median_tempo(tmp_path):
    from musiclm_pytorch import load, save

    prior = RetrievalPrior.from_items(_items(), vocab_size=8, k=3, beat_periods=True)
    prior.set_beat_periods(torch.tensor([10.0, 20.0, 30.0, 40.0, 14.0, 60.0]))
    text = torch.tensor([[1.0, 0.2, 0.0, 0.1]])  # nearest: clips 0 and 4 (e0), then 1 (e1)
    assert prior.beat_period(text).tolist() == [14.0]  # median of 10, 14, 20
    back = load(save(prior, tmp_path / "p.safetensors"), expected=RetrievalPrior)
    assert back.has_beats and torch.equal(back.periods, prior.periods)
    plain = RetrievalPrior.from_items(_items(), vocab_size=8)
    assert not plain.has_beats  # priors without periods keep their file layout
    with pytest.raises(ValueError, match="keeps no beat periods"):
        plain.beat_period(text)
    with pytest.raises(ValueError, match=r"periods must be \(6,\) and > 0"):
        prior.set_beat_periods(torch.zeros(6))


def test_frame_envelope_takes_only_the_matched_frames_cepstral_envelope(tmp_path):
    import numpy as np
    import scipy.fft

    from musiclm_pytorch.lm.prior import envelope_projector

    codec = _SumCodec()
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((33, 3)))[0]  # orthonormal columns
    codec.basis = torch.from_numpy(basis).float()
    # the map is basis.T D.T D basis, D the first 4 rows of the orthonormal DCT-II over the 33 bins (scipy's)
    dct = scipy.fft.dct(np.eye(33), norm="ortho", axis=0)[:4]
    assert np.allclose(envelope_projector(codec.basis, 4).numpy(), basis.T @ dct.T @ dct @ basis, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen)} for it in _items()]
    whole = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1)
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1, frame_envelope=4)
    prior.load_state_dict(whole.state_dict())
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0]])
    predicted = torch.randn(1, 7, 3, generator=gen)
    matched = whole.match_frames(text, predicted, codec)  # the real frames the envelope comes from
    out = prior.match_frames(text, predicted, codec)
    p = torch.from_numpy(basis.T @ dct.T @ dct @ basis).float()
    assert torch.allclose(out, predicted + (matched - predicted) @ p.T, atol=1e-5)
    assert not torch.allclose(out, matched) and not torch.allclose(out, predicted)
    save_path = tmp_path / "prior.safetensors"
    from musiclm_pytorch import load, save

    save(prior, save_path)
    assert load(save_path).config["frame_envelope"] == 4
    with pytest.raises(ValueError, match="frame_envelope needs a magnitude codec with a latent 'basis'"):
        prior.match_frames(text, predicted, _SumCodec())
    skip = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1, frame_envelope=4,
                                     frame_envelope_skip=1)  # fmt: skip
    skip.load_state_dict(whole.state_dict())
    p1 = torch.from_numpy(basis.T @ dct[1:].T @ dct[1:] @ basis).float()  # the loudness (coefficient 0) kept
    assert torch.allclose(skip.match_frames(text, predicted, codec), predicted + (matched - predicted) @ p1.T,
                          atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="frame_envelope_skip must be in"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, frames_per_clip=4, frame_levels=2, frame_envelope=4,
                       frame_envelope_skip=4)  # fmt: skip
    with pytest.raises(ValueError, match="frame_envelope must be >= 0 and needs a frame bank"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, frame_envelope=4)


def test_a_drums_only_frame_bank_keeps_the_prediction_where_no_drums_are_asked():
    codec = _SumCodec()
    gen = torch.Generator().manual_seed(0)
    items = [{**it, "codes": torch.randint(0, 16, (2, 20), generator=gen)} for it in _items()]
    every = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1)
    only = RetrievalPrior.from_items(items, vocab_size=8, k=2, frames_per_clip=5, frame_k=1, frame_drums_only=True)
    only.load_state_dict(every.state_dict())
    text = torch.tensor([[1.0, 0.1, 0.0, 0.0], [0.0, 1.0, 0.1, 0.0], [0.1, 0.0, 1.0, 0.0]])
    predicted = torch.randn(3, 7, 3, generator=gen)
    matched = every.match_frames(text, predicted, codec)
    out = only.match_frames(text, predicted, codec, drums=torch.tensor([1, 0, 1]))
    assert torch.equal(out[1], predicted[1]) and torch.allclose(out[[0, 2]], matched[[0, 2]])
    assert not torch.allclose(matched[1], predicted[1])
    assert torch.equal(only.match_frames(text, predicted, codec, drums=torch.zeros(3, dtype=torch.long)), predicted)
    with pytest.raises(ValueError, match=r"a drums-only frame bank needs each text's drums label \[B=3\], got None"):
        only.match_frames(text, predicted, codec)
    with pytest.raises(ValueError, match="frame_drums_only needs a frame bank"):
        RetrievalPrior(size=2, cond_dim=4, vocab_size=8, frame_drums_only=True)


def test_family_pool_puts_the_texts_family_first_and_survives_a_round_trip(tmp_path):
    from musiclm_pytorch import load, save

    # six clips along one direction (e1 offsets set who is nearest: 0, 2, 1, 3, 4, 5); a small +-e3 is the family a
    # reader with class latents +e3 ("A") and -e3 ("B") reads: A, B, A, B, A, B
    offsets, signs = [0.30, 0.20, 0.28, 0.18, 0.10, 0.08], [1, -1, 1, -1, 1, -1]
    lat = torch.tensor([[1.0, a, 0.0, 0.05 * z] for a, z in zip(offsets, signs)])
    items = [{"mulan": row, "semantic": torch.full((10,), i)} for i, row in enumerate(lat)]
    classes = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, -1.0]])
    plain = RetrievalPrior.from_items(items, vocab_size=8, k=2)
    prior = RetrievalPrior.from_items(items, vocab_size=8, k=2, family_pool=6, family_classes=2)
    prior.set_families(classes)
    assert prior.bank_family.tolist() == [0, 1, 0, 1, 0, 1]
    text_a, text_b = torch.tensor([[1.0, 0.30, 0.0, 0.005]]), torch.tensor([[1.0, 0.30, 0.0, -0.005]])
    assert plain.neighbours(text_a).tolist() == plain.neighbours(text_b).tolist() == [[0, 2]]  # nearness alone
    assert prior.read_family(torch.cat([text_a, text_b])).tolist() == [0, 1]
    assert prior.family_neighbours(text_a).tolist() == [[0, 2]] and prior.family_neighbours(text_b).tolist() == [[1, 3]]
    assert prior.neighbours(text_b).tolist() == [[0, 2]]  # the pooled ids, beat period and frames keep the nearest
    assert torch.allclose(prior.latent(text_b), F.normalize(F.normalize(lat[[1, 3]], dim=-1).mean(0), dim=0)[None])
    small = RetrievalPrior.from_items(items, vocab_size=8, k=2, family_pool=2, family_classes=2)
    small.set_families(classes)
    assert small.family_neighbours(text_b).tolist() == [[0, 2]]  # no B clip among its 2 nearest: the nearest
    save(prior, tmp_path / "p.safetensors")
    again = load(tmp_path / "p.safetensors", expected=RetrievalPrior)
    assert again.family_neighbours(text_b).tolist() == [[1, 3]] and again.config["family_pool"] == 6
    with pytest.raises(ValueError, match="family_pool must be 0 or >= k=2 with family_classes >= 2"):
        RetrievalPrior(size=6, cond_dim=4, vocab_size=8, k=2, family_pool=1, family_classes=2)
    with pytest.raises(ValueError, match="reads no families"):
        plain.set_families(classes)
    with pytest.raises(ValueError, match=r"class latents must be \(2, 4\)"):
        prior.set_families(classes[:1])
    assert torch.equal(prior.acoustic_latent(text_b), prior.latent(text_b))  # both stages get the family's clips
    # the family's clips for the acoustic stage alone: the semantic LM's latent keeps the nearest clips
    split = RetrievalPrior.from_items(items, vocab_size=8, k=2, family_pool=6, family_classes=2,
                                      family_acoustic_only=True)  # fmt: skip
    split.set_families(classes)
    assert torch.allclose(split.latent(text_b), plain.latent(text_b))
    assert torch.allclose(split.acoustic_latent(text_b), prior.latent(text_b))
    assert not torch.allclose(split.acoustic_latent(text_b), split.latent(text_b))
    assert torch.equal(plain.acoustic_latent(text_b), plain.latent(text_b))
    save(split, tmp_path / "s.safetensors")
    assert load(tmp_path / "s.safetensors", expected=RetrievalPrior).family_acoustic_only
    with pytest.raises(ValueError, match="family_acoustic_only needs family_pool > 0"):
        RetrievalPrior(size=6, cond_dim=4, vocab_size=8, k=2, family_acoustic_only=True)

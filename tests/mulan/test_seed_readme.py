"""The seed README's usage block, verbatim (../shared/seed/README.md)."""


def test_seed_readme_usage_runs_verbatim():
    # fmt: off
    # ---- begin verbatim block ----
    import torch
    from musiclm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer

    audio_transformer = AudioSpectrogramTransformer(
        dim = 512,
        depth = 6,
        heads = 8,
        dim_head = 64,
        spec_n_fft = 128,
        spec_win_length = 24,
        spec_aug_stretch_factor = 0.8
    )

    text_transformer = TextTransformer(
        dim = 512,
        depth = 6,
        heads = 8,
        dim_head = 64
    )

    mulan = MuLaN(
        audio_transformer = audio_transformer,
        text_transformer = text_transformer
    )

    texts = torch.randint(0, 20000, (2, 256))
    wavs = torch.randn(2, 1024)

    loss = mulan(wavs, texts)
    loss.backward()
    # ---- end verbatim block ----
    # fmt: on

    assert loss.ndim == 0 and torch.isfinite(loss)
    grads = [p.grad for p in mulan.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert mulan.audio_to_latents.weight.grad.abs().sum() > 0
    assert mulan.text.token_emb.weight.grad.abs().sum() > 0
    mulan.eval()
    with torch.no_grad():
        a, t = mulan.get_audio_latents(wavs), mulan.get_text_latents(texts)
    assert a.shape == t.shape == (2, 128)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))

from __future__ import annotations

import json

from musiclm_pytorch import MuLaNEmbedQuantizer, build_mulan, load, save
from musiclm_pytorch.training.conditioning import fit_conditioning


def test_fit_conditioning_on_a_corpus(tiny_corpus, tmp_path):
    mulan_path = save(build_mulan("tiny"), tmp_path / "mulan.safetensors")
    out = tmp_path / "cond.safetensors"
    report = fit_conditioning(mulan_path=str(mulan_path), data=str(tiny_corpus), out=str(out), num_quantizers=3,
                              codebook_size=4, progress=False)  # fmt: skip
    assert report["train_latents"] == 18 and report["val_clips"] == 6  # every training clip, not a batch
    agreement = report["val_text_audio_agreement"]
    assert len(agreement["per_level"]) == 3 and all(0 <= p <= 1 for p in agreement["per_level"])
    assert agreement["prefix"] == sorted(agreement["prefix"], reverse=True)  # prefix agreement only shrinks
    loaded = load(out)
    assert isinstance(loaded, MuLaNEmbedQuantizer) and not loaded.namespaces  # tables live in the stage LMs
    assert json.loads(out.with_suffix(".json").read_text())["codebook_size"] == 4


def test_latents_cache_reused_for_another_codebook_size(tiny_corpus, tmp_path):
    mulan_path = save(build_mulan("tiny"), tmp_path / "mulan.safetensors")
    cache = tmp_path / "latents.pt"
    first = fit_conditioning(mulan_path=str(mulan_path), data=str(tiny_corpus), out=str(tmp_path / "a.safetensors"),
                             num_quantizers=2, codebook_size=4, latents_cache=str(cache), progress=False)  # fmt: skip
    assert cache.is_file()
    second = fit_conditioning(mulan_path=str(mulan_path), data=str(tiny_corpus), out=str(tmp_path / "b.safetensors"),
                              num_quantizers=2, codebook_size=8, latents_cache=str(cache), progress=False)  # fmt: skip
    assert second["train_latents"] == first["train_latents"] and second["codebook_size"] == 8
    assert second["val_cosine_text_vs_audio_latent"] == first["val_cosine_text_vs_audio_latent"]

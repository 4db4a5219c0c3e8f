from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from musiclm_pytorch import CheckpointError, MuLaN, build_mulan, load, save
from musiclm_pytorch.checkpoint import read_header
from musiclm_pytorch.mulan import AudioSpectrogramTransformer


def test_round_trip_rebuilds_without_arguments(tmp_path, tiny_mulan):
    tiny_mulan.eval()
    wavs = torch.randn(2, 16000)
    texts = torch.randint(0, 1000, (2, 12))
    before = (tiny_mulan.get_audio_latents(wavs), tiny_mulan.get_text_latents(texts))
    path = save(tiny_mulan, tmp_path / "mulan.safetensors")
    header = read_header(path)
    assert header["component"] == "mulan" and header["format_version"] == 1
    assert header["config"]["audio_transformer"]["config"]["dim"] == 64
    loaded = load(path, expected=MuLaN).eval()
    after = (loaded.get_audio_latents(wavs), loaded.get_text_latents(texts))
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"


def test_wrong_component_is_refused(tmp_path):
    ast = AudioSpectrogramTransformer(dim=32, depth=1, heads=2, dim_head=16)
    path = ast.save(tmp_path / "ast.safetensors")
    with pytest.raises(CheckpointError, match="expected a 'mulan'"):
        load(path, expected=MuLaN)
    assert isinstance(load(path), AudioSpectrogramTransformer)


def test_a_mulan_is_loaded_from_the_conditioning_file_that_holds_it(tmp_path, tiny_mulan):
    from musiclm_pytorch import MuLaNEmbedQuantizer
    from musiclm_pytorch.checkpoint import identity
    from musiclm_pytorch.lm import TokenLM

    cond = MuLaNEmbedQuantizer(tiny_mulan, conditioning_dims=(), namespaces=(), num_quantizers=2, codebook_size=4)
    path = save(cond, tmp_path / "conditioning.safetensors")
    mulan = load(path, expected=MuLaN)  # one copy on disk serves both
    assert isinstance(mulan, MuLaN) and identity(mulan) == identity(tiny_mulan)
    assert isinstance(load(path), MuLaNEmbedQuantizer)
    with pytest.raises(CheckpointError, match="holds a 'mulan_embed_quantizer', expected a 'token_lm'"):
        load(path, expected=TokenLM)


def test_corrupt_and_foreign_files(tmp_path, tiny_mulan):
    path = save(tiny_mulan, tmp_path / "m.safetensors")
    data = path.read_bytes()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load(broken)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="garbage"):
        load(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a musiclm_pytorch checkpoint"):
        load(foreign)
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "nope.safetensors")


def test_mismatched_weights_are_refused(tmp_path, tiny_mulan):
    path = save(tiny_mulan, tmp_path / "m.safetensors")
    other = build_mulan("tiny", dim_latent=64)
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    header = read_header(path)
    save_file(
        state,
        tmp_path / "mixed.safetensors",
        metadata={
            "format_version": "1",
            "component": "mulan",
            "config": json.dumps(header["config"]),
        },
    )
    with pytest.raises(CheckpointError):
        load(tmp_path / "mixed.safetensors")


def test_failed_write_keeps_old_file(tmp_path, tiny_mulan, monkeypatch):
    path = save(tiny_mulan, tmp_path / "m.safetensors")
    good = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("musiclm_pytorch.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save(tiny_mulan, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_frozen_builtin_text_encoder_is_not_stored(tmp_path):
    mulan = build_mulan("small").eval()
    path = save(mulan, tmp_path / "small.safetensors")
    assert path.stat().st_size < 20e6  # the 90 MB MiniLM ships in its package, not in our file
    loaded = load(path).eval()
    torch.testing.assert_close(
        loaded.get_text_latents(raw_texts=["calm piano"]), mulan.get_text_latents(raw_texts=["calm piano"])
    )
    wavs = torch.randn(1, 32000)
    torch.testing.assert_close(loaded.get_audio_latents(wavs), mulan.get_audio_latents(wavs))


def test_load_imports_the_defining_module(tmp_path):
    """A fresh interpreter that imported only the checkpoint module loads a codec and a semantic tokenizer."""
    import subprocess
    import sys

    from musiclm_pytorch.codec import SoundStream
    from musiclm_pytorch.semantic import SemanticTokenizer

    save(SoundStream(strides=[2, 4], channels=4, dim=8, num_quantizers=2, codebook_size=8), tmp_path / "c.safetensors")
    save(SemanticTokenizer(vocab_size=8), tmp_path / "s.safetensors")
    code = (
        "import sys; from musiclm_pytorch.checkpoint import load\n"
        "assert 'musiclm_pytorch.semantic.tokenizer' not in sys.modules\n"
        f"print(type(load({str(tmp_path / 'c.safetensors')!r})).__name__, "
        f"type(load({str(tmp_path / 's.safetensors')!r})).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["SoundStream", "SemanticTokenizer"]


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    """Run the test under each umask (restored after): the mode must follow it, not be fixed."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_saved_files_get_the_mode_new_files_get(tmp_path, umask):
    """mkstemp creates 0o600 files and a rename keeps the mode: checkpoints and training state must come
    out as ``open`` would make them, 0o666 less the umask."""
    from musiclm_pytorch.training.common import atomic_torch_save

    model = AudioSpectrogramTransformer(dim=32, depth=1, heads=2, dim_head=16)
    paths = [save(model, tmp_path / "ast.safetensors"), atomic_torch_save({"step": 3}, tmp_path / "state.pt")]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, f"{path.name}: {oct(path.stat().st_mode)}"
    save(model, paths[0])  # overwriting an existing file keeps the rule
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ast.safetensors", "state.pt"]


def test_atomic_path_removes_its_file_when_the_writer_fails(tmp_path):
    from musiclm_pytorch.checkpoint import atomic_path

    target = tmp_path / "sub" / "out.bin"
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.exists()
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(target.parent.iterdir()) == []
    with atomic_path(target, suffix=".wav") as tmp:
        assert tmp.name.endswith(".wav")
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(target.parent.iterdir()) == [target]

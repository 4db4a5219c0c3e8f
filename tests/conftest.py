"""Shared fixtures. Tests run on CPU, one thread (two threads thrash on small ops under load), no network."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def free_port() -> int:
    """A TCP port no one holds now (the OS picks it), for a test's process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def torchrun() -> str:
    """The venv's torchrun launcher."""
    return shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


@pytest.fixture
def tiny_mulan():
    from musiclm_pytorch import build_mulan

    return build_mulan("tiny")


def make_tiny_bert(folder) -> str:
    """A random-weight BERT (2 layers, hidden 32) with a 60-word WordPiece vocabulary, saved to ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = "a the piano guitar drums slow fast song with and of calm loud happy sad music violin bass".split()
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *words,
        *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """24 rendered 3 s clips (train + val), or a skip where FluidSynth is missing (.ci/run installs it)."""
    pytest.importorskip("fluidsynth", reason="needs pyfluidsynth + apt fluidsynth (installed by .ci/run)")
    from musiclm_pytorch.data.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("tiny_corpus")
    cfg = SynthConfig(num_clips=24, seconds=3.0, workers=1, soundfonts=["TimGM6mb.sf2"], val_fraction=0.25,
                      bach_fraction=0.0, seed=12)  # fmt: skip
    synthesize(cfg, out, progress=False)
    return out


def _lm(vocab: int, max_seq_len: int):
    from musiclm_pytorch.lm import TokenLM

    return TokenLM(vocab_size=vocab, dim=32, depth=1, heads=2, dim_head=16, num_cond=2, cond_vocab=4, dropout=0.0,
                   max_seq_len=max_seq_len).eval()  # fmt: skip


@pytest.fixture(scope="session")
def musiclm_parts():
    """A tiny random MusicLM's parts: 50 Hz codec (4 x 8 codes), 8 semantic ids, 2 x 4 MuLaN tokens."""
    import torch.nn.functional as F

    from musiclm_pytorch import MuLaNEmbedQuantizer, build_mulan
    from musiclm_pytorch.codec import SoundStream
    from musiclm_pytorch.semantic import SemanticTokenizer

    torch.manual_seed(0)
    cond = MuLaNEmbedQuantizer(build_mulan("tiny"), conditioning_dims=(), namespaces=(), num_quantizers=2,
                               codebook_size=4)  # fmt: skip
    cond.fit(F.normalize(torch.randn(32, 128), dim=-1))
    sem = SemanticTokenizer(vocab_size=8)
    codec = SoundStream(
        strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False
    ).eval()
    return dict(conditioner=cond, semantic_tokenizer=sem, codec=codec, semantic_lm=_lm(8, 50),
                coarse_lm=_lm(8 + 2 * 8, 50 + 100 * 2), fine_lm=_lm(4 * 8, 40), num_coarse=2)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_lm():
    """``tiny_lm(vocab, max_seq_len)``: a random one-layer TokenLM conditioned on 2 x 4 MuLaN tokens."""
    return _lm

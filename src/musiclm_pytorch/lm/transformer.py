"""The decoder-only token LM every MusicLM stage uses: conditioning prefix, RoPE, SDPA, a
preallocated KV cache, and classifier-free guidance in one batched forward.

Sequence layout: ``[cond_1 .. cond_Q, t_1 .. t_N]``. The Q conditioning vectors (MuLaN tokens through
this stage's embedding table, or a learned null condition when dropped) form a prefix; the model
predicts ``t_{i+1}`` from everything before it. Conditioning dropout in training (probability
``cond_drop_prob``) teaches the null branch, so at sampling ``logits = uncond + s * (cond - uncond)``
really changes the output (the reference's null branch equalled its conditioned one).

Sizes: the feed-forward is gated (SwiGLU, three d x ff matrices). With the paper's d 1024, 24 layers,
FFN 4096 that gives 24 x (4 + 12) x 1024^2 = 403M weights plus embeddings, close to the ~430M per stage
MusicLM reports; a plain 2-matrix FFN would give only 302M.

Shape letters: B batch, N tokens, Q conditioning tokens, D model dim, H heads, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..checkpoint import Component
from ..mulan.transformer import RotaryEmbedding, apply_rotary


class KVCache:
    """Preallocated keys and values ``[L, B, H, max_len, Dh]``; ``length`` positions are filled."""

    def __init__(self, *, layers: int, batch: int, heads: int, max_len: int, dim_head: int, device, dtype):
        shape = (layers, batch, heads, max_len, dim_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        t = k.shape[-2]
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} needed")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, causal: bool = True):
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], cache: KVCache | None, layer: int) -> Tensor:
        q, k, v = rearrange(self.to_qkv(self.norm(x)), "b n (t h d) -> t b h n d", t=3, h=self.heads)
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.append(layer, k, v)
        n, total = q.shape[-2], k.shape[-2]
        if start == 0:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
            )
        elif n == 1:  # one new query (a decoding step) sees every cached key: no mask to build
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # new queries at positions start..start+n-1 see every key up to their own position
            mask = torch.arange(total, device=x.device)[None, :] <= (start + torch.arange(n, device=x.device))[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(self.norm(x)).chunk(2, dim=-1)
        return self.down(self.dropout(F.silu(gate) * up))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_hidden: int, dropout: float, causal: bool = True):
        super().__init__()
        self.attn = _Attention(dim, heads, dim_head, dropout, causal)
        self.ff = _SwiGLU(dim, ff_hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.drop(self.attn(x, rotary, cache, layer))
        return x + self.drop(self.ff(x))


@dataclass
class SamplingConfig:
    """``temperature`` 0 means greedy; ``top_k`` 0 and ``top_p`` 1 disable those filters."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0


def filter_logits(logits: Tensor, *, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Mask all but the ``top_k`` tokens and the smallest set with probability >= ``top_p``."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(remove.scatter(-1, idx, remove), float("-inf"))
    return logits


def sample(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> Tensor:
    """``logits [B, V] -> ids [B]``."""
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]


class TokenLM(Component):
    """Decoder-only LM over ``vocab_size`` ids, conditioned on a prefix of ``num_cond`` MuLaN tokens.

    Args:
        vocab_size: output vocabulary (all of this stage's ids, offsets included).
        dim, depth, heads, dim_head, ff_hidden, dropout: sizes (paper: 1024, 24, 16, 64, 4096, 0.1).
        num_cond: conditioning tokens per example (MuLaN RVQ levels); 0 = unconditional.
        cond_vocab: ids per conditioning level (the quantizer's codebook size).
        cond_drop_prob: probability of replacing an example's condition by the null one in training.
        max_seq_len: longest token sequence (prefix excluded) for the KV cache.
        token_groups: sizes of the consecutive id ranges that make up the vocabulary (a stage's layout:
            semantic ids, then each codec level); every id's input embedding adds its range's learned
            embedding, so the model knows a token's level from the first step instead of learning it
            separately for each of thousands of ids. ``None``: one range, no group embedding.
        cond_latent_dim: size of a continuous conditioning (a MuLaN latent, unit-normalised here) whose
            projection is added to EVERY input position, so each step reads the conditioning directly
            rather than through attention to a prefix far behind; dropped with the ids (the null
            vector), guided with them. 0: none (the ids alone, as in the paper).
        default_cfg_scale: the guidance :class:`~musiclm_pytorch.MusicLM` uses for this stage when its
            caller gives none (``None``: the pipeline's default); kept in the file.
        default_temperature: likewise the sampling temperature (``None``: the paper's for the stage).
        beat_harmonics: with ``> 0``, a beat grid ``beat [B, 2]`` = (period, phase) in frames can be given:
            each position adds a projection of the beat phase of the token it predicts (sine and cosine
            at 1, 2, 4, ... times the beat, ``beat_harmonics`` of them, and at the bar of 4;
            :func:`~musiclm_pytorch.semantic.beat.beat_features`), so where the beat falls need not be
            inferred. A row with period <= 0 (unknown) gets a learned null vector; in training each row's
            grid is dropped with ``beat_drop_prob``. Not dropped by guidance: both branches keep it.
        control_classes: class counts of categorical labels ``controls [B, len(control_classes)]`` the LM
            reads (:mod:`~musiclm_pytorch.lm.controls`: key and drums), each a learned vector added to every
            input position; label -1 (unknown) is the control's learned null vector. Part of the condition:
            dropped with it (and each on its own with ``control_drop_prob`` in training), null in guidance's
            unconditioned branch, so guidance amplifies them. ``None``: no controls.
        control_source: where :class:`~musiclm_pytorch.MusicLM` reads the labels at generation: ``"prior"``
            (MuLaN's zero-shot reading of the latent the LM is conditioned on, as in training) or ``"text"``
            (of the text latent itself); kept in the file.
        key_bias: with controls and a retrieval prior, the pipeline adds ``key_bias`` times the key label's
            PMI table over the prior's training clips (:func:`~musiclm_pytorch.lm.controls.label_pmi`) to
            every step's logits (0: none); kept in the file.
    """

    component_name = "token_lm"

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int = 512,
        depth: int = 6,
        heads: int = 8,
        dim_head: int = 64,
        ff_hidden: int | None = None,
        dropout: float = 0.1,
        num_cond: int = 12,
        cond_vocab: int = 1024,
        cond_drop_prob: float = 0.1,
        max_seq_len: int = 2048,
        token_groups: Sequence[int] | None = None,
        cond_latent_dim: int = 0,
        default_cfg_scale: float | None = None,
        default_temperature: float | None = None,
        beat_harmonics: int = 0,
        beat_drop_prob: float = 0.1,
        control_classes: Sequence[int] | None = None,
        control_drop_prob: float = 0.2,
        control_source: str = "prior",
        key_bias: float = 0.0,
    ):
        super().__init__()
        ff_hidden = ff_hidden or 4 * dim
        groups = list(token_groups) if token_groups else None
        self.save_config(
            vocab_size=vocab_size, dim=dim, depth=depth, heads=heads, dim_head=dim_head, ff_hidden=ff_hidden,
            dropout=dropout, num_cond=num_cond, cond_vocab=cond_vocab, cond_drop_prob=cond_drop_prob,
            max_seq_len=max_seq_len, **({"token_groups": groups} if groups else {}),
            **({"cond_latent_dim": cond_latent_dim} if cond_latent_dim else {}),
            **({"default_cfg_scale": default_cfg_scale} if default_cfg_scale is not None else {}),
            **({"default_temperature": default_temperature} if default_temperature is not None else {}),
            **({"beat_harmonics": beat_harmonics, "beat_drop_prob": beat_drop_prob} if beat_harmonics else {}),
            **({"control_classes": list(control_classes), "control_drop_prob": control_drop_prob,
                "control_source": control_source, "key_bias": key_bias} if control_classes else {}),
        )  # fmt: skip
        self.default_cfg_scale = default_cfg_scale
        if default_temperature is not None and default_temperature <= 0:
            raise ValueError(f"default_temperature must be > 0, got {default_temperature}")
        self.default_temperature = default_temperature
        if groups and (sum(groups) != vocab_size or min(groups) < 1):
            raise ValueError(f"token_groups {groups} must be positive sizes summing to vocab_size={vocab_size}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        self.vocab_size, self.num_cond, self.cond_vocab = vocab_size, num_cond, cond_vocab
        self.cond_drop_prob, self.max_seq_len = cond_drop_prob, max_seq_len
        self.depth, self.heads, self.dim_head = depth, heads, dim_head
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.group_emb = nn.Embedding(len(groups), dim) if groups and len(groups) > 1 else None
        self.register_buffer(
            "group_of",
            torch.repeat_interleave(
                torch.arange(len(groups or [0])), torch.tensor(groups or [vocab_size]), output_size=vocab_size
            ),
            persistent=False,
        )  # fmt: skip
        self.start = nn.Parameter(torch.randn(dim) * 0.02)  # predicts the first token when there is no prefix
        self.cond_emb = nn.Embedding(max(1, num_cond * cond_vocab), dim)
        self.null_cond = nn.Parameter(torch.randn(max(1, num_cond), dim) * 0.02)
        self.register_buffer("cond_offsets", torch.arange(num_cond) * cond_vocab, persistent=False)
        self.cond_latent_dim = cond_latent_dim
        if cond_latent_dim:
            self.cond_latent = nn.Linear(cond_latent_dim, dim)
            self.null_latent = nn.Parameter(torch.zeros(dim))
        if beat_harmonics < 0 or not 0.0 <= beat_drop_prob < 1.0:
            raise ValueError(f"beat_harmonics must be >= 0 and beat_drop_prob in [0, 1), got {beat_harmonics}, "
                             f"{beat_drop_prob}")  # fmt: skip
        self.beat_harmonics, self.beat_drop_prob = beat_harmonics, beat_drop_prob
        if beat_harmonics:
            self.beat_proj = nn.Linear(2 * beat_harmonics + 2, dim, bias=False)
            self.null_beat = nn.Parameter(torch.zeros(dim))
        classes = [int(c) for c in control_classes or []]
        if min(classes, default=1) < 1 or not 0.0 <= control_drop_prob < 1.0:
            raise ValueError(f"control_classes must be positive counts and control_drop_prob in [0, 1), got "
                             f"{control_classes}, {control_drop_prob}")  # fmt: skip
        self.control_classes, self.control_drop_prob = classes, control_drop_prob
        self.control_source, self.key_bias = "prior", 0.0
        if classes:  # each control's classes, then its null slot
            self.set_control_source(control_source)
            self.set_key_bias(key_bias)
            self.control_emb = nn.Embedding(sum(c + 1 for c in classes), dim)
            nn.init.normal_(self.control_emb.weight, std=0.02)
            starts = torch.tensor([0] + [c + 1 for c in classes[:-1]]).cumsum(0)
            self.register_buffer("control_offsets", starts, persistent=False)
            self.register_buffer("control_sizes", torch.tensor(classes), persistent=False)
        self.rotary = RotaryEmbedding(dim_head, num_axes=1)
        self.blocks = nn.ModuleList(_Block(dim, heads, dim_head, ff_hidden, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, vocab_size, bias=False)

    cond_offsets: Tensor
    group_of: Tensor
    control_offsets: Tensor
    control_sizes: Tensor

    def embed(self, tokens: Tensor) -> Tensor:
        """Input embeddings ``[B, N, D]`` of ids ``[B, N]``: the id's own plus its group's."""
        x = self.token_emb(tokens)
        return x if self.group_emb is None else x + self.group_emb(self.group_of[tokens])

    # ---- inputs ------------------------------------------------------------------------------
    def prefix(self, cond_ids: Tensor | None, batch: int, *, drop: Tensor | None = None) -> Tensor:
        """Conditioning prefix ``[B, Q + 1, D]`` (Q condition vectors, then the start vector).

        ``cond_ids [B, Q]`` or ``None`` (every row null); ``drop [B]`` True = use the null condition.
        """
        start = self.start.expand(batch, 1, -1)
        if self.num_cond == 0:
            return start
        null = self.null_cond.expand(batch, -1, -1)
        if cond_ids is None:
            return torch.cat([null, start], dim=1)
        if cond_ids.shape != (batch, self.num_cond):
            raise ValueError(
                f"cond_ids must be [B, {self.num_cond}] = [{batch}, {self.num_cond}], got {tuple(cond_ids.shape)}"
            )
        if int(cond_ids.min()) < 0 or int(cond_ids.max()) >= self.cond_vocab:
            raise ValueError(
                f"cond_ids must be in [0, {self.cond_vocab}), got [{int(cond_ids.min())}, {int(cond_ids.max())}]"
            )
        cond = self.cond_emb(cond_ids + self.cond_offsets)
        if drop is not None:
            cond = torch.where(drop[:, None, None], null, cond)
        return torch.cat([cond, start], dim=1)

    def set_default_cfg_scale(self, scale: float) -> TokenLM:
        """Make ``scale`` the guidance the pipeline uses for this stage when its caller gives none (kept in
        the config, so a saved LM keeps it)."""
        self.default_cfg_scale = self._config["default_cfg_scale"] = float(scale)
        return self

    def set_default_temperature(self, temperature: float) -> TokenLM:
        """Make ``temperature`` the sampling temperature the pipeline uses for this stage when its caller
        gives none (kept in the config, so a saved LM keeps it)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.default_temperature = self._config["default_temperature"] = float(temperature)
        return self

    def _require_controls(self) -> None:
        if not self.control_classes:
            raise ValueError("this TokenLM reads no control labels (control_classes unset)")

    def set_control_source(self, source: str) -> TokenLM:
        """Where the pipeline reads this LM's control labels at generation (``"prior"`` or ``"text"``; the
        class docstring), kept in the config."""
        self._require_controls()
        if source not in ("prior", "text"):
            raise ValueError(f"control_source must be 'prior' or 'text', got {source!r}")
        self.control_source = self._config["control_source"] = source
        return self

    def set_key_bias(self, scale: float) -> TokenLM:
        """The scale of the key label's PMI bias the pipeline adds to this LM's logits (class docstring; 0:
        none), kept in the config."""
        self._require_controls()
        if not scale >= 0:
            raise ValueError(f"key_bias must be >= 0, got {scale}")
        self.key_bias = self._config["key_bias"] = float(scale)
        return self

    def latent_bias(self, cond_latent: Tensor | None, batch: int, *, drop: Tensor | None = None) -> Tensor | None:
        """``[B, 1, D]``: the continuous conditioning's vector added to every input position (the null
        vector where ``cond_latent`` is ``None`` or ``drop`` is True); ``None`` without ``cond_latent_dim``."""
        if not self.cond_latent_dim:
            if cond_latent is not None:
                raise ValueError("cond_latent given, but this TokenLM has no cond_latent_dim (it reads ids only)")
            return None
        null = self.null_latent.expand(batch, 1, -1)
        if cond_latent is None:
            return null
        if cond_latent.shape != (batch, self.cond_latent_dim):
            raise ValueError(f"cond_latent must be [B, {self.cond_latent_dim}] = [{batch}, {self.cond_latent_dim}], "
                             f"got {tuple(cond_latent.shape)}")  # fmt: skip
        ref = self.null_latent  # the weights' device and dtype (the projection may be int8-quantized)
        bias = self.cond_latent(F.normalize(cond_latent.to(ref.device).float(), dim=-1).to(ref.dtype))[:, None]
        return bias if drop is None else torch.where(drop[:, None, None], null, bias)

    def control_bias(self, controls: Tensor | None, batch: int, *, drop: Tensor | None = None) -> Tensor | None:
        """``[B, 1, D]``: the sum of the control labels' vectors ``controls [B, K]`` (-1 or ``drop [B]`` /
        ``[B, K]`` True: the control's null vector; ``None``: every row null); ``None`` without
        ``control_classes``."""
        if not self.control_classes:
            if controls is not None:
                raise ValueError("controls given, but this TokenLM reads none (control_classes unset)")
            return None
        k = len(self.control_classes)
        sizes = self.control_sizes
        if controls is None:
            labels = sizes.expand(batch, k)
        else:
            if controls.shape != (batch, k):
                raise ValueError(f"controls must be [B, {k}] = [{batch}, {k}] (labels of {self.control_classes} "
                                 f"classes, -1 unknown), got {tuple(controls.shape)}")  # fmt: skip
            controls = controls.to(sizes.device).long()
            if bool(((controls < -1) | (controls >= sizes)).any()):
                raise ValueError(f"control labels must be in [-1, classes) for classes {self.control_classes}, got "
                                 f"{controls.tolist()[:4]}...")  # fmt: skip
            labels = torch.where(controls < 0, sizes.expand(batch, k), controls)
        if drop is not None:
            drop = drop.to(sizes.device)
            labels = torch.where(drop if drop.ndim == 2 else drop[:, None], sizes.expand(batch, k), labels)
        return self.control_emb(labels + self.control_offsets).sum(1, keepdim=True)

    def beat_bias(
        self, beat: Tensor | None, frames: Tensor, batch: int, *, drop: Tensor | None = None
    ) -> Tensor | None:
        """``[B, N, D]``: the beat-phase vector of each predicted token's frame ``frames [N]`` under the grids
        ``beat [B, 2]`` (period, phase in frames; ``None``, period <= 0 or ``drop`` True: the null vector);
        ``None`` without ``beat_harmonics``."""
        if not self.beat_harmonics:
            if beat is not None:
                raise ValueError("beat given, but this TokenLM has no beat_harmonics (it reads no beat grid)")
            return None
        if beat is None:  # unknown for every row: the null vector, as for a dropped grid in training
            return self.null_beat.expand(batch, len(frames), -1)
        if beat.shape != (batch, 2):
            raise ValueError(f"beat must be [B, 2] = [{batch}, 2] (period, phase in frames), got {tuple(beat.shape)}")
        from ..semantic.beat import beat_features

        ref = self.null_beat
        beat = beat.to(ref.device).float()
        known = beat[:, 0] > 0
        if drop is not None:
            known = known & ~drop.to(known.device)
        period = torch.where(known, beat[:, 0], torch.ones_like(beat[:, 0]))
        feats = beat_features(frames.to(ref.device), period, beat[:, 1], self.beat_harmonics)
        vec = self.beat_proj(feats.to(ref.dtype))
        return torch.where(known[:, None, None], vec, ref.expand_as(vec))

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(
                f"tokens must be [B, N] integer ids, got shape {tuple(tokens.shape)}, dtype {tokens.dtype}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        if tokens.shape[1] > self.max_seq_len:
            raise ValueError(f"{tokens.shape[1]} tokens exceed max_seq_len={self.max_seq_len}")

    def _run(self, x: Tensor, start_pos: int, cache: KVCache | None) -> Tensor:
        positions = torch.arange(start_pos, start_pos + x.shape[1], device=x.device)[None, :, None]
        rotary = self.rotary(positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, rotary, cache, layer)
        return self.to_logits(self.norm(x))

    # ---- training ----------------------------------------------------------------------------
    def forward(self, tokens: Tensor, cond_ids: Tensor | None = None, *, drop: Tensor | None = None,
                cond_latent: Tensor | None = None, beat: Tensor | None = None,
                controls: Tensor | None = None) -> Tensor:  # fmt: skip
        """Next-token logits ``[B, N, V]`` for ``tokens [B, N]``: position i predicts ``tokens[:, i]``.

        In training mode, without an explicit ``drop``, each row's condition (ids and ``cond_latent``)
        is dropped with probability ``cond_drop_prob`` (classifier-free guidance training), and the beat
        grid ``beat [B, 2]`` (with ``beat_harmonics``), independently, with ``beat_drop_prob``. The control
        labels ``controls [B, K]`` (with ``control_classes``) drop with the condition and each on its own
        with ``control_drop_prob``.
        """
        self._check_tokens(tokens)
        if self.quantized and self.training:
            raise RuntimeError("this TokenLM was quantized to int8 for decoding (quantize_int8) and cannot train")
        b, n = tokens.shape
        conditioned = cond_ids is not None or cond_latent is not None or controls is not None
        if drop is None and self.training and self.cond_drop_prob > 0 and conditioned:
            drop = torch.rand(b, device=tokens.device) < self.cond_drop_prob
        x = torch.cat([self.prefix(cond_ids, b, drop=drop), self.embed(tokens[:, :-1])], dim=1)
        bias = self.latent_bias(cond_latent, b, drop=drop)
        if bias is not None:
            x = x + bias
        control_drop = None if drop is None else drop[:, None].expand(b, len(self.control_classes))
        if controls is not None and self.training and self.control_drop_prob > 0 and self.control_classes:
            own = torch.rand(b, len(self.control_classes), device=tokens.device) < self.control_drop_prob
            control_drop = own if control_drop is None else control_drop | own
        ctl = self.control_bias(controls, b, drop=control_drop)
        if ctl is not None:
            x = x + ctl
        beat_drop = None
        if beat is not None and self.training and self.beat_drop_prob > 0:
            beat_drop = torch.rand(b, device=tokens.device) < self.beat_drop_prob
        grid = self.beat_bias(beat, torch.arange(n), b, drop=beat_drop)
        if grid is not None:  # the input that predicts token j carries token j's beat phase
            x = torch.cat([x[:, :-n], x[:, -n:] + grid], dim=1)
        logits = self._run(x, 0, None)
        return logits[:, -n:]

    def loss(self, tokens: Tensor, cond_ids: Tensor | None = None, *, ignore_index: int = -100,
             cond_latent: Tensor | None = None, beat: Tensor | None = None,
             controls: Tensor | None = None) -> Tensor:  # fmt: skip
        logits = self(tokens, cond_ids, cond_latent=cond_latent, beat=beat, controls=controls)
        return F.cross_entropy(
            logits.reshape(-1, self.vocab_size).float(), tokens.reshape(-1), ignore_index=ignore_index
        )

    # ---- generation --------------------------------------------------------------------------
    def quantize_int8(self) -> TokenLM:
        """For decoding only: bf16 activations and int8 weight matrices (see :mod:`.quantize`), in place.

        About 2x the tokens/s of bf16 on CPU. Quantize after loading a checkpoint; a quantized model
        cannot be trained (its matrices are no parameters) and is not meant to be saved.
        """
        from .quantize import quantize_linears_

        self.to(torch.bfloat16).requires_grad_(False)
        quantize_linears_(self)  # every matrix of the blocks and the output head (embeddings stay bf16)
        self.quantized = True
        return self.eval()

    quantized = False

    def new_cache(self, batch: int, *, extra: int = 0) -> KVCache:
        p = self.token_emb.weight
        max_len = self.num_cond + 1 + self.max_seq_len + extra
        return KVCache(layers=self.depth, batch=batch, heads=self.heads, max_len=max_len, dim_head=self.dim_head,
                       device=p.device, dtype=p.dtype)  # fmt: skip

    @torch.no_grad()
    def generate(
        self,
        *,
        steps: int,
        cond_ids: Tensor | None = None,
        prime: Tensor | None = None,
        batch: int | None = None,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        allowed: Tensor | None = None,
        eos_id: int | None = None,
        logit_bias: Tensor | None = None,
        prior_log_probs: Tensor | None = None,
        prior_mix: float = 0.0,
        cond_latent: Tensor | None = None,
        beat: Tensor | None = None,
        controls: Tensor | None = None,
    ) -> Tensor:
        """Sample ``steps`` tokens after ``prime [B, N0]`` (optional). Returns ``[B, N0 + steps]``.

        ``eos_id``: a row that samples this id ends there; its later positions hold ``eos_id``, and
        decoding stops as soon as every row has ended (the rest is filled with ``eos_id``).

        With ``sampling.cfg_scale != 1`` the conditioned and null rows run in ONE batched forward per
        step and ``logits = uncond + s * (cond - uncond)``. ``allowed`` (bool ``[steps, V]``, or
        ``[B, steps, V]`` per row) restricts each step to a set of ids (the codebook of the level a
        position holds; a single id forces a token, e.g. the given coarse levels in the fine stage).
        ``logit_bias [B, V]`` is added to every step's (guided) logits. ``prior_log_probs [B, V]`` is a
        log distribution mixed into every step's next-id distribution with share ``prior_mix`` (the
        retrieval prior's, :class:`~musiclm_pytorch.lm.RetrievalPrior`, as in the kNN-LM).
        ``cond_latent [B, C]``: the continuous conditioning (with ``cond_latent_dim``), guided with the ids.
        ``beat [B, 2]``: the beat grid (period, phase) in frames counted from the first prime token (with
        ``beat_harmonics``); both guidance branches keep it. ``controls [B, K]``: the control labels (with
        ``control_classes``; -1 unknown), null in the unconditioned branch.
        """
        sampling = sampling or SamplingConfig()
        was_training = self.training
        self.eval()
        if prime is not None:
            self._check_tokens(prime)
        b = (prime.shape[0] if prime is not None else cond_ids.shape[0] if cond_ids is not None
             else cond_latent.shape[0] if cond_latent is not None else controls.shape[0] if controls is not None
             else batch)  # fmt: skip
        if b is None:
            raise ValueError("pass cond_ids, prime or batch to set the batch size")
        n0 = prime.shape[1] if prime is not None else 0
        if n0 + steps > self.max_seq_len:
            raise ValueError(f"prime ({n0}) + steps ({steps}) exceed max_seq_len={self.max_seq_len}")
        guided = sampling.cfg_scale != 1.0 and (
            (cond_ids is not None and self.num_cond > 0)
            or (cond_latent is not None and self.cond_latent_dim > 0)
            or (controls is not None and bool(self.control_classes))
        )
        rows = 2 * b if guided else b
        prefix = self.prefix(cond_ids, b)
        bias = self.latent_bias(cond_latent, b)
        ctl = self.control_bias(controls, b)
        if guided:
            prefix = torch.cat([prefix, self.prefix(None, b)])
            bias = None if bias is None else torch.cat([bias, self.latent_bias(None, b)])  # type: ignore[list-item]
            ctl = None if ctl is None else torch.cat([ctl, self.control_bias(None, b)])  # type: ignore[list-item]
        if ctl is not None:  # one per-row vector added to every input, as the latent's
            bias = ctl if bias is None else bias + ctl
        device = prefix.device
        out = prime.to(device).long() if prime is not None else torch.zeros(b, 0, dtype=torch.long, device=device)
        cache = self.new_cache(rows)
        x = prefix
        if n0:
            x = torch.cat([x, self.embed(torch.cat([out, out]) if guided else out)], dim=1)
        if bias is not None:
            bias = bias.to(x.dtype)
            x = x + bias
        beat_rows = None if beat is None else (torch.cat([beat, beat]) if guided else beat)
        # the beat vector of every token to predict, once (null rows without a beat)
        grid = self.beat_bias(beat_rows, torch.arange(n0 + max(steps, 1)), rows)
        if grid is not None:  # the inputs that predict tokens 0..n0 carry their beat phases
            grid = grid.to(x.dtype)
            x = torch.cat([x[:, : -(n0 + 1)], x[:, -(n0 + 1) :] + grid[:, : n0 + 1]], dim=1)
        logits = self._run(x, 0, cache)[:, -1]
        cache.length = x.shape[1]
        if eos_id is not None and not 0 <= eos_id < self.vocab_size:
            raise ValueError(f"eos_id must be in [0, {self.vocab_size}), got {eos_id}")
        for name, extra in (("logit_bias", logit_bias), ("prior_log_probs", prior_log_probs)):
            if extra is not None and extra.shape != (b, self.vocab_size):
                raise ValueError(f"{name} must be [B={b}, V={self.vocab_size}], got {tuple(extra.shape)}")
        if not 0 <= prior_mix < 1:
            raise ValueError(f"prior_mix must be in [0, 1), got {prior_mix}")
        if logit_bias is not None:
            logit_bias = logit_bias.to(device)
        ended = torch.zeros(b, dtype=torch.bool, device=device)
        for i in range(steps):
            if guided:
                cond, uncond = logits[:b], logits[b:]
                logits = uncond + sampling.cfg_scale * (cond - uncond)
            if logit_bias is not None:
                logits = logits + logit_bias
            if prior_log_probs is not None and prior_mix > 0:
                # log((1 - m) p_lm + m p_prior): sampling at temperature 1 draws from the mixture
                mixed = torch.stack([F.log_softmax(logits.float(), -1) + math.log1p(-prior_mix),
                                     prior_log_probs.to(device).float() + math.log(prior_mix)])  # fmt: skip
                logits = torch.logsumexp(mixed, 0)
            if allowed is not None:  # [steps, V] for every row, or [B, steps, V] per row
                step_allowed = allowed[i] if allowed.ndim == 2 else allowed[:, i]
                logits = logits.masked_fill(~step_allowed.to(device), float("-inf"))
            nxt = sample(logits.float(), sampling, generator)
            if eos_id is not None:
                nxt = nxt.masked_fill(ended, eos_id)
                ended |= nxt == eos_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            if i == steps - 1:
                break
            if eos_id is not None and bool(ended.all()):
                out = F.pad(out, (0, steps - 1 - i), value=eos_id)
                break
            step_in = torch.cat([nxt, nxt]) if guided else nxt
            x = self.embed(step_in[:, None])
            if bias is not None:
                x = x + bias
            if grid is not None:
                x = x + grid[:, n0 + i + 1 : n0 + i + 2]
            logits = self._run(x, cache.length, cache)[:, -1]
            cache.length += 1
        self.train(was_training)
        return out

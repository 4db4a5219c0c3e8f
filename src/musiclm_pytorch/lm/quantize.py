"""Weight-only int8 for decoding: the stage LMs' sampling loop is bound by reading the weights.

Each step multiplies a 1-2 row activation by every weight matrix, so the time goes into streaming
weights from memory. Storing them as int8 with one bf16 scale per output channel halves the bytes of
bf16, and on CPU PyTorch's ``_weight_int8pack_mm`` kernel (used by gpt-fast) runs those products
2-3x faster than a bf16 ``linear`` at this shape. Activations stay bf16; the error of the product is
about that of bf16 itself (0.7 % relative on random matrices; ``benchmarks/lm_speed.py`` reports the
KL divergence of the next-token distributions against fp32).

Decoding only: a quantized model has no trainable weight matrices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# input sizes the CPU int8 kernel handles (multiples of 16 were right in a check; 32 leaves a margin)
INT8_KERNEL_BLOCK = 32


class Int8Linear(nn.Module):
    """``y = x W^T (+ b)`` with ``W`` stored as int8 rows and a per-row scale (symmetric, 127 levels)."""

    weight_int8: Tensor
    scales: Tensor

    def __init__(self, linear: nn.Linear, *, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.register_buffer("weight_int8", torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.scales.dtype)
        # the CPU int8 kernel wants whole blocks of the input dimension: with 8 or 24 inputs it returns NaN or
        # infinities, or crashes the process (torch 2.13; the semantic LM's beat projection has 8)
        if x2.device.type == "cpu" and self.in_features % INT8_KERNEL_BLOCK == 0:
            y = torch._weight_int8pack_mm(x2.contiguous(), self.weight_int8, self.scales)
        else:  # GPUs and narrow inputs: dequantize on the fly (still half the memory of bf16 weights)
            y = (x2 @ self.weight_int8.to(x2.dtype).t()) * self.scales
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_linears_(module: nn.Module, *, dtype: torch.dtype = torch.bfloat16) -> int:
    """Replace every ``nn.Linear`` under ``module`` by an :class:`Int8Linear`, in place; returns the count."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and child.in_features % 8 == 0:  # the int8 kernel's shapes (a small
            # input, e.g. a 4-d conditioning projection, stays as it is: it costs nothing)
            setattr(module, name, Int8Linear(child, dtype=dtype))
            count += 1
        else:
            count += quantize_linears_(child, dtype=dtype)
    return count

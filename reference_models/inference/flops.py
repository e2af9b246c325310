"""Multiply-accumulate counts of a forward pass, the two ways VSR papers report "FLOPs".

- ``conv``: the thop / ptflops convention most 2019-2022 papers used under the name "FLOPs": the MACs of
  convolution and linear layers only (``out.numel() * in_channels / groups * kh * kw`` per convolution,
  ``out.numel() * in_features`` per linear layer; biases not counted). Attention products
  (``bmm``/``matmul``/SDPA) are **not** included.
- ``total``: every matrix product and convolution, attention included, from
  :class:`torch.utils.flop_counter.FlopCounterMode` (which reports FLOPs = 2 x MACs; halved here).
  torchvision's ``deform_conv2d`` gets a formula of its own: the MACs of the equivalent convolution (its
  bilinear sampling is not counted).

Elementwise work (activations, softmax, interpolation, normalisation) is in neither figure.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_parameters"]


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _conv_like(module: nn.Module) -> bool:
    if isinstance(module, _CONVS):
        return True
    # Deformable convolutions (vsrblocks.align.DeformConv2d and alikes) hold a conv-shaped weight.
    weight = getattr(module, "weight", None)
    return "deform" in type(module).__name__.lower() and isinstance(weight, torch.Tensor) and weight.dim() == 4


def _module_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    out = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(out, torch.Tensor):
        return 0
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    weight = cast(torch.Tensor, module.weight)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # Each input element is multiplied by C_out / groups * prod(kernel) weights.
        return inputs[0].numel() * weight.shape[1] * math.prod(weight.shape[2:])
    return out.numel() * weight.shape[1] * math.prod(weight.shape[2:])


def _deform_conv_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): 2 x the convolution's MACs.
    return 2 * math.prod(out_shape) * weight_shape[1] * weight_shape[2] * weight_shape[3]


def _flash_attention_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # The CPU flash kernel, which FlopCounterMode has no formula for: 2 x (Q K^T and S V MACs).
    *batch, n, d = query_shape
    return 2 * math.prod(batch) * n * key_shape[-2] * (d + value_shape[-1])


def _custom_mapping() -> dict:
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_attention_cpu_flops}
    try:
        import torchvision.ops  # noqa: F401 (importing registers torch.ops.torchvision)
    except ImportError:
        return mapping
    return {**mapping, torch.ops.torchvision.deform_conv2d: _deform_conv_flops}


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> dict[str, int]:
    """MACs of ``model(*inputs)`` under ``torch.no_grad``: ``{"conv", "total", "attention"}``.

    ``conv`` is the thop-style figure (Conv/Linear layers only), ``total`` includes every matrix product
    (attention) and ``attention = total - conv``. The model runs once; on the meta device (model built
    under ``torch.device("meta")``, meta inputs) that takes no arithmetic, as long as its forward pass has
    no data-dependent control flow.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
        >>> count_macs(net, torch.rand(1, 3, 4, 4))
        {'conv': 4736, 'total': 4736, 'attention': 0}
    """
    conv = 0

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        nonlocal conv
        conv += _module_macs(module, args, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear) or _conv_like(m)]
    try:
        counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    total = counter.get_total_flops() // 2
    return {"conv": conv, "total": total, "attention": total - conv}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())

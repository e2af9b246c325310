"""VSR-Transformer computed the way the official code computes it, for ``benchmarks/models.py``'s dense form.

Same weights and the same numbers as :class:`reference_models.networks.vsrt.VSRT` at sizes that are multiples of the
patch size; only the way of computing differs, where the official ``vsrTransformer`` differs:

- STCSA (official ``globalAttention``): patches cut and put back with ``nn.Unfold``/``nn.Fold`` (im2col copies),
  token tensors permuted to contiguous copies, an explicit ``(T n x T n)`` softmax matrix;
- flows (official ``Flow_spynet``): SPyNet on ``T + 1`` frame pairs in each direction (the sequence padded with a
  repeated first/last frame, the extra pair dropped) instead of our ``T`` pairs per direction;
- features in PyTorch's default contiguous (NCHW) layout, not channels-last, and residual blocks
  ``x + conv2(relu(conv1(x))) * res_scale`` with the multiplication by 1 (BasicSR's ``ResidualBlockNoBN``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


def official_stcsa(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`vsrblocks.attention.STCSA` (``residual=True``, one head or several) as the official code runs it."""
    b, t, c, h, w = x.shape
    p, heads = block.patch_size, block.num_heads
    n = (h // p) * (w // p)
    dim = c * p * p
    d = dim // heads
    frames = x.reshape(-1, c, h, w)
    tokens = []
    for conv in (block.to_q, block.to_k, block.to_v):
        unfolded = F.unfold(conv(frames), kernel_size=p, stride=p)  # (B*T, C*p*p, n)
        unfolded = unfolded.view(b, t, heads, d, n).permute(0, 2, 3, 1, 4).contiguous()
        tokens.append(unfolded.view(b, heads, d, t * n))
    q, k, v = tokens
    attn = torch.softmax(torch.matmul(q.transpose(2, 3), k) * d**-0.5, dim=-1)
    out = torch.matmul(attn, v.transpose(2, 3)).view(b, heads, t, n, d)
    out = out.permute(0, 2, 1, 4, 3).contiguous().view(b * t, dim, n)
    feat = F.fold(out, output_size=(h, w), kernel_size=p, stride=p)
    return block.conv(feat).view(x.shape) + x


def official_flows(spynet: nn.Module, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`vsrblocks.align.bidirectional_flows` as the official ``Flow_spynet``: ``(flows_forward, flows_backward)``."""
    n, t, c, h, w = clip.shape
    first = torch.cat((clip[:, :1], clip), dim=1).reshape(-1, c, h, w)
    last = torch.cat((clip, clip[:, -1:]), dim=1).reshape(-1, c, h, w)
    flows_backward = spynet(first, last).view(n, t + 1, 2, h, w)[:, 1:]
    flows_forward = spynet(last, first).view(n, t + 1, 2, h, w)[:, :-1]
    return flows_forward, flows_backward


def official_residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`vsrblocks.residual.ResidualBlockNoBN` as BasicSR writes it (the official code imports it)."""
    return x + block.conv2(F.relu(block.conv1(x))) * block.res_scale


def make_official(model: nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
    """Switch a :class:`~reference_models.networks.vsrt.VSRT` to the official computation (in place) and return what makes
    the context to run it in (the official flows replace :func:`~vsrblocks.align.bidirectional_flows` inside)."""
    from vsrblocks.attention.stcsa import STCSA  # noqa: PLC0415
    from vsrblocks.residual import ResidualBlockNoBN  # noqa: PLC0415

    model.channels_last = False
    for module in model.modules():
        if isinstance(module, STCSA):
            module.forward = lambda x, block=module: official_stcsa(block, x)
        elif isinstance(module, ResidualBlockNoBN):
            module.forward = lambda x, block=module: official_residual_block(block, x)
    return _official_flows


@contextlib.contextmanager
def _official_flows() -> Iterator[None]:
    import reference_models.networks.vsrt as vsrt_module  # noqa: PLC0415

    ours = vsrt_module.bidirectional_flows
    vsrt_module.bidirectional_flows = official_flows
    try:
        yield
    finally:
        vsrt_module.bidirectional_flows = ours

"""PASSRnet's auxiliary losses on parallax-attention maps, for rows (PASSRnet) and for 2-D maps (DASAA's SAA).

Wang et al., "Learning Parallax Attention for Stereo Image Super-Resolution", CVPR 2019, and the
official ``train.py``: the SR loss plus ``0.005 * (photometric + smoothness + cycle)``. The maps come
from :func:`~vsrblocks.attention.attention_map` in either of its layouts:

- 2-D, ``(B, H, W, H, W)``: ``[b, y, x, u, v]`` = weight of key pixel ``(u, v)`` for query pixel ``(y, x)``
  (``"global"`` and ``"local"`` scopes; a local window is a 2-D map with zeros outside the window);
- rows, ``(B, H, W, W)``: ``[b, y, x, v]`` = weight of key pixel ``(y, v)`` for query pixel ``(y, x)``
  (PASSRnet's epipolar layout; every function then computes PASSRnet's value).

"Forward" maps ``M_fwd`` have the target (reference) frame's pixels as queries and the source (neighbour)
frame's as keys; "reverse" maps ``M_rev`` the other way round. Every loss is a mean over all entries it
compares, masked ones counted as 0, as PASSRnet's ``L1Loss``. A 2-D map row holds ``H W`` weights instead of
``W``, so at the same per-pixel disagreement the cycle and smoothness terms of a 2-D map are about ``H``
times smaller than those of a row map.
"""

from __future__ import annotations

import torch
from einops import rearrange

from vsrblocks.shapes import check_shape

__all__ = ["attention_warp", "photometric_loss", "cycle_loss", "smoothness_loss", "parallax_losses"]


def _layout(attention: torch.Tensor, name: str) -> dict[str, int]:
    """Check ``attention`` against the 2-D or the row layout and return its sizes (``B``, ``H``, ``W``)."""
    if attention.dim() == 5:
        return check_shape(attention, "B H W H W", name=name)
    if attention.dim() == 4:
        return check_shape(attention, "B H W W", name=name)
    raise ValueError(f"{name}: expected (B, H, W, H, W) or (B, H, W, W), got {tuple(attention.shape)}")


def _mean_abs_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # A one-pixel-high (or wide) frame has no neighbouring pair in that direction: that term is 0, not NaN.
    return (a - b).abs().sum() / max(1, a.numel())


def attention_warp(attention: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Warp ``source`` onto the query grid: ``out[:, :, i] = sum_j attention[i, j] source[:, :, j]``.

    Args:
        attention: a forward map, ``(B, H, W, H, W)`` or ``(B, H, W, W)`` (see the module docstring).
        source: ``(B, C, H, W)``, e.g. the LR RGB neighbour frame.

    Returns:
        ``(B, C, H, W)``.

    Examples:
        >>> eye = torch.eye(6).reshape(1, 2, 3, 2, 3)
        >>> x = torch.randn(1, 3, 2, 3)
        >>> torch.equal(attention_warp(eye, x), x)
        True
    """
    dims = _layout(attention, "attention")
    check_shape(source, "B C H W", name="source", B=dims["B"], H=dims["H"], W=dims["W"])
    if attention.dim() == 5:
        return torch.einsum("byxuv,bcuv->bcyx", attention, source)
    return torch.einsum("byxv,bcyv->bcyx", attention, source)


def photometric_loss(
    attention: torch.Tensor, target: torch.Tensor, source: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``mean(V |target - attention_warp(attention, source)|)`` over batch, channels and pixels.

    Args:
        attention: forward map ``M_fwd``, ``(B, H, W, H, W)`` or ``(B, H, W, W)``.
        target: ``(B, C, H, W)``, the frame on the query grid (PASSRnet: the LR left view).
        source: ``(B, C, H, W)``, the frame on the key grid (PASSRnet: the LR right view).
        mask: ``(B, 1, H, W)``, validity ``V`` of the query-grid pixels (values in ``[0, 1]``).

    Returns:
        A 0-dim tensor.
    """
    dims = _layout(attention, "attention")
    check_shape(target, "B C H W", name="target", B=dims["B"], H=dims["H"], W=dims["W"])
    check_shape(mask, "B C H W", name="mask", C=1, B=dims["B"], H=dims["H"], W=dims["W"])
    return (mask * (target - attention_warp(attention, source)).abs()).mean()


def cycle_loss(forward: torch.Tensor, reverse: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(V_i |(M_fwd M_rev)[i, j] - 1[i = j]|)`` over batch and all query/key pairs ``(i, j)`` of the
    round trip query grid -> key grid -> query grid (per row for row maps).

    ``V`` weights the *query* pixel ``i``: the round trip of a valid pixel must come back to it. PASSRnet's
    official ``train.py`` broadcasts the mask over the last (key) axis instead (both axes index the query grid).

    Args:
        forward: ``M_fwd``, ``(B, H, W, H, W)`` or ``(B, H, W, W)``.
        reverse: ``M_rev``, the same shape.
        mask: ``(B, 1, H, W)``, validity of the query-grid pixels.

    Returns:
        A 0-dim tensor.

    Examples:
        >>> eye = torch.eye(6).reshape(1, 2, 3, 2, 3)
        >>> cycle_loss(eye, eye, torch.ones(1, 1, 2, 3))
        tensor(0.)
    """
    dims = _layout(forward, "forward")
    if reverse.shape != forward.shape:
        raise ValueError(f"reverse: expected the shape of forward {tuple(forward.shape)}, got {tuple(reverse.shape)}")
    check_shape(mask, "B C H W", name="mask", C=1, B=dims["B"], H=dims["H"], W=dims["W"])
    if forward.dim() == 5:
        # One (HW x HW) matrix per sample: a 1-sized "row" axis lets both layouts share the lines below.
        forward, reverse = (rearrange(m, "b y x u v -> b 1 (y x) (u v)") for m in (forward, reverse))
        query_mask = rearrange(mask, "b 1 y x -> b 1 (y x) 1")
    else:
        query_mask = rearrange(mask, "b 1 y x -> b y x 1")
    round_trip = forward @ reverse
    identity = torch.eye(round_trip.shape[-1], device=round_trip.device, dtype=round_trip.dtype)
    return (query_mask * (round_trip - identity).abs()).mean()


def smoothness_loss(attention: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the maps of vertically, and of horizontally, neighbouring query pixels, each
    compared at the key shifted by the same step (a smooth displacement field gives 0).

    2-D maps: ``mean|M[y, x, u, v] - M[y+1, x, u+1, v]| + mean|M[y, x, u, v] - M[y, x+1, u, v+1]|``.
    Row maps (PASSRnet): ``mean|M[y, x, v] - M[y+1, x, v]| + mean|M[y, x, v] - M[y, x+1, v+1]|``; the key
    of a row map lies in the query's row, so the vertical step shifts it too.

    Args:
        attention: ``(B, H, W, H, W)`` or ``(B, H, W, W)``.

    Returns:
        A 0-dim tensor (0 for a one-pixel frame).

    Examples:
        >>> shift = torch.eye(3).roll(1, dims=1).expand(1, 2, 3, 3)  # every pixel looks one to the right
        >>> smoothness_loss(shift)
        tensor(0.)
    """
    _layout(attention, "attention")
    a = attention
    if a.dim() == 5:
        vertical = _mean_abs_difference(a[:, :-1, :, :-1, :], a[:, 1:, :, 1:, :])
        horizontal = _mean_abs_difference(a[:, :, :-1, :, :-1], a[:, :, 1:, :, 1:])
    else:
        vertical = _mean_abs_difference(a[:, :-1], a[:, 1:])
        horizontal = _mean_abs_difference(a[:, :, :-1, :-1], a[:, :, 1:, 1:])
    return vertical + horizontal


def parallax_losses(
    forward: torch.Tensor, reverse: torch.Tensor, target: torch.Tensor, source: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """PASSRnet's three auxiliary losses for the alignment of ``source`` onto ``target``.

    - ``"photometric"``: :func:`photometric_loss` of ``forward``;
    - ``"cycle"``: :func:`cycle_loss` of ``forward`` then ``reverse``;
    - ``"smoothness"``: :func:`smoothness_loss` of ``forward`` plus that of ``reverse`` (PASSRnet smooths both).

    The mask enters detached, as PASSRnet's, so that no loss can be lowered by declaring pixels invalid.
    Only the target grid's direction is computed: PASSRnet, which super-resolves both views, adds the mirrored
    photometric and cycle terms with the source grid's mask.

    Args:
        forward: ``M_fwd`` (target queries, source keys), ``(B, H, W, H, W)`` or ``(B, H, W, W)``.
        reverse: ``M_rev`` (source queries, target keys), the same shape.
        target: ``(B, C, H, W)``, the target (reference) frame.
        source: ``(B, C, H, W)``, the source (neighbour) frame.
        mask: ``(B, 1, H, W)``, validity of the target grid's pixels.

    Returns:
        ``{"photometric": ..., "cycle": ..., "smoothness": ...}``, 0-dim tensors; PASSRnet adds
        ``0.005 * (photometric + cycle + smoothness)`` to its SR loss.

    Examples:
        >>> from vsrblocks.attention import attention_map
        >>> q, k = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 3, 5)
        >>> rgb = torch.rand(2, 1, 3, 3, 5)
        >>> losses = parallax_losses(attention_map(q, k), attention_map(k, q), rgb[0], rgb[1], torch.ones(1, 1, 3, 5))
        >>> sorted(losses), all(v.ndim == 0 and v >= 0 for v in losses.values())
        (['cycle', 'photometric', 'smoothness'], True)
    """
    mask = mask.detach()
    return {
        "photometric": photometric_loss(forward, target, source, mask),
        "cycle": cycle_loss(forward, reverse, mask),
        "smoothness": smoothness_loss(forward) + smoothness_loss(reverse),
    }

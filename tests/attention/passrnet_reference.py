"""An independent float64 reference of parallax-attention maps and PASSRnet's auxiliary losses, written
pixel by pixel from the definitions (not from the vectorised layouts of the library), for tiny frames.

Maps are dense ``(B, N, N)`` arrays over the ``N = H W`` pixels in row-major order, with weight 0 for keys
outside the scope; the scope only decides which (query, key) entries exist and are averaged over.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch


def _pixels(h: int, w: int) -> list[tuple[int, int]]:
    return list(itertools.product(range(h), range(w)))


def _keys(p: tuple[int, int], h: int, w: int, scope: str, radius: int) -> list[tuple[int, int]]:
    """The key pixels query pixel ``p`` may attend to."""
    y, x = p
    if scope == "row":
        return [(y, v) for v in range(w)]
    if scope == "local":
        return [(u, v) for u, v in _pixels(h, w) if abs(u - y) <= radius and abs(v - x) <= radius]
    return _pixels(h, w)


def _entries(p: tuple[int, int], h: int, w: int, scope: str) -> list[tuple[int, int]]:
    """The (query p, key) entries a loss averages over: a row map stores only p's row; a local map is a 2-D
    map whose weights are 0 outside the window, so every key counts, as for a global map."""
    return [(p[0], v) for v in range(w)] if scope == "row" else _pixels(h, w)


def reference_attention(query: torch.Tensor, key: torch.Tensor, scope: str, radius: int = 7) -> np.ndarray:
    """``(B, N, N)``: softmax over the allowed keys of ``q_p . k_j``, one query pixel at a time."""
    q, k = query.double().numpy(), key.double().numpy()
    b, _, h, w = q.shape
    out = np.zeros((b, h * w, h * w))
    for n, p in itertools.product(range(b), _pixels(h, w)):
        keys = _keys(p, h, w, scope, radius)
        logits = np.array([q[n, :, p[0], p[1]] @ k[n, :, u, v] for u, v in keys])
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        for (u, v), weight in zip(keys, weights):
            out[n, p[0] * w + p[1], u * w + v] = weight
    return out


def reference_losses(
    forward: np.ndarray,
    reverse: np.ndarray,
    target: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    scope: str,
    radius: int = 7,
) -> dict[str, float]:
    """Photometric, cycle and smoothness (of ``forward`` plus of ``reverse``) from the definitions:

    - photometric: mean over (b, c, p) of ``V_p |T_c(p) - sum_j M_fwd[p, j] S_c(j)|``;
    - cycle: mean over (b, p, q), (p, q) among the stored entries, of ``V_p |sum_j M_fwd[p, j] M_rev[j, q] - [p = q]|``;
    - smoothness: for each step d in {down, right}, mean over every query p with p + d inside and every stored
      entry (p, q) with q + d inside of ``|M[p, q] - M[p + d, q + d]|``; the two steps summed.
    """
    t, s, v = target.double().numpy(), source.double().numpy(), mask.double().numpy()
    b, c, h, w = t.shape
    index = {p: p[0] * w + p[1] for p in _pixels(h, w)}

    photometric = 0.0
    for n, ch, p in itertools.product(range(b), range(c), _pixels(h, w)):
        warped = sum(forward[n, index[p], index[j]] * s[n, ch, j[0], j[1]] for j in _pixels(h, w))
        photometric += v[n, 0, p[0], p[1]] * abs(t[n, ch, p[0], p[1]] - warped)
    photometric /= b * c * h * w

    cycle, entries = 0.0, 0
    for n, p in itertools.product(range(b), _pixels(h, w)):
        for q in _entries(p, h, w, scope):
            round_trip = sum(forward[n, index[p], index[j]] * reverse[n, index[j], index[q]] for j in _pixels(h, w))
            cycle += v[n, 0, p[0], p[1]] * abs(round_trip - float(p == q))
            entries += 1
    cycle /= entries

    smoothness = 0.0
    for attention, (dy, dx) in itertools.product((forward, reverse), ((1, 0), (0, 1))):
        total, pairs = 0.0, 0
        for n, p in itertools.product(range(b), _pixels(h, w)):
            p2 = (p[0] + dy, p[1] + dx)
            if p2 not in index:
                continue
            for q in _entries(p, h, w, scope):
                q2 = (q[0] + dy, q[1] + dx)
                if q2 not in index:
                    continue
                total += abs(attention[n, index[p], index[q]] - attention[n, index[p2], index[q2]])
                pairs += 1
        smoothness += total / max(pairs, 1)
    return {"photometric": photometric, "cycle": cycle, "smoothness": smoothness}

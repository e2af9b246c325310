"""Re-initialising a composite block: every submodule's own ``reset_parameters``, innermost first.

Blocks made only of standard layers and other blocks implement ``reset_parameters`` (the ``torch.nn``
convention) by calling :func:`reset_submodules`. Inner modules are reset before the modules that contain
them, so a container's custom initialisation (a zero-initialised offset conv, a zero ``gamma``) is applied
last and is not overwritten by its layers' defaults.
"""

from __future__ import annotations

from torch import nn

__all__ = ["reset_submodules"]


def reset_submodules(module: nn.Module) -> None:
    """Call ``reset_parameters`` on every submodule of ``module`` that has one, children after their own children.

    ``module``'s own ``reset_parameters`` is not called (this is what it calls).

    Examples:
        >>> block = nn.Sequential(nn.Conv2d(2, 2, 3), nn.GroupNorm(1, 2))
        >>> before = block[0].weight.clone()
        >>> reset_submodules(block)
        >>> bool((block[0].weight != before).any())
        True
    """
    for child in module.children():
        reset_submodules(child)
        reset = getattr(child, "reset_parameters", None)
        if callable(reset):
            reset()

"""Opt-in ``torch.compile`` of a reference model for inference, with Inductor freezing.

Freezing turns the weights into constants of the compiled graph, so Inductor can prepack them once for oneDNN
(no per-call weight reorder on CPU) and fold bias and LeakyReLU into the convolutions. The first call at each
new input size compiles (minutes for the paper presets on a 2-core CPU, see the README's "Speed" section); the
numbers match the eager model to float32 rounding. The compiled model keeps the wrapped model's attributes
(``num_frames``, ``scale``, ``output_mode``), so it goes wherever a model goes (``upscale_frames``,
``upscale_clip``). It runs in inference only: freezing needs ``torch.no_grad``/``torch.inference_mode`` and
frozen weights ignore later changes to the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

__all__ = ["compile_model"]


def compile_model(
    model: nn.Module, *, freezing: bool = True, dynamic: bool | None = None, backend: str | Callable = "inductor"
) -> nn.Module:
    """``torch.compile(model.eval())`` with Inductor ``freezing`` (weights prepacked and fused; inference only).

    Args:
        model: a reference model (or any module); put in eval mode.
        freezing: constant-fold the weights (Inductor ``freezing``): faster convolutions on CPU.
        dynamic: ``torch.compile``'s ``dynamic`` (``None``: recompile per size until sizes are seen to vary).
        backend: ``torch.compile``'s backend; ``freezing`` applies to Inductor only.

    Returns:
        The compiled module (``torch._dynamo.eval_frame.OptimizedModule``), attributes of ``model`` readable on it.

    Examples:
        >>> import reference_models
        >>> fast = compile_model(reference_models.create_model("mana", "tiny"))
        >>> fast.num_frames, fast.scale
        (7, 4)
    """
    options: dict[str, Any] | None = {"freezing": freezing} if backend == "inductor" else None
    return cast(nn.Module, torch.compile(model.eval(), dynamic=dynamic, backend=backend, options=options))

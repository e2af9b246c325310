"""BasicSR's and MMagic's key names of the SPyNet-based recurrent networks (BasicVSR, IconVSR, BasicVSR++),
shared by their converters.

BasicSR names the x4 tail ``upconv1``/``upconv2``/``conv_hr``/``conv_last``, MMagic ``upsample1.upsample_conv``
/ ``upsample2.upsample_conv`` / ``conv_hr`` / ``conv_last``; both store SPyNet under ``spynet.`` (BasicSR as
``basic_module.{l}.basic_module.{2j}``, MMagic with a ``.conv.`` level, ours) with ImageNet ``mean``/``std``
buffers, which are constants here: checked and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from vsrblocks.align.spynet import IMAGENET_MEAN, IMAGENET_STD, SPyNet
from vsrblocks.checkpoint import CheckpointError
from vsrblocks.upsample import BASICSR_TAIL_NAMES

__all__ = ["MMAGIC_TAIL", "count_trunk_blocks", "rename_prefixes", "spynet_weights", "tail_renames"]

#: MMagic's names of the x4 tail's stage convolutions -> BasicSR's.
MMAGIC_TAIL = (("upsample1.upsample_conv.", "upconv1."), ("upsample2.upsample_conv.", "upconv2."))

_CONSTANTS = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def tail_renames(into: str) -> tuple[tuple[str, str], ...]:
    """BasicSR's tail names -> ours under the upsampler attribute ``into`` (``"upsample."``)."""
    return tuple((f"{official}.", f"{into}{ours}.") for official, ours in BASICSR_TAIL_NAMES.items())


def rename_prefixes(
    state_dict: Mapping[str, torch.Tensor], renames: Sequence[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    """Each key with the first matching ``old`` prefix renamed to ``new``; other keys unchanged (a strict
    load reports them)."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = value
    return renamed


def spynet_weights(state_dict: Mapping[str, torch.Tensor], into: str) -> dict[str, torch.Tensor]:
    """The ``spynet.`` weights (BasicSR or MMagic layout) in our layout under prefix ``into``, and every other
    key unchanged.

    Raises:
        CheckpointError: SPyNet's ``mean``/``std`` are not the ImageNet constants.
    """
    others = {k: v for k, v in state_dict.items() if not k.startswith("spynet.")}
    converted = SPyNet.convert_state_dict(state_dict, prefix="spynet.")
    for name, expected in _CONSTANTS.items():
        value = converted.pop(name, None)
        if value is None:
            continue
        reference = torch.tensor(expected).view(1, 3, 1, 1)
        if tuple(value.shape) != (1, 3, 1, 1) or not torch.allclose(value.float().cpu(), reference, atol=1e-3):
            raise CheckpointError(
                f"spynet.{name}: expected the ImageNet constants {list(expected)}, got {value.flatten().tolist()}"
            )
    return {**others, **{into + k: v for k, v in converted.items()}}


def count_trunk_blocks(state_dict: Mapping[str, torch.Tensor], trunk: str) -> int:
    """How many residual blocks the ``conv + LeakyReLU + blocks`` trunk ``trunk`` (``"backward_trunk"``) holds:
    the distinct ``{trunk}.main.2.{i}.conv1.weight``."""
    prefix = f"{trunk}.main.2."
    return len(
        {k[len(prefix) :].split(".")[0] for k in state_dict if k.startswith(prefix) and k.endswith(".conv1.weight")}
    )

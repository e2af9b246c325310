"""Every public block checks its input like the others (``check_shape``): a tensor of the wrong rank
raises a ``ValueError`` that names the expected layout, never torch's internal message or a silent
result. The blocks and inputs are those of the empty-batch test."""

from __future__ import annotations

import pytest
import torch

from tests.test_empty_batch import CASES
from vsrblocks.align import SPyNetBasicModule
from vsrblocks.recurrent import DeformableConvLSTM


def _drop_a_dim(inputs: tuple) -> tuple:
    first = inputs[0]
    if isinstance(first, list):  # a pyramid: break its first level
        return ([first[0][0], *first[1:]], *inputs[1:])
    return (first[0], *inputs[1:])


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("model-")])
def test_wrong_rank_is_a_value_error_naming_the_layout(name: str) -> None:
    if name == "deform_conv2d-torchvision":
        pytest.importorskip("torchvision.ops")
    block, inputs = CASES[name](2)
    with pytest.raises(ValueError, match=r"expected \("):
        block(*_drop_a_dim(inputs))


def test_spynet_basic_module_checks_rank_and_channels() -> None:
    module = SPyNetBasicModule((4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"x: expected \(B, C, H, W\) with C=8, got \(8, 5, 6\)"):
        module(torch.zeros(8, 5, 6))
    with pytest.raises(ValueError, match=r"with C=8, got \(1, 7, 5, 6\)"):
        module(torch.zeros(1, 7, 5, 6))


def test_deformable_conv_lstm_step_names_its_guide() -> None:
    lstm = DeformableConvLSTM(4, deform_groups=2, pcd_levels=1, backend="torch")
    with pytest.raises(ValueError, match=r"guide: expected \(B, C, H, W\) with B=1, C=4, H=5, W=6"):
        lstm.step(torch.zeros(1, 4, 5, 6), guide=torch.zeros(1, 3, 5, 6))

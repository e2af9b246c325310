import re

import numpy as np
import pytest
import torch
from hypothesis import given

from tests.strategies import clip_shapes
from vsrblocks import check_shape


@given(shape=clip_shapes())
def test_returns_every_axis_size(shape):
    bound = check_shape(torch.zeros(shape), "B T C H W")
    assert bound == dict(zip("BTCHW", shape))


def test_wrong_rank_message():
    with pytest.raises(ValueError) as info:
        check_shape(torch.zeros(2, 3, 8), "B T C H W", C=3)
    assert str(info.value) == "input: expected (B, T, C, H, W) with C=3, got (2, 3, 8)"


def test_fixed_size_mismatch_message_names_the_tensor():
    with pytest.raises(ValueError) as info:
        check_shape(torch.zeros(2, 4, 8, 8), "B C H W", name="frames", C=3, B=2)
    assert str(info.value) == "frames: expected (B, C, H, W) with C=3, B=2, got (2, 4, 8, 8)"


def test_fixed_sizes_that_match_pass():
    assert check_shape(torch.zeros(2, 3, 5, 7), "B C H W", C=3, H=5)["W"] == 7


def test_repeated_axis_must_agree():
    assert check_shape(torch.zeros(4, 4), "N N") == {"N": 4}
    with pytest.raises(ValueError, match=re.escape("attn: expected (N, N), got (4, 5)")):
        check_shape(torch.zeros(4, 5), "N N", name="attn")


def test_none_constraints_are_ignored():
    assert check_shape(torch.zeros(1, 2, 3, 3), "B C H W", C=None, H=None)["C"] == 2
    with pytest.raises(ValueError) as info:
        check_shape(torch.zeros(1, 2, 3), "B C H W", C=None)
    assert str(info.value) == "input: expected (B, C, H, W), got (1, 2, 3)"


def test_unknown_fixed_axis_is_a_key_error():
    with pytest.raises(KeyError, match="not axes of layout"):
        check_shape(torch.zeros(1, 2, 3, 3), "B C H W", T=5)


@pytest.mark.parametrize("value", [np.zeros((1, 3, 4, 4)), [1, 2], None, 3.0])
def test_non_tensors_are_a_type_error(value):
    with pytest.raises(TypeError, match=f"x: expected a torch.Tensor, got {type(value).__name__}"):
        check_shape(value, "B C H W", name="x")

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import frame_shapes, seeded_rand, seeds
from vsrblocks import CharbonnierLoss
from vsrblocks.losses import L1Loss, charbonnier_loss


def test_l1_is_torchs():
    assert L1Loss is torch.nn.L1Loss


@given(shape=frame_shapes(), seed=seeds, eps=st.sampled_from([1e-6, 1e-3, 0.1]))
def test_matches_formula_in_both_conventions(shape, seed, eps):
    pred, target = seeded_rand(shape, seed, torch.float64), seeded_rand(shape, seed + 1, torch.float64)
    d = pred - target
    torch.testing.assert_close(CharbonnierLoss(eps=eps)(pred, target), torch.sqrt(d**2 + eps**2).mean())
    torch.testing.assert_close(CharbonnierLoss(eps=eps, square_eps=False)(pred, target), torch.sqrt(d**2 + eps).mean())


def test_default_equals_basicsr_default():
    """BasicSR/MMagic: ``sqrt(d**2 + 1e-12)``; our default eps=1e-6 squared gives the same value."""
    pred = torch.tensor([0.0, 1e-7, 0.5], dtype=torch.float64)
    target = torch.zeros(3, dtype=torch.float64)
    expected = torch.sqrt((pred - target) ** 2 + 1e-12).mean()
    torch.testing.assert_close(CharbonnierLoss()(pred, target), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(CharbonnierLoss(eps=1e-12, square_eps=False)(pred, target), expected, rtol=1e-12, atol=0)


def test_exact_values_and_reductions():
    pred = torch.tensor([[3.0, 0.0]])
    target = torch.tensor([[-1.0, 0.0]])
    none = charbonnier_loss(pred, target, eps=3.0, reduction="none")
    torch.testing.assert_close(none, torch.tensor([[5.0, 3.0]]))
    torch.testing.assert_close(charbonnier_loss(pred, target, eps=3.0, reduction="sum"), torch.tensor(8.0))
    torch.testing.assert_close(charbonnier_loss(pred, target, eps=3.0), torch.tensor(4.0))


def test_close_to_l1_for_small_eps():
    pred, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(CharbonnierLoss()(pred, target), torch.nn.L1Loss()(pred, target), atol=1e-5, rtol=0)


def test_gradient_finite_at_zero_difference():
    pred = torch.zeros(4, requires_grad=True)
    CharbonnierLoss()(pred, torch.zeros(4)).backward()
    assert torch.equal(pred.grad, torch.zeros(4))


def test_half_precision():
    pred, target = torch.rand(2, 3, 4, 4, dtype=torch.bfloat16), torch.rand(2, 3, 4, 4, dtype=torch.bfloat16)
    out = CharbonnierLoss()(pred, target)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out)


@pytest.mark.parametrize("kwargs, message", [({"reduction": "avg"}, "reduction"), ({"eps": 0.0}, "eps")])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CharbonnierLoss(**kwargs)


def test_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        CharbonnierLoss()(torch.zeros(2, 3), torch.zeros(3, 2))

import pytest
import torch

from vsrblocks.crop import crop_padding


def test_export_path_equals_the_slice(monkeypatch):
    x = torch.randn(2, 3, 9, 11)
    expected = x[..., :7, :10]
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    got = crop_padding(x, 7, 10)
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 6, 3)])
def test_too_small_or_flat_input_is_a_value_error(shape):
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        crop_padding(torch.zeros(shape), 4, 4)

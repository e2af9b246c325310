"""PCDAlignment and EasyPCD against the Zooming Slow-Mo definition (``PCD_Align`` / ``Easy_PCD``) and EDVR's
(with the cascading stage) written out level by level with the fixed ``scale_factor=2`` upsampling, on sizes
where that is defined; any size otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from tests.strategies import batches, seeded_parameters_, seeded_randn, seeds, sizes
from vsrblocks.align import EasyPCD, PCDAlignment


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _zsm_pcd_align(pcd: PCDAlignment, src: list[torch.Tensor], guide: list[torch.Tensor]) -> torch.Tensor:
    """One direction of ZSM's ``PCD_Align`` for three levels (L1 finest ... L3 coarsest)."""
    l1, l2, l3 = pcd.levels
    off3 = _lrelu(l3.offset_conv1(torch.cat((src[2], guide[2]), 1)))
    off3 = _lrelu(l3.offset_conv2(off3))
    fea3 = _lrelu(l3.dcn(src[2], off3))
    off2 = _lrelu(l2.offset_conv1(torch.cat((src[1], guide[1]), 1)))
    off2 = _lrelu(l2.offset_conv2(torch.cat((off2, _up2(off3) * 2), 1)))
    off2 = _lrelu(l2.offset_conv3(off2))
    fea2 = _lrelu(l2.feat_conv(torch.cat((l2.dcn(src[1], off2), _up2(fea3)), 1)))
    off1 = _lrelu(l1.offset_conv1(torch.cat((src[0], guide[0]), 1)))
    off1 = _lrelu(l1.offset_conv2(torch.cat((off1, _up2(off2) * 2), 1)))
    off1 = _lrelu(l1.offset_conv3(off1))
    return l1.feat_conv(torch.cat((l1.dcn(src[0], off1), _up2(fea2)), 1))  # no activation at the finest level


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_pcd_alignment_matches_zsm_levels(backend):
    torch.manual_seed(0)
    pcd = PCDAlignment(4, deform_groups=2, num_levels=3, backend=backend)
    seeded_parameters_(pcd, 1)
    src = [seeded_randn((2, 4, 12 // 2**i, 8 // 2**i), 10 + i, torch.float64) for i in range(3)]
    guide = [seeded_randn((2, 4, 12 // 2**i, 8 // 2**i), 20 + i, torch.float64) for i in range(3)]
    pcd = pcd.double()
    with torch.no_grad():
        out = pcd(src, guide)
        torch.testing.assert_close(out, _zsm_pcd_align(pcd, src, guide), atol=1e-10, rtol=1e-10)
        # the guide matters (it only enters through the offsets), and the offsets are not all zero
        assert not torch.allclose(pcd(src, [g.flip(-1) for g in guide]), out)


def test_easy_pcd_matches_zsm_definition():
    """Shared-weight pyramids of f1 and f2, ``align_1``: f1 guided by f2, ``align_2``: f2 guided by f1, fusion [a1, a2]."""
    torch.manual_seed(0)
    pcd = EasyPCD(4, deform_groups=2, num_levels=3, backend="torch")
    seeded_parameters_(pcd, 2)
    pcd = pcd.double()
    f1, f2 = seeded_randn((2, 4, 12, 16), 0, torch.float64), seeded_randn((2, 4, 12, 16), 1, torch.float64)

    def pyramid(x):
        levels = [x]
        for block in pcd.downsample:
            levels.append(_lrelu(block["conv2"](_lrelu(block["conv1"](levels[-1])))))
        return levels

    with torch.no_grad():
        pyr1, pyr2 = pyramid(f1), pyramid(f2)
        assert [tuple(level.shape[-2:]) for level in pyr1] == [(12, 16), (6, 8), (3, 4)]
        expected = pcd.fusion(
            torch.cat((_zsm_pcd_align(pcd.align_1, pyr1, pyr2), _zsm_pcd_align(pcd.align_2, pyr2, pyr1)), 1)
        )
        torch.testing.assert_close(pcd(f1, f2), expected, atol=1e-10, rtol=1e-10)
        assert not torch.allclose(pcd(f2, f1), expected)


def test_pcd_shape_errors_and_repr():
    pcd = PCDAlignment(4, deform_groups=2, num_levels=2)
    good = [torch.zeros(1, 4, 6, 6), torch.zeros(1, 4, 3, 3)]
    with pytest.raises(ValueError, match=r"src\[1\]: expected \(B, C, H, W\) with C=4"):
        pcd([good[0], torch.zeros(1, 3, 3, 3)], good)
    with pytest.raises(ValueError, match=r"guide\[0\]"):
        pcd(good, [torch.zeros(1, 4, 6, 5), good[1]])
    with pytest.raises(ValueError, match="num_levels"):
        PCDAlignment(4, deform_groups=2, num_levels=0)
    assert "deform_groups=2, num_levels=2" in repr(pcd)
    assert "deform_groups=2, num_levels=3" in repr(EasyPCD(4, deform_groups=2))


def _edvr_pcd_align(pcd: PCDAlignment, src: list[torch.Tensor], guide: list[torch.Tensor]) -> torch.Tensor:
    """EDVR's ``PCDAlignment`` (BasicSR): the three-level pyramid, then the cascading stage."""
    feat = _zsm_pcd_align(pcd, src, guide)
    off = _lrelu(pcd.cas_offset_conv2(_lrelu(pcd.cas_offset_conv1(torch.cat((feat, guide[0]), 1)))))
    return _lrelu(pcd.cas_dcnpack(feat, off))


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_cascade_matches_edvr(backend):
    torch.manual_seed(0)
    pcd = PCDAlignment(4, deform_groups=2, num_levels=3, backend=backend, cascade=True)
    seeded_parameters_(pcd, 3)
    pcd = pcd.double()
    src = [seeded_randn((2, 4, 12 // 2**i, 16 // 2**i), 30 + i, torch.float64) for i in range(3)]
    guide = [seeded_randn((2, 4, 12 // 2**i, 16 // 2**i), 40 + i, torch.float64) for i in range(3)]
    with torch.no_grad():
        out = pcd(src, guide)
        torch.testing.assert_close(out, _edvr_pcd_align(pcd, src, guide), atol=1e-10, rtol=1e-10)
        # the cascade's offsets matter: zeroing them changes the result
        pcd.cas_dcnpack.conv_offset.weight.zero_()
        assert not torch.allclose(pcd(src, guide), out)


@settings(deadline=None, max_examples=10)
@given(b=batches, h=sizes, w=sizes, seed=seeds)
def test_cascade_any_size_and_batch_independent(b, h, w, seed):
    torch.manual_seed(seed)
    pcd = PCDAlignment(4, deform_groups=2, num_levels=3, cascade=True)
    seeded_parameters_(pcd, seed)
    shapes = [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 3) // 4, (w + 3) // 4)]
    src = [seeded_randn((b, 4, *s), seed + i) for i, s in enumerate(shapes)]
    guide = [seeded_randn((b, 4, *s), seed + 10 + i) for i, s in enumerate(shapes)]
    with torch.no_grad():
        out = pcd(src, guide)
        assert out.shape == (b, 4, h, w) and torch.isfinite(out).all()
        for i in range(b):
            single = pcd([s[i : i + 1] for s in src], [g[i : i + 1] for g in guide])
            torch.testing.assert_close(out[i : i + 1], single, atol=1e-5, rtol=1e-4)


def test_cascade_is_optional_and_named_as_basicsr():
    plain = PCDAlignment(4, deform_groups=2)
    edvr = PCDAlignment(4, deform_groups=2, cascade=True)
    assert not any(k.startswith("cas_") for k in plain.state_dict())
    assert set(edvr.state_dict()) - set(plain.state_dict()) == {
        "cas_offset_conv1.weight",
        "cas_offset_conv1.bias",
        "cas_offset_conv2.weight",
        "cas_offset_conv2.bias",
        "cas_dcnpack.weight",
        "cas_dcnpack.bias",
        "cas_dcnpack.conv_offset.weight",
        "cas_dcnpack.conv_offset.bias",
    }
    assert "cascade=True" in repr(edvr) and "cascade=False" in repr(plain)

"""An empty batch (B = 0) gives an empty output of the right shape, for every public block and the
reference models' tiny presets (as torchvision's operators do).

Each case builds a block and its inputs for a batch size ``b``; the expected output shapes are those of
the same call with ``b = 1``, with the batch axis set to 0 (0-dimensional outputs such as auxiliary
losses keep their shape).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from reference_models import create_model
from vsrblocks import (
    OfficialPositionEncoding3D,
    PixelShuffleUpsampler,
    ResidualBlockNoBN,
    ResidualDenseBlock,
    SinCosPositionEncoding3D,
)
from vsrblocks.align import (
    BOFF,
    DeformConv2d,
    EasyPCD,
    FlowWarp,
    PCDAlignment,
    ResidualBlocksWithInputConv,
    SecondOrderDeformableAlignment,
    SPyNet,
    SPyNetBasicModule,
    bidirectional_flows,
    deform_conv2d,
    flow_warp,
)
from vsrblocks.attention import (
    STCSA,
    ChannelAttention,
    ChannelSelfAttention,
    DualAttention,
    GaussianCrossFrameAttention,
    LeakyResidualBlock,
    MANAAttention,
    MaskedSelfAttention,
    MemoryAugmentedAttention,
    MorphologicalMask,
    PositionAttention,
    SpatialAttention,
    TSAFusion,
    attention_map,
    local_attention,
    memory_read,
)
from vsrblocks.recurrent import (
    BidirectionalPropagation,
    ConcatCell,
    ConvLSTM,
    ConvLSTMCell,
    DeformableConvLSTM,
    SecondOrderGridPropagation,
)

Case = Callable[[int], tuple[Callable[..., Any], tuple[Any, ...]]]


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _deform_conv2d(backend: str) -> Case:
    weight = _r(6, 4, 3, 3)
    return lambda b: (
        lambda x, off, m: deform_conv2d(x, off, weight, padding=1, mask=m, backend=backend),
        (_r(b, 4, 5, 6), _r(b, 2 * 2 * 9, 5, 6), _r(b, 2 * 9, 5, 6).sigmoid()),
    )


def _pcd(cascade: bool) -> Case:
    def case(b: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        pcd = PCDAlignment(4, deform_groups=2, num_levels=2, backend="torch", cascade=cascade)
        src = [_r(b, 4, 6, 5), _r(b, 4, 3, 3)]
        return pcd, (src, [t + 1 for t in src])

    return case


def _bidirectional(b: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    def cell() -> nn.Module:
        return ConcatCell(nn.Conv2d(3 + 4, 4, 3, padding=1))

    return BidirectionalPropagation(4, cell(), cell(), SPyNet(hidden_channels=(4, 4, 4, 4))), (_r(b, 3, 3, 9, 7),)


def _grid(b: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    names = ("backward_1", "forward_1")
    prop = SecondOrderGridPropagation(
        4,
        nn.Conv2d(3, 4, 3, padding=1),
        {n: SecondOrderDeformableAlignment(4, deform_groups=2, backend="torch") for n in names},
        {n: ConcatCell(nn.Conv2d((k + 2) * 4, 4, 3, padding=1)) for k, n in enumerate(names)},
        SPyNet(hidden_channels=(4, 4, 4, 4)),
        branches=names,
    )
    return prop, (_r(b, 3, 3, 9, 7),)


def _model(name: str) -> Case:
    def case(b: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        torch.manual_seed(0)
        model = create_model(name, "tiny").eval()
        return model, (_r(b, model.num_frames, 3, 8, 8).clamp(0, 1),)

    return case


CASES: dict[str, Case] = {
    "deform_conv2d-torch": _deform_conv2d("torch"),
    "deform_conv2d-torchvision": _deform_conv2d("torchvision"),
    "DeformConv2d": lambda b: (DeformConv2d(4, 6, deform_groups=2, backend="torch"), (_r(b, 4, 5, 6),)),
    "PCDAlignment": _pcd(cascade=False),
    "PCDAlignment-cascade": _pcd(cascade=True),
    "EasyPCD": lambda b: (EasyPCD(4, deform_groups=2, num_levels=2, backend="torch"), (_r(b, 4, 5, 6), _r(b, 4, 5, 6))),
    "flow_warp": lambda b: (flow_warp, (_r(b, 3, 5, 6), _r(b, 2, 5, 6))),
    "FlowWarp": lambda b: (FlowWarp(), (_r(b, 3, 5, 6), _r(b, 2, 5, 6))),
    "SPyNetBasicModule": lambda b: (SPyNetBasicModule((4, 4, 4, 4)), (_r(b, 8, 5, 6),)),
    "SPyNet": lambda b: (SPyNet(hidden_channels=(4, 4, 4, 4)), (_r(b, 3, 9, 7), _r(b, 3, 9, 7))),
    "bidirectional_flows": lambda b: (
        lambda clip: bidirectional_flows(SPyNet(hidden_channels=(4, 4, 4, 4)), clip),
        (_r(b, 3, 3, 9, 7),),
    ),
    "ResidualBlocksWithInputConv": lambda b: (ResidualBlocksWithInputConv(5, 4, num_blocks=1), (_r(b, 5, 4, 6),)),
    "BOFF": lambda b: (
        BOFF(channels=4, num_blocks=1),
        (_r(b, 3, 4, 6, 5), _r(b, 3, 3, 6, 5), (_r(b, 3, 2, 6, 5), _r(b, 3, 2, 6, 5))),
    ),
    "ConvLSTMCell": lambda b: (ConvLSTMCell(3, 4), (_r(b, 3, 5, 6),)),
    "ConvLSTM": lambda b: (ConvLSTM(3, 4, bidirectional=True), (_r(b, 2, 3, 5, 6),)),
    "DeformableConvLSTM": lambda b: (
        DeformableConvLSTM(4, deform_groups=2, pcd_levels=2, bidirectional=True, backend="torch"),
        (_r(b, 2, 4, 5, 6),),
    ),
    "ResidualBlockNoBN": lambda b: (ResidualBlockNoBN(4), (_r(b, 4, 5, 6),)),
    "ResidualDenseBlock": lambda b: (ResidualDenseBlock(4, growth_rate=2, num_layers=2), (_r(b, 4, 5, 6),)),
    "PixelShuffleUpsampler": lambda b: (PixelShuffleUpsampler(4, scale=2), (_r(b, 4, 5, 6),)),
    "SinCosPositionEncoding3D": lambda b: (SinCosPositionEncoding3D(6), (_r(b, 2, 6, 3, 4),)),
    "OfficialPositionEncoding3D": lambda b: (OfficialPositionEncoding3D(num_frames=2), (_r(b, 2, 4, 3, 3),)),
    "ChannelAttention": lambda b: (ChannelAttention(8, reduction=4), (_r(b, 8, 5, 6),)),
    "SpatialAttention": lambda b: (SpatialAttention(8), (_r(b, 8, 5, 6),)),
    "TSAFusion": lambda b: (TSAFusion(8, num_frames=3), (_r(b, 3, 8, 5, 6),)),
    "LeakyResidualBlock": lambda b: (LeakyResidualBlock(4), (_r(b, 4, 5, 6),)),
    "attention_map": lambda b: (attention_map, (_r(b, 4, 3, 5), _r(b, 4, 3, 5))),
    "local_attention": lambda b: (
        lambda q, k, v: local_attention(q, k, v, radius=1),
        (_r(b, 4, 5, 6), _r(b, 4, 5, 6), _r(b, 3, 5, 6)),
    ),
    "memory_read": lambda b: (memory_read, (_r(b, 8, 5, 6), _r(8, 16))),
    "GaussianCrossFrameAttention": lambda b: (
        GaussianCrossFrameAttention(channels=8, num_frames=3, num_groups=2),
        (_r(b, 3, 8, 5, 6),),
    ),
    "MemoryAugmentedAttention": lambda b: (
        MemoryAugmentedAttention(channels=8, memory_size=16, num_groups=2),
        (_r(b, 8, 5, 6),),
    ),
    "MANAAttention": lambda b: (
        MANAAttention(channels=8, num_frames=3, memory_size=16, num_groups=2),
        (_r(b, 3, 8, 5, 6),),
    ),
    "STCSA": lambda b: (STCSA(channels=8, patch_size=2, num_heads=2), (_r(b, 2, 8, 4, 6),)),
    "PositionAttention": lambda b: (PositionAttention(8), (_r(b, 8, 5, 6),)),
    "ChannelSelfAttention": lambda b: (ChannelSelfAttention(8), (_r(b, 8, 5, 6),)),
    "DualAttention": lambda b: (DualAttention(8), (_r(b, 8, 5, 6),)),
    "MaskedSelfAttention": lambda b: (MaskedSelfAttention(8), (_r(b, 8, 5, 6), _r(b, 8, 5, 6))),
    "MorphologicalMask": lambda b: (MorphologicalMask(3, "close"), ((_r(b, 1, 6, 6) > 0).float(),)),
    "SecondOrderDeformableAlignment": lambda b: (
        SecondOrderDeformableAlignment(4, deform_groups=2, backend="torch"),
        (_r(b, 4, 5, 6), _r(b, 4, 5, 6), _r(b, 4, 5, 6), _r(b, 2, 5, 6), _r(b, 2, 5, 6)),
    ),
    "BidirectionalPropagation": _bidirectional,
    "SecondOrderGridPropagation": _grid,
    "model-basicvsr": _model("basicvsr"),
    "model-basicvsrpp": _model("basicvsrpp"),
    "model-dasaa": _model("dasaa"),
    "model-edvr": _model("edvr"),
    "model-mafnet": _model("mafnet"),
    "model-mana": _model("mana"),
    "model-vsrt": _model("vsrt"),
}


def _shapes(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return [_shapes(o) for o in out]
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    return out


def _empty(shapes: Any) -> Any:
    if isinstance(shapes, tuple) and all(isinstance(s, int) for s in shapes):
        return (0, *shapes[1:]) if shapes else shapes
    if isinstance(shapes, list):
        return [_empty(s) for s in shapes]
    if isinstance(shapes, dict):
        return {k: _empty(v) for k, v in shapes.items()}
    return shapes


@pytest.mark.parametrize("name", list(CASES))
def test_empty_batch_gives_empty_output_of_the_right_shape(name: str) -> None:
    if name == "deform_conv2d-torchvision":
        pytest.importorskip("torchvision.ops")
    block, inputs = CASES[name](1)
    with torch.no_grad():
        expected = _empty(_shapes(block(*inputs)))
    block, inputs = CASES[name](0)
    with torch.no_grad():
        out = block(*inputs)
    assert _shapes(out) == expected

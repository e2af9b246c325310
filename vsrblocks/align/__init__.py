"""Re-exports."""

from vsrblocks.align.boff import BOFF, ResidualBlocksWithInputConv
from vsrblocks.align.deform_conv import DeformConv2d, deform_conv2d
from vsrblocks.align.flow_warp import FlowWarp, flow_warp
from vsrblocks.align.pcd import EasyPCD, PCDAlignment
from vsrblocks.align.second_order_deformable import SecondOrderDeformableAlignment
from vsrblocks.align.spynet import SPyNet, SPyNetBasicModule, bidirectional_flows

__all__ = [
    "BOFF",
    "DeformConv2d",
    "EasyPCD",
    "FlowWarp",
    "PCDAlignment",
    "ResidualBlocksWithInputConv",
    "SPyNet",
    "SPyNetBasicModule",
    "SecondOrderDeformableAlignment",
    "bidirectional_flows",
    "deform_conv2d",
    "flow_warp",
]

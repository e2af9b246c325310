"""Re-exports."""

from vsrblocks.recurrent.concat_cell import ConcatCell
from vsrblocks.recurrent.conv_lstm import ConvLSTM, ConvLSTMCell, ConvLSTMState
from vsrblocks.recurrent.deform_conv_lstm import DeformableConvLSTM
from vsrblocks.recurrent.feature_store import FeatureStore
from vsrblocks.recurrent.frame_source import FrameSource
from vsrblocks.recurrent.propagation import BidirectionalPropagation, SecondOrderGridPropagation
from vsrblocks.recurrent.spilling_feature_store import SpillDiskFullError, SpillingFeatureStore

__all__ = [
    "BidirectionalPropagation",
    "ConcatCell",
    "ConvLSTM",
    "ConvLSTMCell",
    "ConvLSTMState",
    "DeformableConvLSTM",
    "FeatureStore",
    "FrameSource",
    "SecondOrderGridPropagation",
    "SpillDiskFullError",
    "SpillingFeatureStore",
]

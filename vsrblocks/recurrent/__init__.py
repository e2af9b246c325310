"""Re-exports."""

from vsrblocks.recurrent.conv_lstm import ConvLSTM, ConvLSTMCell, ConvLSTMState
from vsrblocks.recurrent.deform_conv_lstm import DeformableConvLSTM

__all__ = [
    "ConvLSTM",
    "ConvLSTMCell",
    "ConvLSTMState",
    "DeformableConvLSTM",
]

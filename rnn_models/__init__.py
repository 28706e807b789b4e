"""PyTorch side of crossbar: analog layers, conversion, training and tasks.

from rnn_models import AnalogLSTM, convert_to_analog
"""

from rnn_models.convert import calibrate, convert_to_analog, program, set_mode, to_digital
from rnn_models.layers import AnalogGRU, AnalogGRUCell, AnalogLinear, AnalogLSTM, AnalogLSTMCell

__all__ = [
    "AnalogGRU",
    "AnalogGRUCell",
    "AnalogLSTM",
    "AnalogLSTMCell",
    "AnalogLinear",
    "calibrate",
    "convert_to_analog",
    "program",
    "set_mode",
    "to_digital",
]

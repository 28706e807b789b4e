"""The digital cell updates of the analog LSTM and GRU (PyTorch's equations), element-wise.

Each is written once with the primitives of :mod:`crossbar.pointwise`: the layers' reference
loops call them on tensors, the fused CPU kernels (:mod:`rnn_models.fastpath`) call their compiled
forms on scalars.  The fixed-point registers around them are
:func:`rnn_models.analog.fixed_point` (``datapath.bits``).
"""

from __future__ import annotations

from crossbar.pointwise import one_minus


def lstm_cell(i, f, g, c):
    """The LSTM's new cell state c' = f * c + i * g (gates i, f, candidate g, state c)."""
    return f * c + i * g


def lstm_hidden(o, tanh_c):
    """The LSTM's new hidden state h' = o * tanh(c') (``tanh_c`` per ``nl_adc.functions.cell``)."""
    return o * tanh_c


def gru_candidate_input(nx, r, nh):
    """What the GRU's candidate tanh reads (reset-after form): W_in x + b_in + r * (W_hn h + b_hn)."""
    return nx + r * nh


def gru_hidden(z, n, h):
    """The GRU's new hidden state h' = (1 - z) * n + z * h."""
    return one_minus(z) * n + z * h

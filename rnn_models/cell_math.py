"""The digital cell updates of the analog LSTM and GRU (PyTorch's equations), element-wise.

Each is written once with the primitives of :mod:`crossbar.pointwise`: the layers' reference
loops call them on tensors, the fused CPU kernels (:mod:`rnn_models.fastpath`) call their compiled
forms on scalars.  The fixed-point registers around them are
:func:`rnn_models.analog.fixed_point` (``datapath.bits``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from crossbar.pointwise import kernel, numba, one_minus


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


# ----------------------------------------------------------------------------- digital tanh
# The cell's digital tanh (``nl_adc.functions.cell = "digital"``) on the chip path: tanh in double
# precision (within 4 ulp), rounded once to the datapath's type (float32: correctly rounded), by an
# algorithm the fused CPU kernel runs too (libraries' tanh differ in the last bit between torch,
# numpy and CPUs):
#   tanh|x| = e / (e + 2),  e = expm1(2|x|) = 2^n (1 + q) - 1,  n = rint(2|x| / ln 2),
#   q = expm1(r) by its series to r^13 (|r| <= ln(2) / 2: remainder < 4e-18), r = 2|x| - n ln 2 in
#   two parts (Cody-Waite; n ln2_hi is exact), 2|x| capped at 40 (tanh = 1 to double precision).
_LN2_HI = 6.93147180369123816490e-01  # ln 2 with its low 32 bits zero (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_EXPM1_SERIES = [1.0 / math.factorial(k) for k in range(13, 1, -1)]  # expm1(r) / r - 1, from r^12 down
_TANH_CAP = 40.0


def tanh_digital(x: torch.Tensor) -> torch.Tensor:
    """The digital tanh of the chip's datapath (see above): double precision, rounded to x's type."""
    y = (2.0 * x.to(torch.float64).abs()).clamp(max=_TANH_CAP)
    n = torch.round(y * (1.0 / math.log(2.0)))
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = torch.full_like(r, _EXPM1_SERIES[0])
    for coef in _EXPM1_SERIES[1:]:
        p = p * r + coef
    q = (p * r + 1.0) * r  # expm1(r)
    scale = (1 << n.to(torch.int64)).to(torch.float64)  # 2^n, exact (n <= 58)
    e = scale * q + (scale - 1.0)
    t = torch.where(x < 0, -(e / (e + 2.0)), e / (e + 2.0)).to(x.dtype)
    return torch.where((x == 0) | torch.isnan(x), x, t)  # signed zeros and NaN pass


if numba is not None:
    _EXPM1 = tuple(np.float64(c) for c in _EXPM1_SERIES)
    _INV_LN2 = 1.0 / math.log(2.0)

    @kernel(inline=True)
    def tanh_digital64(x):  # pragma: no cover - compiled
        """:func:`tanh_digital` of one value in double precision (the caller rounds it to its
        type); the same operations, written out for the compiler."""
        y = min(2.0 * abs(np.float64(x)), _TANH_CAP)
        n = np.rint(y * _INV_LN2)
        r = (y - n * _LN2_HI) - n * _LN2_LO
        p = _EXPM1[0] * r + _EXPM1[1]
        p = p * r + _EXPM1[2]
        p = p * r + _EXPM1[3]
        p = p * r + _EXPM1[4]
        p = p * r + _EXPM1[5]
        p = p * r + _EXPM1[6]
        p = p * r + _EXPM1[7]
        p = p * r + _EXPM1[8]
        p = p * r + _EXPM1[9]
        p = p * r + _EXPM1[10]
        p = p * r + _EXPM1[11]
        q = (p * r + 1.0) * r
        scale = np.float64(np.int64(1) << np.int64(n))
        e = scale * q + (scale - 1.0)
        t = e / (e + 2.0)
        t = -t if x < 0 else t
        return np.float64(x) if (x == 0) | (x != x) else t

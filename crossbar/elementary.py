"""The digital unit's elementary functions: tanh and the logistic sigmoid, one definition for torch
and for the CPU kernels.

A programmed chip computes these digitally: the cell's tanh (``nl_adc.functions.cell =
"digital"``) and the activation after an ideal or a conventional (linear ramp) ADC.  Libraries'
tanh and sigmoid differ in the last bit between torch, numpy and CPUs, so the chip path uses its
own: each value in double precision (within 4 ulp), rounded once to the datapath's type -- float32
results are then correctly rounded.  The torch forms (:func:`tanh_digital`,
:func:`sigmoid_digital`) define them and run on CPU and CUDA; the kernel forms
(:func:`tanh64`, :func:`sigmoid64`, numba, double results that the caller rounds) are the same
operations written out for the compiler, tested bit for bit (``tests/crossbar/test_elementary.py``).
Training and the float path keep torch's own functions (their gradients).

Both rest on e^y = 2^n (1 + q) for y >= 0: n = rint(y / ln 2), r = y - n ln 2 in two parts
(Cody-Waite: n ln2_hi is exact), |r| <= ln(2) / 2, q = expm1(r) by its series to r^13 (remainder
< 4e-18).  tanh|x| = e / (e + 2) with e = expm1(2|x|) = 2^n q + (2^n - 1), 2|x| capped at 40
(tanh = 1 to double precision); sigmoid(x) = E / (1 + E) for x >= 0, 1 / (1 + E) for x < 0, with
E = e^|x| and |x| capped at 708 (2^n built from its exponent bits; below x = -708 the result
stays 3.3e-308).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from crossbar.pointwise import kernel, numba, reinterpret

_LN2_HI = 6.93147180369123816490e-01  # ln 2 with its low 32 bits zero (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.0 / math.log(2.0)
#: expm1(r) / r - 1 as a series in r, from r^12 down to r^1 (1/13!, ..., 1/2!)
_EXPM1_SERIES = [1.0 / math.factorial(k) for k in range(13, 1, -1)]
_TANH_CAP = 40.0
_SIGMOID_CAP = 708.0


def _expm1_parts(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, q) with e^y = 2^n (1 + q) for float64 y >= 0 (n as float64)."""
    n = torch.round(y * _INV_LN2)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = torch.full_like(r, _EXPM1_SERIES[0])
    for coef in _EXPM1_SERIES[1:]:
        p = p * r + coef
    return n, (p * r + 1.0) * r


def _pow2(n: torch.Tensor) -> torch.Tensor:
    """2^n for float64 integers 0 <= n <= 1023, exactly (its exponent bits)."""
    return ((n.to(torch.int64) + 1023) << 52).view(torch.float64)


def tanh_digital(x: torch.Tensor) -> torch.Tensor:
    """tanh of the digital unit (see the module): double precision, rounded to x's type."""
    y = (2.0 * x.to(torch.float64).abs()).clamp(max=_TANH_CAP)
    n, q = _expm1_parts(y)
    scale = _pow2(n)
    e = scale * q + (scale - 1.0)
    t = torch.where(x < 0, -(e / (e + 2.0)), e / (e + 2.0)).to(x.dtype)
    return torch.where((x == 0) | torch.isnan(x), x, t)  # signed zeros and NaN pass


def sigmoid_digital(x: torch.Tensor) -> torch.Tensor:
    """The logistic sigmoid of the digital unit (see the module): double precision, rounded to x's type."""
    y = x.to(torch.float64).abs().clamp(max=_SIGMOID_CAP)
    n, q = _expm1_parts(y)
    e = _pow2(n) * (1.0 + q)  # e^|x|
    s = torch.where(x < 0, 1.0 / (1.0 + e), e / (1.0 + e)).to(x.dtype)
    return torch.where(torch.isnan(x), x, s)


if numba is not None:
    from numba import types as _types

    _EXPM1 = tuple(np.float64(c) for c in _EXPM1_SERIES)
    #: the float64 whose IEEE bit pattern is an int64
    _f64_from_bits = reinterpret(_types.int64, _types.float64)

    @kernel(inline=True)
    def _expm1_parts64(y):  # pragma: no cover - compiled
        """:func:`_expm1_parts` of one float64 value, the same operations."""
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
        return n, (p * r + 1.0) * r

    @kernel(inline=True)
    def tanh64(x):  # pragma: no cover - compiled
        """:func:`tanh_digital` of one value in double precision (the caller rounds it to its type)."""
        y = min(2.0 * abs(np.float64(x)), _TANH_CAP)
        n, q = _expm1_parts64(y)
        scale = _f64_from_bits((np.int64(n) + np.int64(1023)) << np.int64(52))
        e = scale * q + (scale - 1.0)
        t = e / (e + 2.0)
        t = -t if x < 0 else t
        return np.float64(x) if (x == 0) | (x != x) else t

    @kernel(inline=True)
    def sigmoid64(x):  # pragma: no cover - compiled
        """:func:`sigmoid_digital` of one value in double precision (the caller rounds it to its type)."""
        y = min(abs(np.float64(x)), _SIGMOID_CAP)
        n, q = _expm1_parts64(y)
        e = _f64_from_bits((np.int64(n) + np.int64(1023)) << np.int64(52)) * (1.0 + q)
        s = 1.0 / (1.0 + e) if x < 0 else e / (1.0 + e)
        return np.float64(x) if x != x else s

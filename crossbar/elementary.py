"""The digital unit's elementary functions: tanh and the logistic sigmoid, one definition for torch
and for the CPU kernels.

A programmed chip computes these digitally: the cell's tanh (``nl_adc.functions.cell =
"digital"``) and the activation after an ideal or a conventional (linear ramp) ADC.  Libraries'
tanh and sigmoid differ in the last bit between torch, numpy and CPUs, so the chip path uses its
own, computed **in the datapath's precision** (``simulation.dtype``), as a digital unit of that
width would:

* float32: float32 arithmetic throughout, within 2 ulp of the exact value (measured on 250,000
  points, ``tests/crossbar/test_elementary.py``), ~3x faster in the kernels than the double
  form (16 lanes of AVX-512 instead of 8);
* float64 (and any other type): double precision within 4 ulp, rounded once to the type.

The torch forms (:func:`tanh_digital`, :func:`sigmoid_digital`) define them and run on CPU and
CUDA; the kernel forms (:func:`tanh_unit`, :func:`sigmoid_unit`: numba, a value of the argument's
float type) are the same operations written out for the compiler, tested bit for bit.  Training and
the float path keep torch's own functions (their gradients).

Both rest on e^y = 2^n (1 + q) for y >= 0: n = rint(y / ln 2), r = y - n ln 2 in two parts
(Cody-Waite: n ln2_hi is exact), |r| <= ln(2) / 2, q = expm1(r) by its series (double: to r^13,
remainder < 4e-18; float32: to r^8, remainder < 6e-10).  tanh|x| = e / (e + 2) with
e = expm1(2|x|) = 2^n q + (2^n - 1), 2|x| capped (double: at 40, float32: at 20; tanh = 1 to the
type's precision beyond); sigmoid(x) = E / (1 + E) for x >= 0, 1 / (1 + E) for x < 0, with
E = e^|x| and |x| capped (double: at 708, below x = -708 the result stays 3.3e-308; float32: at
88, below x = -88 it stays 6.05e-39), 2^n built from its exponent bits.
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
# the float32 forms' constants (each a float32 value)
_LN2_HI32 = 0.693145751953125  # ln 2 to 15 significant bits: n * _LN2_HI32 is exact for |n| < 2^9 (n <= 127 here)
_LN2_LO32 = float(np.float32(math.log(2.0) - 0.693145751953125))
_INV_LN2_32 = float(np.float32(1.0 / math.log(2.0)))
#: expm1(r) / r - 1 as a series in r, from r^7 down to r^1 (1/8!, ..., 1/2!), float32 values
_EXPM1_SERIES32 = [float(np.float32(1.0 / math.factorial(k))) for k in range(8, 1, -1)]
_TANH_CAP32 = 20.0
_SIGMOID_CAP32 = 88.0


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


def _expm1_parts32(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, q) with e^y = 2^n (1 + q) for float32 y >= 0, in float32 arithmetic (n as float32)."""
    n = torch.round(y * _INV_LN2_32)
    r = (y - n * _LN2_HI32) - n * _LN2_LO32
    p = torch.full_like(r, _EXPM1_SERIES32[0])
    for coef in _EXPM1_SERIES32[1:]:
        p = p * r + coef
    return n, (p * r + 1.0) * r


def _pow2_32(n: torch.Tensor) -> torch.Tensor:
    """2^n for float32 integers 0 <= n <= 127, exactly (its exponent bits)."""
    return ((n.to(torch.int32) + 127) << 23).view(torch.float32)


def _tanh32(x: torch.Tensor) -> torch.Tensor:
    y = (2.0 * x.abs()).clamp(max=_TANH_CAP32)
    n, q = _expm1_parts32(y)
    scale = _pow2_32(n)
    e = scale * q + (scale - 1.0)
    t = e / (e + 2.0)
    t = torch.where(x < 0, -t, t)
    return torch.where((x == 0) | torch.isnan(x), x, t)  # signed zeros and NaN pass


def _sigmoid32(x: torch.Tensor) -> torch.Tensor:
    y = x.abs().clamp(max=_SIGMOID_CAP32)
    n, q = _expm1_parts32(y)
    e = _pow2_32(n) * (1.0 + q)  # e^|x|
    s = torch.where(x < 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return torch.where(torch.isnan(x), x, s)


def tanh_digital(x: torch.Tensor) -> torch.Tensor:
    """tanh of the digital unit (see the module) in x's precision: float32 arithmetic for float32,
    else double precision rounded to x's type."""
    if x.dtype == torch.float32:
        return _tanh32(x)
    y = (2.0 * x.to(torch.float64).abs()).clamp(max=_TANH_CAP)
    n, q = _expm1_parts(y)
    scale = _pow2(n)
    e = scale * q + (scale - 1.0)
    t = torch.where(x < 0, -(e / (e + 2.0)), e / (e + 2.0)).to(x.dtype)
    return torch.where((x == 0) | torch.isnan(x), x, t)  # signed zeros and NaN pass


def sigmoid_digital(x: torch.Tensor) -> torch.Tensor:
    """The logistic sigmoid of the digital unit (see the module) in x's precision: float32
    arithmetic for float32, else double precision rounded to x's type."""
    if x.dtype == torch.float32:
        return _sigmoid32(x)
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

    _EXPM1_32 = tuple(np.float32(c) for c in _EXPM1_SERIES32)
    _F32 = np.float32
    #: the float32 whose IEEE bit pattern is an int32
    _f32_from_bits = reinterpret(_types.int32, _types.float32)

    @kernel(inline=True)
    def _expm1_parts32_k(y):  # pragma: no cover - compiled
        """:func:`_expm1_parts32` of one float32 value, the same operations."""
        n = np.rint(y * _F32(_INV_LN2_32))
        r = (y - n * _F32(_LN2_HI32)) - n * _F32(_LN2_LO32)
        p = _EXPM1_32[0] * r + _EXPM1_32[1]
        p = p * r + _EXPM1_32[2]
        p = p * r + _EXPM1_32[3]
        p = p * r + _EXPM1_32[4]
        p = p * r + _EXPM1_32[5]
        p = p * r + _EXPM1_32[6]
        return n, (p * r + _F32(1.0)) * r

    @kernel(inline=True)
    def tanh32(x):  # pragma: no cover - compiled
        """:func:`tanh_digital` of one float32 value (float32 arithmetic)."""
        y = min(_F32(2.0) * abs(x), _F32(_TANH_CAP32))
        n, q = _expm1_parts32_k(y)
        scale = _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
        e = scale * q + (scale - _F32(1.0))
        t = e / (e + _F32(2.0))
        t = -t if x < 0 else t
        return x if (x == 0) | (x != x) else t

    @kernel(inline=True)
    def sigmoid32(x):  # pragma: no cover - compiled
        """:func:`sigmoid_digital` of one float32 value (float32 arithmetic)."""
        y = min(abs(x), _F32(_SIGMOID_CAP32))
        n, q = _expm1_parts32_k(y)
        e = _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23)) * (_F32(1.0) + q)
        s = _F32(1.0) / (_F32(1.0) + e) if x < 0 else e / (_F32(1.0) + e)
        return x if x != x else s


def tanh_unit(x):
    """The digital unit's tanh of one value in the kernels (numba only): :func:`tanh_digital` of
    a value of x's float type (float32 arithmetic for float32, double for float64)."""
    raise NotImplementedError("tanh_unit is compiled into numba kernels; use tanh_digital on tensors")


def sigmoid_unit(x):
    """The digital unit's sigmoid of one value in the kernels (numba only): :func:`sigmoid_digital`
    of a value of x's float type."""
    raise NotImplementedError("sigmoid_unit is compiled into numba kernels; use sigmoid_digital on tensors")


if numba is not None:
    from numba.extending import overload

    @overload(tanh_unit)
    def _tanh_unit(x):  # pragma: no cover - compiled
        if x == _types.float32:
            return lambda x: tanh32(x)
        if x == _types.float64:
            return lambda x: tanh64(x)
        return None

    @overload(sigmoid_unit)
    def _sigmoid_unit(x):  # pragma: no cover - compiled
        if x == _types.float32:
            return lambda x: sigmoid32(x)
        if x == _types.float64:
            return lambda x: sigmoid64(x)
        return None

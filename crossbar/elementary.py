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
from dataclasses import dataclass

import numpy as np
import torch

from crossbar.pointwise import horner, kernel, numba, reinterpret


@dataclass(frozen=True)
class _Precision:
    """One precision's constants of the algorithm (see the module); ``ln2_hi`` has enough trailing
    zero bits that n * ln2_hi is exact for every n the caps allow."""

    dtype: torch.dtype  # the arithmetic's type
    int_dtype: torch.dtype  # the integer type of its bit pattern
    bias: int  # exponent bias
    mantissa: int  # mantissa bits: 2^n = (n + bias) << mantissa
    inv_ln2: float
    ln2_hi: float
    ln2_lo: float
    series: tuple  # expm1(r) / r - 1 as a series in r, highest power first: 1/k!, ..., 1/2!
    tanh_cap: float  # 2|x| capped here (tanh = 1 to the type's precision beyond)
    sigmoid_cap: float  # |x| capped here (e^cap finite)


def _rounded(value: float, ty) -> float:
    return float(ty(value))


_DOUBLE = _Precision(
    torch.float64,
    torch.int64,
    1023,
    52,
    inv_ln2=1.0 / math.log(2.0),
    ln2_hi=6.93147180369123816490e-01,  # ln 2 with its low 32 bits zero (fdlibm)
    ln2_lo=1.90821492927058770002e-10,
    series=tuple(1.0 / math.factorial(k) for k in range(13, 1, -1)),  # expm1 to r^13: remainder < 4e-18
    tanh_cap=40.0,
    sigmoid_cap=708.0,
)
_SINGLE = _Precision(
    torch.float32,
    torch.int32,
    127,
    23,
    inv_ln2=_rounded(1.0 / math.log(2.0), np.float32),
    ln2_hi=0.693145751953125,  # ln 2 to 15 significant bits: exact products for |n| < 2^9 (n <= 127 here)
    ln2_lo=_rounded(math.log(2.0) - 0.693145751953125, np.float32),
    series=tuple(_rounded(1.0 / math.factorial(k), np.float32) for k in range(8, 1, -1)),  # expm1 to r^8
    tanh_cap=20.0,
    sigmoid_cap=88.0,
)


def _expm1_parts(y: torch.Tensor, c: _Precision) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, q) with e^y = 2^n (1 + q) for y >= 0 of type ``c.dtype``, in that type (n as a float)."""
    n = torch.round(y * c.inv_ln2)
    r = (y - n * c.ln2_hi) - n * c.ln2_lo
    return n, (horner(c.series, r) * r + 1.0) * r


def _pow2(n: torch.Tensor, c: _Precision) -> torch.Tensor:
    """2^n for integers 0 <= n <= bias held as floats, exactly (its exponent bits)."""
    return ((n.to(c.int_dtype) + c.bias) << c.mantissa).view(c.dtype)


def _precision(x: torch.Tensor) -> _Precision:
    """float32 arithmetic for float32 values, double precision for every other type."""
    return _SINGLE if x.dtype == torch.float32 else _DOUBLE


def tanh_digital(x: torch.Tensor) -> torch.Tensor:
    """tanh of the digital unit (see the module) in x's precision: float32 arithmetic for float32,
    else double precision rounded to x's type."""
    c = _precision(x)
    y = (2.0 * x.to(c.dtype).abs()).clamp(max=c.tanh_cap)
    n, q = _expm1_parts(y, c)
    scale = _pow2(n, c)
    e = scale * q + (scale - 1.0)
    t = e / (e + 2.0)
    t = torch.where(x < 0, -t, t).to(x.dtype)
    return torch.where((x == 0) | torch.isnan(x), x, t)  # signed zeros and NaN pass


def sigmoid_digital(x: torch.Tensor) -> torch.Tensor:
    """The logistic sigmoid of the digital unit (see the module) in x's precision: float32
    arithmetic for float32, else double precision rounded to x's type."""
    c = _precision(x)
    y = x.to(c.dtype).abs().clamp(max=c.sigmoid_cap)
    n, q = _expm1_parts(y, c)
    e = _pow2(n, c) * (1.0 + q)  # e^|x|
    s = torch.where(x < 0, 1.0 / (1.0 + e), e / (1.0 + e)).to(x.dtype)
    return torch.where(torch.isnan(x), x, s)


def _unit_kernels(c: _Precision):
    """The kernel forms (numba, inlined) of :func:`tanh_digital` and :func:`sigmoid_digital` for a
    value of ``c``'s type: the same operations on one value."""
    ty = np.float32 if c.dtype == torch.float32 else np.float64
    ity = np.int32 if c.int_dtype == torch.int32 else np.int64
    fty, ntype = (_types.float32, _types.int32) if ty is np.float32 else (_types.float64, _types.int64)
    from_bits = reinterpret(ntype, fty)  # the float whose IEEE bit pattern is an integer
    inv_ln2, ln2_hi, ln2_lo = ty(c.inv_ln2), ty(c.ln2_hi), ty(c.ln2_lo)
    series = tuple(ty(v) for v in c.series)
    one, two = ty(1.0), ty(2.0)
    bias, mantissa = ity(c.bias), ity(c.mantissa)
    tanh_cap, sigmoid_cap = ty(c.tanh_cap), ty(c.sigmoid_cap)

    @kernel(inline=True)
    def expm1_parts(y):  # pragma: no cover - compiled
        n = np.rint(y * inv_ln2)
        r = (y - n * ln2_hi) - n * ln2_lo
        return n, (horner(series, r) * r + one) * r

    @kernel(inline=True)
    def tanh(x):  # pragma: no cover - compiled
        y = min(two * abs(x), tanh_cap)
        n, q = expm1_parts(y)
        scale = from_bits((ity(n) + bias) << mantissa)
        e = scale * q + (scale - one)
        t = e / (e + two)
        t = -t if x < 0 else t
        return x if (x == 0) | (x != x) else t

    @kernel(inline=True)
    def sigmoid(x):  # pragma: no cover - compiled
        y = min(abs(x), sigmoid_cap)
        n, q = expm1_parts(y)
        e = from_bits((ity(n) + bias) << mantissa) * (one + q)
        s = one / (one + e) if x < 0 else e / (one + e)
        return x if x != x else s

    return tanh, sigmoid


if numba is not None:
    from numba import types as _types

    tanh64, sigmoid64 = _unit_kernels(_DOUBLE)
    tanh32, sigmoid32 = _unit_kernels(_SINGLE)


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

    def _by_precision(single, double):
        """numba's typing of a unit function: ``single`` for a float32 argument, ``double`` for a
        float64 one (no other type)."""

        def typed(x):  # pragma: no cover - compiled
            if x == _types.float32:
                return lambda x: single(x)
            if x == _types.float64:
                return lambda x: double(x)
            return None

        return typed

    overload(tanh_unit)(_by_precision(tanh32, tanh64))
    overload(sigmoid_unit)(_by_precision(sigmoid32, sigmoid64))

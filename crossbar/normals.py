"""Counter-based standard normals: the one definition of every Gaussian a programmed chip draws per read.

A chip's per-read noise (the array's read noise at a converter's input, the NL-ADC's ramp and
comparator noise) is one standard normal per conversion.  Each is a pure function of where it is
used -- no generator state -- so any block of rows, columns, steps or instances can be computed on
any thread, in any order, inside a compiled loop, and give the same numbers:

    z(key; read n, step t, row b, column c)

* ``key``: two 32-bit words of :func:`crossbar.rng.derive_seed` ``(seed, purpose, instance)`` --
  one stream per purpose and Monte-Carlo instance, as before (instance m does not depend on M);
* the counter: (c // 4, b, t, n) -- the column group of four, the batch row, the time step of a
  sequence (0 outside sequences) and the read (the stream's forward passes, counted from 0 after
  programming);
* bits: **Philox4x32-10** (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2,
  3", SC'11; the generator of cuRAND, JAX and numpy's ``Philox``), checked against the Random123
  known-answer vectors; one block gives the four 32-bit words of columns 4g..4g+3;
* normals: **Box-Muller** on the word pairs (r0, r1) -> columns 4g, 4g+1 and (r2, r3) -> 4g+2,
  4g+3: R = sqrt(-2 ln u), u = (r0 + 1/2) 2^-32, angle 2 pi (r1 + 1/2) 2^-32, z = (R cos, R sin).
  Computed in float32 from the exact integers with +, -, *, /, sqrt and selects only (the
  logarithm and sine/cosine by exact argument reduction and their series; within 2e-6 of the
  exact transform, also next to u = 1), so the compiled CPU kernel and the torch form (CUDA,
  tests) give the same bits; a float64 simulation gets them exactly converted.
  |z| <= sqrt(66 ln 2) = 6.76 (u >= 2^-33).

:func:`normal_row` is the kernels' form (one row of columns, called inside the fast path's
loops); :class:`NormalStream` draws blocks for the torch code (the reference loops, the
converters, CUDA).  Model and counter layout: docs/devices_and_arrays.md (Randomness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from crossbar.errors import CrossbarInputError
from crossbar.pointwise import horner, kernel, numba, sqrt_rounded
from crossbar.rng import derive_seed

#: Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011)
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
_MASK32 = 0xFFFFFFFF
#: counters and key words are 32-bit
COUNTER_LIMIT = 2**32

_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_OCTANT = math.pi / 4 * 2.0**-29  # angle of one unit of the 29-bit position inside an octant


# ----------------------------------------------------------------------------- Box-Muller
# Float32 arithmetic from exact integer inputs; the two forms below are one algorithm, operation for
# operation (the kernel's conditional expressions are the torch form's torch.where), and
# tests/crossbar/test_normals.py requires identical bits.
_F = np.float32
#: 2 atanh(s) / (2 s) as a series in s^2, highest power first (8 terms: |s| <= 1/3 -> 1e-8)
_LOG_SERIES = [1.0 / k for k in (15, 13, 11, 9, 7, 5, 3, 1)]
#: sin(a) / a and cos(a) in a^2 for |a| <= pi/4, highest power first (remainders < 3e-9)
_SIN_SERIES = [(-1) ** k / math.factorial(2 * k + 1) for k in range(5, -1, -1)]
_COS_SERIES = [(-1) ** k / math.factorial(2 * k) for k in range(5, -1, -1)]
# the series' float32 values (the torch forms' coefficients)
_LOG32, _SIN32, _COS32 = (tuple(float(_F(c)) for c in series) for series in (_LOG_SERIES, _SIN_SERIES, _COS_SERIES))
#: (threshold, factor, exponent step) of the logarithm's argument reduction (exact powers of two)
_HALVINGS = [
    (65536.0, 1.0 / 65536.0, 16.0),
    (256.0, 1.0 / 256.0, 8.0),
    (16.0, 0.0625, 4.0),
    (4.0, 0.25, 2.0),
    (2.0, 0.5, 1.0),
]
_TWO32 = 2.0**32
_HALF32 = 2**31


def _f32(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def _log_u(m: torch.Tensor) -> torch.Tensor:
    """ln u for u = (m + 1/2) 2^-32 and integers 0 <= m < 2^32 (int64 tensors), float32 to within
    a few 1e-7 relative: below u = 1/2, m + 1/2 is reduced by exact powers of two to v in
    [1/sqrt 2, sqrt 2] and ln u = 2 atanh(s) + (e - 32) ln 2, s = (v-1)/(v+1); above, with
    w = 1 - u = (d + 1/2) 2^-32, d = 2^32 - 1 - m (exact near u = 1), ln u = 2 atanh(s),
    s = -w / (2 - w), |s| <= 1/3; atanh by its series to s^15."""
    low = m < _HALF32
    v = m.to(torch.float32) + _f32(0.5)
    e = torch.zeros_like(v)
    for limit, factor, step in _HALVINGS:
        big = v >= _f32(limit)
        v, e = torch.where(big, v * _f32(factor), v), torch.where(big, e + _f32(step), e)
    big = v > _f32(_SQRT2)
    v, e = torch.where(big, v * _f32(0.5), v), torch.where(big, e + _f32(1.0), e)
    small = v < _f32(1.0 / _SQRT2)  # only v = 1/2 (m = 0)
    v, e = torch.where(small, v * _f32(2.0), v), torch.where(small, e - _f32(1.0), e)
    w = (4294967295 - m).to(torch.float32) + _f32(0.5)  # (1 - u) 2^32 above u = 1/2
    s = torch.where(low, v - _f32(1.0), -w) / torch.where(low, v + _f32(1.0), _f32(2 * _TWO32) - w)
    s2 = s * s
    p = horner(_LOG32, s2)
    return _f32(2.0) * s * p + torch.where(low, (e - _f32(32.0)) * _f32(_LN2), _f32(0.0))


def _cos_sin_2pi(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of the angle 2 pi (m + 1/2) 2^-32 for integers 0 <= m < 2^32, float32: the top
    three bits give the octant, the 29 below the angle a in (0, pi/4) inside it (odd octants count
    back from their end, so a is measured from the nearer quarter turn), sin a and cos a by their
    series, then the quarter-turn rotation."""
    octant = m >> 29
    pos = m & 0x1FFFFFFF
    odd = (octant & 1) == 1
    a = (torch.where(odd, 0x1FFFFFFF - pos, pos).to(torch.float32) + _f32(0.5)) * _f32(_OCTANT)
    a2 = a * a
    sn = horner(_SIN32, a2) * a
    cs = horner(_COS32, a2)
    # the angle: q quarter turns + a (even octant), or q + 1 quarter turns - a (odd octant)
    quarter = torch.where(odd, (octant >> 1) + 1, octant >> 1) & 3
    sn = torch.where(odd, -sn, sn)
    swap = (quarter & 1) == 1
    x, y = torch.where(swap, sn, cs), torch.where(swap, cs, sn)
    neg_x = (quarter == 1) | (quarter == 2)
    return torch.where(neg_x, -x, x), torch.where(quarter >= 2, -y, y)


def box_muller(r0: torch.Tensor, r1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard normals (float32) from uniform 32-bit integers (int64 tensors)."""
    radius = sqrt_rounded(_f32(-2.0) * _log_u(r0))
    c, s = _cos_sin_2pi(r1)
    return radius * c, radius * s


# ----------------------------------------------------------------------------- Philox (torch form)
def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of the 64-bit product a * b (a < 2^32 a constant, b int64 < 2^32),
    in 16-bit halves so that no int64 product overflows."""
    hi_part, lo_part = b * (a >> 16), b * (a & 0xFFFF)  # each < 2^48
    mid = lo_part + ((hi_part & 0xFFFF) << 16)  # < 2^49
    return (hi_part >> 16) + (mid >> 32), mid & _MASK32


def philox4x32(ctr: tuple, key: tuple) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of counter words ``ctr`` (four int64 tensors < 2^32, broadcastable) under
    ``key`` (two int64 tensors or ints < 2^32): the four output words as int64 tensors."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in ctr)
    k0, k1 = (torch.as_tensor(k, dtype=torch.int64) for k in key)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & _MASK32, (k1 + PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


# ----------------------------------------------------------------------------- kernels (numba)
if numba is not None:
    _M0, _M1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    _W0, _W1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
    _LOW, _SHIFT = np.uint64(_MASK32), np.uint64(32)
    _L = tuple(_F(c) for c in _LOG_SERIES)
    _S = tuple(_F(c) for c in _SIN_SERIES)
    _C = tuple(_F(c) for c in _COS_SERIES)
    _H = tuple((_F(limit), _F(factor), _F(step)) for limit, factor, step in _HALVINGS)
    _ONE, _HALF, _TWO = _F(1.0), _F(0.5), _F(2.0)
    _SQRT2_F, _ISQRT2_F, _LN2_F, _OCTANT_F = _F(_SQRT2), _F(1.0 / _SQRT2), _F(_LN2), _F(_OCTANT)
    _TWO33_F, _E32 = _F(2 * _TWO32), _F(32.0)

    @kernel(inline=True)
    def philox_block(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
        """Philox4x32-10 on uint64 words < 2^32 (the 32x32 -> 64-bit products exact in uint64; the
        key is bumped after every round, the last bump unused)."""
        for _ in range(PHILOX_ROUNDS):
            p0, p1 = _M0 * c0, _M1 * c2
            c0, c1, c2, c3 = (p1 >> _SHIFT) ^ c1 ^ k0, p1 & _LOW, (p0 >> _SHIFT) ^ c3 ^ k1, p0 & _LOW
            k0, k1 = (k0 + _W0) & _LOW, (k1 + _W1) & _LOW
        return c0, c1, c2, c3

    @kernel(inline=True)
    def _pair(w0, w1):  # pragma: no cover - compiled
        """:func:`box_muller` of two Philox words (uint64 < 2^32), written out for the compiler."""
        m = np.int64(w0)
        low = m < _HALF32
        v = _F(m) + _HALF
        e = _F(0.0)
        big = v >= _H[0][0]
        v, e = (v * _H[0][1] if big else v), (e + _H[0][2] if big else e)
        big = v >= _H[1][0]
        v, e = (v * _H[1][1] if big else v), (e + _H[1][2] if big else e)
        big = v >= _H[2][0]
        v, e = (v * _H[2][1] if big else v), (e + _H[2][2] if big else e)
        big = v >= _H[3][0]
        v, e = (v * _H[3][1] if big else v), (e + _H[3][2] if big else e)
        big = v >= _H[4][0]
        v, e = (v * _H[4][1] if big else v), (e + _H[4][2] if big else e)
        big = v > _SQRT2_F
        v, e = (v * _HALF if big else v), (e + _ONE if big else e)
        small = v < _ISQRT2_F
        v, e = (v * _TWO if small else v), (e - _ONE if small else e)
        w = _F(np.int64(4294967295) - m) + _HALF
        s = (v - _ONE if low else -w) / (v + _ONE if low else _TWO33_F - w)
        s2 = s * s
        p = horner(_L, s2)
        log_u = _TWO * s * p + ((e - _E32) * _LN2_F if low else _F(0.0))
        radius = np.sqrt(_F(-2.0) * log_u)
        k = np.int64(w1)
        octant = k >> 29
        pos = k & 0x1FFFFFFF
        odd = (octant & 1) == 1
        a = (_F(0x1FFFFFFF - pos if odd else pos) + _HALF) * _OCTANT_F
        a2 = a * a
        sn = horner(_S, a2) * a
        cs = horner(_C, a2)
        quarter = ((octant >> 1) + 1 if odd else octant >> 1) & 3
        sn = -sn if odd else sn
        swap = (quarter & 1) == 1
        x, y = (sn if swap else cs), (cs if swap else sn)
        x = -x if (quarter == 1) | (quarter == 2) else x
        y = -y if quarter >= 2 else y
        return radius * x, radius * y

    @kernel
    def normal_row(out, k0, k1, read, step, row):  # pragma: no cover - compiled
        """``out[c]`` = z(key (k0, k1); read, step, row, column c) for every column c of ``out``
        (float32 or float64; the counter words as uint64)."""
        n = out.shape[0]
        for g in range(n // 4):
            r0, r1, r2, r3 = philox_block(np.uint64(g), row, step, read, k0, k1)
            z0, z1 = _pair(r0, r1)
            z2, z3 = _pair(r2, r3)
            out[4 * g] = z0
            out[4 * g + 1] = z1
            out[4 * g + 2] = z2
            out[4 * g + 3] = z3
        g = n // 4
        if 4 * g < n:
            r0, r1, r2, r3 = philox_block(np.uint64(g), row, step, read, k0, k1)
            z0, z1 = _pair(r0, r1)
            z2, z3 = _pair(r2, r3)
            out[4 * g] = z0
            if 4 * g + 1 < n:
                out[4 * g + 1] = z1
            if 4 * g + 2 < n:
                out[4 * g + 2] = z2

    @kernel
    def _normals_at(out, keys, read, step, rows, cols):  # pragma: no cover - compiled
        """out[m, i, j] = z(keys[m]; read, step, rows[i], cols[j]) for any row and column indices."""
        for m in range(out.shape[0]):
            k0, k1 = np.uint64(keys[m, 0]), np.uint64(keys[m, 1])
            for i in range(rows.shape[0]):
                row = np.uint64(rows[i])
                for j in range(cols.shape[0]):
                    c = cols[j]
                    r0, r1, r2, r3 = philox_block(np.uint64(c >> 2), row, step, read, k0, k1)
                    lane = c & 3
                    a, b = (r0, r1) if lane < 2 else (r2, r3)
                    z0, z1 = _pair(a, b)
                    out[m, i, j] = z0 if (lane & 1) == 0 else z1


def _torch_normals(keys: torch.Tensor, read: int, step: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The torch form of the same normals, (M, len(rows), len(cols)) float32 on ``keys``' device."""
    dev = keys.device
    k0, k1 = keys[:, 0].view(-1, 1, 1), keys[:, 1].view(-1, 1, 1)
    c = cols.to(dev, torch.int64).view(1, 1, -1)
    b = rows.to(dev, torch.int64).view(1, -1, 1)
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    r = philox4x32((c >> 2, b, zero + step, zero + read), (k0, k1))
    lane = c & 3
    first = lane < 2
    z0, z1 = box_muller(torch.where(first, r[0], r[2]), torch.where(first, r[1], r[3]))
    return torch.where((lane & 1) == 0, z0, z1)


def instance_keys(seed: int, purpose: str, first: int, count: int) -> torch.Tensor:
    """(count, 2) int64: the two 32-bit key words of instances first..first+count-1 of ``purpose``."""
    seeds = [derive_seed(seed, purpose, first + m) for m in range(count)]
    return torch.tensor([[s & _MASK32, s >> 32] for s in seeds], dtype=torch.int64).reshape(count, 2)


def _check_counter(name: str, value: int) -> int:
    value = int(value)
    if not 0 <= value < COUNTER_LIMIT:
        raise CrossbarInputError(f"normal stream: {name} must be in [0, 2^32), got {value}")
    return value


class NormalStream:
    """The normals of one purpose (e.g. ``adc/<matrix name>``) for instances first..first+count-1.

    ``reads`` counts the stream's reads: an analog matrix takes one (:meth:`next_read`) per forward
    pass, and every conversion of that pass -- each step of a sequence, each column -- draws at its
    own counter within it.  Instance m's normals depend on (seed, purpose, first + m) only."""

    def __init__(self, seed: int, purpose: str, first: int, count: int, device: str | torch.device = "cpu"):
        self.seed, self.purpose, self.first = int(seed), purpose, int(first)
        self.keys = instance_keys(seed, purpose, first, count).to(device)
        self.keys_np = self.keys.cpu().numpy()
        self.reads = 0

    @property
    def instances(self) -> int:
        return self.keys.shape[0]

    def next_read(self) -> int:
        """The index of a new read (a forward pass); the stream counts it."""
        read = _check_counter("read", self.reads)
        self.reads += 1
        return read

    def at(self, read: int | None = None, step: int = 0, cols: torch.Tensor | None = None) -> NoiseAt:
        """Where a conversion's normals come from: this stream at ``read`` (None: a new read),
        ``step``, columns ``cols`` (None: 0, 1, ...)."""
        return NoiseAt(self, self.next_read() if read is None else read, step, cols)

    def normals(
        self,
        shape: tuple[int, int, int],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        read: int = 0,
        step: int = 0,
        rows: torch.Tensor | None = None,
        cols: torch.Tensor | None = None,
        first: int = 0,
    ) -> torch.Tensor:
        """Normals of shape (M, B, C) = (instances first..first+M-1 of the stream, rows, columns):
        z(key_m; read, step, rows[b], cols[c]) (rows and columns default to 0, 1, ...), in
        ``dtype`` on ``device``."""
        m_count, b_count, c_count = shape
        if first < 0 or first + m_count > self.instances:
            raise CrossbarInputError(
                f"normal stream has {self.instances} instance(s), {first}..{first + m_count - 1} were asked for"
            )
        read, step = _check_counter("read", read), _check_counter("step", step)
        rows = torch.arange(b_count) if rows is None else torch.as_tensor(rows).to(torch.int64).flatten()
        cols = torch.arange(c_count) if cols is None else torch.as_tensor(cols).to(torch.int64).flatten()
        if rows.numel() != b_count or cols.numel() != c_count:
            raise CrossbarInputError(f"normal stream: {rows.numel()} rows / {cols.numel()} columns for shape {shape}")
        for name, idx in (("row", rows), ("column", cols)):
            if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < COUNTER_LIMIT):
                raise CrossbarInputError(f"normal stream: {name} indices must be in [0, 2^32)")
        if torch.device(device).type == "cpu" and numba is not None:
            out = np.empty(shape, np.float32)
            rows_np, cols_np = rows.cpu().numpy(), cols.cpu().numpy()
            keys = self.keys_np[first : first + m_count]
            _normals_at(out, keys, np.uint64(read), np.uint64(step), rows_np, cols_np)
            return torch.from_numpy(out).to(dtype)
        z = _torch_normals(self.keys[first : first + m_count].to(device), read, step, rows, cols)
        return z.to(dtype)


@dataclass(frozen=True)
class NoiseAt:
    """A place in a :class:`NormalStream`: the normals of one conversion call (a read, a step,
    absolute column indices of the matrix; rows are the batch rows 0, 1, ...)."""

    stream: NormalStream
    read: int
    step: int = 0
    cols: torch.Tensor | None = None

    def draw(self, shape, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
        """Normals for a conversion of ``shape`` = (M, ..., C): instances of the stream, rows 0, 1,
        ... over the middle dimensions in order (batch rows; row-blocks within a row), the
        columns ``cols`` (or 0..C-1)."""
        shape = tuple(int(s) for s in shape)
        m_count, c_count = shape[0], shape[-1]
        rows = math.prod(shape[1:-1])
        cols = self.cols
        if cols is not None and cols.numel() != c_count:
            raise CrossbarInputError(f"noise for {cols.numel()} columns, the conversion has {c_count}")
        z = self.stream.normals((m_count, rows, c_count), dtype, device, self.read, self.step, None, cols)
        return z.reshape(shape)

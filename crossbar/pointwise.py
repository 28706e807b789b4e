"""Element-wise primitives with two backends, so that element-wise physics is written once.

A piece of element-wise physics (a DAC level, a column's output scaling, a fixed-point register,
an LSTM cell update) is a plain Python function of arithmetic and the primitives below.  The
torch path calls it on tensors -- that is the definition, and it runs on CPU and CUDA and under
autograd; the CPU kernels (:mod:`rnn_models.fastpath`) call the *same function*, compiled by
numba (:func:`compiled`), on scalars: numba takes each primitive's scalar implementation
(registered with ``numba.extending.overload``), so the two backends share one source and cannot
drift apart.  ``tests/crossbar/test_pointwise.py`` runs every such function through both on the
same values (rounding ties, range edges, signed zeros) and requires identical bits.

Primitives (torch form -> numba scalar form):

* ``clip(x, lo, hi)``: ``x.clamp(lo, hi)`` -> ``min(max(x, lo), hi)``;
* ``rint(x)``: ``torch.round`` (ties to even) -> ``np.rint`` (ties to even);
* ``nonneg(x)``: ``x.clamp(min=0)`` -> a zero of x's type if ``x < 0`` else ``x``;
* ``horner(coefs, x)``: a polynomial by Horner's rule -> the same steps on a scalar;
* ``one_minus(x)``: ``1 - x`` -> ``x.dtype(1) - x`` (no promotion of float32 to float64 by the
  integer literal, which numba's scalar rules would do);
* ``sqrt_rounded(x)``: the correctly rounded square root (float32: taken in float64 and rounded
  once; float64 on CPU: numpy's) -> ``np.sqrt`` (IEEE, correctly rounded: the same value);
* ``straight_through(x, q)``: q's value with x's gradient -> ``q``.

Python scalars in such a function meet the tensor's dtype as torch's weak scalars do; a kernel
passes scalars already of the tensor's type, which gives the same operation in the same type.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

from crossbar.autograd import straight_through

numba: ModuleType | None  # None without numba: only the torch forms exist
try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None

__all__ = [
    "clip",
    "compiled",
    "horner",
    "nonneg",
    "one_minus",
    "rint",
    "saturating_round",
    "sqrt_rounded",
    "straight_through",
    "zero_slope_at_zero",
]

_F = TypeVar("_F", bound=Callable)


def clip(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """``x`` limited to [lo, hi]."""
    return x.clamp(lo, hi)


def rint(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties to even."""
    return torch.round(x)


def nonneg(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0)."""
    return x.clamp(min=0)


def one_minus(x: torch.Tensor) -> torch.Tensor:
    """1 - x in x's type."""
    return 1 - x


def horner(coefs: tuple, x: torch.Tensor) -> torch.Tensor:
    """The polynomial with coefficients ``coefs`` (highest power first, at least two, each a value
    of x's type) at ``x`` by Horner's rule: c0 x + c1, then times x plus each next one."""
    p = torch.full_like(x, coefs[0])
    for coef in coefs[1:]:
        p = p * x + coef
    return p


def sqrt_rounded(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root in x's type.  torch's CPU sqrt can be 1 ulp off (float32
    and float64 alike; it flipped NL-ADC codes of inputs within rounding distance of a threshold
    between implementations), so float32 roots are taken in float64 and rounded once, and float64
    roots of CPU tensors outside autograd by numpy (IEEE).  CUDA's sqrt is IEEE; under autograd
    in float64 it is torch's (the training path has no kernel form to agree with).  Under autograd
    the gradient is 0 where x = 0 (a zero variance: an input of zeros, a device without noise),
    not sqrt's infinite slope times 0 = NaN; the values are the same."""
    return zero_slope_at_zero(_sqrt_values, x) if x.requires_grad else _sqrt_values(x)


def zero_slope_at_zero(root, x: torch.Tensor) -> torch.Tensor:
    """``root(x)`` (a square root, f(0) = 0) with gradient 0 where x = 0: autograd would multiply
    the root's infinite slope there by 0 and pass NaN back to every parameter.  The same values."""
    nonzero = x != 0
    r = root(torch.where(nonzero, x, torch.ones_like(x)))
    return torch.where(nonzero, r, torch.zeros_like(r))


def _sqrt_values(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float64:
        if x.device.type == "cpu" and not x.requires_grad:
            return torch.from_numpy(np.sqrt(x.detach().contiguous().numpy()))
        return torch.sqrt(x)
    return torch.sqrt(x.double()).to(x.dtype)


def saturating_round(x, lo, hi, step):
    """A saturating uniform quantiser: ``x`` clipped to [lo, hi], rounded to a multiple of ``step``
    (ties to even), with the straight-through gradient -- the DAC (``crossbar.periphery.dac``) and
    the digital fixed-point registers (``rnn_models.analog.fixed_point``)."""
    xc = clip(x, lo, hi)
    return straight_through(xc, rint(xc / step) * step)


def source_digest(root: Path, packages: list[str]) -> str:
    """A digest of the Python sources of ``packages`` (folders under ``root``): the path and the
    content of every ``.py`` file, in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(set(packages)):
        for path in sorted((root / name).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _project_packages() -> list[str]:
    """This distribution's packages (its ``top_level.txt``; ``crossbar`` alone without metadata)."""
    try:
        tops = metadata.distribution("crossbar").read_text("top_level.txt") or ""
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare source tree
        tops = ""
    return sorted(set(tops.split()) | {"crossbar"})


@functools.cache
def kernel_cache_dir() -> str | None:
    """Where numba caches this project's compiled kernels: a folder per digest of the sources
    (:func:`source_digest` of this distribution's packages), ``crossbar-kernels-<digest>`` under
    ``NUMBA_CACHE_DIR`` when set, else ``kernels-<digest>`` in the user's cache folder for the
    project (``$XDG_CACHE_HOME/crossbar`` or ``~/.cache/crossbar``; delete it at will; not
    ``$CROSSBAR_CACHE``, the datasets' feature cache, which tests point at temporary folders).
    numba keys a cached kernel on its own file
    only, so a kernel would keep a helper of another file that it compiled in (the digital
    functions, the normals, these primitives) after that file changed -- by an edit or by
    installing another version over this one; a folder per digest of every source makes any
    change a fresh cache.  None (numba's own place, next to the source) where no such folder can
    be written."""
    assert numba is not None
    digest = source_digest(Path(__file__).resolve().parents[1], _project_packages())
    folder = os.path.join(numba.config.CACHE_DIR or "", f"crossbar-kernels-{digest}")
    try:
        if not numba.config.CACHE_DIR:
            user = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
            folder = os.path.join(user, "crossbar", f"kernels-{digest}")
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except (OSError, RuntimeError):  # pragma: no cover - a read-only or unknown home
        return None
    return folder


def kernel(fn=None, *, inline: bool = False, parallel: bool = False):
    """``fn`` compiled as every numba kernel of the project is (the function itself when numba is
    missing): cached on disk, without the GIL (callers run kernels in parallel threads), and with
    IEEE division (``error_model="numpy"``: x / 0 is inf or nan, as in torch and numpy).  numba's
    default checks every division for a zero divisor to raise Python's ZeroDivisionError; that
    branch also keeps loops with a division from vectorising (a float32 division loop: 28.6 vs
    2.7 us for 12,288 elements on the project's CPU; the quotients are the same IEEE values).
    ``@kernel(inline=True)``: a helper numba inlines into its callers (a call that stays a call
    inside a loop keeps the loop from vectorising); ``@kernel(parallel=True)``: a kernel whose
    ``numba.prange`` loops run on numba's threads.  The disk cache is :func:`kernel_cache_dir`."""

    def wrap(f):
        if numba is None:  # pragma: no cover - numba is a dependency
            return f
        if inline:
            return numba.njit(nogil=True, error_model="numpy", inline="always")(f)
        # numba picks a cached function's folder when it is decorated: ours only, not other
        # libraries' (numba.config is process-wide)
        folder, saved = kernel_cache_dir(), numba.config.CACHE_DIR
        if folder is not None:
            numba.config.CACHE_DIR = folder
        try:
            return numba.njit(cache=True, nogil=True, error_model="numpy", parallel=parallel)(f)
        finally:
            numba.config.CACHE_DIR = saved

    return wrap if fn is None else wrap(fn)


def reinterpret(src, dst):
    """A numba intrinsic that reads a value of numba type ``src`` as one of type ``dst`` of the same
    width: its bits unchanged, no conversion (e.g. ``reinterpret(types.int64, types.float64)``
    builds an IEEE double from its bit pattern).  For compiled kernels only; needs numba."""
    from numba.extending import intrinsic

    @intrinsic
    def bitcast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return bitcast


def compiled(fn: _F) -> _F:
    """The numba-compiled scalar form of an element-wise function written with these primitives
    (the function itself when numba is missing: callers then take the torch path)."""
    return kernel(fn)


if numba is not None:
    from numba import types
    from numba.extending import overload

    @overload(clip)
    def _clip_scalar(x, lo, hi):
        return lambda x, lo, hi: min(max(x, lo), hi)

    @overload(rint)
    def _rint_scalar(x):
        return lambda x: np.rint(x)

    @overload(nonneg)
    def _nonneg_scalar(x):
        zero = np.float32(0) if x == types.float32 else np.float64(0)
        return lambda x: zero if x < 0 else x  # as torch's clamp: -0.0 and NaN pass

    @overload(one_minus)
    def _one_minus_scalar(x):
        one = np.float32(1) if x == types.float32 else np.float64(1)
        return lambda x: one - x

    @overload(horner)
    def _horner_scalar(coefs, x):
        def impl(coefs, x):
            p = coefs[0] * x + coefs[1]
            for coef in coefs[2:]:
                p = p * x + coef
            return p

        return impl

    @overload(sqrt_rounded)
    def _sqrt_scalar(x):
        return lambda x: np.sqrt(x)  # IEEE: correctly rounded in x's type

    @overload(straight_through)
    def _straight_through_scalar(x, q):
        return lambda x, q: q

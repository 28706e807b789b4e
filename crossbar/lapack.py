"""LAPACK and BLAS routines as ``ctypes`` function pointers into SciPy's own library.

The IR-drop solvers (:mod:`crossbar.parasitics`, :mod:`crossbar.dissection`) call these from
Python (ctypes releases the GIL) or from compiled numba kernels (without the GIL).  SciPy's Python
wrappers (``scipy.linalg.lapack``) hold the GIL while they run, so the arrays of a batch would not
be solved in parallel threads (measured: 2 threads 1.0x with the wrappers, 1.8x with ctypes).  The
arguments are those of the Fortran routines (by reference), on Fortran-ordered float64 arrays, so
the results are those of the wrappers bit for bit.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def routine(module: str, name: str, nargs: int):
    """The routine ``name`` of ``module`` (``scipy.linalg.cython_lapack`` or ``cython_blas``) with
    ``nargs`` pointer arguments."""
    import ctypes

    from numba.extending import get_cython_function_address

    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * nargs)(get_cython_function_address(module, name))


def ref(value, kind: str):
    """A pointer to a Fortran scalar argument: ``kind`` "i" (int), "d" (double), "c" (char)."""
    import ctypes

    cell: ctypes.c_int | ctypes.c_double | ctypes.c_char
    if kind == "i":
        cell = ctypes.c_int(value)
    elif kind == "d":
        cell = ctypes.c_double(value)
    else:
        cell = ctypes.c_char(value)
    return ctypes.byref(cell)


#: the characters a kernel passes (uplo, side, trans, diag): L, R, N, T, U
CHARS = np.frombuffer(b"LRNTU", np.uint8).copy()
#: the scalars a kernel passes: 1, 0, -1
SCALARS = np.array([1.0, 0.0, -1.0])

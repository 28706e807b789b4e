"""Fused per-element kernels (numba) for the simulator's hot loops.

The torch code next to each caller is the definition (and runs on CUDA); these kernels compute the
same numbers on CPU in one pass, in the same floating-point type and order of operations, so their
results are identical (tests compare them).  ``available()`` is False when numba cannot be imported;
callers then fall back to torch.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

numba: ModuleType | None  # None without numba (torch fallback)
try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the fallback keeps torch-only installs working
    numba = None


def available() -> bool:
    return numba is not None


def counter_dtype(thresholds: int):
    """Smallest counter type for codes 0..``thresholds``: uint8 up to 8-bit converters."""
    return np.uint8 if thresholds <= 255 else np.int32


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A contiguous numpy view (or copy) of a CPU tensor."""
    return t.detach().contiguous().numpy()


if numba is not None:
    from crossbar.periphery.sampling import comparison_variance, noisy_value
    from crossbar.pointwise import compiled, kernel

    _comparison_variance = compiled(comparison_variance)
    _noisy_value = compiled(noisy_value)

    @kernel
    def count_below(t_kc, y, cnt):  # pragma: no cover - compiled
        """cnt[c] = number of thresholds t_kc[k, c] below y[c] (k = 0..L-2).

        For sorted thresholds this is bisect-left (= torch's searchsorted).  The loop runs over the
        columns innermost, so it is branch-free and vectorised (columns are independent); with
        ``cnt`` of uint8 (see :func:`counter_dtype`) a vector holds 4x more counters than int32."""
        cnt[:] = 0
        for k in range(t_kc.shape[0]):
            row = t_kc[k]
            for c in range(cnt.shape[0]):
                cnt[c] += row[c] < y[c]

    @kernel
    def noisy_input(y, cnt, read_var_c, in_var, noise, v2, cmp2, has_in_var, out):  # pragma: no cover
        """out[c] = y[c] + sd * noise[c], sd = sqrt(read_var[c, ideal code] * v2 + cmp2[c] (+ in_var[c]))."""
        last = read_var_c.shape[1] - 1
        for c in range(y.shape[0]):
            k = cnt[c] if cnt[c] < last else last
            if has_in_var:
                s = _comparison_variance(read_var_c[c, k], v2, cmp2[c], in_var[c])
            else:
                s = _comparison_variance(read_var_c[c, k], v2, cmp2[c], None)
            out[c] = _noisy_value(y[c], s, noise[c])

    @kernel
    def _nl_codes(y, t_kc, read_var, in_var, noise, v2, cmp2, noisy, has_in_var, cnt, out):  # pragma: no cover
        m_count, b_count, c_count = y.shape
        yn = np.empty(c_count, y.dtype)
        for m in range(m_count):  # serial: numba threads would compete with torch's
            for b in range(b_count):
                count_below(t_kc[m], y[m, b], cnt)
                if noisy:
                    noisy_input(
                        y[m, b],
                        cnt,
                        read_var[m],
                        in_var[m, b] if has_in_var else y[m, b],
                        noise[m, b],
                        v2,
                        cmp2,
                        has_in_var,
                        yn,
                    )
                    count_below(t_kc[m], yn, cnt)
                out[m, b] = cnt


def nl_codes(
    y: torch.Tensor,
    t: torch.Tensor,
    read_var: torch.Tensor,
    noise: torch.Tensor | None,
    v2: float,
    cmp2: float,
    in_var: torch.Tensor | None = None,
    t_kc: torch.Tensor | None = None,
) -> torch.Tensor:
    """NL-ADC codes (M, B, C) of ``y`` (M, B, C) against thresholds ``t`` (M, C, L-1), sorted
    along L-1, on CPU (``t_kc``: the same thresholds as (M, L-1, C), if the caller has them).

    With ``noise`` (M, B, C standard normals): the ideal code picks the ramp's read-noise variance
    ``read_var`` (M, C, L-1) at that position, the input gets sd * noise with
    sd = sqrt(read_var * v2 + cmp2 + in_var) (``in_var``: the input's own variance, e.g. the
    array's read noise) and the code is counted again -- the steps of ``nladc.reference_codes``.
    """
    ty = np.float32 if y.dtype == torch.float32 else np.float64
    y_np = as_numpy(y)
    nz = as_numpy(noise) if noise is not None else np.zeros((1, 1, 1), ty)
    iv = as_numpy(in_var) if in_var is not None else np.zeros((1, 1, 1), ty)
    out = np.empty(y_np.shape, np.int32)
    t_kc = t.transpose(1, 2) if t_kc is None else t_kc
    cnt = np.empty(y_np.shape[-1], counter_dtype(t.shape[-1]))
    _nl_codes(
        y_np,
        as_numpy(t_kc),
        as_numpy(read_var),
        iv,
        nz,
        ty(v2),
        np.full(y_np.shape[-1], cmp2, ty),
        noise is not None,
        in_var is not None,
        cnt,
        out,
    )
    return torch.from_numpy(out).long()

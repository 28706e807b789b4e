"""Weights <-> conductances.

Two mappings (``array.mapping``):

* ``differential``: w = (G+ - G-) / scale with G+- = g_min + scale * max(+-w, 0); two devices per
  weight, scale = (g_max - g_min) / w_ref (uS per weight unit).
* ``offset``: w = (G - G_ref) / scale with G = g_mid + scale * w, g_mid = (g_min + g_max) / 2 and
  one reference device per row at g_mid (a reference column per array), scale = (g_max - g_min) /
  (2 w_ref).

``w_ref`` is max |w| or a percentile of |w| (``array.weight_scale``); weights beyond it clip.
One conductance scale serves a whole tile (every column then shares one ramp scale).  With
``array.row_scaling = "per_input_block"`` the rows fall into blocks (a layer's x, h and bias rows),
each with its own reference w_ref_b; block b is stored as w / a_b on the tile's scale
(w_ref = max_b w_ref_b, a_b = w_ref_b / w_ref <= 1) and its word lines are driven at a_b times the
DAC voltage, so the product is unchanged while small recurrent weights use the whole conductance
span (our hardware assumption: one extra DAC reference voltage per block).
"""

from __future__ import annotations

import torch

from crossbar.config import ArrayConfig, DeviceConfig
from crossbar.errors import CrossbarInputError


def weight_reference(w: torch.Tensor, arr: ArrayConfig) -> float:
    """The |w| that maps to the full conductance span."""
    a = w.detach().abs().flatten().double()
    if a.numel() == 0:
        raise CrossbarInputError("cannot map an empty weight matrix")
    if not torch.isfinite(a).all():
        raise CrossbarInputError("weight matrix contains NaN or inf")
    ref = float(a.max() if arr.weight_scale == "max" else torch.quantile(a, arr.weight_percentile / 100))
    return ref if ref > 0 else 1.0


def row_gains(w: torch.Tensor, groups, arr: ArrayConfig) -> tuple[float, torch.Tensor]:
    """Tile weight reference and per-row read amplitudes a (rows,), 0 < a <= 1.

    ``groups``: row counts of the input blocks (sum = rows); ``None`` or ``row_scaling = "shared"``
    gives one block (all a = 1).  An all-zero block keeps a = 1.
    """
    rows = w.shape[0]
    groups = [rows] if groups is None or arr.row_scaling == "shared" else [int(g) for g in groups]
    if sum(groups) != rows or any(g <= 0 for g in groups):
        raise CrossbarInputError(f"row blocks {groups} do not partition the {rows} rows of the matrix")
    refs, start = [], 0
    for g in groups:
        block = w[start : start + g]
        refs.append(weight_reference(block, arr) if bool((block != 0).any()) else None)
        start += g
    w_ref = max((r for r in refs if r is not None), default=1.0)
    gains = torch.cat(
        [
            torch.full((g,), 1.0 if r is None else r / w_ref, dtype=w.dtype, device=w.device)
            for g, r in zip(groups, refs)
        ]
    )
    return w_ref, gains


def conductance_scale(w_ref: float, dev: DeviceConfig, arr: ArrayConfig) -> float:
    """uS of conductance difference per weight unit."""
    span = dev.g_max - dev.g_min
    return span / w_ref if arr.mapping == "differential" else span / (2 * w_ref)


def to_conductances(w: torch.Tensor, w_ref: float, dev: DeviceConfig, arr: ArrayConfig):
    """Target conductances (uS) for ``w`` (rows = inputs, cols = outputs).

    Returns ``(g_pos, g_neg)``: for ``differential`` both have w's shape; for ``offset`` ``g_neg`` is
    the reference column, shape (rows, 1), at g_mid.  Every target lies in [g_min, g_max]: a weight
    at -w_ref maps to g_mid - scale w_ref, which rounding (float32) can put a few ulps below g_min
    (e.g. -3.8e-6 uS for g_min = 0), so the values are clamped to the range they span exactly (the
    gradient stays the unclamped one's: the clamp only removes rounding).
    """
    scale = conductance_scale(w_ref, dev, arr)
    wc = w.clamp(-w_ref, w_ref)
    if arr.mapping == "differential":
        g_pos, g_neg = dev.g_min + scale * wc.clamp(min=0), dev.g_min + scale * (-wc).clamp(min=0)
        return _in_range(g_pos, dev), _in_range(g_neg, dev)
    g_mid = 0.5 * (dev.g_min + dev.g_max)
    return _in_range(g_mid + scale * wc, dev), torch.full((w.shape[0], 1), g_mid, dtype=w.dtype, device=w.device)


def _in_range(g: torch.Tensor, dev: DeviceConfig) -> torch.Tensor:
    """``g`` clamped to [g_min, g_max] with the gradient of ``g`` itself."""
    return g + (g.detach().clamp(dev.g_min, dev.g_max) - g.detach())


def to_weights(g_pos: torch.Tensor, g_neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Effective weights (G+ - G-) / scale; broadcasts a reference column."""
    return (g_pos - g_neg) / scale

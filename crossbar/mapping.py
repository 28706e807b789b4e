"""Weights <-> conductances.

Two mappings (``array.mapping``):

* ``differential``: w = (G+ - G-) / scale with G+- = g_min + scale * max(+-w, 0); two devices per
  weight, scale = (g_max - g_min) / w_ref (uS per weight unit).
* ``offset``: w = (G - G_ref) / scale with G = g_mid + scale * w, g_mid = (g_min + g_max) / 2 and
  one reference device per row at g_mid (a reference column per array), scale = (g_max - g_min) /
  (2 w_ref).

``w_ref`` is max |w| or a percentile of |w| (``array.weight_scale``); weights beyond it clip.
One scale serves a whole tile (our choice: every column then shares one ramp scale).
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
    ref = a.max() if arr.weight_scale == "max" else torch.quantile(a, arr.weight_percentile / 100)
    ref = float(ref)
    return ref if ref > 0 else 1.0


def conductance_scale(w_ref: float, dev: DeviceConfig, arr: ArrayConfig) -> float:
    """uS of conductance difference per weight unit."""
    span = dev.g_max - dev.g_min
    return span / w_ref if arr.mapping == "differential" else span / (2 * w_ref)


def to_conductances(w: torch.Tensor, w_ref: float, dev: DeviceConfig, arr: ArrayConfig):
    """Target conductances (uS) for ``w`` (rows = inputs, cols = outputs).

    Returns ``(g_pos, g_neg)``: for ``differential`` both have w's shape; for ``offset`` ``g_neg`` is
    the reference column, shape (rows, 1), at g_mid.
    """
    scale = conductance_scale(w_ref, dev, arr)
    wc = w.clamp(-w_ref, w_ref)
    if arr.mapping == "differential":
        return dev.g_min + scale * wc.clamp(min=0), dev.g_min + scale * (-wc).clamp(min=0)
    g_mid = 0.5 * (dev.g_min + dev.g_max)
    return g_mid + scale * wc, torch.full((w.shape[0], 1), g_mid, dtype=w.dtype, device=w.device)


def to_weights(g_pos: torch.Tensor, g_neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Effective weights (G+ - G-) / scale; broadcasts a reference column."""
    return (g_pos - g_neg) / scale

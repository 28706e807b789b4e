"""Gradient helpers for hardware-aware training."""

from __future__ import annotations

import torch


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value of ``q`` with the gradient of ``x`` (straight-through estimator for quantisers)."""
    if not x.requires_grad:
        return q
    return x + (q - x).detach()

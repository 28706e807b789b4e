"""Input DAC: sign-magnitude quantisation of word-line inputs (straight-through gradient).

With ``bits`` = b the DAC has 2K+1 levels k * x_max / K, k = -K..K, K = 2^(b-1) - 1 (zero is exact,
the range is symmetric).  Inputs beyond +-x_max are clipped (``dac.clip``) or rejected.
``bits = None`` is an ideal DAC: no quantisation and no clipping.
"""

from __future__ import annotations

import torch

from crossbar.config import DACConfig
from crossbar.errors import CrossbarInputError
from crossbar.pointwise import saturating_round


def dac_step(dac: DACConfig, x_max: float | None = None) -> float:
    """The DAC's level spacing over [-x_max, x_max] (``x_max`` overrides the config); ``bits`` set."""
    if dac.bits is None:
        raise ValueError("an ideal DAC (bits = None) has no level spacing")
    return (dac.x_max if x_max is None else x_max) / (2 ** (dac.bits - 1) - 1)


def quantize_input(x: torch.Tensor, dac: DACConfig, x_max: float | None = None) -> torch.Tensor:
    """Quantise inputs ``x`` to the DAC grid over [-x_max, x_max] (``x_max`` overrides the config)."""
    if dac.bits is None:  # ideal DAC: no quantisation, no clipping
        return x
    x_max = dac.x_max if x_max is None else x_max
    if not dac.clip and bool((x.abs() > x_max).any()):
        raise CrossbarInputError(
            f"input magnitude {float(x.abs().max()):.4g} exceeds dac.x_max = {x_max:.4g} and dac.clip is false"
        )
    return saturating_round(x, -x_max, x_max, dac_step(dac, x_max))

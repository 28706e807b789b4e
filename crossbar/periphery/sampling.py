"""How a Gaussian variance becomes a sample: the one definition of read noise at a converter input.

The simulator carries read noise as a variance until a value is read: the array's per-device read
noise reaches a column output as the variance of the current (``Tile.moments``), an NL-ADC's ramp
adds its own accumulated read noise where it crosses the input, the comparator its offset noise.
Every place that turns such a variance into a value -- the tile's read in training
(``Tile.mvm``), a converter's noisy input (``converters.sample_read_noise``), the NL-ADC's
comparison (``nladc.reference_codes`` and its CPU kernel) -- calls :func:`noisy_value`, written
once with :mod:`crossbar.pointwise` primitives for tensors and kernel scalars alike.
"""

from __future__ import annotations

from crossbar.pointwise import sqrt_rounded


def noisy_value(y, variance, z):
    """``y + sqrt(variance) * z`` for standard normals ``z``; the root correctly rounded."""
    return y + sqrt_rounded(variance) * z


def comparison_variance(ramp_variance, v2, comparator_variance, input_variance):
    """The variance at an NL-ADC's comparison: the ramp's accumulated read-noise variance where it
    crosses the input times v2 = (actual / nominal read voltage)^2, plus the comparator's, plus the
    input's own (the array's read noise on the column; None when it has none)."""
    s = ramp_variance * v2 + comparator_variance
    if input_variance is not None:
        s = s + input_variance
    return s

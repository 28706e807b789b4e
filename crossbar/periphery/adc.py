"""The conventional column ADC: ``linear_ramp`` (an ``ideal`` ADC is no conversion at all; see
:class:`crossbar.periphery.readout.ColumnReadout`).

``convert(y, v_scale)`` takes analog column outputs ``y`` (pre-activation units, any shape) and
returns the digitised value in the same units; ``v_scale`` is V_read(actual) / V_read(nominal).

``linear_ramp`` is the paper's baseline: a uniform ramp from a *fixed* reference (not from the
array), so a change of V_read shifts the signal but not the ramp; mid-tread levels over
[in_min, in_max], ``2^bits`` codes, saturating at both ends.
"""

from __future__ import annotations

import torch

from crossbar.autograd import straight_through


def input_range(adc, in_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """The range a column ADC converts over: ``adc.in_min``/``in_max`` when ``adc.range_mode`` is
    ``fixed``, else ``in_range`` (the calibrated one; None when not calibrated)."""
    return (adc.in_min, adc.in_max) if adc.range_mode == "fixed" else in_range


def conventional_cycles(kind: str, bits: int, reset_cycles: int) -> int:
    """Counter cycles of one conversion of a conventional column ADC (the definition the simulator's
    readouts and the cost model share): ``ramp`` (= ``linear_ramp``) 2^bits ramp steps + reset --
    its ramp starts at the fixed reference's low end, so there is no bias phase (our assumption);
    ``sar`` one cycle per bit + reset."""
    if kind in ("ramp", "linear_ramp"):
        return 2**bits + reset_cycles
    if kind == "sar":
        return bits + reset_cycles
    raise ValueError(f"unknown conventional ADC kind {kind!r}; use 'ramp' or 'sar'")


def uniform_codes(y: torch.Tensor, lo: float, hi: float, levels: int) -> torch.Tensor:
    """Mid-tread uniform quantiser codes 0..levels-1 of ``y`` over [lo, hi]."""
    step = (hi - lo) / (levels - 1)
    return torch.round((y - lo) / step).clamp(0, levels - 1)


class LinearRampADC:
    """Uniform ramp ADC with a fixed reference (conventional)."""

    kind = "linear_ramp"

    def __init__(self, bits: int, in_min: float, in_max: float):
        if in_min >= in_max:
            raise ValueError(f"in_min ({in_min}) must be below in_max ({in_max})")
        self.bits, self.in_min, self.in_max = bits, float(in_min), float(in_max)
        self.levels = 2**bits

    @property
    def step(self) -> float:
        return (self.in_max - self.in_min) / (self.levels - 1)

    def codes(self, y: torch.Tensor, v_scale: float = 1.0) -> torch.Tensor:
        """Output codes; the signal scales with V_read, the fixed reference does not."""
        return uniform_codes(y, self.in_min, self.in_max, self.levels)

    def convert(self, y: torch.Tensor, v_scale: float = 1.0) -> torch.Tensor:
        """Digitised value in pre-activation units (straight-through gradient inside the range)."""
        q = self.in_min + self.codes(y, v_scale) * self.step
        return straight_through(y.clamp(self.in_min, self.in_max), q)

    def extra_repr(self) -> str:
        return f"linear_ramp, bits={self.bits}, range=[{self.in_min:g}, {self.in_max:g}]"

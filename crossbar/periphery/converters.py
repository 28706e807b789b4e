"""Column converters behind one small interface, chosen from a registry by ``adc.kind``.

A converter turns a column group's analog outputs into activation values.  Its whole interface
(the model is CrossSim's ``IADC.set_limits / convert``):

* ``__init__(act, config, columns, in_range, samples, block_ranges)`` -- set the limits: the
  input range, the design (an NL-ADC's thresholds), nothing programmed yet;
* ``program(seed, instances, name, first, site)`` -- draw the converter's devices (an NL-ADC's
  ramp and bias memristors; nothing for the others);
* ``convert(y, noise, v_scale, var)`` -- (M, B, C) analog outputs -> (M, B, C) values, with the
  array's read-noise variance ``var`` sampled once per conversion;
* ``convert_blocks(...)`` -- per-array partial sums (M, B, R, C) (``partial_sums = digital``);
* ``train_convert(y)`` -- the hardware-aware-training forward (ideal quantiser, exact-f gradient);
* ``linear_range()``, ``cycles_per_conversion()``, ``describe()``.

Registry (``CONVERTERS``): ``ideal`` (exact f), ``linear_ramp`` (the conventional fixed-reference
ramp ADC, then f digitally), ``nl_ramp`` (the NL-ADC: the code is f(y)).  The first two compute
f as the chip's digital unit does (:meth:`~crossbar.periphery.functions.Activation.chip`).  **Extension point**: a
new converter is a subclass registered with :func:`register_converter` under a new ``adc.kind``
name, added to ``AdcKind`` in ``crossbar/config.py`` (the import-time check below says when the
two lists differ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, get_args

import torch

from crossbar.autograd import straight_through
from crossbar.config import AdcKind, HardwareConfig
from crossbar.errors import CrossbarInputError
from crossbar.periphery.adc import LinearRampADC, conventional_cycles, input_range
from crossbar.periphery.functions import Activation
from crossbar.periphery.nladc import NLADC, NLADCDesign, readout_design
from crossbar.periphery.sampling import noisy_value

if TYPE_CHECKING:
    from crossbar.normals import NoiseAt
    from crossbar.tile import RampSite


def sample_read_noise(y: torch.Tensor, var: torch.Tensor | None, noise: NoiseAt | None) -> torch.Tensor:
    """``y + sqrt(var) * z`` with z ~ N(0, 1) of ``y``'s shape from ``noise``
    (:class:`crossbar.normals.NoiseAt`); ``y`` when ``var`` is None.  The square root is correctly
    rounded (taken in float64)."""
    if var is None:
        return y
    if noise is None:
        raise CrossbarInputError("read noise is on: pass the conversion's noise (NormalStream.at()) to convert()")
    return noisy_value(y, var, noise.draw(y.shape, y.dtype, y.device))


class Converter:
    """The interface (and the ideal converter's behaviour where a subclass does not override)."""

    kind: ClassVar[str]

    def __init__(
        self,
        act: Activation,
        config: HardwareConfig,
        columns: int,
        in_range: tuple[float, float] | None = None,
        samples: torch.Tensor | None = None,
        block_ranges: list | None = None,
    ):
        self.act, self.config, self.columns = act, config, int(columns)

    def program(self, seed: int, instances: int, name: str, first: int = 0, site: RampSite | None = None) -> None:
        """Draw the converter's devices (none by default)."""

    def convert(
        self, y: torch.Tensor, noise=None, v_scale: float = 1.0, var: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.act.chip(sample_read_noise(y, var, noise))

    def convert_blocks(
        self, y: torch.Tensor, noise=None, v_scale: float = 1.0, var: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-array partial sums: by default joined in the analog domain, then converted once."""
        return self.convert(y.sum(2), noise, v_scale, None if var is None else var.sum(2))

    def train_convert(self, y: torch.Tensor) -> torch.Tensor:
        return self.act.f(y)

    def linear_range(self) -> tuple[float, float] | None:
        """Input range of a *linear* readout (where saturation loses information), else None."""
        return None

    def cycles_per_conversion(self) -> int | None:
        return None

    def describe(self) -> str:
        return f"ideal + digital {self.act.name}"


CONVERTERS: dict[str, type[Converter]] = {}


def register_converter(cls: type[Converter]) -> type[Converter]:
    """Class decorator: make ``cls`` the converter of ``adc.kind = cls.kind``."""
    CONVERTERS[cls.kind] = cls
    return cls


def make_converter(
    config: HardwareConfig,
    act: Activation,
    columns: int,
    in_range: tuple[float, float] | None = None,
    samples: torch.Tensor | None = None,
    block_ranges: list | None = None,
) -> Converter:
    """The converter ``config.adc.kind`` names, with its limits set."""
    try:
        cls = CONVERTERS[config.adc.kind]
    except KeyError:
        raise CrossbarInputError(
            f"adc.kind {config.adc.kind!r} has no converter; registered: {', '.join(sorted(CONVERTERS))}"
        ) from None
    return cls(act, config, columns, in_range, samples, block_ranges)


@register_converter
class IdealConverter(Converter):
    """No quantisation: f(y) exactly (the read noise still applies)."""

    kind = "ideal"


@register_converter
class LinearRampConverter(Converter):
    """The conventional baseline: a uniform fixed-reference ramp ADC over the input range, then f
    computed digitally (exactly)."""

    kind = "linear_ramp"

    def __init__(self, act, config, columns, in_range=None, samples=None, block_ranges=None):
        super().__init__(act, config, columns)
        adc = config.adc
        rng = input_range(adc, in_range)
        if rng is None:
            raise CrossbarInputError(
                "the linear ramp ADC needs an input range: set adc.range_mode 'fixed' "
                "with adc.in_min/in_max, or calibrate the model on data first"
            )
        self.linear = LinearRampADC(adc.bits, *rng)
        # digital partial sums: one ADC range per array's partial sum (calibrated), if known
        self.block_linears: list[LinearRampADC] | None = None
        if block_ranges and adc.range_mode != "fixed":
            self.block_linears = [LinearRampADC(adc.bits, *r) for r in block_ranges]

    def convert(self, y, noise=None, v_scale=1.0, var=None):
        return self.act.chip(self.linear.convert(sample_read_noise(y, var, noise), v_scale))

    def convert_blocks(self, y, noise=None, v_scale=1.0, var=None):
        """Each row-block's partial sum over that block's calibrated range (the whole dot
        product's when no block ranges are known, e.g. ``range_mode = fixed``); the digitised
        values are added before f is computed."""
        if y.shape[2] == 1:
            return super().convert_blocks(y, noise, v_scale, var)
        y = sample_read_noise(y, var, noise)
        if self.block_linears is not None and len(self.block_linears) == y.shape[2]:
            parts = [adc.convert(y[:, :, r], v_scale) for r, adc in enumerate(self.block_linears)]
            return self.act.chip(torch.stack(parts, 2).sum(2))
        return self.act.chip(self.linear.convert(y, v_scale).sum(2))

    def train_convert(self, y):
        return self.act.f(self.linear.convert(y))

    def linear_range(self):
        return self.linear.in_min, self.linear.in_max

    def cycles_per_conversion(self):
        return conventional_cycles("linear_ramp", self.config.adc.bits, self.config.nl_adc.reset_cycles)

    def describe(self):
        return f"linear_ramp({self.config.adc.bits} bit) + digital {self.act.name}"


@register_converter
class NLRampConverter(Converter):
    """The NL-ADC: programmed ramps whose counter code is f(y) (``crossbar.periphery.nladc``); the
    array's read noise joins the converter's own as one Gaussian per conversion.  Per-array partial
    sums are joined in the analog domain first (it needs the whole dot product)."""

    kind = "nl_ramp"

    def __init__(self, act, config, columns, in_range=None, samples=None, block_ranges=None):
        super().__init__(act, config, columns)
        # a linear readout has no natural input range: it always uses the calibrated / configured one
        self.design: NLADCDesign = readout_design(act, config, in_range, samples)
        self.nladc = NLADC(self.design, config, self.columns)

    def program(self, seed, instances, name, first=0, site=None):
        self.nladc.program(seed, instances, name=name, first=first, site=site)

    def convert(self, y, noise=None, v_scale=1.0, var=None):
        return self.nladc.convert(y, noise, v_scale, var=var)

    def train_convert(self, y):
        if self.act.linear:  # a linear ADC: no gradient where it saturates
            y = y.clamp(self.design.x_lo, self.design.x_hi)
        exact = self.act.f(y)
        return straight_through(exact, self.design.ideal_convert(y.detach()).to(y.dtype))

    def linear_range(self):
        return (self.design.x_lo, self.design.x_hi) if self.act.linear else None

    def cycles_per_conversion(self):
        return self.nladc.cycles_per_conversion

    def describe(self):
        return f"nl_ramp({self.act.name}, {self.config.adc.bits} bit)"


if set(CONVERTERS) != set(get_args(AdcKind)):  # pragma: no cover - a developer's slip, caught at import
    raise RuntimeError(f"converters {sorted(CONVERTERS)} and config AdcKind {get_args(AdcKind)} differ")

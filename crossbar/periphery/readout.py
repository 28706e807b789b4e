"""Column readout: what the periphery of a group of columns outputs -- ADC + activation.

One object serves every ADC kind so that layers do not care which one the config asks for:

* ``ideal``: f(y) computed exactly (no quantisation);
* ``linear_ramp``: the conventional baseline -- a uniform fixed-reference ramp ADC over the input
  range, then f computed digitally (exactly);
* ``nl_ramp``: the NL-ADC -- the code is f(y) directly (thresholds realised by programmed ramps).

``convert`` uses the programmed hardware (after ``program``); ``train_convert`` is the
hardware-aware-training path: the ideal quantiser of the same design in the forward pass and the
gradient of the exact f (straight-through estimator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from crossbar.autograd import straight_through
from crossbar.config import HardwareConfig
from crossbar.errors import CrossbarInputError
from crossbar.periphery.adc import LinearRampADC, conventional_cycles
from crossbar.periphery.functions import get_activation
from crossbar.periphery.nladc import NLADC, NLADCDesign, readout_design
from crossbar.rng import randn_instances

if TYPE_CHECKING:
    from crossbar.tile import RampSite


def sample_read_noise(y: torch.Tensor, var: torch.Tensor | None, gens) -> torch.Tensor:
    """``y + sqrt(var) * z`` with z ~ N(0, 1) of ``y``'s shape (instance m from ``gens[m]``); ``y``
    when ``var`` is None.  The square root is correctly rounded (taken in float64)."""
    if var is None:
        return y
    if gens is None:
        raise CrossbarInputError("read noise is on: pass a noise generator to convert()")
    sd = torch.sqrt(var.double()).to(y.dtype)
    return y + sd * randn_instances(gens, y.shape, y.dtype, y.device)


class ColumnReadout:
    """ADC + activation ``function`` for ``columns`` columns under ``config``.

    ``in_range``: (lo, hi) input range of the ADC in pre-activation units; for the NL-ADC only
    used when ``adc.range_mode`` is not ``function``; for the linear ramp ADC required unless
    ``adc.range_mode`` is ``fixed``.  ``samples``: pre-activations for the data-aware NL-ADC design.
    """

    def __init__(
        self,
        config: HardwareConfig,
        function: str,
        columns: int,
        in_range: tuple[float, float] | None = None,
        samples: torch.Tensor | None = None,
        block_ranges: list | None = None,
    ):
        self.config, self.columns = config, int(columns)
        self.act = get_activation(function)
        self.kind = config.adc.kind
        adc = config.adc
        rng = (adc.in_min, adc.in_max) if adc.range_mode == "fixed" else in_range
        self.in_range = rng
        # the converter of ``kind``: nladc + design (nl_ramp), linear (+ block_linears) (linear_ramp)
        self.nladc: NLADC | None = None
        self.linear: LinearRampADC | None = None
        self.design: NLADCDesign | None = None
        self.block_linears: list[LinearRampADC] | None = None
        if self.kind == "nl_ramp":
            # a linear readout has no natural input range: it always uses the calibrated / configured one
            self.design = readout_design(self.act, config, in_range, samples)
            self.nladc = NLADC(self.design, config, self.columns)
        elif self.kind == "linear_ramp":
            if rng is None:
                raise CrossbarInputError(
                    "the linear ramp ADC needs an input range: set adc.range_mode 'fixed' "
                    "with adc.in_min/in_max, or calibrate the model on data first"
                )
            self.linear = LinearRampADC(adc.bits, *rng)
            # digital partial sums: one ADC range per array's partial sum (calibrated), if known
            if block_ranges and adc.range_mode != "fixed":
                self.block_linears = [LinearRampADC(adc.bits, *r) for r in block_ranges]

    @property
    def function(self) -> str:
        return self.act.name

    def program(self, seed: int, instances: int, name: str, first: int = 0, site=None) -> ColumnReadout:
        """Program the converter's devices (an NL-ADC's ramps; ``site``: where they sit in the
        array with IR drop, see :func:`program_chip`)."""
        if self.nladc is not None:
            self.nladc.program(seed, instances, name=name, first=first, site=site)
        return self

    def convert(
        self, y: torch.Tensor, noise_gens=None, v_scale: float = 1.0, var: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Activation values for analog column outputs ``y`` (M, B, C).

        ``var`` (M, B, C): the variance of ``y`` from the array's read noise.  It is sampled here,
        once per conversion -- for the NL-ADC together with the converter's own noise as one
        Gaussian (the sum of independent Gaussians), for the other ADCs before quantisation.
        """
        if self.kind == "nl_ramp":
            assert self.nladc is not None  # built in __init__ for nl_ramp
            return self.nladc.convert(y, noise_gens, v_scale, var=var)
        y = sample_read_noise(y, var, noise_gens)
        if self.kind == "linear_ramp":
            assert self.linear is not None  # built in __init__ for linear_ramp
            return self.act.f(self.linear.convert(y, v_scale))
        return self.act.f(y)

    def convert_blocks(
        self, y: torch.Tensor, noise_gens=None, v_scale: float = 1.0, var: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Activation values for per-array partial sums ``y`` (M, B, R, C) (``partial_sums = digital``),
        ``var`` their read-noise variances (M, B, R, C) or None.

        A linear ramp ADC converts each row-block's partial sum over that block's calibrated range
        (the whole dot product's when no block ranges are known, e.g. ``range_mode = fixed``) and
        the digitised values are added before f is computed;
        an NL-ADC needs the whole dot product, so its blocks are joined in the analog domain first
        (with ``digital`` partial sums as with ``analog`` ones).
        """
        if y.shape[2] == 1 or self.kind != "linear_ramp":
            return self.convert(y.sum(2), noise_gens, v_scale, None if var is None else var.sum(2))
        y = sample_read_noise(y, var, noise_gens)
        if self.block_linears is not None and len(self.block_linears) == y.shape[2]:
            parts = [adc.convert(y[:, :, r], v_scale) for r, adc in enumerate(self.block_linears)]
            return self.act.f(torch.stack(parts, 2).sum(2))
        assert self.linear is not None  # built in __init__ for linear_ramp
        return self.act.f(self.linear.convert(y, v_scale).sum(2))

    def train_convert(self, y: torch.Tensor) -> torch.Tensor:
        """Hardware-aware training: ideal quantised value forward, exact-f gradient backward."""
        if self.kind == "nl_ramp":
            design = self.design
            assert design is not None  # compiled in __init__ for nl_ramp
            if self.act.linear:  # a linear ADC: no gradient where it saturates
                y = y.clamp(design.x_lo, design.x_hi)
            exact = self.act.f(y)
            return straight_through(exact, design.ideal_convert(y.detach()).to(y.dtype))
        exact = self.act.f(y)
        if self.kind == "linear_ramp":
            assert self.linear is not None  # built in __init__ for linear_ramp
            return self.act.f(self.linear.convert(y))
        return exact

    def linear_range(self) -> tuple[float, float] | None:
        """Input range of a *linear* readout (where saturation loses information), else None."""
        if self.linear is not None:
            return self.linear.in_min, self.linear.in_max
        if self.nladc is not None and self.act.linear:
            assert self.design is not None  # compiled together with the NL-ADC
            return self.design.x_lo, self.design.x_hi
        return None

    def cycles_per_conversion(self) -> int | None:
        if self.nladc is not None:
            return self.nladc.cycles_per_conversion
        if self.linear is not None:
            return conventional_cycles("linear_ramp", self.config.adc.bits, self.config.nl_adc.reset_cycles)
        return None

    def extra_repr(self) -> str:
        if self.nladc is not None:
            return f"nl_ramp({self.function}, {self.config.adc.bits} bit)"
        if self.linear is not None:
            return f"linear_ramp({self.config.adc.bits} bit) + digital {self.function}"
        return f"ideal + digital {self.function}"


def program_chip(
    tile, readouts: list, columns: list, names: list, seed: int, instances: int, first: int = 0, tile_name: str = "tile"
) -> list:
    """Program a tile and the readouts of its column groups (``columns[g]``: tile columns of
    readout g, ``names[g]``: its generator name; the tile draws from ``tile_name``).

    With IR drop (``array.wires`` not all 0) every NL-ADC's ramp and bias devices sit in the tile's
    arrays (:mod:`crossbar.layout`): their targets are planned on the arrays before the tile is
    programmed (IR-drop-aware programming pre-distorts weights and NL-ADC devices jointly; every
    calibration sees the others' load), then each NL-ADC is programmed and calibrated through the
    wires and its final devices placed, and finally every NL-ADC's thresholds are recomputed with
    all devices final, from the tile's effective matrices (the solve its MVMs use).  An NL-ADC
    calibrated before a later one was placed keeps that calibration, as on a chip calibrated
    converter by converter.  Without IR drop this is ``program`` of the tile and of each readout.
    """
    sites: list[RampSite | None] = [None] * len(readouts)
    if getattr(tile, "ir_drop", False):
        shared = tile.config.nl_adc.shared_ramp
        for g, ro in enumerate(readouts):
            if ro.nladc is not None:
                new_site = tile.ramp_site(torch.as_tensor(columns[g]), names[g], shared)
                new_site.deferred = True
                sites[g] = new_site
        _plan(tile, readouts, sites, columns)
        if tile.config.array.wires.ir_drop_aware_programming and any(sites):
            # headroom: a ramp whose pre-distorted devices would pass g_max is scaled down (with its
            # kappa) so that the largest one just fits, then the plan is pre-distorted again
            g_max = tile.config.device.g_max
            for ro, site in zip(readouts, sites):
                if site is None:
                    continue
                need = site.required(ro.nladc.g_ramp_target, ro.nladc.g_bias_target)
                if need > g_max:
                    ro.nladc.scale_ramp(g_max / need)
            tile.clear_plan()
            _plan(tile, readouts, sites, columns)
    tile.program(seed, instances, name=tile_name, first=first)
    for ro, name, site in zip(readouts, names, sites):
        ro.program(seed, instances, name, first, site=site)
    for ro, site in zip(readouts, sites):
        if site is not None:
            ro.nladc.refresh()
    return readouts


def _plan(tile, readouts, sites, columns) -> None:
    """Place every NL-ADC's ramp and bias targets on the tile's arrays (before programming)."""
    shared = tile.config.nl_adc.shared_ramp
    for g, (ro, site) in enumerate(zip(readouts, sites)):
        if site is not None:
            nl = ro.nladc
            r = 1 if shared else len(columns[g])
            site.attach(None, nl.g_ramp_target.expand(r, -1)[None], nl.g_bias_target.expand(r, -1)[None])

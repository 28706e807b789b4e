"""Column readout: what the periphery of a group of columns outputs -- ADC + activation.

One object serves every ADC kind so that layers do not care which one the config asks for; the
converters themselves are plug-ins of one interface (:mod:`crossbar.periphery.converters`):

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
from torch import nn

from crossbar.config import HardwareConfig
from crossbar.periphery.adc import LinearRampADC
from crossbar.periphery.converters import Converter, make_converter
from crossbar.periphery.functions import get_activation
from crossbar.periphery.nladc import NLADC, NLADCDesign

if TYPE_CHECKING:
    from crossbar.tile import RampSite


class ColumnReadout(nn.Module):
    """ADC + activation ``function`` for ``columns`` columns under ``config``: the converter
    ``adc.kind`` names (:mod:`crossbar.periphery.converters`), as one object the layers hold (an
    ``nn.Module``: an NL-ADC's :class:`~crossbar.periphery.nladc.NLADC` is its child).

    ``in_range``: (lo, hi) input range of the ADC in pre-activation units; for the NL-ADC only
    used when ``adc.range_mode`` is not ``function``; for the linear ramp ADC required unless
    ``adc.range_mode`` is ``fixed``.  ``samples``: pre-activations for the data-aware NL-ADC design.
    ``block_ranges``: per-array partial-sum ranges (linear ramp ADC, ``partial_sums = digital``).
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
        super().__init__()
        self.config, self.columns = config, int(columns)
        self.act = get_activation(function)
        self.kind = config.adc.kind
        self.converter: Converter = make_converter(config, self.act, self.columns, in_range, samples, block_ranges)
        # the converter's hardware, for the code that reads it (fast path, export, layout)
        self.nladc: NLADC | None = getattr(self.converter, "nladc", None)
        self.design: NLADCDesign | None = getattr(self.converter, "design", None)
        self.linear: LinearRampADC | None = getattr(self.converter, "linear", None)
        self.block_linears: list[LinearRampADC] | None = getattr(self.converter, "block_linears", None)

    @property
    def function(self) -> str:
        return self.act.name

    def program(self, seed: int, instances: int, name: str, first: int = 0, site=None) -> ColumnReadout:
        """Program the converter's devices (an NL-ADC's ramps; ``site``: where they sit in the
        array with IR drop, see :func:`program_chip`)."""
        self.converter.program(seed, instances, name, first, site)
        return self

    def convert(
        self, y: torch.Tensor, noise=None, v_scale: float = 1.0, var: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Activation values for analog column outputs ``y`` (M, B, C).

        ``var`` (M, B, C): the variance of ``y`` from the array's read noise.  It is sampled here,
        once per conversion -- for the NL-ADC together with the converter's own noise as one
        Gaussian (the sum of independent Gaussians), for the other ADCs before quantisation.
        """
        return self.converter.convert(y, noise, v_scale, var)

    def convert_blocks(
        self, y: torch.Tensor, noise=None, v_scale: float = 1.0, var: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Activation values for per-array partial sums ``y`` (M, B, R, C) (``partial_sums = digital``),
        ``var`` their read-noise variances (M, B, R, C) or None (see each converter's rule)."""
        return self.converter.convert_blocks(y, noise, v_scale, var)

    def train_convert(self, y: torch.Tensor) -> torch.Tensor:
        """Hardware-aware training: ideal quantised value forward, exact-f gradient backward."""
        return self.converter.train_convert(y)

    def linear_range(self) -> tuple[float, float] | None:
        """Input range of a *linear* readout (where saturation loses information), else None."""
        return self.converter.linear_range()

    def cycles_per_conversion(self) -> int | None:
        return self.converter.cycles_per_conversion()

    def extra_repr(self) -> str:
        return self.converter.describe()


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

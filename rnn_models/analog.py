"""The engine under every analog layer: one weight matrix on crossbars + its column readouts.

An :class:`AnalogMatrix` holds a weight matrix W (out x in) + bias from its owning layer and computes
``readout_g(W x + b)`` for each column group g, in one of three paths:

* ``float``: exact float math (the software reference; also records ranges during calibration);
* ``train``: hardware-aware training -- one fresh device instance is drawn *differentiably* from the
  current weights per forward pass (programming error, stuck devices, levels with a
  straight-through estimator), read noise is added at every read, and DAC / ADC quantise with
  straight-through gradients (the NL-ADC as its ideal quantiser, exact-f gradient);
* ``chip``: the programmed chip -- conductances fixed by :meth:`program`, M Monte-Carlo instances in
  one batched pass, the column periphery (ideal / linear ramp / NL-ADC) as programmed.

Input scaling: input column j has a DAC full scale ``s_j`` (calibrated from data for a layer's
input, 1 for a recurrent ``h`` in [-1, 1]).  The DAC sees x_j / s_j in [-1, 1] and s_j is folded
into the weights (W_ij s_j) -- the usual digital pre-scaling in front of the word-line drivers.

Tensors inside are (M, B, features); M = 1 outside the chip path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import torch
from torch import nn

from crossbar.config import HardwareConfig
from crossbar.elementary import tanh_digital
from crossbar.errors import CrossbarInputError
from crossbar.normals import NoiseAt, NormalStream
from crossbar.periphery.dac import quantize_input
from crossbar.periphery.functions import get_activation
from crossbar.periphery.readout import ColumnReadout, program_chip
from crossbar.pointwise import saturating_round
from crossbar.rng import generator
from crossbar.tile import Tile, array_row_slices


@dataclass
class ColumnGroup:
    """Columns ``index`` of a matrix, read out through ``function``."""

    name: str
    index: torch.Tensor  # column indices (long)
    function: str
    in_range: tuple[float, float] | None = None  # ADC input range (calibrated; linear readouts)
    samples: torch.Tensor | None = None  # pre-activation sample (data-aware NL-ADC design)
    block_ranges: list | None = None  # per-array partial-sum ranges (digital partial sums)


@dataclass
class RangeStats:
    """Calibration statistics: running max over batches of a percentile of |value|, and samples."""

    values: dict[str, float] = field(default_factory=dict)  # key -> running max of the percentile
    samples: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> float64 samples (CPU)

    def update(self, key: str, tensor: torch.Tensor, percentile: float, keep_samples: bool = False) -> None:
        a = tensor.detach().abs().flatten().float()
        if a.numel() > 200_000:
            a = a[torch.linspace(0, a.numel() - 1, 200_000).long()]
        v = float(torch.quantile(a, percentile / 100)) if a.numel() else 0.0
        self.values[key] = max(self.values.get(key, 0.0), v)
        if keep_samples:
            flat = tensor.detach().flatten().double().cpu()
            pick = flat[torch.linspace(0, flat.numel() - 1, min(flat.numel(), 4096)).long()]
            prev = self.samples.get(key)
            self.samples[key] = pick if prev is None else torch.cat([prev, pick])[-65536:]


class _FloatForward(NamedTuple):
    """Per-forward state of the ``float`` path (exact math; range statistics while calibrating)."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None  # (out,)
    exact: list[Callable[[torch.Tensor], torch.Tensor]]  # the exact readout function per column group
    stats: RangeStats | None  # where calibration records ranges (None: not calibrating)
    percentile: float  # adc.calibration_percentile (%)
    block_rows: int | None  # rows per array when per-array partial sums are calibrated too, else None


class _ChipForward(NamedTuple):
    """Per-forward state of the ``chip`` path: the programmed tile and its readouts."""

    tile: Tile
    scale: torch.Tensor  # (in,) DAC full scale per input column
    readouts: list[ColumnReadout]  # one per column group


class _TrainForward(NamedTuple):
    """Per-forward state of the ``train`` path: this pass's differentiable device instance."""

    tile: Tile
    scale: torch.Tensor  # (in,) DAC full scale per input column
    gens: list[torch.Generator | None]  # read-noise generator of the one instance
    readouts: list[ColumnReadout]  # the ideal quantisers, one per column group


class AnalogMatrix(nn.Module):
    """W (out x in) + bias on crossbars, with column groups read out by their own periphery.

    An ``nn.Module`` whose children, once programmed, are the chip: ``tile``
    (:class:`~crossbar.tile.Tile`) and ``readouts`` (one :class:`~crossbar.periphery.readout
    .ColumnReadout` per column group)."""

    # chip state set by program(): the converters' per-read normals (one stream per instance,
    # crossbar.normals) and the (in,) DAC full scales folded into the programmed weights
    noise: NormalStream
    chip_scale: torch.Tensor

    def __init__(self, name: str, groups: list[ColumnGroup]):
        super().__init__()
        self.name = name
        self.groups = groups
        # chip state (after program)
        self.tile: Tile | None = None
        self.readouts: nn.ModuleList | None = None
        self.instances = 0
        self.read = 0  # the chip's current read of its normal stream (set per forward pass)
        self._train_readouts: list[ColumnReadout] | None = None
        self._fwd: _FloatForward | _ChipForward | _TrainForward | None = None  # set by prepare()
        self.health = {"dac_clipped": 0, "dac_total": 0, "adc_saturated": 0, "adc_total": 0}

    # ------------------------------------------------------------------------ programming
    def program(
        self,
        config: HardwareConfig,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        in_scale: torch.Tensor,
        seed: int,
        instances: int,
        first: int = 0,
        input_blocks: tuple[int, ...] | None = None,
    ) -> None:
        """Program the chip: the tile and one readout (ADC) per column group."""
        with torch.no_grad():
            tile, readouts = self._build(config, weight, bias, in_scale, input_blocks)
            self.tile = tile
            self.readouts = nn.ModuleList(
                program_chip(
                    tile,
                    readouts,
                    [g.index for g in self.groups],
                    [f"{self.name}/{g.name}" for g in self.groups],
                    seed,
                    instances,
                    first,
                    f"{self.name}/tile",
                )
            )
        self._chip_generators(seed, instances, first, in_scale)

    def _build(self, config, weight, bias, in_scale, input_blocks) -> tuple[Tile, list[ColumnReadout]]:
        """The deterministic part of programming: the tile of the scaled weights (targets, layout)
        and one readout design per column group."""
        w = weight.detach() * in_scale.to(weight)[None, :]
        tile = Tile(w, None if bias is None else bias.detach(), config, x_max=1.0, row_groups=input_blocks)
        readouts = [
            ColumnReadout(config, g.function, len(g.index), g.in_range, g.samples, g.block_ranges) for g in self.groups
        ]
        return tile, readouts

    def _chip_generators(self, seed: int, instances: int, first: int, in_scale: torch.Tensor) -> None:
        """The converters' normal stream (instance m keyed by (seed, "adc/<name>", first + m); reads
        counted from 0) and the DAC full scales of the chip."""
        assert self.tile is not None
        dev = self.tile.device
        self.noise = NormalStream(seed, f"adc/{self.name}", first, instances, dev)
        self.read = 0
        self.instances = instances
        self.chip_scale = in_scale.detach().to(dev, self.tile.dtype)

    def noise_at(self, group: ColumnGroup, step: int = 0) -> NoiseAt:
        """Where the conversions of ``group`` at ``step`` of this forward pass draw their normals."""
        return NoiseAt(self.noise, self.read, step, group.index)

    def programmed_state(self) -> dict:
        """The programmed chip of this matrix as CPU tensors and plain values: the tile's
        (:meth:`crossbar.tile.Tile.programmed_state`) with, under ``"nladc"``, every NL-ADC's."""
        if self.tile is None or self.readouts is None:
            raise RuntimeError(f"{self.name}: not programmed")
        readouts = [cast(ColumnReadout, r) for r in self.readouts]
        return {
            **self.tile.programmed_state(),
            "nladc": [r.nladc.programmed_state() for r in readouts if r.nladc is not None],
        }

    def restore(
        self,
        config: HardwareConfig,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        in_scale: torch.Tensor,
        state: dict,
        seed: int,
        instances: int,
        first: int = 0,
        input_blocks: tuple[int, ...] | None = None,
    ) -> None:
        """The chip of :meth:`programmed_state` without programming again: the deterministic part
        of :meth:`program` (tile layout, readout designs, converter-noise generators), then the
        saved conductances, NL-ADC devices and thresholds -- no draws, no calibration, no solves."""
        with torch.no_grad():
            tile, readouts = self._build(config, weight, bias, in_scale, input_blocks)
            tile.load_programmed_state(state)
            nladcs = [r.nladc for r in readouts if r.nladc is not None]
            if len(nladcs) != len(state["nladc"]):
                raise CrossbarInputError(
                    f"{self.name}: {len(state['nladc'])} saved NL-ADC state(s), the design has {len(nladcs)}"
                )
            for adc, saved in zip(nladcs, state["nladc"]):
                adc.load_programmed_state(saved)
        self.tile = tile
        self.readouts = nn.ModuleList(readouts)
        self._chip_generators(seed, instances, first, in_scale)

    def __deepcopy__(self, memo):
        """Copy everything but the per-forward state (it may hold non-leaf tensors)."""
        import copy

        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = None if key == "_fwd" else copy.deepcopy(value, memo)
        return new

    def extra_repr(self) -> str:
        groups = ", ".join(f"{g.name}: {len(g.index)} x {g.function}" for g in self.groups)
        return f"name={self.name!r}, groups=[{groups}], instances={self.instances}"

    def invalidate(self) -> None:
        """Forget programmed state and cached designs (weights or ranges changed)."""
        self.tile = self.readouts = None
        self.instances = 0
        self._train_readouts = None

    # ------------------------------------------------------------------------ per forward
    def prepare(
        self,
        path: str,
        config: HardwareConfig,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        in_scale: torch.Tensor | None,
        gen: torch.Generator | None = None,
        stats: RangeStats | None = None,
        input_blocks: tuple[int, ...] | None = None,
    ) -> None:
        """Set up one forward pass (a whole sequence) on ``path``.

        The chip path reads the programmed tile (``weight``, ``bias``, ``in_scale`` unused: None);
        the other paths need the current weights, and the train path the input scales too."""
        if path == "chip":
            if self.tile is None or self.readouts is None:
                raise RuntimeError(f"{self.name}: the chip path needs a programmed matrix: call program() first")
            self._fwd = _ChipForward(self.tile, self.chip_scale, [cast(ColumnReadout, r) for r in self.readouts])
            self.read = self.noise.next_read()  # this forward pass's read of the normal stream
            return
        if weight is None:
            raise RuntimeError(f"{self.name}: the {path} path needs the current weights")
        if path == "train":
            if in_scale is None:
                raise RuntimeError(f"{self.name}: the train path needs the input scales")
            w = weight * in_scale.to(weight)[None, :]
            tile = Tile(w, bias, config, x_max=1.0, row_groups=input_blocks)
            tile.program(int(torch.randint(0, 2**62, (1,), generator=gen)), 1, name=f"{self.name}/train")
            if self._train_readouts is None:
                self._train_readouts = [
                    ColumnReadout(config, g.function, len(g.index), g.in_range, g.samples) for g in self.groups
                ]
            self._fwd = _TrainForward(tile, in_scale.to(tile.device, tile.dtype), [gen], self._train_readouts)
        else:
            exact = [get_activation(g.function).f for g in self.groups]
            # per-array partial sums are calibrated too when the linear ADC converts each of them
            block_rows = (
                config.array.rows
                if (config.array.partial_sums == "digital" and config.adc.kind == "linear_ramp")
                else None
            )
            self._fwd = _FloatForward(weight, bias, exact, stats, config.adc.calibration_percentile, block_rows)

    def forward(self, x: torch.Tensor, step: int = 0) -> list[torch.Tensor]:
        """(M, B, in) -> one (M, B, |group|) tensor per column group; ``step``: the time step of a
        sequence (the chip's conversions draw their noise there, :meth:`noise_at`)."""
        fwd = self._fwd
        if fwd is None:
            raise RuntimeError(f"{self.name}: prepare() must set up the forward pass before the matrix is read")
        if isinstance(fwd, _FloatForward):
            weight, bias, exact, stats, pct, block_rows = fwd
            y = torch.nn.functional.linear(x, weight, bias)
            outs = []
            for g, f in zip(self.groups, exact):
                yg = y[..., g.index]
                if stats is not None:
                    stats.update(f"{self.name}/{g.name}", yg, pct, keep_samples=True)
                outs.append(f(yg))
            if stats is not None and block_rows is not None:
                self._block_stats(x, weight, bias, block_rows, stats, pct)
            return outs
        xs = x / fwd.scale
        if isinstance(fwd, _ChipForward):
            tile, readouts = fwd.tile, fwd.readouts
            # mean and read-noise variance per row-block (M, B, R, out); the converters sample the noise
            blocks, var = tile.moments(xs)
            self._count_health(xs, blocks.sum(2), tile.config, readouts)
            if blocks.shape[2] > 1:  # one conversion per array, added digitally
                return [
                    ro.convert_blocks(blocks[..., g.index], self.noise_at(g, step), var=_cols(var, g.index))
                    for g, ro in zip(self.groups, readouts)
                ]
            y, var = blocks[:, :, 0], None if var is None else var[:, :, 0]
            return [
                ro.convert(y[..., g.index], self.noise_at(g, step), var=_cols(var, g.index))
                for g, ro in zip(self.groups, readouts)
            ]
        # training: read noise sampled on the array, the partial sums joined before the (ideal,
        # straight-through) quantiser
        y = fwd.tile.mvm(xs, read_gen=fwd.gens).sum(2)
        return [ro.train_convert(y[..., g.index]) for g, ro in zip(self.groups, fwd.readouts)]

    def _block_stats(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        block_rows: int,
        stats: RangeStats,
        pct: float,
    ) -> None:
        """Range statistics of each array's partial sum (rows = inputs, then the bias row)."""
        rows = torch.cat([x, torch.ones_like(x[..., :1])], -1) if bias is not None else x
        w_rows = torch.cat([weight.t(), bias[None, :]], 0) if bias is not None else weight.t()
        slices = array_row_slices(rows.shape[-1], block_rows)  # the tile's partition
        if len(slices) == 1:
            return
        for r, sl in enumerate(slices):
            part = rows[..., sl] @ w_rows[sl]
            for g in self.groups:
                stats.update(f"{self.name}/{g.name}/block{r}", part[..., g.index], pct)

    def _count_health(
        self, xs: torch.Tensor, y: torch.Tensor, config: HardwareConfig, readouts: list[ColumnReadout]
    ) -> None:
        """Count DAC clipping (|x / full scale| > 1) and saturation of linear ADC readouts
        (``readouts``: the programmed ones, one per column group)."""
        h = self.health
        if config.dac.bits is not None:
            h["dac_clipped"] += int((xs.abs() > 1).sum())
            h["dac_total"] += xs.numel()
        for g, ro in zip(self.groups, readouts):
            rng = ro.linear_range()
            if rng is not None:
                count_saturation(h, y[..., g.index], rng)


def count_saturation(health: dict, y: torch.Tensor, rng: tuple[float, float]) -> None:
    """Add the (noise-free) outputs ``y`` of a linear readout outside its input range ``rng`` to
    the ``adc_saturated`` / ``adc_total`` health counters."""
    health["adc_saturated"] += int(((y < rng[0]) | (y > rng[1])).sum())
    health["adc_total"] += y.numel()


def _cols(var: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if var is None else var[..., index]


class CellNonlinearity(nn.Module):
    """tanh of a digital quantity (LSTM c, GRU candidate) per ``nl_adc.functions.cell``.

    ``digital``: exact; ``digital_lut``: a 2^bits-entry table (the ideal NL-ADC design of tanh);
    ``nl_adc``: the value is driven through a DAC (``dac.bits`` over [-cell_max, cell_max]) onto an
    NL-ADC of its own (programmed ramps, same non-idealities).
    """

    def __init__(self, name: str, columns: int):
        super().__init__()
        self.name, self.columns = name, columns
        self.readout: ColumnReadout | None = None  # the design (+ programmed converter for nl_adc)
        # a calibration sample of the cell input, for the data-aware converter design (set by the
        # layer's calibration, saved with its state)
        self.samples: torch.Tensor | None = None
        self.noise: NormalStream | None = None  # the converter's normals (nl_adc, programmed)
        self.read = 0  # this forward pass's read of them (begin_read)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, columns={self.columns}"

    def _config(self, config: HardwareConfig) -> HardwareConfig:
        return config.replace(**{"adc.kind": "nl_ramp", "adc.range_mode": "function"})

    def _design(self, config: HardwareConfig) -> ColumnReadout:
        """The converter design of tanh over the cell's range (``nl_adc.design``; the data-aware
        one from the calibration sample)."""
        return ColumnReadout(self._config(config), "tanh", self.columns, None, self.samples)

    def program(
        self, config: HardwareConfig, seed: int, instances: int, first: int = 0, saved: dict | None = None
    ) -> None:
        """Program the cell NL-ADC (``nl_adc`` mode), or with ``saved`` (a :meth:`programmed_state`)
        rebuild it from that state without drawing or calibrating."""
        self.readout = None
        if config.nl_adc.functions.cell == "nl_adc":
            self.readout = self._design(config)
            if saved is None:
                self.readout.program(seed, instances, f"{self.name}/cell", first)
            else:
                assert self.readout.nladc is not None  # an nl_ramp readout has one
                self.readout.nladc.load_programmed_state(saved)
            self.noise = NormalStream(seed, f"adc/{self.name}/cell", first, instances)
        elif config.nl_adc.functions.cell == "digital_lut":
            self.readout = self._design(config)

    def programmed_state(self) -> dict | None:
        """The programmed cell NL-ADC's state (``nl_adc`` mode), else None."""
        if self.readout is None or self.readout.nladc is None or self.readout.nladc.thresholds is None:
            return None
        return self.readout.nladc.programmed_state()

    def begin_read(self) -> None:
        """A new forward pass of the programmed cell NL-ADC (its conversions draw from a new read)."""
        if self.noise is not None:
            self.read = self.noise.next_read()

    def forward(self, v: torch.Tensor, path: str, config: HardwareConfig, step: int = 0) -> torch.Tensor:
        """tanh of the digital quantity ``v`` at time ``step`` of the sequence: exact (float path
        and training), the datapath's digital tanh (:func:`rnn_models.cell_math.tanh_digital`),
        a table, or the cell NL-ADC."""
        mode = config.nl_adc.functions.cell
        if path == "float" or (mode == "digital" and path == "train"):
            return torch.tanh(v)
        if mode == "digital":
            return tanh_digital(v)
        if self.readout is None:  # training before any program(): the design alone is needed
            self.readout = self._design(config)
        cell_max = config.datapath.cell_max
        if mode == "nl_adc":
            v = quantize_input(v / cell_max, config.dac, 1.0) * cell_max
        if path == "train" or mode == "digital_lut":
            return self.readout.train_convert(v)
        noise = None if self.noise is None else NoiseAt(self.noise, self.read, step)
        return self.readout.convert(v, noise)


def fixed_point_grid(bits: int, limit: float) -> tuple[float, float, float]:
    """(lo, hi, step) of signed fixed point with ``bits`` bits over [-limit, limit):
    step = limit / 2^(bits-1), lo = -limit, hi = limit - step."""
    step = limit / 2 ** (bits - 1)
    return -limit, limit - step, step


def fixed_point(x: torch.Tensor, bits: int | None, limit: float) -> torch.Tensor:
    """Signed fixed point with ``bits`` bits over [-limit, limit] (saturating; straight-through)."""
    if bits is None:
        return x
    return saturating_round(x, *fixed_point_grid(bits, limit))


def train_generator(seed: int, name: str) -> torch.Generator:
    """The generator a layer draws its hardware-aware-training noise from."""
    return generator(seed, f"train/{name}")

"""Analog PyTorch layers: AnalogLinear, AnalogLSTM(+Cell), AnalogGRU(+Cell).

Constructor arguments, parameter names and call signatures are those of ``nn.Linear``, ``nn.LSTM``,
``nn.GRU``, ``nn.LSTMCell``, ``nn.GRUCell`` (plus ``config=``), so a model can swap them in and
``load_state_dict`` from the float modules.

Paths (see :mod:`rnn_models.analog`): a layer in ``mode = "hardware"`` (default) runs the
**programmed chip** in ``eval()`` and **hardware-aware training** in ``train()``; ``mode = "float"``
runs the exact float math.

Hardware mapping (ours where the paper is silent):

* LSTM: one crossbar matrix over [x, h] with the 4H gate columns; the i, f, o columns are read out by
  sigmoid NL-ADCs and the g columns by tanh NL-ADCs (``nl_adc.functions``).  c = f*c + i*g and
  h = o*tanh(c) are digital at ``datapath.bits`` fixed point; tanh(c) per ``nl_adc.functions.cell``.
* GRU (PyTorch's reset-after form): r, z from sigmoid NL-ADCs on one matrix over [x, h]; the
  candidate needs r * (W_hn h + b_hn) before its tanh, so W_in x and W_hn h are separate matrices
  read out linearly (identity NL-ADC / linear ramp ADC), combined digitally, and the tanh is
  computed like the LSTM's tanh(c) (``functions.cell``).
* Linear: one matrix, read out linearly (``activation='identity'``) or through any NL-ADC function.

Monte-Carlo: after ``program(seed, instances=M)`` with M > 1 every analog layer takes and returns
tensors with a leading instance dimension M (``x.expand(M, *x.shape)`` broadcasts an input); with
M = 1 shapes are exactly PyTorch's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from crossbar.config import HardwareConfig, default_config, load_config
from crossbar.errors import CrossbarInputError
from crossbar.rng import check_instance_args
from rnn_models import fastpath
from rnn_models.analog import AnalogMatrix, CellNonlinearity, ColumnGroup, RangeStats, fixed_point, train_generator
from rnn_models.cell_math import gru_candidate_input, gru_hidden, lstm_cell, lstm_hidden


class AnalogLayerBase(nn.Module):
    """Hardware config, programming state, calibration and path selection shared by all layers."""

    def __init__(self, config: HardwareConfig | str | Path | dict | None = None):
        super().__init__()
        self.hw: HardwareConfig = load_config(config) if config is not None else default_config()
        self.mode = "hardware"
        self.layer_name = type(self).__name__
        self.input_scale: float | None = None  # calibrated DAC full scale of the layer input
        self._stats: RangeStats | None = None
        self._train_gen: torch.Generator | None = None
        self._instances = 0
        self._programmed_version: tuple[int, ...] | None = None

    def _take_simulation_dtype(self, dtype) -> None:
        """Without an explicit ``dtype``, the parameters take the config's ``simulation.dtype`` (a
        layer built for a float64 simulation holds float64 weights), cast after torch's usual
        float32 initialisation: the same initial values and generator draws in either precision."""
        if dtype is None and self.hw.torch_dtype() != torch.get_default_dtype():
            for p in self.parameters():
                p.data = p.data.to(self.hw.torch_dtype())

    # ----------------------------------------------------------------- to implement
    def _matrices(self) -> dict:
        """{key: (AnalogMatrix, weight, bias, in_scale, input_blocks)} for the current parameters.

        ``input_blocks``: sizes of the matrix's input blocks (x, h) for per-block row scaling."""
        raise NotImplementedError

    def _cells(self) -> list[CellNonlinearity]:
        return []

    def _cell_keys(self) -> dict[str, CellNonlinearity]:
        """The cell nonlinearities by the key of their calibration sample (and saved state)."""
        return {}

    # ----------------------------------------------------------------- state
    @property
    def instances(self) -> int:
        """Programmed Monte-Carlo instances (0 before ``program``)."""
        return self._instances

    def _weights_version(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters()) + tuple(id(p) for p in self.parameters())

    def program(self, seed: int | None = None, instances: int | None = None, first: int = 0):
        """Draw device instances ``first .. first+instances-1`` of this layer (seeded) and program them."""
        check_instance_args(seed, instances, first)
        seed = self.hw.simulation.seed if seed is None else int(seed)
        instances = self.hw.simulation.mc_instances if instances is None else int(instances)
        self._chip_matrices: list[AnalogMatrix] = []
        for _, mat, w, b, scale, blocks in self._named_matrices():
            mat.program(self.hw, w, b, scale, seed, instances, first, blocks)
            self._chip_matrices.append(mat)
        for cell in self._named_cells():
            cell.program(self.hw, seed, instances, first)
        return self._programmed(seed, instances, first)

    def _named_matrices(self):
        """``(key, matrix, weight, bias, input scale, input blocks)`` of every matrix, each named
        after this layer (the construction :meth:`program` and :meth:`restore_program` share)."""
        for key, (mat, w, b, scale, blocks) in self._matrices().items():
            mat.name = f"{self.layer_name}/{key}"
            yield key, mat, w, b, scale, blocks

    def _named_cells(self) -> list:
        """The cell nonlinearities, each named after this layer."""
        cells = self._cells()
        for cell in cells:
            cell.name = f"{self.layer_name}/{cell.name.split('/')[-1]}"
        return cells

    def _programmed(self, seed: int, instances: int, first: int) -> AnalogLayerBase:
        """Record that the chip now holds ``instances`` instances from ``first`` (program or restore)."""
        self._instances = instances
        self._program_args = (seed, instances, first)
        self._programmed_version = self._weights_version()
        return self

    def restore_program(self, chip: dict, source: str = "state") -> AnalogLayerBase:
        """The programmed chip of a :func:`chip_state` without programming again: the same
        deterministic construction as :meth:`program`, then the saved conductances, NL-ADC devices
        and thresholds (no draws, no calibration, no IR-drop solves until an MVM needs them)."""
        seed, instances, first = (int(v) for v in chip["args"])
        check_instance_args(seed, instances, first)
        tiles, cells = chip["tiles"], chip.get("cells") or []
        self._chip_matrices = []
        for key, mat, w, b, scale, blocks in self._named_matrices():
            entry = tiles.get(key)
            if entry is None:
                raise CrossbarInputError(f"{source}: programmed conductances of {self.layer_name}/{key}: missing")
            try:
                mat.restore(self.hw, w, b, scale, entry, seed, instances, first, blocks)
            except CrossbarInputError as exc:
                raise CrossbarInputError(f"{source}: {self.layer_name}/{key}: {exc}") from None
            self._chip_matrices.append(mat)
        own_cells = self._named_cells()
        if len(cells) not in (0, len(own_cells)):
            raise CrossbarInputError(
                f"{source}: {self.layer_name}: {len(cells)} saved cell states, {len(own_cells)} cells"
            )
        for i, cell in enumerate(own_cells):
            saved = cells[i] if cells else None
            if saved is None and self.hw.nl_adc.functions.cell == "nl_adc":
                raise CrossbarInputError(f"{source}: {cell.name}: the saved chip has no cell NL-ADC state")
            cell.program(self.hw, seed, instances, first, saved=saved)
        return self._programmed(seed, instances, first)

    def _path(self) -> str:
        if self.mode == "float" or self._stats is not None:
            return "float"
        return "train" if self.training else "chip"

    def _prepare(self) -> str:
        """Select the path for this forward and set up every matrix (once per forward pass)."""
        path = self._path()
        if path == "chip" and (self._instances == 0 or self._programmed_version != self._weights_version()):
            if self._instances and self._programmed_version != self._weights_version():
                raise CrossbarInputError(
                    f"{self.layer_name}: the weights changed since program(); call program(seed) again"
                )
            self.program(instances=1)  # implicit: one instance; Monte-Carlo needs an explicit program()
        if path == "train" and self._train_gen is None:
            self._train_gen = train_generator(self.hw.simulation.seed, self.layer_name)
        if path == "chip":  # the programmed tiles hold everything: no weights to gather
            for mat in self._chip_matrices:
                mat.prepare("chip", self.hw, None, None, None)
            for cell in self._cells():
                cell.begin_read()
            return path
        for key, (mat, w, b, scale, blocks) in self._matrices().items():
            mat.name = f"{self.layer_name}/{key}"
            mat.prepare(path, self.hw, w, b, scale, self._train_gen, self._stats, blocks)
        return path

    def _m(self, path: str) -> int:
        """Instance count of this forward (leading dim of internal tensors)."""
        return self._instances if path == "chip" else 1

    def _input_scale(self) -> float:
        dac = self.hw.dac
        if dac.range_mode == "calibrated" and self.input_scale is not None:
            return self.input_scale
        return dac.x_max

    # ----------------------------------------------------------------- calibration
    def start_calibration(self) -> None:
        self._stats = RangeStats()

    def finish_calibration(self) -> dict:
        """Set DAC and ADC ranges from the statistics collected since ``start_calibration``."""
        stats, self._stats = self._stats, None
        if stats is None:
            raise CrossbarInputError(f"{self.layer_name}: finish_calibration() without start_calibration()")
        if "input" in stats.values and stats.values["input"] > 0:
            self.input_scale = stats.values["input"]
        for mat, *_rest in self._matrices().values():
            for g in mat.groups:
                v = stats.values.get(f"{mat.name}/{g.name}")
                if v:
                    g.in_range = (-v, v)
                    g.samples = stats.samples.get(f"{mat.name}/{g.name}")
                blocks: list[tuple[float, float] | None] = []  # per-array partial-sum ranges
                while f"{mat.name}/{g.name}/block{len(blocks)}" in stats.values:
                    vb = stats.values[f"{mat.name}/{g.name}/block{len(blocks)}"]
                    blocks.append((-vb, vb) if vb > 0 else None)
                g.block_ranges = blocks if blocks and all(blocks) else None
            mat.invalidate()
        for key, cell in self._cell_keys().items():
            cell.samples = stats.samples.get(key)
        self._instances = 0
        return dict(stats.values)

    def _as_compute_dtype(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """The input in the dtype its path computes in: the software paths (``float``:
        unprogrammed and calibration; ``train``) in the parameters' dtype, as ``nn.Linear`` /
        ``nn.LSTM`` do; the chip path casts to ``simulation.dtype`` itself.  So a float64 input
        (e.g. calibration data for a ``simulation.dtype = float64`` config) meets float32
        parameters, or the reverse, without a dtype error."""
        if path == "chip":
            return x
        p = next(iter(self.parameters()), None)
        return x if p is None or x.dtype == p.dtype else x.to(p.dtype)

    def _record_input(self, x: torch.Tensor) -> None:
        if self._stats is not None:
            self._stats.update("input", x, self.hw.dac.calibration_percentile)

    def extra_repr_hw(self) -> str:
        chip = f"programmed={self._instances} instance(s)" if self._instances else "not programmed"
        return f"config={self.hw.name!r}, mode={self.mode}, {chip}"

    # ----------------------------------------------------------------- chip state as module state
    def get_extra_state(self) -> dict:
        """What ``state_dict()`` holds beyond the parameters (torch's extra-state hook): the hardware
        config (JSON), the calibrated DAC / ADC ranges and, once programmed, the chip -- program
        arguments, programmed conductances (uS) and drift gains of every instance, NL-ADC
        thresholds and ramp read-noise variances (:func:`chip_state`)."""
        return chip_state(self)

    def set_extra_state(self, state) -> None:
        """``load_state_dict``'s counterpart of :meth:`get_extra_state` (the parameters are loaded
        first): one clear error when the saved config differs from this layer's; the programmed chip
        is restored as saved (the conductances and thresholds replace a fresh programming's)."""
        load_chip_state(self, state, source="state_dict")

    def __deepcopy__(self, memo):
        """A copy with its own parameters and chip; a programmed layer stays programmed (the
        copy's parameters are new objects holding the same weights)."""
        import copy

        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        if self._instances and self._programmed_version == self._weights_version():
            new._programmed_version = new._weights_version()
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, *args):
        """A float module's state dict (no ``_extra_state``) loads too: that is how ``nn.LSTM``
        weights move onto an analog layer (the hardware state stays as it is)."""
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args)
        key = prefix + "_extra_state"
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)

    def _apply(self, fn, recurse=True):
        """``.to(device / dtype)``, ``.cuda()``, ``.double()``: the simulation follows the parameters
        (``simulation.device`` / ``simulation.dtype`` of the layer's config), and a programmed chip
        is rebuilt there from its state -- the same conductances and thresholds."""
        before = next(iter(self.parameters()), None)
        dev0, dt0 = (before.device, before.dtype) if before is not None else (None, None)
        out = super()._apply(fn, recurse)  # moves the parameters; the tiles keep the chip as it was
        after = next(iter(self.parameters()), None)
        if after is None or (after.device == dev0 and after.dtype == dt0):
            return out
        changes = {}
        if after.device != dev0:
            changes["simulation.device"] = after.device.type
        if after.dtype != dt0 and after.dtype in (torch.float32, torch.float64):
            changes["simulation.dtype"] = {torch.float32: "float32", torch.float64: "float64"}[after.dtype]
        if changes:
            saved = chip_state(self)  # read from the tiles, which super()._apply does not touch
            self.hw = self.hw.replace(**changes)
            _restore_chip(self, saved, source=f"{self.layer_name}.to()")
        return out


def _check_finite(x: torch.Tensor, name: str, device: torch.device | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise CrossbarInputError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise CrossbarInputError(f"{name}: input must be a floating-point tensor, got {x.dtype}")
    if device is not None and x.device.type != device.type:
        raise CrossbarInputError(
            f"{name}: input is on {x.device} but the layer's config simulates on {device} "
            "(simulation.device); move the input with .to()"
        )
    # a finite sum has no NaN or inf in it (20x faster than isfinite(x).all() on CPU); a sum that
    # overflowed is told apart by the element-wise check
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise CrossbarInputError(f"{name}: input contains NaN or inf")


# ======================================================================================= Linear
class AnalogLinear(AnalogLayerBase):
    """``nn.Linear`` on a crossbar; the output is read out linearly or through an NL-ADC function."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        config=None,
        activation: str = "identity",
        device=None,
        dtype=None,
    ):
        super().__init__(config)
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.reset_parameters()
        self._take_simulation_dtype(dtype)
        self._mat = AnalogMatrix("fc", [ColumnGroup("out", torch.arange(out_features), activation)])

    def reset_parameters(self) -> None:
        # same initialisation as nn.Linear (its method reads only ``weight`` and ``bias``)
        nn.Linear.reset_parameters(cast(nn.Linear, self))

    def _matrices(self):
        scale = torch.full((self.in_features,), self._input_scale())
        return {"fc": (self._mat, self.weight, self.bias, scale, (self.in_features,))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_finite(x, self.layer_name, self.hw.torch_device())
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise CrossbarInputError(
                f"{self.layer_name}: last input dimension must be {self.in_features}, got shape {tuple(x.shape)}"
            )
        path = self._prepare()
        m = self._m(path)
        x = self._as_compute_dtype(x, path)
        self._record_input(x)
        if m > 1:
            if x.dim() < 2 or x.shape[0] != m:
                raise CrossbarInputError(
                    f"{self.layer_name}: {m} Monte-Carlo instances are programmed, so the "
                    f"input needs a leading dimension of {m} (x.expand({m}, *x.shape))"
                )
            lead = x.shape[1:-1]
        else:
            lead = x.shape[:-1]
        flat = x.reshape(m, -1, self.in_features)
        out = self._mat(flat)[0]
        return out.reshape(*((m,) if m > 1 else ()), *lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"activation={self.activation}, {self.extra_repr_hw()}"
        )


# ======================================================================================= RNNs
class _AnalogRNNBase(AnalogLayerBase):
    """Shared parameters, shapes and layer/direction loop of AnalogLSTM and AnalogGRU.

    ``fast_path`` (default True): on CPU the programmed chip runs through the fused kernels of
    :mod:`rnn_models.fastpath` where they cover the configuration -- the same numbers as the
    reference loops in ``_direction`` (set it False to run the reference)."""

    GATES = 0  # 4 for LSTM, 3 for GRU
    fast_path = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        config=None,
        device=None,
        dtype=None,
        _cell: bool = False,
    ):
        super().__init__(config)
        if proj_size:
            raise CrossbarInputError("proj_size is not supported by the analog RNN layers")
        if not 0 <= dropout <= 1:
            raise CrossbarInputError(f"dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.proj_size = 0
        dirs = 2 if bidirectional else 1
        g = self.GATES * hidden_size
        self._names = []
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * dirs
            for d in range(dirs):
                sfx = "" if _cell else f"_l{layer}" + ("_reverse" if d else "")
                self.register_parameter(
                    f"weight_ih{sfx}", nn.Parameter(torch.empty(g, in_size, device=device, dtype=dtype))
                )
                self.register_parameter(
                    f"weight_hh{sfx}", nn.Parameter(torch.empty(g, hidden_size, device=device, dtype=dtype))
                )
                if bias:
                    self.register_parameter(f"bias_ih{sfx}", nn.Parameter(torch.empty(g, device=device, dtype=dtype)))
                    self.register_parameter(f"bias_hh{sfx}", nn.Parameter(torch.empty(g, device=device, dtype=dtype)))
                self._names.append(sfx)
        self.reset_parameters()
        self._take_simulation_dtype(dtype)
        self._engines = {sfx: self._make_engine(sfx) for sfx in self._names}
        for sfx, engine in self._engines.items():  # the chip in the module tree (print, buffers)
            self.add_module(f"engine{sfx}", nn.ModuleDict(engine))

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            nn.init.uniform_(w, -stdv, stdv)

    def _make_engine(self, sfx: str) -> dict[str, AnalogMatrix | CellNonlinearity]:
        """The matrices and cell nonlinearity of one layer/direction (``sfx``), by role."""
        raise NotImplementedError

    def _p(self, kind: str, sfx: str):
        return getattr(self, f"{kind}{sfx}", None)

    @staticmethod
    def _cell_key(sfx: str) -> str:
        """The key of the calibration sample of layer/direction ``sfx``'s cell nonlinearity."""
        return f"cell{sfx}"

    def _cell_keys(self) -> dict[str, CellNonlinearity]:
        return dict(zip(map(self._cell_key, self._engines), self._cells()))

    def _record_cell_input(self, sfx: str, v: torch.Tensor, path: str) -> None:
        """While calibrating: keep a sample of what the cell nonlinearity of ``sfx`` reads, where
        its converter (``nl_adc.functions.cell``: ``nl_adc`` / ``digital_lut``) has the data-aware
        design (``nl_adc.design``), which places its levels from that sample."""
        nl = self.hw.nl_adc
        if path == "float" and self._stats is not None and nl.design == "data_aware" and nl.functions.cell != "digital":
            self._stats.update(self._cell_key(sfx), v, self.hw.adc.calibration_percentile, keep_samples=True)

    def _layer_in_scale(self, layer: int, in_size: int) -> torch.Tensor:
        return torch.full((in_size,), self._input_scale() if layer == 0 else 1.0)

    # ---------------------------------------------------------------- shapes
    def _canonical(self, x: torch.Tensor, m: int):
        """Input -> (M, T, B, F); returns also how to undo it."""
        unbatched_dim = 2 + (1 if m > 1 else 0)
        if x.dim() not in (unbatched_dim, unbatched_dim + 1):
            want = "(M, " if m > 1 else "("
            raise CrossbarInputError(
                f"{self.layer_name}: input must be {want}T, B, {self.input_size}) or {want}T, {self.input_size}) "
                f"(batch_first swaps T and B), got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise CrossbarInputError(
                f"{self.layer_name}: input feature size must be {self.input_size}, got shape {tuple(x.shape)}"
            )
        if m > 1 and x.shape[0] != m:
            raise CrossbarInputError(
                f"{self.layer_name}: {m} Monte-Carlo instances are programmed, so the input "
                f"needs a leading dimension of {m} (x.expand({m}, *x.shape))"
            )
        if m == 1:
            x = x.unsqueeze(0)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(2)  # (M, T, 1, F)
        elif self.batch_first:
            x = x.transpose(1, 2)
        if x.shape[1] == 0:
            raise CrossbarInputError(f"{self.layer_name}: the sequence is empty (length 0)")
        return x, unbatched

    def _state(self, hx, m: int, batch: int, unbatched: bool, ref: torch.Tensor):
        shape = (self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size)
        if hx is None:
            return torch.zeros((m,) + shape, dtype=ref.dtype, device=ref.device)
        h = hx
        if m == 1:
            h = h.unsqueeze(0)
        if unbatched:
            h = h.unsqueeze(2)
        if h.shape != (m,) + shape:
            raise CrossbarInputError(
                f"{self.layer_name}: initial state must have shape {shape} "
                f"(+ leading M in Monte-Carlo mode), got {tuple(hx.shape)}"
            )
        return h.to(ref)

    def _restore(self, y: torch.Tensor, m: int, unbatched: bool, seq: bool) -> torch.Tensor:
        """Internal (M, T, B, H) / (M, L, B, H) -> the caller's layout."""
        if unbatched:
            y = y.squeeze(2)
        elif seq and self.batch_first:
            y = y.transpose(1, 2)
        return y.squeeze(0) if m == 1 else y

    def _run(self, x, states: list[torch.Tensor | None], path: str | None = None):
        """Run all layers and directions; ``states``: initial states as the caller gives them
        (None: zeros)."""
        path = self._prepare() if path is None else path
        m = self._m(path)
        _check_finite(x, self.layer_name, self.hw.torch_device())
        x, unbatched = self._canonical(self._as_compute_dtype(x, path), m)
        self._record_input(x)
        batch = x.shape[2]
        init = [self._state(s, m, batch, unbatched, x) for s in states]
        dirs = 2 if self.bidirectional else 1
        finals: list[list[torch.Tensor]] = [[] for _ in init]  # per state: one final per layer/direction
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                sfx = self._names[layer * dirs + d]
                idx = layer * dirs + d
                out, fin = self._direction(sfx, x, [s[:, idx] for s in init], reverse=bool(d), path=path)
                outs.append(out)
                for f_list, f in zip(finals, fin):
                    f_list.append(f)
            x = torch.cat(outs, -1) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = self._restore(x, m, unbatched, seq=True)
        return out, [self._restore(torch.stack(f, 1), m, unbatched, seq=False) for f in finals]

    def _direction(self, sfx, x, state, reverse, path):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}, "
            f"{self.extra_repr_hw()}"
        )


def lstm_column_groups(hidden: int, functions) -> list[ColumnGroup]:
    """The LSTM matrix's column groups (PyTorch's gate order i, f, g, o): i, f, o through
    ``functions.gate``, g through ``functions.candidate`` (``functions``: ``nl_adc.functions``)."""
    h = hidden
    return [
        ColumnGroup("ifo", torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h)]), functions.gate),
        ColumnGroup("g", torch.arange(2 * h, 3 * h), functions.candidate),
    ]


def gru_gate_groups(hidden: int, functions) -> list[ColumnGroup]:
    """The GRU's r/z matrix: one group of 2H columns through ``functions.gate``."""
    return [ColumnGroup("rz", torch.arange(2 * hidden), functions.gate)]


class AnalogLSTM(_AnalogRNNBase):
    """``nn.LSTM`` with crossbar gate MVMs and NL-ADC gate activations."""

    GATES = 4

    def _make_engine(self, sfx):
        h = self.hidden_size
        mat = AnalogMatrix(f"lstm{sfx}", lstm_column_groups(h, self.hw.nl_adc.functions))
        return {"mat": mat, "cell": CellNonlinearity(f"lstm{sfx}", h)}

    def _matrices(self):
        mats = {}
        for layer in range(self.num_layers):
            dirs = 2 if self.bidirectional else 1
            for d in range(dirs):
                sfx = self._names[layer * dirs + d]
                w_ih, w_hh = self._p("weight_ih", sfx), self._p("weight_hh", sfx)
                b = self._p("bias_ih", sfx) + self._p("bias_hh", sfx) if self.bias else None
                scale = torch.cat([self._layer_in_scale(layer, w_ih.shape[1]), torch.ones(self.hidden_size)])
                mats[sfx] = (
                    self._engines[sfx]["mat"],
                    torch.cat([w_ih, w_hh], 1),
                    b,
                    scale,
                    (w_ih.shape[1], self.hidden_size),
                )
        return mats

    def _cells(self):
        return [e["cell"] for e in self._engines.values()]

    def _direction(self, sfx, x, state, reverse, path):
        h, c = state
        mat, cell = self._engines[sfx]["mat"], self._engines[sfx]["cell"]
        bits = None if path == "float" else self.hw.datapath.bits
        cell_max = self.hw.datapath.cell_max
        if self.fast_path and fastpath.supported(self._engines[sfx], path, x):
            return fastpath.lstm_sequence(self._engines[sfx], x, h, c, reverse, bits, cell_max)
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outs = [None] * x.shape[1]
        for t in steps:
            ifo, g = mat(torch.cat([x[:, t], h], -1), step=t)
            i, f, o = ifo.chunk(3, -1)
            c = fixed_point(lstm_cell(i, f, g, c), bits, cell_max)
            self._record_cell_input(sfx, c, path)
            h = fixed_point(lstm_hidden(o, cell(c, path, self.hw, step=t)), bits, 1.0)
            outs[t] = h
        return torch.stack(outs, 1), (h, c)

    def forward(self, input: torch.Tensor, hx=None):
        h0, c0 = (None, None) if hx is None else hx
        out, (h_n, c_n) = self._run(input, [h0, c0])
        return out, (h_n, c_n)


class AnalogGRU(_AnalogRNNBase):
    """``nn.GRU`` (reset-after form) with crossbar MVMs and NL-ADC r/z gates."""

    GATES = 3

    def _make_engine(self, sfx):
        h = self.hidden_size
        roles = self.hw.nl_adc.functions
        return {
            "rz": AnalogMatrix(f"gru{sfx}/rz", gru_gate_groups(h, roles)),
            "nx": AnalogMatrix(f"gru{sfx}/nx", [ColumnGroup("nx", torch.arange(h), "identity")]),
            "nh": AnalogMatrix(f"gru{sfx}/nh", [ColumnGroup("nh", torch.arange(h), "identity")]),
            "cell": CellNonlinearity(f"gru{sfx}", h),
        }

    def _matrices(self):
        mats = {}
        h = self.hidden_size
        dirs = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            for d in range(dirs):
                sfx = self._names[layer * dirs + d]
                e = self._engines[sfx]
                w_ih, w_hh = self._p("weight_ih", sfx), self._p("weight_hh", sfx)
                b_ih, b_hh = self._p("bias_ih", sfx), self._p("bias_hh", sfx)
                in_scale = self._layer_in_scale(layer, w_ih.shape[1])
                mats[sfx + "/rz"] = (
                    e["rz"],
                    torch.cat([w_ih[: 2 * h], w_hh[: 2 * h]], 1),
                    (b_ih[: 2 * h] + b_hh[: 2 * h]) if self.bias else None,
                    torch.cat([in_scale, torch.ones(h)]),
                    (w_ih.shape[1], h),
                )
                mats[sfx + "/nx"] = (
                    e["nx"],
                    w_ih[2 * h :],
                    b_ih[2 * h :] if self.bias else None,
                    in_scale,
                    (w_ih.shape[1],),
                )
                mats[sfx + "/nh"] = (e["nh"], w_hh[2 * h :], b_hh[2 * h :] if self.bias else None, torch.ones(h), (h,))
        return mats

    def _cells(self):
        return [e["cell"] for e in self._engines.values()]

    def _direction(self, sfx, x, state, reverse, path):
        (h,) = state
        e = self._engines[sfx]
        bits = None if path == "float" else self.hw.datapath.bits
        cell_max = self.hw.datapath.cell_max
        if self.fast_path and fastpath.supported(e, path, x):
            return fastpath.gru_sequence(e, x, h, reverse, bits, cell_max)
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outs = [None] * x.shape[1]
        for t in steps:
            (rz,) = e["rz"](torch.cat([x[:, t], h], -1), step=t)
            r, z = rz.chunk(2, -1)
            (nx,) = e["nx"](x[:, t], step=t)
            (nh,) = e["nh"](h, step=t)
            n_in = fixed_point(gru_candidate_input(nx, r, nh), bits, cell_max)
            self._record_cell_input(sfx, n_in, path)
            n = e["cell"](n_in, path, self.hw, step=t)
            h = fixed_point(gru_hidden(z, n, h), bits, 1.0)
            outs[t] = h
        return torch.stack(outs, 1), (h,)

    def forward(self, input: torch.Tensor, hx=None):
        out, (h_n,) = self._run(input, [hx])
        return out, h_n


# ======================================================================================= cells
def _cell_step(layer: _AnalogRNNBase, input: torch.Tensor, states: list):
    """Run a one-layer RNN for one step on cell-shaped tensors ((B, F) or (F,), + leading M)."""
    path = layer._prepare()
    unbatched = input.dim() == (2 if layer._m(path) > 1 else 1)
    where = -2 if unbatched else -3
    seq = input.unsqueeze(where)
    init = [None if s is None else s.unsqueeze(where) for s in states]
    _, finals = layer._run(seq, init, path=path)
    return [f.squeeze(where) for f in finals]


class AnalogLSTMCell(AnalogLSTM):
    """``nn.LSTMCell``: one step; parameters ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, config=None, device=None, dtype=None):
        super().__init__(input_size, hidden_size, 1, bias, config=config, device=device, dtype=dtype, _cell=True)

    def forward(self, input: torch.Tensor, hx=None):
        h, c = _cell_step(self, input, [None, None] if hx is None else list(hx))
        return h, c


class AnalogGRUCell(AnalogGRU):
    """``nn.GRUCell``: one step; parameters ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, config=None, device=None, dtype=None):
        super().__init__(input_size, hidden_size, 1, bias, config=config, device=device, dtype=dtype, _cell=True)

    def forward(self, input: torch.Tensor, hx=None):
        (h,) = _cell_step(self, input, [hx])
        return h


# ======================================================================================= chip state
#: layout of the ``chip`` entry of :func:`chip_state`: 2 holds everything ``program`` decided (tile
#: scale, NL-ADC devices on the arrays, ramp scales, calibration reports, cell NL-ADCs), so that
#: loading rebuilds the chip without programming; entries without a format re-program and overwrite
CHIP_FORMAT = 2


def _saved_samples(samples: torch.Tensor | None) -> torch.Tensor | None:
    """A calibration sample as saved: float32 where that loses nothing (a float32 simulation's
    values; half the bytes), else as it is (float64), so that a data-aware converter designed from
    the loaded sample is the one designed from the original, bit for bit."""
    if samples is None:
        return None
    single = samples.float().cpu()
    return single if torch.equal(single.to(samples.dtype), samples.cpu()) else samples.cpu()


def _loaded_samples(samples, source: str, name: str) -> torch.Tensor | None:
    """A saved calibration sample back as the float64 tensor calibration keeps (:class:`RangeStats`),
    a copy (the model does not share the state's tensor)."""
    if samples is None:
        return None
    if not (isinstance(samples, torch.Tensor) and samples.is_floating_point() and samples.dim() == 1):
        raise CrossbarInputError(f"{source}: {name}: the calibration sample must be a 1-D float tensor")
    return samples.detach().to("cpu", torch.float64, copy=True)


def chip_state(layer: AnalogLayerBase, programmed: bool = True) -> dict:
    """A layer's hardware state as plain tensors and values (what ``state_dict()`` stores for it):
    ``config`` (JSON), ``input_scale``, per column group the calibrated ``in_range``, ``samples`` and
    ``block_ranges``, per cell nonlinearity its calibration sample (``cell_samples``; None unless a
    data-aware cell converter needs one), and (``programmed`` and after ``program``) ``chip``: the
    program arguments and, per matrix, ``g_pos`` / ``g_neg`` (M, rows, out) uS, ``drift_gain`` and the NL-ADCs'
    ``ramp_thresholds``, ``offsets``, ``read_var`` (CPU tensors)."""
    state: dict = {"config": layer.hw.model_dump_json(), "input_scale": layer.input_scale, "groups": {}}
    for key, (mat, *_r) in layer._matrices().items():
        for g in mat.groups:
            state["groups"][f"{key}/{g.name}"] = {
                "in_range": list(g.in_range) if g.in_range is not None else None,
                "samples": _saved_samples(g.samples),
                "block_ranges": [list(r) for r in g.block_ranges] if g.block_ranges else None,
            }
    state["cell_samples"] = {key: _saved_samples(cell.samples) for key, cell in layer._cell_keys().items()}
    if programmed and layer.instances:
        tiles: dict[str, dict] = {}
        for key, (mat, *_r) in layer._matrices().items():
            tiles[key] = mat.programmed_state()
        # the layer's name seeds its random streams (analog_layers names it by its place in the model)
        state["chip"] = {
            "format": CHIP_FORMAT,
            "args": list(layer._program_args),
            "layer_name": layer.layer_name,
            "tiles": tiles,
            "cells": [cell.programmed_state() for cell in layer._cells()],
        }
    return state


def chip_state_difference(layer: AnalogLayerBase, state, source: str) -> list[str]:
    """The config fields in which a :func:`chip_state` differs from ``layer``'s config (device and
    dtype ignored: the chip moves); one clear error naming ``source`` for a malformed state."""
    import json

    from crossbar.config import config_difference, validate_config

    if not isinstance(state, dict) or not isinstance(state.get("config"), str) or "groups" not in state:
        raise CrossbarInputError(f"{source}: {layer.layer_name}: the analog layer state is malformed")
    saved = validate_config(json.loads(state["config"]), source=f"{source}:{layer.layer_name}")
    return [
        d for d in config_difference(saved, layer.hw) if not d.startswith(("simulation.device", "simulation.dtype"))
    ]


def load_chip_state(layer: AnalogLayerBase, state, source: str) -> None:
    """Restore :func:`chip_state` into ``layer`` (its parameters already loaded).  A state saved
    under another hardware config carries ranges and a chip of another design: then only the
    weights are taken (the layer is left uncalibrated and unprogrammed, with a warning);
    :func:`rnn_models.checkpoint.load_analog_checkpoint` refuses such a checkpoint instead."""
    diff = chip_state_difference(layer, state, source)
    if diff:
        import warnings

        warnings.warn(
            f"{layer.layer_name}: the state was saved with another hardware config ({', '.join(diff[:4])}): "
            "weights loaded, calibrated ranges and programmed chip not (calibrate and program again)",
            stacklevel=3,
        )
        state = {"input_scale": None, "groups": {}}  # uncalibrated, unprogrammed
    _restore_chip(layer, state, source)


def _restore_chip(layer: AnalogLayerBase, state: dict, source: str) -> None:
    """Set ``layer``'s ranges and chip to ``state`` (its config already checked): ranges missing
    from ``state`` are left uncalibrated, and without a ``chip`` entry the layer is unprogrammed."""
    # the calibration samples checked before anything is set: a bad one leaves the layer as it was
    where = f"{(state.get('chip') or {}).get('layer_name', layer.layer_name)}/"
    samples = {
        (key, g.name): _loaded_samples(
            state["groups"].get(f"{key}/{g.name}", {}).get("samples"), source, f"{where}{key}/{g.name}"
        )
        for key, (mat, *_r) in layer._matrices().items()
        for g in mat.groups
    }
    cell_samples = state.get("cell_samples") or {}  # absent from states saved before 2026-12-07
    cells = {key: _loaded_samples(cell_samples.get(key), source, f"{where}{key}") for key in layer._cell_keys()}
    layer.input_scale = state.get("input_scale")
    for key, (mat, *_r) in layer._matrices().items():
        for g in mat.groups:
            saved = state["groups"].get(f"{key}/{g.name}", {})
            g.in_range = tuple(saved["in_range"]) if saved.get("in_range") else None
            g.samples = samples[key, g.name]
            g.block_ranges = [tuple(r) for r in saved["block_ranges"]] if saved.get("block_ranges") else None
        mat.invalidate()
    for key, cell in layer._cell_keys().items():
        cell.samples = cells[key]
    layer._instances = 0
    chip = state.get("chip")
    if not chip:
        return
    layer.layer_name = str(chip.get("layer_name", layer.layer_name))
    if chip.get("format") == CHIP_FORMAT:  # everything program() decided is saved: rebuild, no drawing
        layer.restore_program(chip, source)
        return
    # an earlier layout (tile conductances and NL-ADC thresholds only): the deterministic
    # construction and programming run again, then the drawn conductances and the calibrated
    # thresholds are replaced by the saved ones
    layer.program(*chip["args"])
    for key, (mat, *_r) in layer._matrices().items():
        entry = chip["tiles"].get(key)
        if entry is None or entry["g_pos"].shape != mat.tile.g_pos.shape:
            got = "missing" if entry is None else f"shape {tuple(entry['g_pos'].shape)}"
            raise CrossbarInputError(
                f"{source}: programmed conductances of {layer.layer_name}/{key}: {got}, "
                f"expected {tuple(mat.tile.g_pos.shape)}"
            )
        dev, dt = mat.tile.device, mat.tile.dtype
        mat.tile.g_pos, mat.tile.g_neg = entry["g_pos"].to(dev, dt), entry["g_neg"].to(dev, dt)
        mat.tile.drift_gain = entry["drift_gain"].to(dev, dt)
        nl = [ro.nladc for ro in mat.readouts if ro.nladc is not None]
        for adc, saved in zip(nl, entry["nladc"]):
            adc.restore(
                saved["ramp_thresholds"].to(dev, dt), saved["offsets"].to(dev, dt), saved["read_var"].to(dev, dt)
            )

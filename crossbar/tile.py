"""Tile: one weight matrix programmed onto crossbar arrays, for M Monte-Carlo device instances.

A :class:`Tile` owns the programmed conductances of a logical matrix W (``out x in``, plus an
optional bias) split over physical arrays of ``array.rows x array.cols``.  ``mvm`` computes the
analog column outputs for inputs ``x``:

    x -> DAC -> [x_q, x_bias] @ (G+ - G-)(t) / scale  (+ read noise)  -> y  (pre-activation units)

Modelling choices (ours, named):

* the bias is one more word line driven at the DAC's full-scale input ``x_max`` (``array.bias_in_array``);
* read noise is independent Gaussian per device and per read; its effect on a column output is drawn
  in the exact equivalent form y_noise ~ N(0, sum_j x_j^2 (sigma_j+^2 + sigma_j-^2)) / scale, which
  avoids materialising one noisy matrix per input vector;
* drift is evaluated at ``device.drift.t_inference``; global drift compensation divides the output by
  the mean conductance ratio G(t) / G(t0) of the tile's devices (a one-shot calibration read) --
  except in front of an NL-ADC, whose ramp drifts with the weights (ratio-metric compensation);
* ``v_read_actual`` scales the whole analog signal by V_actual / V_nominal;
* columns split over several row-blocks are returned per block (``partial_sums = digital``: one
  conversion per block, summed after the ADC) or summed in the analog domain (``analog``).

Shapes: ``x`` is (B, in) or (M, B, in); outputs are (M, B, R, out) with R row-blocks (R = 1 when
analog partial sums).  All M instances are computed in one batched matmul.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from crossbar import devices
from crossbar.config import HardwareConfig, validate_config
from crossbar.errors import CrossbarInputError
from crossbar.io import atomic_path
from crossbar.matmul import PreparedMatmul
from crossbar.mapping import conductance_scale, row_gains, to_conductances, to_weights
from crossbar.periphery.dac import quantize_input
from crossbar.rng import generator, randn_instances


def array_row_slices(n_rows: int, rows_per_array: int) -> list[slice]:
    """The row-blocks (physical arrays) a matrix of ``n_rows`` word lines (inputs, then the bias
    row) is split into."""
    return [slice(s, min(s + rows_per_array, n_rows)) for s in range(0, n_rows, rows_per_array)]


class Tile:
    """Programmed conductances of one weight matrix (``out x in``) for ``instances`` devices sets."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, config: HardwareConfig,
                 x_max: float | None = None, row_groups=None):
        """``row_groups``: sizes of the input blocks (e.g. ``(n_x, n_h)``) for
        ``array.row_scaling = "per_input_block"``; the bias row is a block of its own."""
        if weight.dim() != 2:
            raise CrossbarInputError(f"Tile weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
        self.config = config
        self.device = config.torch_device()
        self.dtype = config.torch_dtype()
        self.out_features, self.in_features = weight.shape
        self.x_max = float(config.dac.x_max if x_max is None else x_max)
        # weights are not detached: a tile built from parameters keeps the autograd graph, which is
        # how hardware-aware training differentiates through programming (build under no_grad to
        # program a fixed chip)
        w = weight.to(self.device, self.dtype)
        self.has_bias = bias is not None and config.array.bias_in_array
        self.digital_bias = None
        if bias is not None and not config.array.bias_in_array:
            self.digital_bias = bias.to(self.device, self.dtype)
        # logical matrix with inputs as rows: (in [+1], out)
        w_rows = w.t()
        if self.has_bias:
            w_rows = torch.cat([w_rows, (bias.to(self.device, self.dtype) / self.x_max)[None, :]], 0)
        self.target_weights = w_rows
        self.row_groups = None if row_groups is None else tuple(int(g) for g in row_groups)
        groups = None
        if self.row_groups is not None:
            groups = list(self.row_groups) + ([1] if self.has_bias else [])
        elif self.has_bias:
            groups = [self.in_features, 1]
        # row_gain a (rows,): word-line read amplitude of each row (all 1 unless per-block scaling)
        self.w_ref, self.row_gain = row_gains(w_rows.detach(), groups, config.array)
        self.scale = conductance_scale(self.w_ref, config.device, config.array)
        self.g_target_pos, self.g_target_neg = to_conductances(w_rows / self.row_gain[:, None], self.w_ref,
                                                               config.device, config.array)
        self._scaled_rows = bool((self.row_gain != 1).any())
        self.n_rows = w_rows.shape[0]
        self.row_blocks = math.ceil(self.n_rows / config.array.rows)
        self.col_blocks = math.ceil(self.out_features / config.array.cols)
        self.g_pos = self.g_neg = None  # (M, rows, out) / (M, rows, out or 1) after program()
        self.seed = None

    # ------------------------------------------------------------------ programming
    @property
    def instances(self) -> int:
        return 0 if self.g_pos is None else self.g_pos.shape[0]

    def program(self, seed: int | None = None, instances: int | None = None, name: str = "tile",
                first: int = 0) -> "Tile":
        """Program ``instances`` device instances (default ``simulation.mc_instances``), seeded.

        Instance m (numbered from ``first``) draws from its own generator ``(seed,
        "program/<name>", m)``, so instance m is the same whether programmed alone or with others.
        """
        seed = self.config.simulation.seed if seed is None else int(seed)
        m_count = self.config.simulation.mc_instances if instances is None else int(instances)
        dev, drift_cfg = self.config.device, self.config.device.drift
        pos, neg, pos_t0, neg_t0 = [], [], [], []
        for m in range(first, first + m_count):
            gen = generator(seed, f"program/{name}", m, "cpu")
            p = devices.program(self.g_target_pos.cpu(), dev, gen)
            n = devices.program(self.g_target_neg.cpu(), dev, gen)
            pos_t0.append(p.g)
            neg_t0.append(n.g)
            pos.append(devices.at_inference(p.g, p, drift_cfg))
            neg.append(devices.at_inference(n.g, n, drift_cfg))
        self.g_pos = torch.stack(pos).to(self.device)
        self.g_neg = torch.stack(neg).to(self.device)
        self.drift_gain = torch.ones(m_count, dtype=self.dtype, device=self.device)
        # Global drift compensation is a digital rescaling of the converted output.  The NL-ADC
        # compares in the analog domain against a ramp whose devices drift with the weights, which
        # compensates drift ratio-metrically, so no digital factor is applied in front of it.
        if drift_cfg.compensation and self.config.adc.kind != "nl_ramp":
            t0_sum = torch.stack(pos_t0).sum((1, 2)) + torch.stack(neg_t0).sum((1, 2))
            now_sum = self.g_pos.sum((1, 2)).cpu() + self.g_neg.sum((1, 2)).cpu()
            self.drift_gain = (now_sum / t0_sum).to(self.device, self.dtype)
        self.seed = seed
        self.name = name
        return self

    def effective_weights(self) -> torch.Tensor:
        """(M, rows, out) weights the programmed devices realise (no read noise)."""
        self._check_programmed()
        return to_weights(self.g_pos, self.g_neg, self.scale) * self.row_gain[:, None]

    def _check_programmed(self):
        if self.g_pos is None:
            raise CrossbarInputError("the tile is not programmed yet: call program(seed) first")

    # ------------------------------------------------------------------ reading
    def mvm(self, x: torch.Tensor, read_gen=None, v_read_actual: float | None = None) -> torch.Tensor:
        """Analog column outputs, (M, B, R, out), in pre-activation units, read noise sampled.

        ``read_gen``: read-noise generator(s), needed only when read noise is on: a list with one
        generator per instance (instance m's noise then does not depend on M), or one generator.
        ``v_read_actual``: actual read voltage (V); default the nominal ``array.v_read``.
        """
        xq = self.word_line_inputs(x)
        y = self._currents(xq)
        var = self._current_variance(xq)
        if var is not None:
            if read_gen is None:
                raise CrossbarInputError("read noise is on: pass a read-noise generator to mvm()")
            y = y + var.clamp(min=0).sqrt() * randn_instances(read_gen, y.shape, self.dtype, self.device)
        return self._to_output(y, v_read_actual)

    def moments(self, x: torch.Tensor, v_read_actual: float | None = None):
        """Mean and read-noise variance of the column outputs, each (M, B, R, out) in
        pre-activation units (the variance is None without read noise).  The converter samples
        the noise (once per conversion, see ``ColumnReadout.convert``)."""
        xq = self.word_line_inputs(x)
        y = self._to_output(self._currents(xq), v_read_actual)
        var = self._current_variance(xq)
        if var is None:
            return y, None
        var = var.clamp(min=0) * self.variance_gain().view(-1, 1, 1, 1)
        if self.config.array.partial_sums == "analog":
            var = var.sum(2, keepdim=True)
        v_nom = self.config.array.v_read
        if v_read_actual is not None and v_read_actual != v_nom:
            var = var * (v_read_actual / v_nom) ** 2
        return y, var

    def word_line_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Validated inputs -> the (M, B, rows) word-line amplitudes: DAC-quantised, the bias row
        appended, times the row gains."""
        self._check_programmed()
        m_count = self.instances
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(m_count, -1, -1)
        if x.dim() != 3 or x.shape[0] != m_count or x.shape[-1] != self.in_features:
            raise CrossbarInputError(
                f"Tile input must be (B, {self.in_features}) or ({m_count}, B, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        xq = quantize_input(x.to(self.device, self.dtype), self.config.dac, self.x_max)
        if self.has_bias:
            xq = torch.cat([xq, torch.full_like(xq[..., :1], self.x_max)], -1)
        return self._gained(xq)

    def dac_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Word-line amplitudes of the first ``x.shape[-1]`` rows: DAC quantisation, then row gains
        (``word_line_inputs`` without validation and bias row; the layers' fast path uses it for
        the x rows of a whole sequence)."""
        return self._gained(quantize_input(x, self.config.dac, self.x_max))

    def _gained(self, xq: torch.Tensor) -> torch.Tensor:
        """Rows times their word-line read amplitudes (per-input-block row scaling)."""
        return xq * self.row_gain[:xq.shape[-1]] if self._scaled_rows else xq

    def _currents(self, xq: torch.Tensor) -> torch.Tensor:
        """(M, B, R, out) column currents per row-block (uS x input units), noise-free."""
        return torch.stack([mm(xq[..., sl]) for sl, mm in zip(self._row_slices(), self.matmuls("signal"))], 2)

    def _current_variance(self, xq: torch.Tensor) -> torch.Tensor | None:
        """(M, B, R, out) read-noise variance of the column currents (exact for independent per-device
        Gaussian noise: sum_j x_j^2 (sigma_j+^2 + sigma_j-^2)); None without read noise."""
        if self.config.device.read_noise.is_zero:
            return None
        x2 = xq * xq
        return torch.stack([mm(x2[..., sl]) for sl, mm in zip(self._row_slices(), self.matmuls("variance"))], 2)

    def matmuls(self, kind: str) -> list[PreparedMatmul]:
        """One prepared product per row-block with G+ - G- (``signal``) or the read-noise variances
        (``variance``), cached per programming -- the layers' fast path multiplies with the same ones."""
        def compute():
            w = self._weight_difference() if kind == "signal" else self._read_variance()
            return [PreparedMatmul(w[:, sl, :]) for sl in self._row_slices()]
        return self._per_programming(f"matmul/{kind}", compute)

    def variance_gain(self) -> torch.Tensor:
        """(M,) factor from current variance to output variance, 1 / (scale * drift gain)^2."""
        return self._per_programming("variance_gain", lambda: 1.0 / (self.scale * self.drift_gain) ** 2)

    def _to_output(self, y: torch.Tensor, v_read_actual: float | None) -> torch.Tensor:
        """Currents (M, B, R, out) -> pre-activation units: conductance scale, drift compensation,
        analog partial sums, a digital bias, the actual read voltage."""
        y = y / self.scale / self.drift_gain.view(-1, 1, 1, 1)
        if self.config.array.partial_sums == "analog":
            y = y.sum(2, keepdim=True)
        if self.digital_bias is not None:
            y = torch.cat([y[:, :, :1, :] + self.digital_bias, y[:, :, 1:, :]], 2)
        v_nom = self.config.array.v_read
        if v_read_actual is not None and v_read_actual != v_nom:
            y = y * (v_read_actual / v_nom)
        return y

    def _per_programming(self, key: str, compute) -> torch.Tensor:
        """``compute()`` of the programmed conductances, cached until they are replaced (not while
        training: a result that requires grad must stay in the graph)."""
        cache = self.__dict__.setdefault("_conductance_cache", {})
        cached = cache.get(key)
        if cached is not None and cached[0] is self.g_pos and cached[1] is self.g_neg:
            return cached[2]
        value = compute()
        if not (self.g_pos.requires_grad or self.g_neg.requires_grad):
            cache[key] = (self.g_pos, self.g_neg, value)
        return value

    def _weight_difference(self) -> torch.Tensor:
        """G+ - G- (uS), cached per programming."""
        return self._per_programming("difference", lambda: self.g_pos - self.g_neg)

    def _read_variance(self) -> torch.Tensor:
        """Per-device read-noise variance of the pair, sigma+^2 + sigma-^2 (uS^2), cached per programming."""
        def compute():
            spec = self.config.device.read_noise
            var = devices.noise_sigma(self.g_pos, spec) ** 2
            var_neg = devices.noise_sigma(self.g_neg, spec) ** 2
            return var + (var_neg if var_neg.shape == var.shape else var_neg.expand_as(var))
        return self._per_programming("read_variance", compute)

    def _row_slices(self):
        if self.config.array.partial_sums == "analog":
            return [slice(0, self.n_rows)]
        return array_row_slices(self.n_rows, self.config.array.rows)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bias={self.has_bias}, "
                f"arrays={self.row_blocks}x{self.col_blocks} of {self.config.array.rows}x"
                f"{self.config.array.cols}, mapping={self.config.array.mapping}, instances={self.instances}")

    def __repr__(self) -> str:
        return f"Tile({self.extra_repr()})"

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the programmed chip (conductances + config + mapping) to HDF5, atomically."""
        import h5py

        self._check_programmed()
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = "crossbar.tile"
                f.attrs["version"] = 1
                f.attrs["config_json"] = self.config.model_dump_json()
                f.attrs["seed"] = self.seed
                f.attrs["name"] = self.name
                f.attrs["x_max"] = self.x_max
                f.attrs["has_bias"] = self.has_bias
                f.attrs["row_groups"] = list(self.row_groups or [])
                f.create_dataset("target_weights", data=self.target_weights.cpu().numpy())
                f.create_dataset("g_pos", data=self.g_pos.cpu().numpy(), compression="gzip")
                f.create_dataset("g_neg", data=self.g_neg.cpu().numpy(), compression="gzip")
                f.create_dataset("drift_gain", data=self.drift_gain.cpu().numpy())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Tile":
        """Re-read a programmed chip written by :meth:`save` (no code is executed from the file)."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise CrossbarInputError(f"tile file {str(path)!r} does not exist")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != "crossbar.tile":
                    raise CrossbarInputError(f"{path}: not a crossbar tile file")
                import json

                config = validate_config(json.loads(f.attrs["config_json"]), source=f"{path}:config_json")
                w_rows = torch.from_numpy(f["target_weights"][()])
                has_bias = bool(f.attrs["has_bias"])
                x_max = float(f.attrs["x_max"])
                row_groups = [int(g) for g in f.attrs.get("row_groups", [])] or None
                g_pos, g_neg = torch.from_numpy(f["g_pos"][()]), torch.from_numpy(f["g_neg"][()])
                drift_gain = torch.from_numpy(f["drift_gain"][()])
                seed, name = int(f.attrs["seed"]), str(f.attrs["name"])
        except CrossbarInputError:
            raise
        except Exception as exc:
            raise CrossbarInputError(f"{path}: cannot read tile file ({type(exc).__name__}: {exc})") from None
        weight = (w_rows[:-1] if has_bias else w_rows).t()
        bias = w_rows[-1] * x_max if has_bias else None
        tile = cls(weight, bias, config, x_max=x_max, row_groups=row_groups)
        if g_pos.shape[1:] != tile.g_target_pos.shape:
            raise CrossbarInputError(f"{path}: conductance shape {tuple(g_pos.shape)} does not match the weights")
        tile.g_pos, tile.g_neg = g_pos.to(tile.device, tile.dtype), g_neg.to(tile.device, tile.dtype)
        tile.drift_gain = drift_gain.to(tile.device, tile.dtype)
        tile.seed, tile.name = seed, name
        return tile

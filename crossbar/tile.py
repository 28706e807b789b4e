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
  conversion per block, summed after the ADC) or summed in the analog domain (``analog``);
* IR drop (``array.wires`` not all 0): every MVM multiplies with the effective matrices T+ - T- of
  the physical arrays (:mod:`crossbar.layout`, :mod:`crossbar.parasitics`) instead of G+ - G-,
  computed once per programming and cached -- so the layers' fast path, which multiplies with the
  same prepared products, sees them too.  Read noise passes through the attenuation map A = T / G
  (device sigma times A).  The NL-ADCs' ramp and bias devices can be placed on extra rows of the
  arrays (:meth:`Tile.ramp_site`), where they load the bit lines and the weights load them.

Shapes: ``x`` is (B, in) or (M, B, in); outputs are (M, B, R, out) with R row-blocks (R = 1 when
analog partial sums).  All M instances are computed in one batched matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from crossbar import devices
from crossbar.config import HardwareConfig, validate_config
from crossbar.errors import CrossbarInputError
from crossbar.io import atomic_path
from crossbar.mapping import conductance_scale, row_gains, to_conductances, to_weights
from crossbar.matmul import PreparedMatmul
from crossbar.periphery.dac import quantize_input
from crossbar.periphery.sampling import noisy_value
from crossbar.pointwise import nonneg
from crossbar.rng import generator, randn_instances

_T = TypeVar("_T")


def column_output(current, scale, drift_gain):
    """A column's current (uS x word-line units) in pre-activation units: divided by the
    conductance scale (uS per weight unit) and the instance's drift gain.  Element-wise, one
    source for tensors and the kernels' scalars (:mod:`crossbar.pointwise`)."""
    return current / scale / drift_gain


def output_variance(current_variance, gain):
    """A column current's read-noise variance (uS^2 x word-line units^2, from the variance product)
    in pre-activation units^2: clamped at 0 (the product's rounding), times ``gain`` =
    1 / (scale * drift gain)^2 (:meth:`Tile.variance_gain`)."""
    return nonneg(current_variance) * gain


def array_row_slices(n_rows: int, rows_per_array: int) -> list[slice]:
    """The row-blocks (physical arrays) a matrix of ``n_rows`` word lines (inputs, then the bias
    row) is split into."""
    return [slice(s, min(s + rows_per_array, n_rows)) for s in range(0, n_rows, rows_per_array)]


def weight_distortion(w: torch.Tensor, w_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gain, residual)`` of weights ``w`` against ``w_ref`` (..., rows, out), per leading index:
    the least-squares gain k_j of each column (w[:, j] ~ k_j w_ref[:, j]), its mean over the columns,
    and the relative residual |w - k w_ref| / |w_ref| (Frobenius norms over rows and columns) --
    what no per-column gain (an ADC range, a ramp that tracks the column) removes.  A column of
    w_ref that is all zero gets gain 1."""
    num, den = (w * w_ref).sum(-2, keepdim=True), (w_ref * w_ref).sum(-2, keepdim=True)
    k = torch.where(den > 0, num / den.clamp(min=1e-300), torch.ones_like(den))
    norm = w_ref.norm(dim=(-2, -1))
    residual = (w - k * w_ref).norm(dim=(-2, -1)) / torch.where(norm > 0, norm, torch.ones_like(norm))
    return k.mean(dim=(-2, -1)), residual


class Tile(nn.Module):
    """Programmed conductances of one weight matrix (``out x in``) for ``instances`` devices sets.

    An ``nn.Module``: the programmed state -- ``g_pos``, ``g_neg`` (M, rows, out) uS, ``drift_gain``
    (M,) and the NL-ADC devices on the extra rows ``extra_rows`` (M, E, out) uS -- are buffers, so
    ``named_buffers()`` and ``print`` of a model show them.  They are not persistent: an analog
    layer's ``state_dict`` carries its chip in its extra state (``rnn_models.layers.chip_state``),
    which a fresh model can load before it has tiles.  A tile lives where its config says
    (``simulation.device`` / ``dtype``): ``.to()`` / ``.half()`` leave its buffers alone, and the
    analog layer that owns it rebuilds the chip on the new device or dtype."""

    g_pos: torch.Tensor | None
    g_neg: torch.Tensor | None
    drift_gain: torch.Tensor
    extra_rows: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        config: HardwareConfig,
        x_max: float | None = None,
        row_groups=None,
    ):
        """``row_groups``: sizes of the input blocks (e.g. ``(n_x, n_h)``) for
        ``array.row_scaling = "per_input_block"``; the bias row is a block of its own."""
        super().__init__()
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
        self.digital_bias: torch.Tensor | None = None
        if bias is not None and not config.array.bias_in_array:
            self.digital_bias = bias.to(self.device, self.dtype)
        # logical matrix with inputs as rows: (in [+1], out)
        w_rows = w.t()
        if self.has_bias and bias is not None:  # (has_bias implies a bias)
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
        self._mapping_scale = self.scale
        self.g_target_pos, self.g_target_neg = to_conductances(
            w_rows / self.row_gain[:, None], self.w_ref, config.device, config.array
        )
        self._scaled_rows = bool((self.row_gain != 1).any())
        self.n_rows = w_rows.shape[0]
        self.row_blocks = math.ceil(self.n_rows / config.array.rows)
        self.col_blocks = math.ceil(self.out_features / config.array.cols)
        # programmed conductances (uS) after program(): (M, rows, out) / (M, rows, out or 1)
        self.register_buffer("g_pos", None, persistent=False)
        self.register_buffer("g_neg", None, persistent=False)
        self.register_buffer("drift_gain", None, persistent=False)  # (M,) after program()
        self.ir_drop = not config.array.wires.ideal
        # devices of the NL-ADCs' ramps on extra rows / shared-ramp columns (crossbar.layout), IR drop only
        self.register_buffer("extra_rows", None, persistent=False)  # (M, E, out) uS, 0 = open
        self.extra_cols: dict[str, tuple[int, torch.Tensor]] = {}  # key -> (column block, (M, E) uS)
        # the same, (1, ...), targets placed before program()
        self.planned_rows: torch.Tensor | None = None
        self.planned_cols: dict[str, tuple[int, torch.Tensor]] = {}
        self._layout_version = 0
        self._plan_version = 0
        self.seed: int | None = None

    # ------------------------------------------------------------------ programming
    @property
    def instances(self) -> int:
        return 0 if self.g_pos is None else self.g_pos.shape[0]

    def program(
        self, seed: int | None = None, instances: int | None = None, name: str = "tile", first: int = 0
    ) -> Tile:
        """Program ``instances`` device instances (default ``simulation.mc_instances``), seeded.

        Instance m (numbered from ``first``) draws from its own generator ``(seed,
        "program/<name>", m)``, so instance m is the same whether programmed alone or with others.
        """
        seed = self.config.simulation.seed if seed is None else int(seed)
        m_count = self.config.simulation.mc_instances if instances is None else int(instances)
        dev, drift_cfg = self.config.device, self.config.device.drift
        pos, neg, pos_t0, neg_t0 = [], [], [], []
        target_pos, target_neg = self.programming_targets()
        if self.ir_drop:
            self.scale = self._mapping_scale * self.aware_span_scale()
        for m in range(first, first + m_count):
            gen = generator(seed, f"program/{name}", m, "cpu")
            p = devices.program(target_pos.cpu(), dev, gen)
            n = devices.program(target_neg.cpu(), dev, gen)
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
        # the NL-ADC devices planned before programming stand at their targets until programmed
        self.extra_rows = None if self.planned_rows is None else self.planned_rows.expand(m_count, -1, -1).clone()
        self.extra_cols = {k: (cb, v.expand(m_count, -1).clone()) for k, (cb, v) in self.planned_cols.items()}
        self._layout_version += 1
        return self

    def programmed_state(self) -> dict:
        """Everything :meth:`program` (and the NL-ADCs placing their devices) decided, as CPU tensors
        and plain values: the conductances (uS), drift gains, the conductance scale (IR-drop-aware
        span included) and the NL-ADC devices on the arrays -- what :meth:`load_programmed_state`
        needs to rebuild the programmed tile without drawing again."""
        g_pos, g_neg = self.programmed_conductances()
        return {
            "g_pos": g_pos.detach().cpu(),
            "g_neg": g_neg.detach().cpu(),
            "drift_gain": self.drift_gain.detach().cpu(),
            "scale": float(self.scale),
            "extra_rows": None if self.extra_rows is None else self.extra_rows.detach().cpu(),
            "extra_cols": {k: (int(cb), v.detach().cpu()) for k, (cb, v) in self.extra_cols.items()},
            "seed": self.seed,
            "name": self.name,
        }

    def load_programmed_state(self, state: dict) -> Tile:
        """Rebuild the programmed tile from :meth:`programmed_state` (a tile built from the same
        weights and config): conductances on this tile's device and dtype, no draws, no solves (with
        IR drop the effective matrices are computed from the restored devices when first needed)."""
        shape = (self.n_rows, self.out_features)
        g_pos = state["g_pos"]
        if g_pos.dim() != 3 or tuple(g_pos.shape[1:]) != shape:
            raise CrossbarInputError(
                f"programmed conductances of shape {tuple(g_pos.shape)}, expected (M, {shape[0]}, {shape[1]})"
            )
        self.g_pos = g_pos.to(self.device, self.dtype)
        self.g_neg = state["g_neg"].to(self.device, self.dtype)
        self.drift_gain = state["drift_gain"].to(self.device, self.dtype)
        self.scale = float(state["scale"])
        self.extra_rows = state["extra_rows"]
        self.extra_cols = {k: (int(cb), v) for k, (cb, v) in state["extra_cols"].items()}
        self.seed, self.name = state["seed"], state["name"]
        self._layout_version += 1
        return self

    def programming_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The conductances (uS) programming aims at: the mapped targets, or with
        ``array.wires.ir_drop_aware_programming`` targets pre-distorted so that each array's
        effective matrix approaches the mapped ones (fixed point G <- clip(G target / T(G)),
        ``aware_iterations`` times, within g_min..g_max), jointly with the NL-ADC devices planned on
        the arrays (:meth:`plan_extra_devices`; their pre-distorted targets: :meth:`aware_extra`).
        With the offset mapping the reference column takes the first column block's correction."""
        wires = self.config.array.wires
        if not (self.ir_drop and wires.ir_drop_aware_programming):
            return self.g_target_pos, self.g_target_neg
        cached = self.__dict__.get("_aware_targets")
        if cached is None or cached[0] != self._plan_version:
            from crossbar.layout import effective_arrays

            dev = self.config.device
            tp0 = self.g_target_pos.detach().cpu().double()[None]
            tn0 = self.g_target_neg.detach().cpu().double()[None]
            tr = self.planned_rows
            tc = dict(self.planned_cols)
            s_w = 1.0
            for attempt in range(2):
                # weight targets with their span scaled by s_w (headroom for the boosted devices)
                tp, tn = dev.g_min + s_w * (tp0 - dev.g_min), dev.g_min + s_w * (tn0 - dev.g_min)
                gp, gn, gr, gc = tp.clone(), tn.clone(), None if tr is None else tr.clone(), dict(tc)
                for _ in range(wires.aware_iterations):
                    t_pos, t_neg, t_ex, t_cols = effective_arrays(gp, gn, self.config.array, gr, gc)
                    if self.config.array.mapping == "offset":
                        t_neg = t_neg[..., :1]
                    need = max(_required(tp, gp, t_pos), _required(tn, gn, t_neg))
                    gp = _aware_step(gp, tp, t_pos, dev)
                    gn = _aware_step(gn, tn, t_neg, dev)
                    if gr is not None and tr is not None:  # (gr starts as a copy of tr: both or neither)
                        gr = _aware_step(gr, tr, t_ex, dev)
                    gc = {k: (cb, _aware_step(v, tc[k][1], t_cols[k], dev)) for k, (cb, v) in gc.items()}
                if attempt or need <= dev.g_max:
                    break
                s_w = (dev.g_max - dev.g_min) / (need - dev.g_min)
            cached = (self._plan_version, gp[0].to(self.g_target_pos), gn[0].to(self.g_target_neg), gr, gc, s_w)
            self._aware_targets = cached
        if not (self.g_target_pos.requires_grad or self.g_target_neg.requires_grad):
            return cached[1], cached[2]
        g_min, s_w = self.config.device.g_min, cached[5]  # training: the mapped targets' gradient
        return (
            _with_gradient_of(cached[1], g_min + s_w * (self.g_target_pos - g_min)),
            _with_gradient_of(cached[2], g_min + s_w * (self.g_target_neg - g_min)),
        )

    def aware_span_scale(self) -> float:
        """s <= 1: IR-drop-aware programming maps the weights onto s x the conductance span when the
        boosted devices would otherwise pass g_max (the tile's conductance scale is s x the
        mapping's, so outputs stay in pre-activation units); 1 without it."""
        wires = self.config.array.wires
        if not (self.ir_drop and wires.ir_drop_aware_programming):
            return 1.0
        self.programming_targets()
        return self._aware_targets[5]

    def aware_extra(self):
        """(rows (1, E, out), cols {key: (block, (1, E))}): the pre-distorted targets (uS) of the
        planned NL-ADC devices (IR-drop-aware programming), computed with the weights'."""
        self.programming_targets()
        return self._aware_targets[3], self._aware_targets[4]

    def effective_weights(self) -> torch.Tensor:
        """(M, rows, out) weights the programmed devices realise (no read noise; through the
        wires with IR drop)."""
        if self.ir_drop:
            return self._weight_difference() / self.scale * self.row_gain[:, None]
        return self._device_weights()

    def _device_weights(self) -> torch.Tensor:
        """(M, rows, out) weights of the programmed devices' conductances, without wires."""
        g_pos, g_neg = self.programmed_conductances()
        return to_weights(g_pos, g_neg, self.scale) * self.row_gain[:, None]

    # ------------------------------------------------------------------ IR drop
    def ir_drop_distortion(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """How the wires change the weights this tile's devices realise: ``(gain, residual)`` per
        instance (M,), float64, from :func:`weight_distortion` of the effective weights (through
        the wires) against the same devices' weights without wires.  None without IR drop, and
        with IR-drop-aware programming (its devices are pre-distorted on purpose: the comparison
        would measure the pre-distortion).  A large residual is an error no gain or calibration
        removes (docs/parasitics.md, the offset mapping under IR drop)."""
        if not self.ir_drop or self.config.array.wires.ir_drop_aware_programming:
            return None
        wired = self.effective_weights().detach().double().cpu()  # (the cached effective matrices)
        return weight_distortion(wired, self._device_weights().detach().double().cpu())

    def effective_conductances(self):
        """``(t_pos, t_neg, t_extra, t_cols)``: the effective conductances (uS, float64, CPU) of the
        programmed devices through the arrays' wires (:func:`crossbar.layout.effective_arrays`),
        cached per programming and periphery layout."""
        from crossbar.layout import effective_arrays

        g_pos, g_neg = self.programmed_conductances()
        return self._per_programming(
            "effective",
            lambda: effective_arrays(g_pos, g_neg, self.config.array, self.extra_rows, self.extra_cols),
        )

    def set_extra_devices(self, m: int | None, rows=None, cols=None) -> None:
        """Place NL-ADC devices: ``rows`` {column index tensor: (M or 1, e, C) uS} on the extra rows,
        ``cols`` {key: (column block, (M or 1, e) uS)} on shared-ramp columns; ``m``: only instance m
        (local index), else all.  The extra rows grow to the largest e."""
        g_pos, _ = self.programmed_conductances()
        self.extra_rows, self.extra_cols = _merge_extra(
            self.extra_rows, self.extra_cols, g_pos.shape[0], self.out_features, m, rows, cols
        )
        self._layout_version += 1

    def clear_plan(self) -> None:
        """Forget the planned NL-ADC devices (:meth:`plan_extra_devices`)."""
        self.planned_rows, self.planned_cols = None, {}
        self._plan_version += 1

    def plan_extra_devices(self, rows=None, cols=None) -> None:
        """Before :meth:`program`: NL-ADC device targets (as :meth:`set_extra_devices`, one instance)
        that stand on the arrays until the NL-ADCs are programmed -- the load every MVM and
        calibration sees, and part of IR-drop-aware programming."""
        self.planned_rows, self.planned_cols = _merge_extra(
            self.planned_rows, self.planned_cols, 1, self.out_features, None, rows, cols
        )
        self._plan_version += 1

    def ramp_site(self, columns: torch.Tensor, key: str, shared: bool) -> RampSite:
        """Where an NL-ADC for tile ``columns`` puts its ramp and bias devices (IR drop only)."""
        return RampSite(self, columns, key, shared)

    def _check_programmed(self):
        self.programmed_conductances()

    def programmed_conductances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g_pos, g_neg)``: the programmed conductances (uS), (M, rows, out) and (M, rows, out)
        or (M, rows, 1) (offset mapping); an error before :meth:`program`."""
        if self.g_pos is None or self.g_neg is None:
            raise CrossbarInputError("the tile is not programmed yet: call program(seed) first")
        return self.g_pos, self.g_neg

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
            y = noisy_value(y, nonneg(var), randn_instances(read_gen, y.shape, self.dtype, self.device))
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
        var = output_variance(var, self.variance_gain().view(-1, 1, 1, 1))
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
        return xq * self.row_gain[: xq.shape[-1]] if self._scaled_rows else xq

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
            precision = "full" if kind == "signal" else self.config.simulation.variance_precision
            return [PreparedMatmul(w[:, sl, :], precision) for sl in self._row_slices()]

        return self._per_programming(f"matmul/{kind}", compute)

    def variance_gain(self) -> torch.Tensor:
        """(M,) factor from current variance to output variance, 1 / (scale * drift gain)^2."""
        return self._per_programming("variance_gain", lambda: 1.0 / (self.scale * self.drift_gain) ** 2)

    def _to_output(self, y: torch.Tensor, v_read_actual: float | None) -> torch.Tensor:
        """Currents (M, B, R, out) -> pre-activation units: conductance scale, drift compensation,
        analog partial sums, a digital bias, the actual read voltage."""
        y = column_output(y, self.scale, self.drift_gain.view(-1, 1, 1, 1))
        if self.config.array.partial_sums == "analog":
            y = y.sum(2, keepdim=True)
        if self.digital_bias is not None:
            y = torch.cat([y[:, :, :1, :] + self.digital_bias, y[:, :, 1:, :]], 2)
        v_nom = self.config.array.v_read
        if v_read_actual is not None and v_read_actual != v_nom:
            y = y * (v_read_actual / v_nom)
        return y

    def _per_programming(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()`` of the programmed conductances, cached until they (or the NL-ADC devices
        placed on the arrays) are replaced (not while training: a result that requires grad must
        stay in the graph)."""
        g_pos, g_neg = self.programmed_conductances()
        cache = self.__dict__.setdefault("_conductance_cache", {})
        cached = cache.get(key)
        version = self.__dict__.get("_layout_version", 0)
        if cached is not None and cached[0] is g_pos and cached[1] is g_neg and cached[3] == version:
            return cached[2]
        value = compute()
        if not (g_pos.requires_grad or g_neg.requires_grad):
            cache[key] = (g_pos, g_neg, value, version)
        return value

    def _weight_difference(self) -> torch.Tensor:
        """G+ - G- (uS), cached per programming; with IR drop the effective T+ - T- (while training,
        A+ G+ - A- G- with the attenuation maps A = T / G held constant, so gradients flow)."""
        if self.ir_drop:
            return self._per_programming("difference", self._effective_difference)
        g_pos, g_neg = self.programmed_conductances()
        return self._per_programming("difference", lambda: g_pos - g_neg)

    def _attenuation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A+ = T+ / G+ and A- = T- / G- (1 where G = 0), in the tile's dtype and device."""

        def compute():
            t_pos, t_neg, _, _ = self.effective_conductances()
            gp = self.g_pos.detach().cpu().double()
            gn = self.g_neg.detach().cpu().double().expand_as(gp)
            a_pos = torch.where(gp > 0, t_pos / gp.clamp(min=1e-300), torch.ones_like(gp))
            a_neg = torch.where(gn > 0, t_neg / gn.clamp(min=1e-300), torch.ones_like(gn))
            return a_pos.to(self.device, self.dtype), a_neg.to(self.device, self.dtype)

        return self._per_programming("attenuation", compute)

    def _effective_difference(self) -> torch.Tensor:
        g_pos, g_neg = self.programmed_conductances()
        if g_pos.requires_grad or g_neg.requires_grad:
            a_pos, a_neg = self._attenuation()
            return a_pos * g_pos - a_neg * g_neg
        t_pos, t_neg, _, _ = self.effective_conductances()
        return (t_pos - t_neg).to(self.device, self.dtype)

    def _read_variance(self) -> torch.Tensor:
        """Per-device read-noise variance of the pair, sigma+^2 + sigma-^2 (uS^2), cached per
        programming; with IR drop (A+ sigma+)^2 + (A- sigma-)^2 (attenuation maps A = T / G)."""

        def compute():
            spec = self.config.device.read_noise
            var = devices.noise_sigma(self.g_pos, spec) ** 2
            var_neg = devices.noise_sigma(self.g_neg, spec) ** 2
            var_neg = var_neg if var_neg.shape == var.shape else var_neg.expand_as(var)
            if self.ir_drop:  # each device's noise reaches the output attenuated like its signal
                a_pos, a_neg = self._attenuation()
                return var * a_pos**2 + var_neg * a_neg**2
            return var + var_neg

        return self._per_programming("read_variance", compute)

    def _row_slices(self):
        if self.config.array.partial_sums == "analog":
            return [slice(0, self.n_rows)]
        return array_row_slices(self.n_rows, self.config.array.rows)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, bias={self.has_bias}, "
            f"arrays={self.row_blocks}x{self.col_blocks} of {self.config.array.rows}x"
            f"{self.config.array.cols}, mapping={self.config.array.mapping}, instances={self.instances}"
        )

    def _apply(self, fn, recurse=True):
        """Buffers stay as programmed (see the class docstring: the owning layer moves a chip)."""
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the programmed chip (conductances + config + mapping) to HDF5, atomically."""
        import h5py

        g_pos, g_neg = self.programmed_conductances()
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
                f.create_dataset("g_pos", data=g_pos.cpu().numpy(), compression="gzip")
                f.create_dataset("g_neg", data=g_neg.cpu().numpy(), compression="gzip")
                f.create_dataset("drift_gain", data=self.drift_gain.cpu().numpy())
                if self.digital_bias is not None:  # a bias added after conversion (not in the array)
                    f.create_dataset("digital_bias", data=self.digital_bias.cpu().numpy())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Tile:
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
                digital_bias = torch.from_numpy(f["digital_bias"][()]) if "digital_bias" in f else None
                seed, name = int(f.attrs["seed"]), str(f.attrs["name"])
        except CrossbarInputError:
            raise
        except Exception as exc:
            raise CrossbarInputError(f"{path}: cannot read tile file ({type(exc).__name__}: {exc})") from None
        weight = (w_rows[:-1] if has_bias else w_rows).t()
        bias = w_rows[-1] * x_max if has_bias else digital_bias  # files written before 2026-12-07: none
        tile = cls(weight, bias, config, x_max=x_max, row_groups=row_groups)
        if g_pos.shape[1:] != tile.g_target_pos.shape:
            raise CrossbarInputError(f"{path}: conductance shape {tuple(g_pos.shape)} does not match the weights")
        tile.g_pos, tile.g_neg = g_pos.to(tile.device, tile.dtype), g_neg.to(tile.device, tile.dtype)
        tile.drift_gain = drift_gain.to(tile.device, tile.dtype)
        tile.seed, tile.name = seed, name
        if tile.ir_drop:  # the span IR-drop-aware programming used (NL-ADC rows are not saved)
            tile.scale = tile._mapping_scale * tile.aware_span_scale()
        return tile


def _merge_extra(base_rows, base_cols: dict, m_count: int, out: int, m, rows, cols):
    """Extra-row devices (M, E, out) and shared-ramp columns {key: (block, (M, E))} with ``rows`` /
    ``cols`` placed (instance ``m`` or all); E grows to the largest device count."""
    e_new = max([v.shape[-2] for v in (rows or {}).values()] + [v[1].shape[-1] for v in (cols or {}).values()] + [0])
    e_old = 0 if base_rows is None else base_rows.shape[1]
    e = max(e_new, e_old, *[v.shape[1] for _, v in base_cols.values()])
    ex = torch.zeros(m_count, e, out, dtype=torch.float64)
    if e_old:
        ex[:, :e_old] = base_rows
    sel = slice(None) if m is None else slice(m, m + 1)
    for idx, v in (rows or {}).items():
        ex[sel, : v.shape[-2], idx] = v.detach().cpu().double()
    new_cols = {}
    for key, (cb, v) in base_cols.items():
        full = torch.zeros(m_count, e, dtype=torch.float64)
        full[:, : v.shape[1]] = v
        new_cols[key] = (cb, full)
    for key, (cb, v) in (cols or {}).items():
        full = new_cols.get(key, (cb, torch.zeros(m_count, e, dtype=torch.float64)))[1]
        full[sel, : v.shape[-1]] = v.detach().cpu().double()
        new_cols[key] = (cb, full)
    return ex, new_cols


def _required(target: torch.Tensor, g: torch.Tensor, t: torch.Tensor) -> float:
    """The largest conductance (uS) the devices would need, unbounded: target / A, A = T / G."""
    a = torch.where(g > 0, t / g.clamp(min=1e-300), torch.ones_like(g))
    return float(torch.where(target > 0, target / a.clamp(min=1e-300), target).max())


def _with_gradient_of(pre: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pre-distorted conductances ``pre`` (computed without autograd: the IR-drop solves run in
    numpy) that carry ``target``'s gradient, as d pre / d target = pre / target element-wise (1
    where the target is 0), so that hardware-aware training reaches the weights through
    IR-drop-aware programming.  The values are ``pre``'s exactly; without a graph, ``pre`` itself."""
    if not target.requires_grad:
        return pre
    t = target.detach()
    ratio = torch.where(t > 0, pre / torch.where(t > 0, t, torch.ones_like(t)), torch.ones_like(t))
    return pre + (target - t) * ratio


def _aware_step(g: torch.Tensor, target: torch.Tensor, t: torch.Tensor, dev) -> torch.Tensor:
    """One IR-drop-aware fixed-point step: G <- clip(G target / T, g_min, g_max) (0 targets stay 0)."""
    ratio = torch.where(t > 0, target / t.clamp(min=1e-300), torch.ones_like(t))
    return torch.where(target > 0, (g * ratio).clamp(dev.g_min, dev.g_max), target)


class RampSite:
    """The place of one NL-ADC's ramp and bias devices in a tile's arrays (IR drop; see
    :mod:`crossbar.layout`): per column on the extra rows (bias devices first, then one row per ramp
    step), or for a shared ramp on an extra bit line in the array of its first column block.

    The NL-ADC calls :meth:`effective` while it calibrates (what its devices deliver through the
    wires, with the weights and the other NL-ADCs' devices in place), :meth:`attach` when they are
    final, and :meth:`aware_targets` for IR-drop-aware programming.
    """

    def __init__(self, tile: Tile, columns: torch.Tensor, key: str, shared: bool):
        from crossbar.layout import block_of_column

        self.tile, self.columns, self.key, self.shared = tile, columns.to(torch.long).cpu(), key, shared
        self.deferred = False  # True: the NL-ADC's final thresholds come from refresh() (program_chip)
        cols = self.tile.config.array.cols
        self.blocks = sorted({block_of_column(int(c), cols) for c in self.columns})

    def _place(self, g_ramp: torch.Tensor, g_bias: torch.Tensor):
        dev = torch.cat([g_bias, g_ramp], -1).double()  # (R, nb + L)
        if self.shared:
            return None, {self.key: (self.blocks[0], dev[..., 0, :])}
        return {self.columns: dev.transpose(-1, -2)}, None

    def warm(self) -> None:
        """Solve the weight rows of this NL-ADC's arrays for every programmed instance at once (the
        instances on a thread pool) so that the calibration's per-instance solves start from the
        solver's cached state after them (:data:`crossbar.parasitics.PREFIX_CACHE`).  Only where
        that state applies: ramp rows after the weight rows (``near_sense``), a ramp per column."""
        from crossbar.layout import effective_arrays

        tile, w = self.tile, self.tile.config.array.wires
        if self.shared or w.ramp_rows != "near_sense" or not tile.ir_drop or tile.g_pos is None:
            return
        g_pos, g_neg = tile.programmed_conductances()
        m_count = g_pos.shape[0]
        open_rows = torch.zeros(m_count, 1, tile.out_features, dtype=torch.float64)
        cols = {k: (cb, torch.zeros(m_count, 1, dtype=torch.float64)) for k, (cb, _) in tile.extra_cols.items()}
        effective_arrays(g_pos, g_neg, tile.config.array, open_rows, cols, col_blocks=self.blocks, weights=False)

    def attach(self, m: int | None, g_ramp: torch.Tensor, g_bias: torch.Tensor) -> None:
        """Record the devices ((M or 1, R, L) ramp, (M or 1, R, nb) bias, uS) in the tile
        (instance ``m``, local index, or all)."""
        rows, cols = self._place(g_ramp, g_bias)
        if self.tile.g_pos is None:  # before the tile is programmed: a plan
            self.tile.plan_extra_devices(rows, cols)
        else:
            self.tile.set_extra_devices(m, rows, cols)

    def effective(self, m: int, g_ramp: torch.Tensor, g_bias: torch.Tensor, targets: bool = False):
        """Effective conductances (uS, float64) of ramp (R, L) and bias (R, nb) devices of instance
        ``m`` (local index): row k of T of the array they sit on, every other device in place
        (``targets``: the tile's target weights instead of the programmed ones)."""
        g_ramp = g_ramp[None] if g_ramp.dim() == 2 else g_ramp
        g_bias = g_bias[None] if g_bias.dim() == 2 else g_bias
        return self.effective_many([m], g_ramp, g_bias, targets)[0]

    def effective_many(self, ms: list[int], g_ramp: torch.Tensor, g_bias: torch.Tensor, targets: bool = False):
        """:meth:`effective` of several instances ``ms`` (local indices) at once, their devices
        stacked ((len(ms), R, L) ramp, (len(ms), R, nb) bias): one batch of solves (the instances'
        arrays in parallel threads).  Returns one (ramp, bias) pair per instance."""
        from crossbar.layout import effective_arrays

        tile = self.tile
        k = len(ms)
        idx_m = torch.as_tensor(ms, dtype=torch.long)
        nb, L = g_bias.shape[-1], g_ramp.shape[-1]
        rows, cols = self._place(g_ramp, g_bias)
        e_old = 0 if tile.extra_rows is None else tile.extra_rows.shape[1]
        e = max(e_old, nb + L)
        ex = torch.zeros(k, e, tile.out_features, dtype=torch.float64)
        if tile.extra_rows is not None and e_old:
            ex[:, :e_old] = tile.extra_rows[idx_m]
        ext_cols = {
            key: (cb, torch.cat([v[idx_m], torch.zeros(k, e - v.shape[1], dtype=torch.float64)], 1))
            for key, (cb, v) in tile.extra_cols.items()
        }
        if rows is not None:
            for idx, v in rows.items():
                ex[:, :, idx] = 0.0
                ex[:, : v.shape[-2], idx] = v
        if cols is not None:
            for key, (cb, v) in cols.items():
                full = torch.zeros(k, e, dtype=torch.float64)
                full[:, : v.shape[-1]] = v
                ext_cols[key] = (cb, full)
        if targets:
            gp, gn = tile.g_target_pos[None].expand(k, -1, -1), tile.g_target_neg[None].expand(k, -1, -1)
        else:
            g_pos, g_neg = tile.programmed_conductances()
            gp, gn = g_pos[idx_m], g_neg[idx_m]
        _, _, t_extra, t_cols = effective_arrays(
            gp, gn, tile.config.array, ex, ext_cols, col_blocks=self.blocks, weights=False
        )
        return [self._devices_of(t_extra, t_cols, i, nb, L) for i in range(k)]

    def _devices_of(self, t_extra, t_cols, m: int, nb: int, L: int):
        """This NL-ADC's (ramp (R, L), bias (R, nb)) entries of instance ``m`` in the effective
        conductances of the extra rows / shared-ramp columns (:func:`crossbar.layout.effective_arrays`)."""
        if self.shared:
            t = t_cols[self.key][m, : nb + L][None]  # (1, nb + L)
        else:
            t = t_extra[m, : nb + L][:, self.columns].t()  # (C, nb + L)
        return t[:, nb:].contiguous(), t[:, :nb].contiguous()

    def from_tile(self, m: int, nb: int, L: int):
        """Effective ramp (R, L) and bias (R, nb) conductances (uS) of instance ``m``'s placed devices,
        from the tile's cached effective matrices (the solve the MVMs use)."""
        _, _, t_extra, t_cols = self.tile.effective_conductances()
        return self._devices_of(t_extra, t_cols, m, nb, L)

    def required(self, ramp_target: torch.Tensor, bias_target: torch.Tensor) -> float:
        """The largest conductance (uS) the planned ramp and bias devices would need, unbounded,
        for their effective conductances to meet ``ramp_target`` / ``bias_target``: target / A with
        the attenuation A = T / G of the tile's last IR-drop-aware iteration."""
        from crossbar.layout import effective_arrays

        tile = self.tile
        nb, L = bias_target.numel(), ramp_target.numel()
        rows, cols = tile.aware_extra()
        gp, gn = tile.programming_targets()
        _, _, t_ex, t_cols = effective_arrays(
            gp[None], gn[None], tile.config.array, rows, cols, col_blocks=self.blocks, weights=False
        )
        if self.shared:
            g, t = cols[self.key][1][0, : nb + L], t_cols[self.key][0, : nb + L]
        else:
            g, t = rows[0, : nb + L][:, self.columns], t_ex[0, : nb + L][:, self.columns]
        target = torch.cat([bias_target.double().flatten(), ramp_target.double().flatten()])
        target = target[:, None] if g.dim() == 2 else target
        a = torch.where(g > 0, t / g.clamp(min=1e-300), torch.ones_like(g))
        return float((target / a.clamp(min=1e-300)).max())

    def aware_targets(self, ramp_target: torch.Tensor, bias_target: torch.Tensor, iterations: int, dev):
        """Ramp (R, L) and bias (R, nb) targets pre-distorted so that their effective conductances
        approach the given ones: from the tile's joint pre-distortion of weights and planned NL-ADC
        devices when these were planned (:func:`crossbar.periphery.readout.program_chip`), else a
        fixed point of their own in the array of the tile's target weights (bounded by g_min/g_max)."""
        nb, L = bias_target.shape[-1], ramp_target.shape[-1]
        rows, cols = (
            self.tile.aware_extra() if self.tile.planned_rows is not None or self.tile.planned_cols else (None, {})
        )
        if self.shared and self.key in cols:
            t = cols[self.key][1][0, : nb + L][None]
            return t[:, nb:].contiguous(), t[:, :nb].contiguous()
        if not self.shared and rows is not None and rows.shape[1] >= nb + L:
            t = rows[0, : nb + L][:, self.columns].t()
            return t[:, nb:].contiguous(), t[:, :nb].contiguous()
        gr, gb = ramp_target.double().clone(), bias_target.double().clone()
        for _ in range(iterations):
            tr, tb = self.effective(0, gr, gb, targets=True)
            gr = _aware_step(gr, ramp_target.double(), tr, dev)
            gb = _aware_step(gb, bias_target.double(), tb, dev)
        return gr, gb

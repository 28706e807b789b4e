"""Fast CPU path of the programmed analog LSTM and GRU: the reference time step, element-wise work fused.

The reference step (``AnalogLSTM._direction`` / ``AnalogGRU._direction`` through
:class:`~rnn_models.analog.AnalogMatrix`) runs dozens of small torch operations per time step.
Here one step is: the matrix products (signal and read-noise variance of each matrix, through the
tile's own :class:`~crossbar.matmul.PreparedMatmul` -- exactly the reference's calls), the
reference's noise draws, and two numba kernels that do everything else element by element:

* gates: each matrix's output scaling (conductance scale, drift gain) and read-noise variance,
  the NL-ADCs of all its columns at once (column groups merged in column order: thresholds
  counted, one Gaussian per conversion, value tables), the saturation count of linear readouts,
  then the cell's first digital step (LSTM: c = f*c + i*g; GRU: nx + r*nh) in fixed point;
* hidden: after ``torch.tanh`` (the reference's own call), the new h in fixed point (LSTM:
  o * tanh(c); GRU: (1 - z) * n + z * h) and the next step's word-line inputs of every matrix that
  reads h (DAC quantisation, row gains, squares, DAC clipping counts), plus the x rows copied in.

The element-wise physics inside the kernels is not a copy of the reference's: the DAC levels and
fixed-point registers (:func:`crossbar.pointwise.saturating_round`), the column output scaling
and variance (:func:`crossbar.tile.column_output`, :func:`~crossbar.tile.output_variance`) and the
cell updates (:mod:`rnn_models.cell_math`) are the functions the reference runs on tensors,
compiled for scalars (:mod:`crossbar.pointwise`; ``tests/crossbar/test_pointwise.py`` runs both
forms on the same values), and the NL-ADC count is the converter's own CPU kernel
(:mod:`crossbar.periphery.kernels`).  What is written here is the loop around them: which values
go where, in the reference's order, so outputs, final states and health counters are identical --
not just close (``tests/rnn_models/test_fastpath.py``).
Configurations the kernels do not cover (CUDA, autograd, per-array conversion of digital partial
sums, a digital bias, linear-ramp ADC readouts, a non-digital cell tanh, unsorted ramps, column
groups of different resolution) take the reference path; :func:`supported` says which.
"""

from __future__ import annotations

import numpy as np
import torch

from crossbar.periphery import kernels
from crossbar.pointwise import compiled, saturating_round
from crossbar.rng import randn_instances
from crossbar.tile import column_output, output_variance
from rnn_models.analog import fixed_point_grid
from rnn_models.cell_math import gru_candidate_input, gru_hidden, lstm_cell, lstm_hidden

numba = kernels.numba
np_ = kernels.as_numpy

if numba is not None:
    from crossbar.periphery.kernels import count_below, noisy_input

    # the element-wise physics, compiled from the one source the reference path runs on tensors
    _saturating_round = compiled(saturating_round)
    _column_output = compiled(column_output)
    _output_variance = compiled(output_variance)
    _lstm_cell = compiled(lstm_cell)
    _lstm_hidden_value = compiled(lstm_hidden)
    _gru_candidate_input = compiled(gru_candidate_input)
    _gru_hidden_value = compiled(gru_hidden)

    @numba.njit(cache=True, nogil=True)
    def _convert_row(yr, vr, z, m, conv, v2, out):  # pragma: no cover - compiled
        """One (instance ``m``, batch row) of one matrix: output scaling, variance, every column's
        NL-ADC, values into ``out``; returns how many (noise-free) outputs a linear readout
        saturates.  ``conv``: the matrix's converter (``_Matrix.converter``)."""
        (
            has_var,
            scale,
            drift,
            vgain,
            t_kc,
            read_var,
            noisy,
            cmp2,
            values,
            lin_lo,
            lin_hi,
            linear,
            cnt,
            y_all,
            v_all,
            yn,
        ) = conv
        n_cols = yr.shape[0]
        d, vgm = drift[m], vgain[m]
        for k in range(n_cols):  # the tile's output scaling
            y_all[k] = _column_output(yr[k], scale, d)
        if has_var:  # and read-noise variance
            for k in range(n_cols):
                v_all[k] = _output_variance(vr[k], vgm)
        saturated = 0
        if linear:
            for k in range(n_cols):
                saturated += (y_all[k] < lin_lo) | (y_all[k] > lin_hi)
        count_below(t_kc[m], y_all, cnt)
        if noisy:
            noisy_input(y_all, cnt, read_var[m], v_all, z, v2, cmp2, has_var, yn)
            count_below(t_kc[m], yn, cnt)
        for k in range(n_cols):
            out[k] = values[k, cnt[k]]
        return saturated

    @numba.njit(cache=True, nogil=True)
    def _write_input(p, xq, x2, row, in_scale, quantize, x_max, q_step, gain, gained):  # pragma: no cover
        """Word line ``row`` for the digital value ``p``: / DAC full scale, quantise, row gain;
        returns 1 when the DAC clips it."""
        hs = p / in_scale
        q = hs
        if quantize:
            q = _saturating_round(hs, -x_max, x_max, q_step)
        if gained:
            q = q * gain
        xq[row] = q
        x2[row] = q * q
        return 1 if abs(hs) > 1 else 0

    @numba.njit(cache=True, nogil=True)
    def _lstm_gates(y, v, conv, z_a, idx_a, z_g, idx_g, v2, c, o_out, fixed, step, lo, hi):  # pragma: no cover
        """Gate columns (PyTorch's order i, f, g, o) converted, c = f*c + i*g in fixed point, o kept."""
        m_count, b_count, n_cols = y.shape
        hidden = c.shape[2]
        z_all, a = np.empty(n_cols, y.dtype), np.empty(n_cols, y.dtype)
        for m in range(m_count):
            for b in range(b_count):
                if conv[6]:  # noisy: the two groups' draws, put in column order
                    for j in range(idx_a.shape[0]):
                        z_all[idx_a[j]] = z_a[m, b, j]
                    for j in range(idx_g.shape[0]):
                        z_all[idx_g[j]] = z_g[m, b, j]
                _convert_row(y[m, b], v[m, b], z_all, m, conv, v2, a)
                for j in range(hidden):
                    s = _lstm_cell(a[j], a[hidden + j], a[2 * hidden + j], c[m, b, j])
                    if fixed:
                        s = _saturating_round(s, lo, hi, step)
                    c[m, b, j] = s
                    o_out[m, b, j] = a[3 * hidden + j]

    @numba.njit(cache=True, nogil=True)
    def _lstm_hidden(
        o,
        tanh_c,
        fixed,
        step,
        lo,
        hi,
        h_out,
        xq,
        x2,
        n_x,
        in_scale,
        quantize,
        x_max,
        q_step,
        row_gain,
        gained,
        xq_next,
        x2_next,
        has_next,
    ):  # pragma: no cover - compiled
        """h = o * tanh(c) into ``h_out``; the next step's word lines; returns the DAC clippings."""
        m_count, b_count, hidden = o.shape
        clipped = 0
        for m in range(m_count):
            for b in range(b_count):
                xq_mb, x2_mb = xq[m, b], x2[m, b]
                for j in range(hidden):
                    p = _lstm_hidden_value(o[m, b, j], tanh_c[m, b, j])
                    if fixed:
                        p = _saturating_round(p, lo, hi, step)
                    h_out[m, b, j] = p
                    clipped += _write_input(
                        p, xq_mb, x2_mb, n_x + j, in_scale[n_x + j], quantize, x_max, q_step, row_gain[n_x + j], gained
                    )
                if has_next:
                    for j in range(n_x):
                        xq[m, b, j] = xq_next[m, b, j]
                        x2[m, b, j] = x2_next[m, b, j]
        return clipped

    @numba.njit(cache=True, nogil=True)
    def _gru_gates(
        y_rz,
        v_rz,
        z_rz,
        conv_rz,
        y_nx,
        v_nx,
        z_nx,
        conv_nx,
        y_nh,
        v_nh,
        z_nh,
        conv_nh,
        v2,
        pre,
        z_out,
        fixed,
        step,
        lo,
        hi,
    ):  # pragma: no cover - compiled
        """r, z, nx, nh from their three matrices; pre = nx + r * nh in fixed point (before tanh);
        returns the saturated linear conversions of nx and nh."""
        m_count, b_count, hidden = pre.shape
        sat = np.zeros(2, np.int64)
        rz = np.empty(2 * hidden, y_rz.dtype)
        nx = np.empty(hidden, y_rz.dtype)
        nh = np.empty(hidden, y_rz.dtype)
        for m in range(m_count):
            for b in range(b_count):
                _convert_row(y_rz[m, b], v_rz[m, b], z_rz[m, b], m, conv_rz, v2, rz)
                sat[0] += _convert_row(y_nx[m, b], v_nx[m, b], z_nx[m, b], m, conv_nx, v2, nx)
                sat[1] += _convert_row(y_nh[m, b], v_nh[m, b], z_nh[m, b], m, conv_nh, v2, nh)
                for j in range(hidden):
                    s = _gru_candidate_input(nx[j], rz[j], nh[j])
                    if fixed:
                        s = _saturating_round(s, lo, hi, step)
                    pre[m, b, j] = s
                    z_out[m, b, j] = rz[hidden + j]
        return sat

    @numba.njit(cache=True, nogil=True)
    def _gru_hidden(
        z, n, h, fixed, step, lo, hi, h_out, in_rz, in_nh, n_x, next_rz, next_nx, in_nx, has_next
    ):  # pragma: no cover - compiled
        """h = (1 - z) * n + z * h into ``h`` and ``h_out``; the word lines of the two matrices that
        read h (rz: rows after x; nh: all rows), the x rows of rz and nx copied in; returns the
        DAC clippings of rz and nh."""
        m_count, b_count, hidden = z.shape
        xq_rz, x2_rz, sc_rz, q_rz, xm_rz, st_rz, g_rz, gained_rz = in_rz
        xq_nh, x2_nh, sc_nh, q_nh, xm_nh, st_nh, g_nh, gained_nh = in_nh
        clip_rz = clip_nh = 0
        for m in range(m_count):
            for b in range(b_count):
                rz_q, rz_2, nh_q, nh_2 = xq_rz[m, b], x2_rz[m, b], xq_nh[m, b], x2_nh[m, b]
                for j in range(hidden):
                    p = _gru_hidden_value(z[m, b, j], n[m, b, j], h[m, b, j])
                    if fixed:
                        p = _saturating_round(p, lo, hi, step)
                    h[m, b, j] = p
                    h_out[m, b, j] = p
                    clip_rz += _write_input(
                        p, rz_q, rz_2, n_x + j, sc_rz[n_x + j], q_rz, xm_rz, st_rz, g_rz[n_x + j], gained_rz
                    )
                    clip_nh += _write_input(p, nh_q, nh_2, j, sc_nh[j], q_nh, xm_nh, st_nh, g_nh[j], gained_nh)
                if has_next:
                    for j in range(n_x):
                        rz_q[j] = next_rz[0][m, b, j]
                        rz_2[j] = next_rz[1][m, b, j]
                        in_nx[0][m, b, j] = next_nx[0][m, b, j]
                        in_nx[1][m, b, j] = next_nx[1][m, b, j]
        clipped = np.zeros(2, np.int64)
        clipped[0], clipped[1] = clip_rz, clip_nh
        return clipped


# ----------------------------------------------------------------------------- eligibility
def _matrix_ok(mat, x: torch.Tensor, names: list[str]) -> bool:
    tile = mat.tile
    if tile is None:
        return False
    cfg = tile.config
    if tile.device.type != "cpu" or tile.g_pos.requires_grad or tile.digital_bias is not None:
        return False
    if cfg.array.partial_sums != "analog" and tile.row_blocks > 1:
        return False
    if tile.dtype != x.dtype or [g.name for g in mat.groups] != names:
        return False
    for ro in mat.readouts:
        if ro.nladc is None or not ro.nladc.kernel_ok(x[:1, :1, :1], 1.0):
            return False
    first = mat.readouts[0]
    return all(
        ro.design.codes == first.design.codes
        and _noisy(ro, cfg) == _noisy(first, cfg)
        and (ro.linear_range() is None) == (first.linear_range() is None)
        for ro in mat.readouts
    )


def supported(engine: dict, path: str, x: torch.Tensor) -> bool:
    """Whether the fast path reproduces the reference for this LSTM / GRU direction
    (``engine``: the layer's matrices by name, as ``_make_engine`` builds them)."""
    if numba is None or path != "chip" or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return False
    if "mat" in engine:
        mats = {"mat": ["ifo", "g"]}
    else:
        mats = {"rz": ["rz"], "nx": ["nx"], "nh": ["nh"]}
    if not all(_matrix_ok(engine[k], x, names) for k, names in mats.items()):
        return False
    cfg = engine[next(iter(mats))].tile.config
    if cfg.nl_adc.functions.cell != "digital" or (cfg.dac.bits is not None and not cfg.dac.clip):
        return False
    # LSTM gates must be nonlinear readouts (the LSTM kernel keeps no saturation count)
    return not ("mat" in engine and engine["mat"].readouts[0].linear_range() is not None)


def _noisy(readout, cfg) -> bool:
    """Whether the reference draws conversion noise for this NL-ADC readout (the tile's read noise
    reaches it as an input variance)."""
    return readout.nladc.draws_noise(not cfg.device.read_noise.is_zero)


# ----------------------------------------------------------------------------- per-matrix state
class _Matrix:
    """One programmed matrix in a sequence: word-line buffers, prepared products, merged converters."""

    def __init__(self, mat, x: torch.Tensor | None, h: torch.Tensor | None, first: int):
        """``x`` (M, T, B, n_x) when the matrix reads the layer input, ``h`` (M, B, H) when it reads
        the state (rows: [x, h, bias]); ``first``: the first step's index."""
        self.mat, tile = mat, mat.tile
        cfg = tile.config
        self.dtype = tile.dtype
        ty = np.float32 if self.dtype == torch.float32 else np.float64
        self.ty = ty
        scale = mat.chip_scale
        if x is not None:
            m_count, batch = x.shape[0], x.shape[2]
        elif h is not None:
            m_count, batch = h.shape[0], h.shape[1]
        else:
            raise ValueError("a fast-path matrix reads the layer input x, the state h or both")
        n_x = x.shape[-1] if x is not None else 0
        self.zeros = np.zeros((1, 1, 1), ty)
        # word lines of the x rows for all steps (element-wise: the reference's per-step values)
        self.xq_x: torch.Tensor | None = None  # (M, T, B, n_x) word-line amplitudes
        self.x2_x: torch.Tensor | None = None  # and their squares
        parts = []
        if x is not None:
            self.xs_x = x / scale[:n_x]
            xq_x = tile.dac_rows(self.xs_x.to(self.dtype))
            self.xq_x, self.x2_x = xq_x.contiguous(), (xq_x * xq_x).contiguous()
            parts.append(x[:, first])
        if h is not None:
            parts.append(h)
        self.xq = tile.word_line_inputs(torch.cat(parts, -1) / scale).contiguous()
        self.x2 = self.xq * self.xq
        self.signal = tile.matmuls("signal")[0]
        self.variance = None if cfg.device.read_noise.is_zero else tile.matmuls("variance")[0]
        self.quantize = cfg.dac.bits is not None
        q_step = tile.x_max / (2 ** (cfg.dac.bits - 1) - 1) if self.quantize else 1.0
        self.inputs = (
            self.xq.numpy(),
            self.x2.numpy(),
            np_(scale.to(self.dtype)),
            self.quantize,
            ty(tile.x_max),
            ty(q_step),
            np_(tile.row_gain.to(self.dtype)),
            bool(tile._scaled_rows),
        )
        # the column groups' converters merged in column order
        ros, groups = mat.readouts, mat.groups
        n_cols, codes = tile.out_features, ros[0].design.codes
        t_kc = torch.empty(m_count, codes - 1, n_cols, dtype=self.dtype)
        read_var = torch.empty(m_count, n_cols, codes - 1, dtype=self.dtype)
        cmp2, values = np.empty(n_cols, ty), torch.empty(n_cols, codes, dtype=self.dtype)
        for ro, grp in zip(ros, groups):
            t_kc[:, :, grp.index] = ro.nladc.thresholds_kc(1.0)
            read_var[:, grp.index] = ro.nladc.read_var
            cmp2[grp.index.numpy()] = ty(ro.nladc.comparator_sigma**2)
            values[grp.index] = ro.design.values.to(self.dtype)
        self.noisy = _noisy(ros[0], cfg)
        self.noise_shapes = [(m_count, batch, len(g.index)) for g in groups]
        self.no_noise = [np.zeros(shape, ty) for shape in self.noise_shapes]  # never read: shapes for the kernels
        self.indices = [np_(g.index.to(torch.int64)) for g in groups]
        lin = ros[0].linear_range()
        self.linear = lin is not None
        has_var = self.variance is not None
        lin_lo, lin_hi = (ty(lin[0]), ty(lin[1])) if self.linear else (ty(0), ty(0))
        self.cnt = np.empty(n_cols, kernels.counter_dtype(codes - 1))
        # everything _convert_row needs, in its order (the last three: scratch rows)
        self.converter = (
            has_var,
            ty(tile.scale),
            np_(tile.drift_gain),
            np_(tile.variance_gain()) if has_var else np.ones(m_count, ty),
            np_(t_kc),
            np_(read_var),
            self.noisy,
            cmp2,
            np_(values),
            lin_lo,
            lin_hi,
            self.linear,
            self.cnt,
            np.empty(n_cols, ty),
            np.zeros(n_cols, ty),
            np.empty(n_cols, ty),
        )
        self.clip_x = int((self.xs_x.abs() > 1).sum()) if (x is not None and self.quantize) else 0

    def products(self):
        """This step's (signal, variance) products as numpy arrays."""
        y = self.signal(self.xq).numpy()
        return y, (self.variance(self.x2).numpy() if self.variance is not None else y)

    def noise(self) -> list:
        """The reference's draws for this matrix's groups, in group order."""
        if not self.noisy:
            return self.no_noise
        return [randn_instances(self.mat.adc_gens, s, self.dtype).numpy() for s in self.noise_shapes]

    def next_x(self, t: int | None):
        if t is None or self.xq_x is None or self.x2_x is None:  # (x2_x is set with xq_x)
            return self.zeros, self.zeros
        return np_(self.xq_x[:, t]), np_(self.x2_x[:, t])

    def count_health(self, h_clipped: int, h_numel: int, saturated: int, sat_numel: int) -> None:
        """Add this sequence's DAC clipping (x rows counted here, h rows by the caller) and linear-ADC
        saturation to the matrix's health counters, as the reference counts them."""
        health = self.mat.health
        if self.quantize:
            health["dac_clipped"] += self.clip_x + h_clipped
            health["dac_total"] += (self.xs_x.numel() if self.xq_x is not None else 0) + h_numel
        if self.linear:
            health["adc_saturated"] += saturated
            health["adc_total"] += sat_numel


def _fixed(bits: int | None, limit: float, ty):
    """(fixed?, step, lo, hi) of ``analog.fixed_point`` for the kernels."""
    if bits is None:
        return False, ty(1.0), ty(-limit), ty(limit)
    lo, hi, step = fixed_point_grid(bits, limit)
    return True, ty(step), ty(lo), ty(hi)


def _h_clipped(h: torch.Tensor, mat, offset: int) -> int:
    """DAC clippings the reference counts for state ``h`` on ``mat``'s rows from ``offset``."""
    if mat.tile.config.dac.bits is None:
        return 0
    return int(((h / mat.chip_scale[offset : offset + h.shape[-1]]).abs() > 1).sum())


# ----------------------------------------------------------------------------- sequences
def lstm_sequence(
    engine: dict, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, reverse: bool, bits: int | None, cell_max: float
):
    """One LSTM direction on the programmed chip: ``x`` (M, T, B, n_x), states (M, B, H).
    Returns (M, T, B, H) outputs and the final (h, c), identical to the reference loop."""
    m_count, steps, batch, n_x = x.shape
    hidden = h.shape[-1]
    order = list(range(steps - 1, -1, -1) if reverse else range(steps))
    mat = _Matrix(engine["mat"], x, h, order[0])
    ty, dtype = mat.ty, mat.dtype
    out = torch.empty(m_count, steps, batch, hidden, dtype=dtype)
    c = c.to(dtype).clone().contiguous()
    o, tanh_c = torch.empty(m_count, batch, hidden, dtype=dtype), torch.empty(m_count, batch, hidden, dtype=dtype)
    fixed_c, fixed_h = _fixed(bits, cell_max, ty), _fixed(bits, 1.0, ty)
    clipped = _h_clipped(h, engine["mat"], n_x)
    for n, t in enumerate(order):
        y, v = mat.products()
        z_a, z_g = mat.noise()
        _lstm_gates(
            y, v, mat.converter, z_a, mat.indices[0], z_g, mat.indices[1], ty(1.0), c.numpy(), o.numpy(), *fixed_c
        )
        torch.tanh(c, out=tanh_c)
        nxt = order[n + 1] if n + 1 < steps else None
        xq_n, x2_n = mat.next_x(nxt)
        clipped += _lstm_hidden(
            o.numpy(),
            tanh_c.numpy(),
            *fixed_h,
            out[:, t].numpy(),
            mat.inputs[0],
            mat.inputs[1],
            n_x,
            *mat.inputs[2:],
            xq_n,
            x2_n,
            nxt is not None,
        )
    h_last = out[:, order[-1]]
    # the last step's h is not read again: the kernel counted its clipping, the reference does not
    mat.count_health(clipped - _h_clipped(h_last, engine["mat"], n_x), m_count * steps * batch * hidden, 0, 0)
    return out, (h_last, c)


def gru_sequence(engine: dict, x: torch.Tensor, h: torch.Tensor, reverse: bool, bits: int | None, cell_max: float):
    """One GRU direction on the programmed chip: ``x`` (M, T, B, n_x), state (M, B, H).
    Returns (M, T, B, H) outputs and the final h, identical to the reference loop."""
    m_count, steps, batch, n_x = x.shape
    hidden = h.shape[-1]
    order = list(range(steps - 1, -1, -1) if reverse else range(steps))
    rz, nx, nh = (
        _Matrix(engine["rz"], x, h, order[0]),
        _Matrix(engine["nx"], x, None, order[0]),
        _Matrix(engine["nh"], None, h, order[0]),
    )
    ty, dtype = rz.ty, rz.dtype
    out = torch.empty(m_count, steps, batch, hidden, dtype=dtype)
    h_state = h.to(dtype).clone().contiguous()
    pre, z_gate = torch.empty(m_count, batch, hidden, dtype=dtype), torch.empty(m_count, batch, hidden, dtype=dtype)
    n_val = torch.empty_like(pre)
    fixed_c, fixed_h = _fixed(bits, cell_max, ty), _fixed(bits, 1.0, ty)
    clip_rz, clip_nh = _h_clipped(h, engine["rz"], n_x), _h_clipped(h, engine["nh"], 0)
    sat = np.zeros(2, np.int64)
    for n, t in enumerate(order):
        (y_rz, v_rz), (y_nx, v_nx), (y_nh, v_nh) = rz.products(), nx.products(), nh.products()
        (z_rz,), (z_nx,), (z_nh,) = rz.noise(), nx.noise(), nh.noise()
        sat += _gru_gates(
            y_rz,
            v_rz,
            z_rz,
            rz.converter,
            y_nx,
            v_nx,
            z_nx,
            nx.converter,
            y_nh,
            v_nh,
            z_nh,
            nh.converter,
            ty(1.0),
            pre.numpy(),
            z_gate.numpy(),
            *fixed_c,
        )
        torch.tanh(pre, out=n_val)
        nxt = order[n + 1] if n + 1 < steps else None
        clipped = _gru_hidden(
            z_gate.numpy(),
            n_val.numpy(),
            h_state.numpy(),
            *fixed_h,
            out[:, t].numpy(),
            rz.inputs,
            nh.inputs,
            n_x,
            rz.next_x(nxt),
            nx.next_x(nxt),
            nx.inputs,
            nxt is not None,
        )
        clip_rz, clip_nh = clip_rz + int(clipped[0]), clip_nh + int(clipped[1])
    h_last = out[:, order[-1]]
    numel = m_count * steps * batch * hidden
    rz.count_health(clip_rz - _h_clipped(h_last, engine["rz"], n_x), numel, 0, 0)
    nx.count_health(0, 0, int(sat[0]), numel)
    nh.count_health(clip_nh - _h_clipped(h_last, engine["nh"], 0), numel, int(sat[1]), numel)
    return out, (h_last,)

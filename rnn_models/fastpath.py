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
Readouts the NL-ADC kernel does not convert -- the ideal ADC, the linear ramp ADC + digital f, an
NL-ADC with unsorted ramps or column groups of different resolution -- still take the fast path in
``TORCH`` mode: a kernel scales the step's products into column-group order
(:func:`_scale_columns`), each group's readout converts them with its own ``convert`` (the
reference's call on the same values: same draws, same torch activations), a linear readout's
saturation is counted by the reference's :func:`~rnn_models.analog.count_saturation`, and the
cell update and next inputs are the kernels' as above.
Threads: the instances (or, with ``SPLIT_ROWS``, one instance's batch rows) are split into blocks
(:func:`_parts`); in the NL-ADC kernel mode each block runs the whole sequence on its pool thread,
instance by instance, since no block reads another's state; in ``TORCH`` mode the blocks meet
after each step (the readouts convert all of them at once on the calling thread).
Configurations the fast path does not cover (CUDA, autograd, per-array conversion of digital
partial sums, a digital bias, a non-digital cell tanh) take the reference path; :func:`supported`
says which.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from crossbar.periphery import kernels
from crossbar.pointwise import compiled, kernel, saturating_round
from crossbar.tile import column_output, output_variance
from rnn_models.analog import count_saturation, fixed_point_grid
from rnn_models.cell_math import gru_candidate_input, gru_hidden, lstm_cell, lstm_hidden, tanh_digital

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

    @kernel
    def _scratch(conv):  # pragma: no cover - compiled
        """Per-call work rows of one matrix's conversion (a call's own: calls run on threads)."""
        return np.empty_like(conv[12]), np.empty_like(conv[13]), np.zeros_like(conv[14]), np.empty_like(conv[15])

    @kernel
    def _convert_row(yr, vr, z, m, conv, v2, out, scratch):  # pragma: no cover - compiled
        """One (instance ``m``, batch row) of one matrix: output scaling, variance, every column's
        NL-ADC, values into ``out``; returns how many (noise-free) outputs a linear readout
        saturates.  ``conv``: the matrix's converter (``_Matrix.converter``, read only);
        ``scratch``: :func:`_scratch` of it."""
        (has_var, scale, drift, vgain, t_kc, read_var, noisy, cmp2, values, lin_lo, lin_hi, linear) = conv[:12]
        cnt, y_all, v_all, yn = scratch
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

    @kernel
    def _word_lines(p, xq, x2, first, in_scale, quantize, x_max, q_step, gain, gained):  # pragma: no cover
        """Word lines ``first``.. of one batch row for the digital values ``p`` (one row): / DAC
        full scale, quantise, row gain, and their squares; returns how many the DAC clips.  One
        pass per row over contiguous memory, branch-free inside (the flags are loop-invariant)."""
        n = p.shape[0]
        clipped = 0
        one = in_scale.dtype.type(1)
        for j in range(n):
            hs = p[j] / in_scale[first + j]
            clipped += abs(hs) > one
            q = _saturating_round(hs, -x_max, x_max, q_step) if quantize else hs
            if gained:
                q = q * gain[first + j]
            xq[first + j] = q
            x2[first + j] = q * q
        return clipped

    @kernel
    def _lstm_cell_row(i, f, g, o, c, o_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """One batch row of the LSTM's first digital step: c = f*c + i*g in fixed point, o kept
        (the converted gates as rows, whichever kernel converted them)."""
        for j in range(c.shape[0]):
            s = _lstm_cell(i[j], f[j], g[j], c[j])
            if fixed:
                s = _saturating_round(s, lo, hi, step)
            c[j] = s
            o_out[j] = o[j]

    @kernel
    def _gru_candidate_row(r, z, nx, nh, pre, z_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """One batch row of the GRU's candidate input: pre = nx + r * nh in fixed point, z kept."""
        for j in range(pre.shape[0]):
            s = _gru_candidate_input(nx[j], r[j], nh[j])
            if fixed:
                s = _saturating_round(s, lo, hi, step)
            pre[j] = s
            z_out[j] = z[j]

    @kernel
    def _lstm_gates(y, v, conv, z_a, idx_a, z_g, idx_g, v2, c, o_out, fixed, step, lo, hi, m_first):  # pragma: no cover
        """Gate columns (PyTorch's order i, f, g, o) converted, c = f*c + i*g in fixed point, o kept;
        ``y[m]`` is instance ``m_first + m``."""
        m_count, b_count, n_cols = y.shape
        hidden = c.shape[2]
        z_all, a = np.empty(n_cols, y.dtype), np.empty(n_cols, y.dtype)
        scratch = _scratch(conv)
        for m in range(m_count):
            for b in range(b_count):
                if conv[6]:  # noisy: the two groups' draws, put in column order
                    for j in range(idx_a.shape[0]):
                        z_all[idx_a[j]] = z_a[m, b, j]
                    for j in range(idx_g.shape[0]):
                        z_all[idx_g[j]] = z_g[m, b, j]
                _convert_row(y[m, b], v[m, b], z_all, m_first + m, conv, v2, a, scratch)
                h2, h3 = 2 * hidden, 3 * hidden
                _lstm_cell_row(a[:hidden], a[hidden:h2], a[h2:h3], a[h3:], c[m, b], o_out[m, b], fixed, step, lo, hi)

    @kernel
    def _scale_columns(y, v, scaling, runs, y_out, v_out, m_first):  # pragma: no cover - compiled
        """The tile's output scaling (and read-noise variance) of one matrix's products, gathered
        into its column groups: run ``r`` = (group, first column, first group position, length)
        copies that many consecutive columns (contiguous, so the loops vectorise); ``y_out[g]``,
        ``v_out[g]`` (M, B, |group g|); ``y[m]`` is instance ``m_first + m``."""
        has_var, scale, drift, vgain = scaling
        m_count, b_count, _ = y.shape
        for m in range(m_count):
            d, vg = drift[m_first + m], vgain[m_first + m]
            for b in range(b_count):
                for r in range(runs.shape[0]):
                    g, k0, j0, n = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
                    src, dst = y[m, b, k0 : k0 + n], y_out[g][m, b, j0 : j0 + n]
                    for j in range(n):
                        dst[j] = _column_output(src[j], scale, d)
                    if has_var:
                        vsrc, vdst = v[m, b, k0 : k0 + n], v_out[g][m, b, j0 : j0 + n]
                        for j in range(n):
                            vdst[j] = _output_variance(vsrc[j], vg)

    @kernel
    def _lstm_update(ifo, g, c, o_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """c = f*c + i*g in fixed point from the converted groups ``ifo`` (i, f, o) and ``g``; o kept."""
        m_count, b_count, hidden = c.shape
        for m in range(m_count):
            for b in range(b_count):
                a = ifo[m, b]
                h2 = 2 * hidden
                _lstm_cell_row(a[:hidden], a[hidden:h2], g[m, b], a[h2:], c[m, b], o_out[m, b], fixed, step, lo, hi)

    @kernel
    def _gru_update(rz, nx, nh, pre, z_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """pre = nx + r * nh in fixed point (before tanh) from the converted r/z, nx and nh; z kept."""
        m_count, b_count, hidden = pre.shape
        for m in range(m_count):
            for b in range(b_count):
                r, z = rz[m, b, :hidden], rz[m, b, hidden:]
                _gru_candidate_row(r, z, nx[m, b], nh[m, b], pre[m, b], z_out[m, b], fixed, step, lo, hi)

    @kernel
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
                h_mb = h_out[m, b]
                for j in range(hidden):
                    p = _lstm_hidden_value(o[m, b, j], tanh_c[m, b, j])
                    h_mb[j] = _saturating_round(p, lo, hi, step) if fixed else p
                clipped += _word_lines(
                    h_mb, xq[m, b], x2[m, b], n_x, in_scale, quantize, x_max, q_step, row_gain, gained
                )
                if has_next:
                    for j in range(n_x):
                        xq[m, b, j] = xq_next[m, b, j]
                        x2[m, b, j] = x2_next[m, b, j]
        return clipped

    @kernel
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
        m_first,
    ):  # pragma: no cover - compiled
        """r, z, nx, nh from their three matrices; pre = nx + r * nh in fixed point (before tanh);
        returns the saturated linear conversions of nx and nh; ``y_rz[m]`` is instance
        ``m_first + m``."""
        m_count, b_count, hidden = pre.shape
        s_rz, s_nx, s_nh = _scratch(conv_rz), _scratch(conv_nx), _scratch(conv_nh)
        sat = np.zeros(2, np.int64)
        rz = np.empty(2 * hidden, y_rz.dtype)
        nx = np.empty(hidden, y_rz.dtype)
        nh = np.empty(hidden, y_rz.dtype)
        for m in range(m_count):
            for b in range(b_count):
                i = m_first + m
                _convert_row(y_rz[m, b], v_rz[m, b], z_rz[m, b], i, conv_rz, v2, rz, s_rz)
                sat[0] += _convert_row(y_nx[m, b], v_nx[m, b], z_nx[m, b], i, conv_nx, v2, nx, s_nx)
                sat[1] += _convert_row(y_nh[m, b], v_nh[m, b], z_nh[m, b], i, conv_nh, v2, nh, s_nh)
                _gru_candidate_row(rz[:hidden], rz[hidden:], nx, nh, pre[m, b], z_out[m, b], fixed, step, lo, hi)
        return sat

    @kernel
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
                h_mb = h[m, b]
                for j in range(hidden):
                    p = _gru_hidden_value(z[m, b, j], n[m, b, j], h_mb[j])
                    p = _saturating_round(p, lo, hi, step) if fixed else p
                    h_mb[j] = p
                    h_out[m, b, j] = p
                clip_rz += _word_lines(h_mb, rz_q, rz_2, n_x, sc_rz, q_rz, xm_rz, st_rz, g_rz, gained_rz)
                clip_nh += _word_lines(h_mb, nh_q, nh_2, 0, sc_nh, q_nh, xm_nh, st_nh, g_nh, gained_nh)
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
#: how a matrix's column outputs are converted on the fast path
KERNEL, TORCH = "kernel", "torch"


def _matrix_mode(mat, x: torch.Tensor, names: list[str]) -> str | None:
    """``KERNEL`` when the NL-ADC kernel converts every column of ``mat`` inside the gate kernel
    (sorted NL-ADC ramps of one resolution and noise model); ``TORCH`` for any other readout
    (ideal or linear-ramp ADC, an NL-ADC outside the kernel): a kernel scales the columns and
    each readout's own ``convert`` converts its group, the reference's call on the same values;
    None when the fast path does not cover the matrix at all."""
    tile = mat.tile
    if tile is None:
        return None
    cfg = tile.config
    if tile.device.type != "cpu" or tile.g_pos.requires_grad or tile.digital_bias is not None:
        return None
    if cfg.array.partial_sums != "analog" and tile.row_blocks > 1:
        return None
    if tile.dtype != x.dtype or [g.name for g in mat.groups] != names:
        return None
    if not all(ro.nladc is not None and ro.nladc.kernel_ok(x[:1, :1, :1], 1.0) for ro in mat.readouts):
        return TORCH
    first = mat.readouts[0]
    same = all(
        ro.design.codes == first.design.codes
        and _noisy(ro, cfg) == _noisy(first, cfg)
        and (ro.linear_range() is None) == (first.linear_range() is None)
        for ro in mat.readouts
    )
    return KERNEL if same else TORCH


def _mode(engine: dict, path: str, x: torch.Tensor) -> str | None:
    """The conversion mode of an LSTM / GRU direction on the fast path (``engine``: the layer's
    matrices by name, as ``_make_engine`` builds them): ``KERNEL`` when every matrix converts in the
    kernels, ``TORCH`` when one does not (then all convert through their readouts), None when the
    fast path does not reproduce the reference for it."""
    if numba is None or path != "chip" or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return None
    mats = {"mat": ["ifo", "g"]} if "mat" in engine else {"rz": ["rz"], "nx": ["nx"], "nh": ["nh"]}
    modes = [_matrix_mode(engine[k], x, names) for k, names in mats.items()]
    if None in modes:
        return None
    cfg = engine[next(iter(mats))].tile.config
    if cfg.nl_adc.functions.cell != "digital" or (cfg.dac.bits is not None and not cfg.dac.clip):
        return None
    # the LSTM gate kernel keeps no saturation count: linear gate readouts convert through torch
    if "mat" in engine and engine["mat"].readouts[0].linear_range() is not None:
        return TORCH
    return TORCH if TORCH in modes else KERNEL


def supported(engine: dict, path: str, x: torch.Tensor) -> bool:
    """Whether the fast path reproduces the reference for this LSTM / GRU direction."""
    return _mode(engine, path, x) is not None


def _noisy(readout, cfg) -> bool:
    """Whether the reference draws conversion noise for this NL-ADC readout (the tile's read noise
    reaches it as an input variance)."""
    return readout.nladc.draws_noise(not cfg.device.read_noise.is_zero)


# ----------------------------------------------------------------------------- per-matrix state
class _Matrix:
    """One programmed matrix in a sequence: word-line buffers, prepared products, merged converters."""

    def __init__(self, mat, x: torch.Tensor | None, h: torch.Tensor | None, first: int, mode: str = KERNEL):
        """``x`` (M, T, B, n_x) when the matrix reads the layer input, ``h`` (M, B, H) when it reads
        the state (rows: [x, h, bias]); ``first``: the first step's index; ``mode``: ``KERNEL`` (the
        NL-ADCs convert in the gate kernels) or ``TORCH`` (:meth:`convert_groups`)."""
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
        self.m_count = m_count
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
        self.clip_x = int((self.xs_x.abs() > 1).sum()) if (x is not None and self.quantize) else 0
        self.indices = [np_(g.index.to(torch.int64)) for g in mat.groups]
        self.noise_shapes = [(m_count, batch, len(g.index)) for g in mat.groups]
        has_var = self.variance is not None
        # the tile's output scaling and variance gain (_column_output, _output_variance)
        self.scaling = (
            has_var,
            ty(tile.scale),
            np_(tile.drift_gain),
            np_(tile.variance_gain()) if has_var else np.ones(m_count, ty),
        )
        if mode == TORCH:
            self._torch_readouts()
        else:
            self._kernel_readouts(ty, m_count)

    def _torch_readouts(self) -> None:
        """TORCH mode: one (y, variance) buffer per column group, filled by :func:`_scale_columns`
        (the groups' columns as runs of consecutive columns) and converted by the group's readout."""
        has_var = self.variance is not None
        self.noisy, self.linear = False, False  # the readouts draw and count themselves
        self.group_y = [torch.empty(shape, dtype=self.dtype) for shape in self.noise_shapes]
        self.group_v = [torch.empty(shape, dtype=self.dtype) if has_var else None for shape in self.noise_shapes]
        # numba takes a tuple of same-typed arrays (an empty one per group without a variance)
        self.gy = tuple(t.numpy() for t in self.group_y)
        self.gv = tuple(t.numpy() if t is not None else np.empty((0, 0, 0), self.ty) for t in self.group_v)
        runs = []
        for g, idx in enumerate(self.indices):
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            for j0, j1 in zip(np.r_[0, breaks], np.r_[breaks, len(idx)]):
                runs.append((g, int(idx[j0]), int(j0), int(j1 - j0)))
        self.runs = np.array(runs, np.int64).reshape(-1, 4)
        self.ranges = [ro.linear_range() for ro in self.mat.readouts]

    def _kernel_readouts(self, ty, m_count: int) -> None:
        """KERNEL mode: the column groups' NL-ADCs merged in column order, as ``_convert_row`` reads them."""
        tile, cfg = self.mat.tile, self.mat.tile.config
        ros, groups = self.mat.readouts, self.mat.groups
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
        self.no_noise = [np.zeros(shape, ty) for shape in self.noise_shapes]  # never read: shapes for the kernels
        lin = ros[0].linear_range()
        self.linear = lin is not None
        lin_lo, lin_hi = (ty(lin[0]), ty(lin[1])) if self.linear else (ty(0), ty(0))
        self.cnt = np.empty(n_cols, kernels.counter_dtype(codes - 1))
        # everything _convert_row needs, in its order (the last three: scratch rows)
        self.converter = (
            *self.scaling,
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

    def products(self) -> tuple[np.ndarray, np.ndarray]:
        """This step's (signal, variance) products as numpy arrays."""
        y = self.signal(self.xq).numpy()
        return y, (self.variance(self.x2).numpy() if self.variance is not None else y)

    @property
    def per_instance(self) -> bool:
        """Whether :meth:`instance_products` equals the products of all instances at once."""
        return self.signal.per_instance and (self.variance is None or self.variance.per_instance)

    def instance_products(self, m: int, b0: int = 0, b1: int | None = None):
        """Instance ``m``'s (signal, variance) products of batch rows ``b0:b1``, each (1, rows, N)."""
        y = self.signal.instance(m, self.xq[m, b0:b1]).numpy()[None]
        v = self.variance.instance(m, self.x2[m, b0:b1]).numpy()[None] if self.variance is not None else y
        return y, v

    def convert_groups(self, y: np.ndarray, v: np.ndarray, parts: list, step: int) -> list[np.ndarray]:
        """TORCH mode: this step's products (:meth:`products`) scaled into column-group order by
        :func:`_scale_columns` (split over ``parts``), then each group converted by its readout --
        the reference's own ``convert`` call on the same values, draws included -- and a linear
        readout's saturation counted as the reference counts it.  One (M, B, |group|) array per group."""
        if len(parts) == 1:
            _scale_columns(y, v, self.scaling, self.runs, self.gy, self.gv, 0)
        else:
            has_var = self.variance is not None

            def scale(part):
                gv = tuple(_sl(a, part) for a in self.gv) if has_var else self.gv
                _scale_columns(_sl(y, part), _sl(v, part), self.scaling, self.runs,
                               tuple(_sl(a, part) for a in self.gy), gv, part[0])  # fmt: skip

            _run(scale, parts)
        out = []
        for g, ro, yg, vg, rng in zip(self.mat.groups, self.mat.readouts, self.group_y, self.group_v, self.ranges):
            if rng is not None:
                count_saturation(self.mat.health, yg, rng)
            out.append(np_(ro.convert(yg, self.mat.noise_at(g, step), var=vg)))
        return out

    def noise(self, m0: int = 0, m1: int | None = None, step: int = 0) -> list:
        """The reference's normals for this matrix's groups at ``step``, in group order, of
        instances m0..m1-1 (counter-based: the normals of a block are those of the whole)."""
        m1 = self.m_count if m1 is None else m1
        if not self.noisy:
            return [z[m0:m1] for z in self.no_noise]
        mat = self.mat
        return [
            mat.noise.normals((m1 - m0, *s[1:]), self.dtype, read=mat.read, step=step, cols=g.index, first=m0).numpy()
            for g, s in zip(mat.groups, self.noise_shapes)
        ]

    def next_x(self, t: int | None, part: tuple[int, int, int, int]):
        """The x rows' word lines (and squares) of step ``t`` for the part's instances and rows
        (one instance's rows: a view, no copy); placeholders when there is no next step or x."""
        if t is None or self.xq_x is None or self.x2_x is None:  # (x2_x is set with xq_x)
            return self.zeros, self.zeros
        m0, m1, b0, b1 = part
        return np_(self.xq_x[m0:m1, t, b0:b1]), np_(self.x2_x[m0:m1, t, b0:b1])

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


# ----------------------------------------------------------------------------- threads
#: fewer conversions per step than this run on the calling thread alone
MIN_PARALLEL = 16_384
#: split one instance's batch rows over threads too, each block of rows run start to end on its
#: thread (off: no gain measured on the 2-core machine -- `benchmarks/split_rows.py`, full KWS / LM
#: shapes: LSTM 1.08x / 1.20x, GRU 0.86x / 1.05x; the main thread's draws for all rows stay serial,
#: and the two vCPUs scale compute-bound kernels poorly)
SPLIT_ROWS = False

_pool_state: dict = {}


def _one_openmp_thread() -> None:
    """Pool-thread initializer: torch ops on a pool thread run on that thread alone (the work is
    already split over the pool).  OpenMP's thread count is per thread, so the caller's threads
    keep theirs; torch's own per-thread set-up runs first, or it would reset the count later."""
    from threadpoolctl import threadpool_limits

    torch.get_num_threads()
    threadpool_limits(1, user_api="openmp")


def _pool(workers: int) -> ThreadPoolExecutor:
    """The fast path's thread pool (one per process: a forked child builds its own)."""
    key = (os.getpid(), workers)
    if _pool_state.get("key") != key:
        _pool_state["key"] = key
        _pool_state["pool"] = ThreadPoolExecutor(
            workers, thread_name_prefix="crossbar-fastpath", initializer=_one_openmp_thread
        )
    return _pool_state["pool"]


def _parts(m_count: int, batch: int, n_cols: int, split_rows: bool = False) -> list[tuple[int, int, int, int]]:
    """How a sequence's work is split over ``torch.get_num_threads()`` threads: (m0, m1, b0, b1)
    blocks of instances (or, for one instance with ``split_rows`` and ``SPLIT_ROWS``, of batch
    rows).  Instances and rows are independent and every block draws and computes exactly what
    the whole would, so the split does not change a number."""
    workers = max(1, torch.get_num_threads())
    if workers == 1 or m_count * batch * n_cols < MIN_PARALLEL:
        return [(0, m_count, 0, batch)]
    if m_count > 1:
        edges = np.linspace(0, m_count, min(workers, m_count) + 1).round().astype(int)
        return [(int(a), int(b), 0, batch) for a, b in zip(edges[:-1], edges[1:])]
    if not (split_rows and SPLIT_ROWS):
        return [(0, m_count, 0, batch)]
    edges = np.linspace(0, batch, min(workers, batch) + 1).round().astype(int)
    return [(0, 1, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _run(fn, parts: list) -> list:
    """``fn(part)`` for every part, on the pool when there are several (the kernels release the GIL)."""
    if len(parts) == 1:
        return [fn(parts[0])]
    return list(_pool(max(1, torch.get_num_threads())).map(fn, parts))


def _sl(a: np.ndarray, part: tuple[int, int, int, int]) -> np.ndarray:
    """Instances m0:m1 and rows b0:b1 of an (M, B, ...) array."""
    m0, m1, b0, b1 = part
    return a[m0:m1, b0:b1]


#: at most this many bytes of draws are drawn ahead for the parts of one instance's batch rows
DRAWN_AHEAD_BYTES = 64 * 2**20


def _blocks(schedule: list, mats: tuple, by_rows: bool) -> list[list]:
    """The schedule in blocks the parts run without meeting: all of it when each part draws its
    own instances; for the parts of one instance's rows, as many steps as ``DRAWN_AHEAD_BYTES`` of
    draws (the main thread draws a block's noise whole, before the parts run it)."""
    if not by_rows:
        return [schedule]
    per_step = sum(int(np.prod(s)) * np.dtype(m.ty).itemsize for m in mats if m.noisy for s in m.noise_shapes)
    size = max(1, DRAWN_AHEAD_BYTES // max(1, per_step))
    return [schedule[i : i + size] for i in range(0, len(schedule), size)]


# ----------------------------------------------------------------------------- sequences
def _drive(mats: tuple, order: list, mode: str, parts: list, whole: bool, by_rows: bool, gates, update, hidden):
    """The time loop both cells share, over the parts (:func:`_parts`) of one direction.

    ``gates(part, prods, noise)``: the cell's conversions and first digital step for a part, from
    each matrix's (signal, variance) products and draws (one list of group draws per matrix);
    returns its counts (an int array) or None.  ``update(part, converted)``: the same in ``TORCH``
    mode, from each matrix's converted groups (:meth:`_Matrix.convert_groups`).  ``hidden(part, t,
    nxt)``: h of step ``t`` into the outputs and the word lines of step ``nxt`` (None: the last
    step); returns its counts.  ``whole``: each part runs the whole sequence on its thread,
    instance by instance (its products :meth:`_Matrix.instance_products`; ``by_rows``: the parts
    are one instance's rows, whose draws the calling thread draws ahead in blocks,
    :func:`_blocks`); else the parts meet after every step (all instances' products at once).
    Returns the sums of the counts ``gates`` and ``hidden`` returned (0 where none)."""
    schedule = list(zip(order, order[1:] + [None]))
    gate_counts, hidden_counts = 0, 0

    def run_block(part, block, drawn):
        """Steps ``block`` [(t, next t or None)] of the part's instances and rows, start to end on one
        thread: no other part reads them.  ``drawn``: the block's draws, drawn whole (a part of one
        instance's rows), or None (the part draws its instances' own)."""
        g_sum, h_sum = 0, 0
        m0, m1, b0, b1 = part
        for m in range(m0, m1):  # instance by instance: its weights stay in cache over the steps
            one = (m, m + 1, b0, b1)
            for n, (t, nxt) in enumerate(block):
                prods = [mat.instance_products(m, b0, b1) for mat in mats]
                if drawn is None:
                    noise = [mat.noise(m, m + 1, t) for mat in mats]
                else:
                    noise = [[_sl(z, part) for z in zs] for zs in drawn[n]]
                counted = gates(one, prods, noise)
                if counted is not None:
                    g_sum = g_sum + counted
                h_sum = h_sum + hidden(one, t, nxt)
        return g_sum, h_sum

    if whole:
        for block in _blocks(schedule, mats, by_rows):
            drawn = [[mat.noise(step=t) for mat in mats] for t, _ in block] if by_rows else None
            for g_sum, h_sum in _run(lambda part, block=block, drawn=drawn: run_block(part, block, drawn), parts):
                gate_counts, hidden_counts = gate_counts + g_sum, hidden_counts + h_sum
        return gate_counts, hidden_counts
    for t, nxt in schedule:
        if mode == TORCH:
            converted = [mat.convert_groups(*mat.products(), parts, t) for mat in mats]
            _run(lambda part, converted=converted: update(part, converted), parts)
        else:  # products of all instances at once (a backend that multiplies instances together)
            prods = [mat.products() for mat in mats]

            def step_gates(part, prods=prods, t=t):  # each part's instances draw their own normals
                sliced = [(_sl(y, part), _sl(v, part)) for y, v in prods]
                return gates(part, sliced, [mat.noise(part[0], part[1], t) for mat in mats])

            for counted in _run(step_gates, parts):
                if counted is not None:
                    gate_counts = gate_counts + counted
        for counted in _run(lambda part, t=t, nxt=nxt: hidden(part, t, nxt), parts):
            hidden_counts = hidden_counts + counted
    return gate_counts, hidden_counts


def lstm_sequence(
    engine: dict, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, reverse: bool, bits: int | None, cell_max: float
):
    """One LSTM direction on the programmed chip: ``x`` (M, T, B, n_x), states (M, B, H).
    Returns (M, T, B, H) outputs and the final (h, c), identical to the reference loop."""
    m_count, steps, batch, n_x = x.shape
    hidden = h.shape[-1]
    order = list(range(steps - 1, -1, -1) if reverse else range(steps))
    mode = _mode(engine, "chip", x) or KERNEL
    mat = _Matrix(engine["mat"], x, h, order[0], mode)
    ty, dtype = mat.ty, mat.dtype
    out = torch.empty(m_count, steps, batch, hidden, dtype=dtype)
    c = c.to(dtype).clone().contiguous()
    o, tanh_c = torch.empty(m_count, batch, hidden, dtype=dtype), torch.empty(m_count, batch, hidden, dtype=dtype)
    c_np, o_np, tanh_np = c.numpy(), o.numpy(), tanh_c.numpy()
    fixed_c, fixed_h = _fixed(bits, cell_max, ty), _fixed(bits, 1.0, ty)
    whole = mode == KERNEL and mat.per_instance  # each part runs the whole sequence on its thread
    parts = _parts(m_count, batch, 4 * hidden, split_rows=whole)
    by_rows = parts[0][1] - parts[0][0] == m_count and len(parts) > 1
    xq, x2 = mat.inputs[0], mat.inputs[1]
    idx_a, idx_g = mat.indices

    def gates(part, prods, noise):
        (y, v), (z_a, z_g) = prods[0], noise[0]
        _lstm_gates(
            y, v, mat.converter, z_a, idx_a, z_g, idx_g, ty(1.0), _sl(c_np, part), _sl(o_np, part), *fixed_c, part[0]
        )

    def update(part, converted):
        ifo, g = converted[0]
        _lstm_update(_sl(ifo, part), _sl(g, part), _sl(c_np, part), _sl(o_np, part), *fixed_c)

    def hidden_step(part, t, nxt):  # returns the DAC clippings of h
        m0, m1, b0, b1 = part
        tanh_c[m0:m1, b0:b1] = tanh_digital(c[m0:m1, b0:b1])  # element-wise: a block is the whole's
        nx_q, nx_2 = mat.next_x(nxt, part)
        return _lstm_hidden(
            _sl(o_np, part), _sl(tanh_np, part), *fixed_h, _sl(out[:, t].numpy(), part), _sl(xq, part),
            _sl(x2, part), n_x, *mat.inputs[2:], nx_q, nx_2, nxt is not None,
        )  # fmt: skip

    _, clipped = _drive((mat,), order, mode, parts, whole, by_rows, gates, update, hidden_step)
    h_last = out[:, order[-1]]
    # the last step's h is not read again: the kernel counted its clipping, the reference does not
    clipped = _h_clipped(h, engine["mat"], n_x) + int(clipped) - _h_clipped(h_last, engine["mat"], n_x)
    mat.count_health(clipped, m_count * steps * batch * hidden, 0, 0)
    return out, (h_last, c)


def gru_sequence(engine: dict, x: torch.Tensor, h: torch.Tensor, reverse: bool, bits: int | None, cell_max: float):
    """One GRU direction on the programmed chip: ``x`` (M, T, B, n_x), state (M, B, H).
    Returns (M, T, B, H) outputs and the final h, identical to the reference loop."""
    m_count, steps, batch, n_x = x.shape
    hidden = h.shape[-1]
    order = list(range(steps - 1, -1, -1) if reverse else range(steps))
    mode = _mode(engine, "chip", x) or KERNEL
    rz, nx, nh = (
        _Matrix(engine["rz"], x, h, order[0], mode),
        _Matrix(engine["nx"], x, None, order[0], mode),
        _Matrix(engine["nh"], None, h, order[0], mode),
    )
    ty, dtype = rz.ty, rz.dtype
    out = torch.empty(m_count, steps, batch, hidden, dtype=dtype)
    h_state = h.to(dtype).clone().contiguous()
    pre, z_gate = torch.empty(m_count, batch, hidden, dtype=dtype), torch.empty(m_count, batch, hidden, dtype=dtype)
    n_val = torch.empty_like(pre)
    pre_np, z_np, n_np, h_np = pre.numpy(), z_gate.numpy(), n_val.numpy(), h_state.numpy()
    fixed_c, fixed_h = _fixed(bits, cell_max, ty), _fixed(bits, 1.0, ty)
    mats = (rz, nx, nh)
    whole = mode == KERNEL and all(mat.per_instance for mat in mats)  # as in lstm_sequence
    parts = _parts(m_count, batch, 4 * hidden, split_rows=whole)
    by_rows = parts[0][1] - parts[0][0] == m_count and len(parts) > 1

    def inputs(mat: _Matrix, part) -> tuple:
        return (_sl(mat.inputs[0], part), _sl(mat.inputs[1], part), *mat.inputs[2:])

    def gates(part, prods, noise):  # returns the saturations of the nx and nh linear readouts
        (y_rz, v_rz), (y_nx, v_nx), (y_nh, v_nh) = prods
        return _gru_gates(
            y_rz, v_rz, noise[0][0], rz.converter, y_nx, v_nx, noise[1][0], nx.converter, y_nh, v_nh, noise[2][0],
            nh.converter, ty(1.0), _sl(pre_np, part), _sl(z_np, part), *fixed_c, part[0],
        )  # fmt: skip

    def update(part, converted):
        (a_rz,), (a_nx,), (a_nh,) = converted
        _gru_update(_sl(a_rz, part), _sl(a_nx, part), _sl(a_nh, part), _sl(pre_np, part), _sl(z_np, part), *fixed_c)

    def hidden_step(part, t, nxt):  # returns the DAC clippings of the rz and nh rows
        m0, m1, b0, b1 = part
        n_val[m0:m1, b0:b1] = tanh_digital(pre[m0:m1, b0:b1])  # element-wise: a block is the whole's
        nrz, nnx = rz.next_x(nxt, part), nx.next_x(nxt, part)
        return _gru_hidden(
            _sl(z_np, part), _sl(n_np, part), _sl(h_np, part), *fixed_h, _sl(out[:, t].numpy(), part),
            inputs(rz, part), inputs(nh, part), n_x, nrz, nnx, inputs(nx, part), nxt is not None,
        )  # fmt: skip

    sat, clips = _drive(mats, order, mode, parts, whole, by_rows, gates, update, hidden_step)
    sat, clips = np.zeros(2, np.int64) + sat, np.zeros(2, np.int64) + clips  # 0 where none were counted
    h_last = out[:, order[-1]]
    numel = m_count * steps * batch * hidden
    clip_rz = _h_clipped(h, engine["rz"], n_x) + int(clips[0]) - _h_clipped(h_last, engine["rz"], n_x)
    clip_nh = _h_clipped(h, engine["nh"], 0) + int(clips[1]) - _h_clipped(h_last, engine["nh"], 0)
    rz.count_health(clip_rz, numel, 0, 0)
    nx.count_health(0, 0, int(sat[0]), numel)
    nh.count_health(clip_nh, numel, int(sat[1]), numel)
    return out, (h_last,)

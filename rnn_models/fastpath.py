"""Fast CPU path of the programmed analog LSTM: the reference time step with its element-wise work fused.

The reference step (:meth:`rnn_models.layers.AnalogLSTM._direction` through
:class:`~rnn_models.analog.AnalogMatrix`) runs ~40 small torch operations per time step.  Here one
step is: two matrix products (signal and read-noise variance, through the tile's own
:class:`~crossbar.matmul.PreparedMatmul`, exactly the reference's calls), the reference's noise
draws, and two numba kernels that do everything else element by element:

* ``_gates_and_cell``: output scaling (conductance scale, drift gain), the read-noise variance,
  the NL-ADCs of all gate columns at once (the sigmoid and tanh groups' thresholds, ramp variances
  and value tables merged in column order; thresholds counted, one Gaussian per conversion) and the
  fixed-point cell update c = f*c + i*g;
* ``_hidden_and_inputs``: h = o * tanh(c) in fixed point (tanh(c) by torch, as in the reference),
  and the next step's word-line inputs (DAC quantisation, row gains, squares) and the DAC
  clipping count.

Every float operation is the reference's, in the same type and order, so the outputs are
identical -- not just close (``tests/rnn_models/test_fastpath.py`` compares them).  Configurations
the kernels do not cover (CUDA, autograd, per-array conversion of digital partial sums, a digital
bias, linear ADC readouts, a non-digital cell tanh, unsorted ramps, groups of different resolution)
take the reference path;
:func:`supported` says which.
"""
from __future__ import annotations

import numpy as np
import torch

from crossbar.periphery import kernels
from crossbar.periphery.dac import quantize_input
from crossbar.rng import randn_instances

numba = kernels.numba

if numba is not None:
    from crossbar.periphery.kernels import count_below, noisy_input

    @numba.njit(cache=True, nogil=True)
    def _gates_and_cell(y_raw, v_raw, has_var, scale, drift, vgain, t_kc, read_var, noisy, cmp2, values,
                        z_a, idx_a, z_g, idx_g, v2, c, o_out, fixed, step, lo, hi, cnt):  # pragma: no cover
        """All gate columns of one step: output scaling, read-noise variance, NL-ADC conversion with
        each column's own thresholds / ramp variances / value table (the two column groups merged
        in column order), then c = f*c + i*g in fixed point; o is kept for h."""
        m_count, b_count, n_cols = y_raw.shape
        hidden = c.shape[2]
        dt = y_raw.dtype
        y_all, v_all = np.empty(n_cols, dt), np.zeros(n_cols, dt)
        z_all, yn, a = np.empty(n_cols, dt), np.empty(n_cols, dt), np.empty(n_cols, dt)
        for m in range(m_count):
            d, vgm = drift[m], vgain[m]
            for b in range(b_count):
                yr = y_raw[m, b]
                for k in range(n_cols):  # the tile's output scaling: / scale / drift gain
                    y_all[k] = yr[k] / scale / d
                if has_var:  # read-noise variance: clamp(min=0) * 1 / (scale * drift gain)^2
                    vr = v_raw[m, b]
                    for k in range(n_cols):
                        v = vr[k]
                        v_all[k] = (v if v > 0 else v * 0) * vgm
                count_below(t_kc[m], y_all, cnt)
                if noisy:  # the groups' draws, put in column order
                    for j in range(idx_a.shape[0]):
                        z_all[idx_a[j]] = z_a[m, b, j]
                    for j in range(idx_g.shape[0]):
                        z_all[idx_g[j]] = z_g[m, b, j]
                    noisy_input(y_all, cnt, read_var[m], v_all, z_all, v2, cmp2, has_var, yn)
                    count_below(t_kc[m], yn, cnt)
                for k in range(n_cols):
                    a[k] = values[k, cnt[k]]
                for j in range(hidden):  # gate columns in PyTorch's order i, f, g, o
                    s = a[hidden + j] * c[m, b, j] + a[j] * a[2 * hidden + j]  # f * c + i * g
                    if fixed:
                        s = np.rint(min(max(s, lo), hi) / step) * step
                    c[m, b, j] = s
                    o_out[m, b, j] = a[3 * hidden + j]

    @numba.njit(cache=True, nogil=True)
    def _hidden_and_inputs(o, tanh_c, fixed, step, lo, hi, h_out, xq, x2, n_x, in_scale, quantize, x_max,
                           q_step, row_gain, gained, xq_next, x2_next, has_next):  # pragma: no cover
        """h = o * tanh(c) (fixed point) into ``h_out``; the next step's word-line inputs into
        ``xq`` / ``x2`` (h rows computed, x rows copied); returns the number of clipped DAC inputs."""
        m_count, b_count, hidden = o.shape
        clipped = 0
        for m in range(m_count):
            for b in range(b_count):
                for j in range(hidden):
                    p = o[m, b, j] * tanh_c[m, b, j]
                    if fixed:
                        p = np.rint(min(max(p, lo), hi) / step) * step
                    h_out[m, b, j] = p
                    hs = p / in_scale[n_x + j]
                    clipped += 1 if abs(hs) > 1 else 0
                    q = hs
                    if quantize:
                        q = np.rint(min(max(hs, -x_max), x_max) / q_step) * q_step
                    if gained:
                        q = q * row_gain[n_x + j]
                    xq[m, b, n_x + j] = q
                    x2[m, b, n_x + j] = q * q
                if has_next:
                    for j in range(n_x):
                        xq[m, b, j] = xq_next[m, b, j]
                        x2[m, b, j] = x2_next[m, b, j]
        return clipped


def supported(mat, cell, path: str, x: torch.Tensor) -> bool:
    """Whether the fast path reproduces the reference for this LSTM direction."""
    if numba is None or path != "chip" or x.device.type != "cpu" or torch.is_grad_enabled() and x.requires_grad:
        return False
    tile = mat.tile
    cfg = tile.config
    if tile.device.type != "cpu" or tile.g_pos.requires_grad or tile.digital_bias is not None:
        return False
    if cfg.array.partial_sums != "analog" and tile.row_blocks > 1:
        return False
    if cfg.nl_adc.functions.cell != "digital" or (cfg.dac.bits is not None and not cfg.dac.clip):
        return False
    if tile.dtype != x.dtype or [g.name for g in mat.groups] != ["ifo", "g"]:
        return False
    for ro in mat.readouts:
        if ro.nladc is None or ro.linear_range() is not None or not ro.nladc.kernel_ok(x[:1, :1, :1], 1.0):
            return False
    a, g = mat.readouts
    if a.design.codes != g.design.codes or _noisy(a, cfg) != _noisy(g, cfg):
        return False
    return True


def _noisy(readout, cfg) -> bool:
    """Whether the reference draws conversion noise for this NL-ADC readout (see NLADC.codes)."""
    nl = readout.nladc
    return cfg.nl_adc.comparator_noise_sigma * nl.span > 0 or nl.has_read_noise or not cfg.device.read_noise.is_zero


def lstm_sequence(mat, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, reverse: bool, bits: int | None,
                  cell_max: float):
    """Run one LSTM direction on the programmed chip: ``x`` (M, T, B, n_x), states (M, B, H).

    Returns (M, T, B, H) outputs and the final (h, c), identical to the reference loop."""
    tile, cfg = mat.tile, mat.tile.config
    m_count, steps, batch, n_x = x.shape
    hidden = h.shape[-1]
    dtype = tile.dtype
    ty = np.float32 if dtype == torch.float32 else np.float64
    scale = mat.chip_scale
    # word-line inputs of the x rows for all steps (element-wise: the reference's per-step values)
    xs_x = x / scale[:n_x]
    xq_x = quantize_input(xs_x.to(dtype), cfg.dac, tile.x_max)
    if tile._scaled_rows:
        xq_x = xq_x * tile.row_gain[:n_x]
    xq_x = xq_x.contiguous()
    x2_x = (xq_x * xq_x).contiguous()
    # buffers: word-line inputs [x, h, bias] of the current step, their squares
    xq = torch.empty(m_count, batch, tile.n_rows, dtype=dtype)
    first = steps - 1 if reverse else 0
    xq[..., :n_x] = xq_x[:, first]
    xq[..., n_x:n_x + hidden] = tile.word_line_inputs(torch.cat([x[:, first], h], -1) / scale)[..., n_x:n_x + hidden]
    if tile.has_bias:
        bias_row = torch.full((m_count, batch, 1), tile.x_max, dtype=dtype)
        xq[..., -1:] = bias_row * tile.row_gain[-1:] if tile._scaled_rows else bias_row
    x2 = xq * xq
    signal = tile.matmuls("signal")[0]             # the reference's products (one row-block)
    var_w = None if cfg.device.read_noise.is_zero else tile.matmuls("variance")[0]
    np_ = kernels.as_numpy
    # health: the reference counts DAC clipping over [x, h] every step
    if cfg.dac.bits is not None:
        mat.health["dac_clipped"] += int((xs_x.abs() > 1).sum())
        mat.health["dac_total"] += xs_x.numel() + m_count * steps * batch * hidden
        xs_h0 = h / scale[n_x:n_x + hidden]
        mat.health["dac_clipped"] += int((xs_h0.abs() > 1).sum())

    has_var = var_w is not None
    # the two groups' converters merged into column order: thresholds (M, L-1, C), ramp read-noise
    # variances (M, C, L-1), comparator noise (C,), value tables (C, L)
    n_cols = tile.out_features
    t_kc = torch.empty(m_count, mat.readouts[0].design.codes - 1, n_cols, dtype=dtype)
    read_var = torch.empty(m_count, n_cols, mat.readouts[0].design.codes - 1, dtype=dtype)
    cmp2 = np.empty(n_cols, ty)
    values = torch.empty(n_cols, mat.readouts[0].design.codes, dtype=dtype)
    for ro, grp in zip(mat.readouts, mat.groups):
        nl = ro.nladc
        t_kc[:, :, grp.index] = nl.thresholds_kc(1.0)
        read_var[:, grp.index] = nl.read_var
        cmp2[grp.index.numpy()] = ty((cfg.nl_adc.comparator_noise_sigma * nl.span) ** 2)
        values[grp.index] = ro.design.values.to(dtype)
    noisy = _noisy(mat.readouts[0], cfg)
    (idx_a, idx_g), shapes = [np_(g.index.to(torch.int64)) for g in mat.groups], [
        (m_count, batch, len(g.index)) for g in mat.groups]
    cnt = np.empty(n_cols, kernels.counter_dtype(t_kc.shape[1]))
    conv_args = (np_(t_kc), np_(read_var), noisy, cmp2, np_(values))
    drift = np_(tile.drift_gain)
    vgain = np_(tile.variance_gain()) if has_var else np.ones(m_count, ty)
    fixed = bits is not None
    c_step = cell_max / 2 ** (bits - 1) if fixed else 1.0
    h_step = 1.0 / 2 ** (bits - 1) if fixed else 1.0
    quantize = cfg.dac.bits is not None
    q_step = tile.x_max / (2 ** (cfg.dac.bits - 1) - 1) if quantize else 1.0
    zeros = np.zeros((1, 1, 1), ty)
    out = torch.empty(m_count, steps, batch, hidden, dtype=dtype)
    c = c.to(dtype).clone().contiguous()
    o = torch.empty(m_count, batch, hidden, dtype=dtype)
    tanh_c = torch.empty_like(o)
    cell_args = (ty(1.0), c.numpy(), o.numpy(), fixed, ty(c_step), ty(-cell_max), ty(cell_max - c_step), cnt)
    hidden_args = (o.numpy(), tanh_c.numpy(), fixed, ty(h_step), ty(-1.0), ty(1.0 - h_step))
    input_args = (xq.numpy(), x2.numpy(), n_x, np_(scale.to(dtype)), quantize, ty(tile.x_max), ty(q_step),
                  np_(tile.row_gain.to(dtype)), bool(tile._scaled_rows))
    scale_args = (has_var, ty(tile.scale), drift, vgain)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    clipped = 0
    for n, t in enumerate(order):
        y_raw = signal(xq)
        v_raw = var_w(x2).numpy() if has_var else zeros
        # the reference's noise draws: per group, in group order
        z_a = randn_instances(mat.adc_gens, shapes[0], dtype).numpy() if noisy else zeros
        z_g = randn_instances(mat.adc_gens, shapes[1], dtype).numpy() if noisy else zeros
        _gates_and_cell(y_raw.numpy(), v_raw, *scale_args, *conv_args, z_a, idx_a, z_g, idx_g, *cell_args)
        torch.tanh(c, out=tanh_c)
        nxt = order[n + 1] if n + 1 < steps else None
        clipped += _hidden_and_inputs(*hidden_args, out[:, t].numpy(), *input_args,
                                      np_(xq_x[:, nxt]) if nxt is not None else zeros,
                                      np_(x2_x[:, nxt]) if nxt is not None else zeros, nxt is not None)
    if cfg.dac.bits is not None:
        # the last step's h is not read again: its clipping was counted but is not in the reference
        last = out[:, order[-1]] / scale[n_x:n_x + hidden]
        mat.health["dac_clipped"] += clipped - int((last.abs() > 1).sum())
    h_last = out[:, order[-1]]
    return out, (h_last, c)

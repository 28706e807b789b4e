"""Fast CPU path of the programmed analog LSTM: the reference time step with its element-wise work fused.

The reference step (:meth:`rnn_models.layers.AnalogLSTM._direction` through
:class:`~rnn_models.analog.AnalogMatrix`) runs ~40 small torch operations per time step.  Here one
step is: two matrix products (signal and read-noise variance, through the tile's own
:class:`~crossbar.matmul.PreparedMatmul`, exactly the reference's calls), the reference's noise
draws, and two numba kernels that do everything else element by element:

* ``_gates_and_cell``: output scaling (conductance scale, drift gain), the read-noise variance,
  both NL-ADC column groups (thresholds counted, one Gaussian per conversion, value table) and the
  fixed-point cell update c = f*c + i*g;
* ``_hidden_and_inputs``: h = o * tanh(c) in fixed point (tanh(c) by torch, as in the reference),
  and the next step's word-line inputs (DAC quantisation, row gains, squares) and the DAC
  clipping count.

Every float operation is the reference's, in the same type and order, so the outputs are
identical -- not just close (``tests/rnn_models/test_fastpath.py`` compares them).  Configurations
the kernels do not cover (CUDA, autograd, per-array conversion of digital partial sums, a digital
bias, linear ADC readouts, a non-digital cell tanh, unsorted ramps) take the reference path;
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
    def _convert_group(y_all, v_all, idx, has_var, t_kc, read_var, noise_mb, noisy, v2, cmp2, values,
                       y_g, v_g, yn, cnt, out):  # pragma: no cover - compiled
        """One (instance, batch row) of a column group: gather its columns, convert, look up values."""
        for j in range(idx.shape[0]):
            y_g[j] = y_all[idx[j]]
        if has_var:
            for j in range(idx.shape[0]):
                v_g[j] = v_all[idx[j]]
        count_below(t_kc, y_g, cnt)
        if noisy:
            noisy_input(y_g, cnt, read_var, v_g, noise_mb, v2, cmp2, has_var, yn)
            count_below(t_kc, yn, cnt)
        for j in range(idx.shape[0]):
            out[j] = values[cnt[j]]

    @numba.njit(cache=True, nogil=True)
    def _gates_and_cell(y_raw, v_raw, has_var, scale, drift, vgain,
                        idx_a, t_a, rv_a, z_a, noisy_a, val_a, cmp2_a,
                        idx_g, t_g, rv_g, z_g, noisy_g, val_g, cmp2_g,
                        v2, c, o_out, fixed, step, lo, hi, cnt_a, cnt_g):  # pragma: no cover - compiled
        m_count, b_count, n_cols = y_raw.shape
        hidden = c.shape[2]
        na, ng = idx_a.shape[0], idx_g.shape[0]
        dt = y_raw.dtype
        y_all, v_all = np.empty(n_cols, dt), np.zeros(n_cols, dt)
        ya, va, yna, a = np.empty(na, dt), np.zeros(na, dt), np.empty(na, dt), np.empty(na, dt)
        yg, vg, yng, g = np.empty(ng, dt), np.zeros(ng, dt), np.empty(ng, dt), np.empty(ng, dt)
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
                _convert_group(y_all, v_all, idx_a, has_var, t_a[m], rv_a[m], z_a[m, b], noisy_a, v2,
                               cmp2_a, val_a, ya, va, yna, cnt_a, a)
                _convert_group(y_all, v_all, idx_g, has_var, t_g[m], rv_g[m], z_g[m, b], noisy_g, v2,
                               cmp2_g, val_g, yg, vg, yng, cnt_g, g)
                for j in range(hidden):
                    s = a[hidden + j] * c[m, b, j] + a[j] * g[j]  # f * c + i * g
                    if fixed:
                        s = np.rint(min(max(s, lo), hi) / step) * step
                    c[m, b, j] = s
                    o_out[m, b, j] = a[2 * hidden + j]

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
    return True


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
    groups = []
    for ro, grp in zip(mat.readouts, mat.groups):
        nl = ro.nladc
        cmp_sigma = cfg.nl_adc.comparator_noise_sigma * nl.span
        noisy = cmp_sigma > 0 or nl.has_read_noise or has_var
        groups.append(((m_count, batch, len(grp.index)) if noisy else None,       # noise shape
                       (np_(grp.index.to(torch.int64)), np_(nl.thresholds_kc(1.0)), np_(nl.read_var)),
                       (noisy, np_(ro.design.values.to(dtype)), ty(cmp_sigma ** 2))))
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
    counters = [np.empty(len(grp.index), kernels.counter_dtype(ro.nladc.thresholds.shape[-1]))
                for ro, grp in zip(mat.readouts, mat.groups)]
    cell_args = (ty(1.0), c.numpy(), o.numpy(), fixed, ty(c_step), ty(-cell_max), ty(cell_max - c_step), *counters)
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
        (shape_a, pre_a, post_a), (shape_g, pre_g, post_g) = groups
        z_a = zeros if shape_a is None else randn_instances(mat.adc_gens, shape_a, dtype).numpy()
        z_g = zeros if shape_g is None else randn_instances(mat.adc_gens, shape_g, dtype).numpy()
        _gates_and_cell(y_raw.numpy(), v_raw, *scale_args, *pre_a, z_a, *post_a, *pre_g, z_g, *post_g, *cell_args)
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

"""Fast CPU path of the programmed analog LSTM and GRU: the reference time step, fused.

The reference step (``AnalogLSTM._direction`` / ``AnalogGRU._direction`` through
:class:`~rnn_models.analog.AnalogMatrix`) runs dozens of small torch operations per time step.
Here a step of a block of rows of one instance is the two products of each matrix (signal and
read-noise variance, through the tile's own :class:`~crossbar.matmul.PreparedMatmul` -- exactly
the reference's calls) and **one numba kernel** that does everything else, row by row:

* the conversion noise: one standard normal per column from the counter-based generator
  (:func:`crossbar.normals.normal_row`, the numbers the reference draws through
  :class:`~crossbar.normals.NoiseAt`);
* each matrix's output scaling and read-noise variance, the NL-ADCs of all its columns (column
  groups merged in column order: thresholds counted, one Gaussian per conversion, value tables),
  the saturation count of linear readouts;
* the cell in fixed point (LSTM: c = f*c + i*g; GRU: nx + r*nh), the digital tanh
  (:func:`~rnn_models.cell_math.tanh_digital`), the new h (LSTM: o * tanh(c); GRU:
  (1 - z) * n + z * h), and the next step's word lines of every matrix that reads h (DAC
  quantisation, row gains, squares, DAC clipping counts) with the next x rows copied in.

The element-wise physics inside the kernels is not a copy of the reference's: the DAC levels and
fixed-point registers (:func:`crossbar.pointwise.saturating_round`), the column output scaling
and variance (:func:`crossbar.tile.column_output`, :func:`~crossbar.tile.output_variance`) and the
cell updates (:mod:`rnn_models.cell_math`) are the functions the reference runs on tensors,
compiled for scalars (:mod:`crossbar.pointwise`; ``tests/crossbar/test_pointwise.py`` runs both
forms on the same values); the NL-ADC count is the converter's own CPU kernel
(:mod:`crossbar.periphery.kernels`); the normals and the tanh have a torch form and a kernel form
tested bit for bit.  What is written here is the loop around them: which values go where, in the
reference's order, so outputs, final states and health counters are identical -- not just close
(``tests/rnn_models/test_fastpath.py``).

Threads: the work is split into parts (:func:`_parts`): blocks of instances, or for one instance
blocks of its batch rows.  Rows and instances are independent and every number is a function of
its counters, so each part runs the whole sequence on its own pool thread, start to end, without
meeting the others (``KERNEL`` mode).  Readouts the NL-ADC kernel does not convert -- the ideal
ADC, the linear ramp ADC + digital f, an NL-ADC with unsorted ramps or column groups of different
resolution -- take the ``TORCH`` mode: a kernel scales the step's products into column-group order
(:func:`_scale_columns`), each group's readout converts them with its own ``convert`` (the
reference's call on the same values and normals), a linear readout's saturation is counted by the
reference's :func:`~rnn_models.analog.count_saturation`, and the kernels do the cell and the next
inputs; there the parts meet after each step.  Configurations the fast path does not cover (CUDA,
autograd, per-array conversion of digital partial sums, a digital bias, a non-digital cell tanh)
take the reference path; :func:`supported` says which.
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
from rnn_models.cell_math import gru_candidate_input, gru_hidden, lstm_cell, lstm_hidden

numba = kernels.numba
np_ = kernels.as_numpy

if numba is not None:
    from crossbar.elementary import sigmoid_unit, tanh_unit
    from crossbar.normals import normal_row
    from crossbar.periphery.kernels import (
        BLOCK,
        bfloat16_bits,
        bfloat16_value,
        convert_block,
        count_below,
        noisy_input,
    )
    from crossbar.periphery.sampling import noisy_value

    # the element-wise physics, compiled from the one source the reference path runs on tensors
    _saturating_round = compiled(saturating_round)
    _column_output = compiled(column_output)
    _output_variance = compiled(output_variance)
    _lstm_cell = compiled(lstm_cell)
    _lstm_hidden_value = compiled(lstm_hidden)
    _gru_candidate_input = compiled(gru_candidate_input)
    _gru_hidden_value = compiled(gru_hidden)
    _noisy_value = compiled(noisy_value)

    # A row's word lines travel through the kernels as ``wl`` = (amplitudes, squares, the squares'
    # bfloat16 bits, whether the variance product reads those bits);
    # the DAC settings as ``dac`` = (full scales, quantise?, x_max, DAC step, row gains, gained?).

    @kernel(inline=True)
    def _scaled_row(
        y, v, v_bits, bits, r, has_var, scale, d, vgm, linear, lin_lo, lin_hi, y_out, v_out
    ):  # pragma: no cover
        """Row ``r`` of one matrix's step products through the tile's output scaling into ``y_out``
        and (``has_var``) its read-noise variance into ``v_out`` -- from the variance ``v`` or, with
        ``bits``, the bfloat16 product's bits ``v_bits``; returns how many (noise-free) outputs a
        ``linear`` readout saturates.  Both conversion kernels start a row with it."""
        n_cols = y.shape[1]
        yr = y[r]
        for k in range(n_cols):
            y_out[k] = _column_output(yr[k], scale, d)
        if has_var:
            if bits:  # the bfloat16 product's result
                vb = v_bits[r]
                for k in range(n_cols):
                    v_out[k] = _output_variance(bfloat16_value(vb[k]), vgm)
            else:
                vr = v[r]
                for k in range(n_cols):
                    v_out[k] = _output_variance(vr[k], vgm)
        saturated = 0
        if linear:
            for k in range(n_cols):
                saturated += (y_out[k] < lin_lo) | (y_out[k] > lin_hi)
        return saturated

    @kernel
    def _scratch(conv):  # pragma: no cover - compiled
        """Work arrays of :func:`_convert_rows` for one matrix (a call's own: calls run on threads):
        counters, scaled outputs, variances, noisy inputs and normals of one row, and the converted
        values of a block of rows (BLOCK, C)."""
        n = conv[12].shape[0]
        return (
            np.empty_like(conv[12]),
            np.empty_like(conv[13]),
            np.zeros_like(conv[14]),
            np.empty_like(conv[15]),
            np.empty(n, conv[13].dtype),
            np.empty((BLOCK, n), conv[13].dtype),
        )

    # One call per block of rows, not per row: every array a kernel binds (an argument, an element
    # of a tuple such as the converter's ~20 arrays) has its reference count changed atomically on
    # entry and exit, which cost 44 % of the LSTM kernel's time with ideal readouts on an Intel
    # Xeon when the converter was bound per row (docs/speed.md).
    @kernel
    def _convert_rows(y, v, v_bits, bits, r0, nb, key, read, step, row0, m, conv, scratch):  # pragma: no cover
        """Rows r0..r0+nb-1 (nb <= BLOCK) of one matrix's step products (the signal ``y``; the
        variance ``v`` or, with ``bits``, the bfloat16 product's bits ``v_bits``) through its
        converter ``conv`` (``_Matrix.converter``, read only), row by row: the row's normals
        (``key``: the instance's two key words, uint64; ``read``, ``step``, ``row0 + r``: the
        counter, as the reference draws them), the tile's output scaling and variance, every
        column's converter; the values land in ``scratch[5][i]`` (``scratch``: :func:`_scratch` of
        ``conv``).  Returns how many (noise-free) outputs a linear readout saturates."""
        (has_var, scale, drift, vgain, t_kc, read_var, noisy, cmp2, values, lin_lo, lin_hi, linear) = conv[:12]
        ideal, runs = conv[21], conv[22]
        cnt, y_all, v_all, yn, z, out = scratch
        n_cols = y.shape[1]
        d, vgm = drift[m], vgain[m]
        v2 = y.dtype.type(1.0)
        saturated = 0
        for i in range(nb):
            r = r0 + i
            o = out[i]
            if noisy:
                normal_row(z, key[0], key[1], read, step, np.uint64(row0 + r))
            saturated += _scaled_row(
                y, v, v_bits, bits, r, has_var, scale, d, vgm, linear, lin_lo, lin_hi, y_all, v_all
            )
            if ideal:  # ideal converters: the read noise, then the digital unit's f
                _functions(y_all, v_all, z, noisy, runs, o)
                continue
            count_below(t_kc[m], y_all, cnt)
            if noisy:
                noisy_input(y_all, cnt, read_var[m], v_all, z, v2, cmp2, has_var, yn)
                count_below(t_kc[m], yn, cnt)
            for k in range(n_cols):
                o[k] = values[k, cnt[k]]
        return saturated

    @kernel(inline=True)
    def _functions(y, v, z, noisy, runs, out):  # pragma: no cover - compiled
        """out = f(y + sqrt(v) z) (``noisy``) or f(y), f per run of columns (first, length, id):
        0 identity, 1 sigmoid, 2 tanh -- the ideal converter's ``act.chip`` on its sampled input."""
        if noisy:
            for k in range(y.shape[0]):
                y[k] = _noisy_value(y[k], v[k], z[k])
        for i in range(runs.shape[0]):
            a, n, fid = runs[i, 0], runs[i, 1], runs[i, 2]
            ys, os = y[a : a + n], out[a : a + n]
            if fid == 1:
                for k in range(n):
                    os[k] = sigmoid_unit(ys[k])
            elif fid == 2:
                for k in range(n):
                    os[k] = tanh_unit(ys[k])
            else:
                for k in range(n):
                    os[k] = ys[k]

    @kernel
    def _block_scratch(conv):  # pragma: no cover - compiled
        """Work arrays of :func:`_convert_block`: scaled outputs, variances, normals and values of a
        block of rows (BLOCK, C padded)."""
        cols = conv[20].shape[0]
        return (
            np.zeros((BLOCK, cols), np.float32),
            np.zeros((BLOCK, cols), np.float32),
            np.zeros((BLOCK, cols), np.float32),
            np.zeros((BLOCK, cols), np.float32),
        )

    @kernel
    def _convert_block(y, v, v_bits, bits, r0, nb, key, read, step, row0, m, conv, blk):  # pragma: no cover
        """Rows r0..r0+nb-1 (nb <= BLOCK) of one matrix's products through the vector block kernel
        (:func:`crossbar.periphery.kernels.convert_block`): the tile's output scaling and variance
        and each row's normals (as :func:`_convert_rows`) into the block's rows, then every
        column's NL-ADC; the values land in ``blk[3]``.  Returns the saturated conversions of a
        linear readout."""
        (has_var, scale, drift, vgain, _t, _rv, noisy, _c, _val, lin_lo, lin_hi, linear) = conv[:12]
        ys, vs, zs, out = blk
        n_cols = y.shape[1]
        d, vgm = drift[m], vgain[m]
        saturated = 0
        for i in range(nb):
            r = r0 + i
            saturated += _scaled_row(
                y, v, v_bits, bits, r, has_var, scale, d, vgm, linear, lin_lo, lin_hi, ys[i], vs[i]
            )
            if noisy:
                normal_row(zs[i, :n_cols], key[0], key[1], read, step, np.uint64(row0 + r))
        convert_block(conv[17][m], conv[18][m], conv[19], ys, vs, zs, conv[20], np.float32(1.0), has_var, out)
        return saturated

    @kernel(inline=True)
    def _word_lines(p, wl, first, dac):  # pragma: no cover - compiled
        """Word lines ``first``.. of one batch row for the digital values ``p`` (one row): / DAC
        full scale, quantise, row gain, and their squares (and the squares' bfloat16 bits); returns
        how many the DAC clips.  One pass per case over contiguous memory, branch-free inside."""
        n = p.shape[0]
        # slices from ``first`` on: indices j of range(n) need no check for negative values
        # (an index first + j does, and that check keeps the loops from vectorising: 3.6x slower)
        xq, x2 = wl[0][first : first + n], wl[1][first : first + n]
        in_scale, quantize, x_max, q_step, gain, gained = dac
        scale, g = in_scale[first : first + n], gain[first : first + n]
        clipped = 0
        one = in_scale.dtype.type(1)
        # one pass per case: the loop-invariant branches outside the loops
        if quantize and gained:
            for j in range(n):
                hs = p[j] / scale[j]
                clipped += abs(hs) > one
                q = _saturating_round(hs, -x_max, x_max, q_step) * g[j]
                xq[j] = q
                x2[j] = q * q
        elif quantize:
            for j in range(n):
                hs = p[j] / scale[j]
                clipped += abs(hs) > one
                q = _saturating_round(hs, -x_max, x_max, q_step)
                xq[j] = q
                x2[j] = q * q
        elif gained:
            for j in range(n):
                hs = p[j] / scale[j]
                clipped += abs(hs) > one
                q = hs * g[j]
                xq[j] = q
                x2[j] = q * q
        else:
            for j in range(n):
                hs = p[j] / scale[j]
                clipped += abs(hs) > one
                xq[j] = hs
                x2[j] = hs * hs
        if wl[3]:
            x2_bits = wl[2][first : first + n]
            for j in range(n):
                x2_bits[j] = bfloat16_bits(x2[j])
        return clipped

    @kernel(inline=True)
    def _next_x(wl, nxt, n_x):  # pragma: no cover - compiled
        """The next step's x rows (amplitudes, squares, bfloat16 bits: ``nxt``) into a row's word lines."""
        for j in range(n_x):
            wl[0][j] = nxt[0][j]
            wl[1][j] = nxt[1][j]
        if wl[3]:
            for j in range(n_x):
                wl[2][j] = nxt[2][j]

    @kernel
    def _row_of(wl, r):  # pragma: no cover - compiled
        """Row ``r`` of a block's word lines ``wl`` (the bits arrays are dummies without bits)."""
        return (wl[0][r], wl[1][r], wl[2][r if wl[3] else 0], wl[3])

    @kernel
    def _next_of(nxt, r, has_next):  # pragma: no cover - compiled
        """Row ``r`` of the next step's x rows (row 0 of the placeholders at the last step)."""
        i = r if has_next else 0
        return (nxt[0][i], nxt[1][i], nxt[2][i if nxt[2].shape[0] > i else 0])

    @kernel
    def _instance_of(wl, m):  # pragma: no cover - compiled
        """Instance ``m`` of (M, B, .) word lines."""
        return (wl[0][m], wl[1][m], wl[2][m if wl[3] else 0], wl[3])

    @kernel
    def _instance_next(nxt, m, has_next):  # pragma: no cover - compiled
        """Instance ``m`` of (M, B, n_x) next x rows (instance 0 of the placeholders at the last step)."""
        i = m if has_next else 0
        return (nxt[0][i], nxt[1][i], nxt[2][i if nxt[2].shape[0] > i else 0])

    @kernel(inline=True)
    def _lstm_cell_row(i, f, g, o, c, o_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """One batch row of the LSTM's first digital step: c = f*c + i*g in fixed point, o kept
        (the converted gates as rows, whichever kernel converted them)."""
        if fixed:
            for j in range(c.shape[0]):
                c[j] = _saturating_round(_lstm_cell(i[j], f[j], g[j], c[j]), lo, hi, step)
        else:
            for j in range(c.shape[0]):
                c[j] = _lstm_cell(i[j], f[j], g[j], c[j])
        for j in range(c.shape[0]):
            o_out[j] = o[j]

    @kernel(inline=True)
    def _lstm_hidden_row(o, c, fixed, step, lo, hi, h_out, wl, n_x, dac, nxt, has_next):  # pragma: no cover
        """One batch row: h = o * tanh(c) (digital tanh) in fixed point into ``h_out``, the word
        lines of h (after the ``n_x`` x rows) and, with ``has_next``, the next step's x rows;
        returns the DAC clippings of h."""
        # the loop-invariant branch outside the loops: a branch inside keeps them from vectorising
        if fixed:
            for j in range(c.shape[0]):
                h_out[j] = _saturating_round(_lstm_hidden_value(o[j], tanh_unit(c[j])), lo, hi, step)
        else:
            for j in range(c.shape[0]):
                h_out[j] = _lstm_hidden_value(o[j], tanh_unit(c[j]))
        clipped = _word_lines(h_out, wl, n_x, dac)
        if has_next:
            _next_x(wl, nxt, n_x)
        return clipped

    @kernel
    def _lstm_rows(
        y, v, v_bits, conv, key, read, step, row0, m, c, o, fixed_c, fixed_h, h_out, wl, n_x, dac, nxt, has_next
    ):  # pragma: no cover
        """One step of rows ``row0..`` of instance ``m`` (NL-ADC kernel mode): every gate column
        converted (PyTorch's order i, f, g, o; its normals drawn at (read, step, row)), c = f*c +
        i*g in fixed point, h = o * tanh(c), the next word lines; returns the DAC clippings."""
        hidden = c.shape[1]
        h2, h3 = 2 * hidden, 3 * hidden
        bits = wl[3]
        clipped = 0
        # the fixed-point settings unpacked here: a call with *args cannot be inlined
        fc, fc_step, fc_lo, fc_hi = fixed_c
        fh, fh_step, fh_lo, fh_hi = fixed_h
        if conv[16]:  # the vector block kernel: BLOCK rows at a time
            blk = _block_scratch(conv)
            for r0 in range(0, y.shape[0], BLOCK):
                nb = min(BLOCK, y.shape[0] - r0)
                _convert_block(y, v, v_bits, bits, r0, nb, key, read, step, row0, m, conv, blk)
                for i in range(nb):
                    r, a = r0 + i, blk[3][i]
                    _lstm_cell_row(a[:hidden], a[hidden:h2], a[h2:h3], a[h3:], c[r], o[r], fc, fc_step, fc_lo, fc_hi)
                    clipped += _lstm_hidden_row(
                        o[r], c[r], fh, fh_step, fh_lo, fh_hi, h_out[r], _row_of(wl, r), n_x, dac,
                        _next_of(nxt, r, has_next), has_next,
                    )  # fmt: skip
            return clipped
        scratch = _scratch(conv)
        for r0 in range(0, y.shape[0], BLOCK):
            nb = min(BLOCK, y.shape[0] - r0)
            _convert_rows(y, v, v_bits, bits, r0, nb, key, read, step, row0, m, conv, scratch)
            for i in range(nb):
                r, a = r0 + i, scratch[5][i]
                _lstm_cell_row(a[:hidden], a[hidden:h2], a[h2:h3], a[h3:], c[r], o[r], fc, fc_step, fc_lo, fc_hi)
                clipped += _lstm_hidden_row(
                    o[r], c[r], fh, fh_step, fh_lo, fh_hi, h_out[r], _row_of(wl, r), n_x, dac,
                    _next_of(nxt, r, has_next), has_next,
                )  # fmt: skip
        return clipped

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
    def _lstm_hidden(o, c, fixed_h, h_out, wl, n_x, dac, nxt, has_next):  # pragma: no cover
        """:func:`_lstm_hidden_row` of every row of (M, B, H) blocks (``wl``, ``nxt``: of (M, B, .)
        arrays); returns the DAC clippings."""
        m_count, b_count, _ = o.shape
        clipped = 0
        fh, fh_step, fh_lo, fh_hi = fixed_h  # (a call with *args cannot be inlined)
        for m in range(m_count):
            wl_m, nxt_m = _instance_of(wl, m), _instance_next(nxt, m, has_next)
            for b in range(b_count):
                clipped += _lstm_hidden_row(
                    o[m, b], c[m, b], fh, fh_step, fh_lo, fh_hi, h_out[m, b], _row_of(wl_m, b), n_x, dac,
                    _next_of(nxt_m, b, has_next), has_next,
                )  # fmt: skip
        return clipped

    @kernel
    def _gru_candidate_row(r, z, nx, nh, pre, z_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """One batch row of the GRU's candidate input: pre = nx + r * nh in fixed point, z kept."""
        if fixed:
            for j in range(pre.shape[0]):
                pre[j] = _saturating_round(_gru_candidate_input(nx[j], r[j], nh[j]), lo, hi, step)
        else:
            for j in range(pre.shape[0]):
                pre[j] = _gru_candidate_input(nx[j], r[j], nh[j])
        for j in range(pre.shape[0]):
            z_out[j] = z[j]

    @kernel
    def _gru_hidden_row(
        z, pre, h, fixed, step, lo, hi, h_out, wl_rz, dac_rz, wl_nh, dac_nh, wl_nx, n_x, nxt_rz, nxt_nx, has_next
    ):  # pragma: no cover
        """One batch row: n = tanh(pre) (digital tanh), h = (1 - z) * n + z * h in fixed point into
        ``h`` and ``h_out``; the word lines of the two matrices that read h (rz: rows after x; nh:
        all rows) and, with ``has_next``, the next x rows of rz and nx; returns the DAC clippings of
        rz and nh."""
        if fixed:
            for j in range(h.shape[0]):
                h[j] = _saturating_round(_gru_hidden_value(z[j], tanh_unit(pre[j]), h[j]), lo, hi, step)
        else:
            for j in range(h.shape[0]):
                h[j] = _gru_hidden_value(z[j], tanh_unit(pre[j]), h[j])
        for j in range(h.shape[0]):
            h_out[j] = h[j]
        clip_rz = _word_lines(h, wl_rz, n_x, dac_rz)
        clip_nh = _word_lines(h, wl_nh, 0, dac_nh)
        if has_next:
            _next_x(wl_rz, nxt_rz, n_x)
            _next_x(wl_nx, nxt_nx, n_x)
        return clip_rz, clip_nh

    @kernel
    def _gru_rows(
        prods,
        convs,
        keys,
        reads,
        step,
        row0,
        m,
        pre,
        z_gate,
        fixed_c,
        fixed_h,
        h,
        h_out,
        wls,
        dacs,
        n_x,
        nxts,
        has_next,
    ):  # pragma: no cover
        """One step of rows ``row0..`` of instance ``m`` (NL-ADC kernel mode): r, z, nx, nh from
        their three matrices (``prods``, ``convs``, ``keys``, ``reads``, ``wls``, ``dacs``, ``nxts``:
        rz's, nx's, nh's), pre = nx + r * nh in fixed point, h = (1 - z) * tanh(pre) + z * h, the
        next word lines.  Returns the counts (DAC clippings of rz and nh, saturated linear
        conversions of nx and nh)."""
        hidden = h.shape[1]
        counts = np.zeros(4, np.int64)
        if convs[0][16] and convs[1][16] and convs[2][16]:  # the vector block kernel
            b_rz, b_nx, b_nh = _block_scratch(convs[0]), _block_scratch(convs[1]), _block_scratch(convs[2])
            (y0, v0, w0), (y1, v1, w1), (y2, v2, w2) = prods
            for r0 in range(0, h.shape[0], BLOCK):
                nb = min(BLOCK, h.shape[0] - r0)
                _convert_block(y0, v0, w0, wls[0][3], r0, nb, keys[0], reads[0], step, row0, m, convs[0], b_rz)
                counts[2] += _convert_block(
                    y1, v1, w1, wls[1][3], r0, nb, keys[1], reads[1], step, row0, m, convs[1], b_nx
                )
                counts[3] += _convert_block(
                    y2, v2, w2, wls[2][3], r0, nb, keys[2], reads[2], step, row0, m, convs[2], b_nh
                )
                for i in range(nb):
                    r = r0 + i
                    rz, nx, nh = b_rz[3][i], b_nx[3][i], b_nh[3][i]
                    _gru_candidate_row(
                        rz[:hidden], rz[hidden : 2 * hidden], nx[:hidden], nh[:hidden], pre[r], z_gate[r], *fixed_c
                    )
                    n_rz, n_nx = _next_of(nxts[0], r, has_next), _next_of(nxts[1], r, has_next)
                    a, b = _gru_hidden_row(
                        z_gate[r], pre[r], h[r], *fixed_h, h_out[r], _row_of(wls[0], r), dacs[0], _row_of(wls[2], r),
                        dacs[2], _row_of(wls[1], r), n_x, n_rz, n_nx, has_next,
                    )  # fmt: skip
                    counts[0] += a
                    counts[1] += b
            return counts
        s_rz, s_nx, s_nh = _scratch(convs[0]), _scratch(convs[1]), _scratch(convs[2])
        (y0, v0, w0), (y1, v1, w1), (y2, v2, w2) = prods
        for r0 in range(0, h.shape[0], BLOCK):
            nb = min(BLOCK, h.shape[0] - r0)
            _convert_rows(y0, v0, w0, wls[0][3], r0, nb, keys[0], reads[0], step, row0, m, convs[0], s_rz)
            counts[2] += _convert_rows(y1, v1, w1, wls[1][3], r0, nb, keys[1], reads[1], step, row0, m, convs[1], s_nx)
            counts[3] += _convert_rows(y2, v2, w2, wls[2][3], r0, nb, keys[2], reads[2], step, row0, m, convs[2], s_nh)
            for i in range(nb):
                r = r0 + i
                rz, nx, nh = s_rz[5][i], s_nx[5][i], s_nh[5][i]
                _gru_candidate_row(rz[:hidden], rz[hidden:], nx, nh, pre[r], z_gate[r], *fixed_c)
                a, b = _gru_hidden_row(
                    z_gate[r], pre[r], h[r], *fixed_h, h_out[r], _row_of(wls[0], r), dacs[0], _row_of(wls[2], r),
                    dacs[2], _row_of(wls[1], r), n_x, _next_of(nxts[0], r, has_next), _next_of(nxts[1], r, has_next),
                    has_next,
                )  # fmt: skip
                counts[0] += a
                counts[1] += b
        return counts

    @kernel
    def _row_part(parts, rows, i):  # pragma: no cover - compiled
        """Rows r0:r1 of part ``i`` of ``parts`` (whole blocks of BLOCK rows where there are enough)."""
        blocks = (rows + BLOCK - 1) // BLOCK
        if blocks >= parts:
            return (blocks * i // parts) * BLOCK, min(rows, (blocks * (i + 1) // parts) * BLOCK)
        return rows * i // parts, rows * (i + 1) // parts

    @kernel
    def _wl_rows(wl, r0, r1):  # pragma: no cover - compiled
        """Rows r0:r1 of (R, .) word lines (the bits placeholder kept without bits)."""
        return (wl[0][r0:r1], wl[1][r0:r1], wl[2][r0:r1] if wl[3] else wl[2], wl[3])

    @kernel
    def _nxt_rows(nxt, r0, r1, has_next):  # pragma: no cover - compiled
        """Rows r0:r1 of the next step's (R, n_x) x rows (the placeholders kept at the last step)."""
        if not has_next:
            return nxt
        return (nxt[0][r0:r1], nxt[1][r0:r1], nxt[2][r0:r1] if nxt[2].shape[0] > 1 else nxt[2])

    @kernel(parallel=True)
    def _lstm_rows_parallel(
        parts, y, v, v_bits, conv, key, read, step, row0, m, c, o, fixed_c, fixed_h, h_out, wl, n_x, dac, nxt, has_next
    ):  # pragma: no cover - compiled
        """:func:`_lstm_rows` of the rows split into ``parts`` on numba's threads (rows are
        independent and their normals are functions of their counters: the same numbers)."""
        counts = np.zeros(parts, np.int64)
        bits = wl[3]
        for i in numba.prange(parts):
            r0, r1 = _row_part(parts, y.shape[0], i)
            y_p, v_p, b_p = _prod_rows((y, v, v_bits), bits, r0, r1)
            counts[i] = _lstm_rows(
                y_p, v_p, b_p, conv, key, read, step, row0 + r0, m, c[r0:r1], o[r0:r1], fixed_c, fixed_h,
                h_out[r0:r1], _wl_rows(wl, r0, r1), n_x, dac, _nxt_rows(nxt, r0, r1, has_next), has_next,
            )  # fmt: skip
        return counts.sum()

    @kernel(parallel=True)
    def _gru_rows_parallel(
        parts,
        p_rz,
        p_nx,
        p_nh,
        c_rz,
        c_nx,
        c_nh,
        keys,
        reads,
        step,
        row0,
        m,
        pre,
        z_gate,
        fixed_c,
        fixed_h,
        h,
        h_out,
        w_rz,
        w_nx,
        w_nh,
        d_rz,
        d_nx,
        d_nh,
        n_x,
        n_rz,
        n_nx,
        has_next,
    ):  # pragma: no cover - compiled
        """:func:`_gru_rows` of the rows split into ``parts`` on numba's threads (the matrices'
        tuples passed one by one: numba's parallel loops take no tuples of tuples of arrays)."""
        counts = np.zeros((parts, 4), np.int64)
        for i in numba.prange(parts):
            r0, r1 = _row_part(parts, h.shape[0], i)
            sub = (
                _prod_rows(p_rz, w_rz[3], r0, r1),
                _prod_rows(p_nx, w_nx[3], r0, r1),
                _prod_rows(p_nh, w_nh[3], r0, r1),
            )
            w = (_wl_rows(w_rz, r0, r1), _wl_rows(w_nx, r0, r1), _wl_rows(w_nh, r0, r1))
            n = (_nxt_rows(n_rz, r0, r1, has_next), _nxt_rows(n_nx, r0, r1, has_next))
            counts[i] = _gru_rows(
                sub, (c_rz, c_nx, c_nh), keys, reads, step, row0 + r0, m, pre[r0:r1], z_gate[r0:r1], fixed_c, fixed_h,
                h[r0:r1], h_out[r0:r1], w, (d_rz, d_nx, d_nh), n_x, n, has_next,
            )  # fmt: skip
        return counts.sum(0)

    @kernel
    def _prod_rows(prod, bits, r0, r1):  # pragma: no cover - compiled
        """Rows r0:r1 of a matrix's (signal, variance, variance bits) products."""
        y, v, vb = prod
        return (y[r0:r1], v[r0:r1] if not bits else v, vb[r0:r1] if bits else vb)

    @kernel(parallel=True)
    def _launch_threads(x):  # pragma: no cover - compiled
        """A parallel loop that does nothing useful: it starts numba's threading layer."""
        for i in numba.prange(x.shape[0]):
            x[i] = i

    @kernel
    def _gru_update(rz, nx, nh, pre, z_out, fixed, step, lo, hi):  # pragma: no cover - compiled
        """pre = nx + r * nh in fixed point (before tanh) from the converted r/z, nx and nh; z kept."""
        m_count, b_count, hidden = pre.shape
        for m in range(m_count):
            for b in range(b_count):
                r, z = rz[m, b, :hidden], rz[m, b, hidden:]
                _gru_candidate_row(r, z, nx[m, b], nh[m, b], pre[m, b], z_out[m, b], fixed, step, lo, hi)

    @kernel
    def _gru_hidden(z, pre, h, fixed_h, h_out, wls, dacs, n_x, nxts, has_next):  # pragma: no cover
        """:func:`_gru_hidden_row` of every row of (M, B, H) blocks; returns the DAC clippings of rz and nh."""
        m_count, b_count, _ = z.shape
        clipped = np.zeros(2, np.int64)
        for m in range(m_count):
            w_rz, w_nx, w_nh = _instance_of(wls[0], m), _instance_of(wls[1], m), _instance_of(wls[2], m)
            n_rz, n_nx = _instance_next(nxts[0], m, has_next), _instance_next(nxts[1], m, has_next)
            for b in range(b_count):
                a, b_ = _gru_hidden_row(
                    z[m, b], pre[m, b], h[m, b], *fixed_h, h_out[m, b], _row_of(w_rz, b), dacs[0], _row_of(w_nh, b),
                    dacs[2], _row_of(w_nx, b), n_x, _next_of(n_rz, b, has_next), _next_of(n_nx, b, has_next),
                    has_next,
                )  # fmt: skip
                clipped[0] += a
                clipped[1] += b_
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
    if all(_function_id(ro) is not None for ro in mat.readouts):
        return KERNEL  # ideal converters: the digital unit's f in the kernels
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


#: the functions the kernels compute after an ideal converter, by id (crossbar.elementary's forms)
KERNEL_FUNCTIONS = {"identity": 0, "sigmoid": 1, "tanh": 2}


def _function_id(readout) -> int | None:
    """The kernels' id of an ideal converter's function, None for any other readout."""
    return KERNEL_FUNCTIONS.get(readout.function) if readout.kind == "ideal" else None


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
_NO_BITS = np.zeros((1, 1, 1), np.uint16)  # placeholder of the bfloat16 arrays where none are read


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
        self.m_count, self.n_x = m_count, n_x
        self.zeros = np.zeros((1, 1, 1), ty)
        # word lines of the x rows for all steps (element-wise: the reference's per-step values)
        self.xq_x: torch.Tensor | None = None  # (M, T, B, n_x) word-line amplitudes
        self.x2_x: torch.Tensor | None = None  # and their squares
        parts = []
        # instances that read one input (an expanded tensor: a first layer in a Monte-Carlo run)
        # get its word lines once (the DAC and the row gains are the same on every instance)
        self.x_copies = m_count if (x is not None and m_count > 1 and x.stride(0) == 0) else 1
        if x is not None:
            self.xs_x = (x[:1] if self.x_copies > 1 else x) / scale[:n_x]
            xq_x = tile.dac_rows(self.xs_x.to(self.dtype))
            self.xq_x, self.x2_x = xq_x.contiguous(), (xq_x * xq_x).contiguous()
            parts.append(x[:, first])
        if h is not None:
            parts.append(h)
        self.xq = tile.word_line_inputs(torch.cat(parts, -1) / scale).contiguous()
        self.x2 = self.xq * self.xq
        self.signal = tile.matmuls("signal")[0]
        self.variance = None if cfg.device.read_noise.is_zero else tile.matmuls("variance")[0]
        # the kernels write the squares' bfloat16 bits for a bfloat16 variance product on oneDNN
        var = self.variance
        self.bits = bool(
            mode == KERNEL
            and var is not None
            and var.packed is not None
            and var.onednn_dtype == torch.bfloat16
            and self.dtype == torch.float32
        )
        self.x2_bf = self.x2.to(torch.bfloat16) if self.bits else None
        x2_bits = self.x2_bf.view(torch.int16).numpy().view(np.uint16) if self.x2_bf is not None else _NO_BITS
        # (M, B, K) word lines as the kernels read them (see the kernels' ``wl``)
        self.wl = (self.xq.numpy(), self.x2.numpy(), x2_bits, self.bits)
        self.bits_x = (
            np_(self.x2_x.to(torch.bfloat16).view(torch.int16)).view(np.uint16)
            if (self.bits and self.x2_x is not None)
            else _NO_BITS[None]
        )
        if self.x_copies > 1:  # every instance's view of the one copy (stride 0 over instances)
            assert self.xq_x is not None and self.x2_x is not None
            self.xq_x = self.xq_x.expand(m_count, -1, -1, -1)
            self.x2_x = self.x2_x.expand(m_count, -1, -1, -1)
            self.bits_x = np.broadcast_to(self.bits_x, (m_count, *self.bits_x.shape[1:])) if self.bits else self.bits_x
        self.quantize = cfg.dac.bits is not None
        q_step = tile.x_max / (2 ** (cfg.dac.bits - 1) - 1) if self.quantize else 1.0
        # the DAC settings as the kernels read them (see the kernels' ``dac``)
        self.dac = (
            np_(scale.to(self.dtype)),
            self.quantize,
            ty(tile.x_max),
            ty(q_step),
            np_(tile.row_gain.to(self.dtype)),
            bool(tile._scaled_rows),
        )
        self.clip_x = self.x_copies * int((self.xs_x.abs() > 1).sum()) if (x is not None and self.quantize) else 0
        self.indices = [np_(g.index.to(torch.int64)) for g in mat.groups]
        self.group_shapes = [(m_count, batch, len(g.index)) for g in mat.groups]
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
        self.group_y = [torch.empty(shape, dtype=self.dtype) for shape in self.group_shapes]
        self.group_v = [torch.empty(shape, dtype=self.dtype) if has_var else None for shape in self.group_shapes]
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
        """KERNEL mode: the column groups' NL-ADCs merged in column order, as ``_convert_rows`` reads
        them (built once per programming and kept on the matrix)."""
        tile, ros = self.mat.tile, self.mat.readouts
        designs = tuple(
            (id(ro.nladc.thresholds), id(ro.nladc.read_var)) if ro.nladc is not None else ro.function for ro in ros
        )
        key = (id(tile), tile._layout_version, id(tile.drift_gain), tile.scale, self.dtype, m_count, designs)
        cached = getattr(self.mat, "_fast_converter", None)
        if cached is None or cached[0] != key:
            cached = (key, self._build_converter(ty, m_count))
            self.mat._fast_converter = cached
        self.converter, self.noisy, self.linear = cached[1]
        # the instances' key words of the matrix's normal stream, for normal_row
        self.keys = self.mat.noise.keys_np.astype(np.uint64)

    def _build_converter(self, ty, m_count: int) -> tuple:
        """(converter tuple, noisy?, linear?) of :meth:`_kernel_readouts`."""
        tile, cfg = self.mat.tile, self.mat.tile.config
        ros, groups = self.mat.readouts, self.mat.groups
        if all(_function_id(ro) is not None for ro in ros):
            return self._function_converter(ty, m_count)
        n_cols, codes = tile.out_features, ros[0].design.codes
        t_kc = torch.empty(m_count, codes - 1, n_cols, dtype=self.dtype)
        read_var = torch.empty(m_count, n_cols, codes - 1, dtype=self.dtype)
        cmp2, values = np.empty(n_cols, ty), torch.empty(n_cols, codes, dtype=self.dtype)
        for ro, grp in zip(ros, groups):
            t_kc[:, :, grp.index] = ro.nladc.thresholds_kc(1.0)
            read_var[:, grp.index] = ro.nladc.read_var
            cmp2[grp.index.numpy()] = ty(ro.nladc.comparator_sigma**2)
            values[grp.index] = ro.design.values.to(self.dtype)
        noisy = _noisy(ros[0], cfg)
        lin = ros[0].linear_range()
        linear = lin is not None
        lin_lo, lin_hi = (ty(lin[0]), ty(lin[1])) if linear else (ty(0), ty(0))
        # the vector block kernel (AVX-512 hosts, float32, <= 32 codes) and its tables
        block = kernels.AVX512 and self.dtype == torch.float32 and codes <= kernels.BLOCK_CODES
        if block:
            tables = kernels.block_tables(t_kc.transpose(1, 2), read_var, values)
            cmp2_padded = np.zeros(tables[2].shape[0], np.float32)
            cmp2_padded[:n_cols] = cmp2
        else:
            tables = (np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32), np.zeros((1, 1), np.float32))
            cmp2_padded = np.zeros(kernels.BLOCK, np.float32)
        # everything the conversion kernels need, in their order (12..15: templates of scratch
        # rows; 16..20: the vector block kernel's)
        converter = (
            *self.scaling,
            np_(t_kc),
            np_(read_var),
            noisy,
            cmp2,
            np_(values),
            lin_lo,
            lin_hi,
            linear,
            np.empty(n_cols, kernels.counter_dtype(codes - 1)),
            np.empty(n_cols, ty),
            np.zeros(n_cols, ty),
            np.empty(n_cols, ty),
            block,
            *tables,
            cmp2_padded,
            False,  # 21: the NL-ADCs, not functions
            np.zeros((0, 3), np.int64),  # 22: runs of one function (none)
        )
        return converter, noisy, linear

    def _function_converter(self, ty, m_count: int) -> tuple:
        """(converter tuple, noisy?, linear?) for ideal converters: runs (first column, length,
        function id) of consecutive columns with one function; the read noise (when the tile has
        it) sampled in the kernel as the converter samples it (``sample_read_noise``)."""
        n_cols = self.mat.tile.out_features
        fid = np.empty(n_cols, np.int64)
        for ro, grp in zip(self.mat.readouts, self.mat.groups):
            fid[grp.index.numpy()] = _function_id(ro)
        breaks = np.flatnonzero(np.diff(fid) != 0) + 1
        runs = np.array([(a, b - a, fid[a]) for a, b in zip(np.r_[0, breaks], np.r_[breaks, n_cols])], np.int64)
        noisy = self.variance is not None  # the converters draw only for the array's read noise
        none3 = np.zeros((1, 1, 1), ty)
        converter = (
            *self.scaling,
            none3,
            none3,
            noisy,
            np.zeros(n_cols, ty),
            np.zeros((1, 1), ty),
            ty(0),
            ty(0),
            False,
            np.empty(n_cols, np.uint8),
            np.empty(n_cols, ty),
            np.zeros(n_cols, ty),
            np.empty(n_cols, ty),
            False,
            np.zeros((1, 1, 1), np.float32),
            np.zeros((1, 1, 1), np.float32),
            np.zeros((1, 1), np.float32),
            np.zeros(kernels.BLOCK, np.float32),
            True,  # 21: functions
            runs,  # 22
        )
        return converter, noisy, False

    def products(self) -> tuple[np.ndarray, np.ndarray]:
        """This step's (signal, variance) products of all instances as numpy arrays."""
        y = self.signal(self.xq).numpy()
        return y, (self.variance(self.x2).numpy() if self.variance is not None else y)

    @property
    def per_instance(self) -> bool:
        """Whether the products of one instance's rows equal those of all instances at once."""
        return self.signal.per_instance and (self.variance is None or self.variance.per_instance)

    def counter(self, m: int) -> tuple:
        """(key words of instance ``m``, this forward pass's read) for the kernels' normals."""
        return self.keys[m], np.uint64(self.mat.read)

    def word_lines(self, m0: int, m1: int, b0: int, b1: int) -> tuple:
        """The kernels' ``wl`` of instances m0:m1, rows b0:b1 ((M', B', K) arrays)."""
        xq, x2, bits, on = self.wl
        return (xq[m0:m1, b0:b1], x2[m0:m1, b0:b1], bits[m0:m1, b0:b1] if on else bits, on)

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

    def next_x(self, t: int | None, part: tuple[int, int, int, int]) -> tuple:
        """The x rows' word lines, squares and bfloat16 bits of step ``t`` for the part's instances
        and rows ((M', B', n_x) views, no copy); placeholders when there is no next step or x."""
        if t is None or self.xq_x is None or self.x2_x is None:  # (x2_x is set with xq_x)
            return self.zeros, self.zeros, _NO_BITS
        m0, m1, b0, b1 = part
        # (copies where a shared input's views have stride 0 over the instances)
        bits = np.ascontiguousarray(self.bits_x[m0:m1, t, b0:b1]) if self.bits else _NO_BITS
        return np_(self.xq_x[m0:m1, t, b0:b1]), np_(self.x2_x[m0:m1, t, b0:b1]), bits

    def count_health(self, h_clipped: int, h_numel: int, saturated: int, sat_numel: int) -> None:
        """Add this sequence's DAC clipping (x rows counted here, h rows by the caller) and linear-ADC
        saturation to the matrix's health counters, as the reference counts them."""
        health = self.mat.health
        if self.quantize:
            health["dac_clipped"] += self.clip_x + h_clipped
            health["dac_total"] += (self.x_copies * self.xs_x.numel() if self.xq_x is not None else 0) + h_numel
        if self.linear:
            health["adc_saturated"] += saturated
            health["adc_total"] += sat_numel


class _RowBlock:
    """Rows b0:b1 of instance ``m`` of one matrix for a whole sequence (``KERNEL`` mode): the views
    the kernels read, made once, and the step's two products with as little Python around them as
    possible (oneDNN called directly: the same call :meth:`PreparedMatmul.instance` makes)."""

    def __init__(self, mat: _Matrix, m: int, b0: int, b1: int):
        self.m, self.b0, self.b1 = m, b0, b1
        self.views: tuple = ()  # the sequence's own views of these rows (its kernel_step's)
        self.key, self.read = mat.counter(m)
        wl = mat.word_lines(m, m + 1, b0, b1)
        self.wl = (wl[0][0], wl[1][0], wl[2][0], wl[3])  # (R, K) rows
        xq_t = mat.xq[m, b0:b1]
        sig, var = mat.signal, mat.variance
        # oneDNN called directly where PreparedMatmul.instance would call it (float32 rows)
        self._sig_packed = sig.packed[m] if (sig.packed is not None and xq_t.dtype == torch.float32) else None
        self._xq = xq_t
        self._sig_fallback = lambda: sig.instance(m, xq_t).numpy()
        self.dummy_v = np.zeros((1, 1), mat.ty)
        self.dummy_bits = np.zeros((1, 1), np.uint16)
        self._var_packed = None  # (bfloat16 squares, packed weights) of a bfloat16 product on oneDNN
        self._var_fallback = None
        if var is not None and mat.bits:
            assert mat.x2_bf is not None and var.packed is not None
            self._var_packed = (mat.x2_bf[m, b0:b1], var.packed[m])
        elif var is not None:
            x2_t = mat.x2[m, b0:b1]
            self._var_fallback = lambda: var.instance(m, x2_t).numpy()
        self.bits = mat.bits
        self.has_x = mat.xq_x is not None
        if self.has_x:
            assert mat.xq_x is not None and mat.x2_x is not None
            self.x_next = (
                np_(mat.xq_x[m, :, b0:b1]),
                np_(mat.x2_x[m, :, b0:b1]),
                mat.bits_x[m, :, b0:b1] if mat.bits else None,
            )
        self.no_next = (mat.zeros[0], mat.zeros[0], self.dummy_bits)

    def products(self) -> tuple:
        """(signal, variance, variance bits) of the rows' current word lines: the variance as
        float or (with a bfloat16 product on oneDNN) as bfloat16 bits, the other a placeholder."""
        linear = torch.ops.mkldnn._linear_pointwise
        if self._sig_packed is not None:
            y = linear(self._xq, self._sig_packed, None, "none", [], "").numpy()
        else:
            y = self._sig_fallback()
        if self._var_packed is not None:
            x2, p = self._var_packed
            v = linear(x2, p, None, "none", [], "")
            return y, self.dummy_v, v.view(torch.int16).numpy().view(np.uint16)
        if self._var_fallback is not None:
            return y, self._var_fallback(), self.dummy_bits
        return y, y, self.dummy_bits

    def next(self, t: int | None) -> tuple:
        """The kernels' ``nxt`` of step ``t``: its x rows (R, n_x) (placeholders at the last step)."""
        if t is None or not self.has_x:
            return self.no_next
        q, q2, b = self.x_next
        return q[t], q2[t], (b[t] if b is not None else self.dummy_bits)


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
#: fewer conversions per sequence step than this run on the calling thread alone
MIN_PARALLEL = 16_384
#: ``KERNEL`` mode's threads: True -- every step's products on torch's threads, then the step's
#: kernel over row parts on numba's (OpenMP) threads; False -- each part (a block of instances or
#: rows) runs its whole sequence on a pool thread of its own.  Measured (benchmarks/lstm_speed.py,
#: docs/speed.md): the first is faster (two products per step instead of one per part, and no
#: pool threads); it needs numba's OpenMP (or TBB) threading layer, else the second runs.
STEP_PARALLEL = True

_parallel_state: dict = {}


def _kernel_threads() -> int:
    """How many numba threads the parallel step kernels use (1: run them serially): torch's
    thread count, where numba's threading layer is OpenMP or TBB (its work-queue layer wakes
    threads too slowly for a kernel per step)."""
    workers = max(1, torch.get_num_threads())
    if workers == 1 or numba is None or not STEP_PARALLEL:
        return 1
    ok = _parallel_state.get("ok")
    if ok is None:
        try:
            _launch_threads(np.zeros(2))  # starts numba's threading layer (once per process)
            ok = numba.threading_layer() in ("omp", "tbb")
        except Exception:  # pragma: no cover - a numba without a usable threading layer
            ok = False
        _parallel_state["ok"] = ok
    return min(workers, numba.config.NUMBA_NUM_THREADS) if ok else 1


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


def _parts(m_count: int, batch: int, n_cols: int, split_rows: bool = True) -> list[tuple[int, int, int, int]]:
    """How a sequence's work is split over ``torch.get_num_threads()`` threads: (m0, m1, b0, b1)
    blocks of instances, or for one instance (and ``split_rows``) of its batch rows.  Instances and
    rows are independent and every number is a function of its counters, so the split does not
    change a number."""
    workers = max(1, torch.get_num_threads())
    if workers == 1 or m_count * batch * n_cols < MIN_PARALLEL:
        return [(0, m_count, 0, batch)]
    if m_count > 1:
        edges = np.linspace(0, m_count, min(workers, m_count) + 1).round().astype(int)
        return [(int(a), int(b), 0, batch) for a, b in zip(edges[:-1], edges[1:])]
    if not split_rows:
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


# ----------------------------------------------------------------------------- sequences
def _drive(mats: tuple, order: list, mode: str, parts: list, whole: bool, kernel_step, torch_step):
    """The time loop both cells share, over the parts (:func:`_parts`) of one direction; returns
    the sum of the counts the steps return.

    ``KERNEL`` mode, ``kernel_step(blocks, t, nxt, prods)``: one step of a block of one instance's
    rows (``blocks``: one :class:`_RowBlock` per matrix; ``prods``: their products; ``nxt``: the
    next step, None at the last).  With ``whole`` (products per instance, the oneDNN backend)
    every part runs the whole sequence on its own thread; else the products of all instances are
    taken per step (a backend that multiplies them together) and the instances stepped in turn.
    ``TORCH`` mode, ``torch_step(part, t, nxt, converted)``: a part's step from each matrix's
    converted column groups (:meth:`_Matrix.convert_groups`); the parts meet after every step."""
    schedule = list(zip(order, order[1:] + [None]))
    total = 0
    # one instance: each step's products on torch's threads, its kernel over row parts on numba's;
    # several instances: blocks of them run their whole sequences on pool threads (the faster of
    # the two there: benchmarks/mc_throughput.py, docs/speed.md)
    threads = _kernel_threads() if (mode == KERNEL and whole and mats[0].m_count == 1) else 1
    if threads > 1:  # each step: products on torch's threads, the kernel over row parts on numba's
        batch = mats[0].xq.shape[1]
        conversions = batch * sum(mat.mat.tile.out_features for mat in mats)
        parts_per_step = min(threads, batch) if conversions >= MIN_PARALLEL else 1
        assert numba is not None  # (threads > 1 implies it)
        numba.set_num_threads(threads)
        with torch.inference_mode():
            for m in range(mats[0].m_count):
                blocks = [_RowBlock(mat, m, 0, batch) for mat in mats]
                for t, nxt in schedule:
                    total = total + kernel_step(blocks, t, nxt, [blk.products() for blk in blocks], parts_per_step)
        return total
    if mode == KERNEL and whole:

        def run_part(part):
            count = 0
            m0, m1, b0, b1 = part
            # grad mode is per thread: a pool thread's torch calls would record for autograd
            with torch.inference_mode():
                for m in range(m0, m1):  # instance by instance: its weights stay in cache over the steps
                    blocks = [_RowBlock(mat, m, b0, b1) for mat in mats]
                    for t, nxt in schedule:
                        count = count + kernel_step(blocks, t, nxt, [blk.products() for blk in blocks], 1)
            return count

        for count in _run(run_part, parts):
            total = total + count
        return total
    if mode == KERNEL:
        batch = mats[0].xq.shape[1]
        all_blocks = [[_RowBlock(mat, m, 0, batch) for mat in mats] for m in range(mats[0].m_count)]
    for t, nxt in schedule:
        if mode == KERNEL:
            prods = [mat.products() for mat in mats]
            for m, blocks in enumerate(all_blocks):
                total = total + kernel_step(
                    blocks, t, nxt, [(y[m], v[m], blk.dummy_bits) for (y, v), blk in zip(prods, blocks)], 1
                )
            continue
        converted = [mat.convert_groups(*mat.products(), parts, t) for mat in mats]
        for count in _run(lambda part, t=t, nxt=nxt, converted=converted: torch_step(part, t, nxt, converted), parts):
            total = total + count
    return total


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
    out_np = out.numpy()
    c = c.to(dtype).clone().contiguous()
    o = torch.empty(m_count, batch, hidden, dtype=dtype)
    c_np, o_np = c.numpy(), o.numpy()
    fixed_c, fixed_h = _fixed(bits, cell_max, ty), _fixed(bits, 1.0, ty)
    whole = mode == KERNEL and mat.per_instance
    parts = _parts(m_count, batch, 4 * hidden, split_rows=whole)

    def kernel_step(blocks, t, nxt, prods, parts):  # returns the DAC clippings of h
        (blk,), ((y, v, vb),) = blocks, prods
        m, b0, b1 = blk.m, blk.b0, blk.b1
        if not blk.views:
            blk.views = (c_np[m, b0:b1], o_np[m, b0:b1], out_np[m, :, b0:b1])
        c_b, o_b, out_b = blk.views
        args = (y, v, vb, mat.converter, blk.key, blk.read, np.uint64(t), b0, m, c_b, o_b, fixed_c, fixed_h,
                out_b[t], blk.wl, n_x, mat.dac, blk.next(nxt), nxt is not None)  # fmt: skip
        return _lstm_rows_parallel(parts, *args) if parts > 1 else _lstm_rows(*args)

    def torch_step(part, t, nxt, converted):  # returns the DAC clippings of h
        ifo, g = converted[0]
        _lstm_update(_sl(ifo, part), _sl(g, part), _sl(c_np, part), _sl(o_np, part), *fixed_c)
        return _lstm_hidden(
            _sl(o_np, part), _sl(c_np, part), fixed_h, _sl(out_np[:, t], part), mat.word_lines(*part), n_x, mat.dac,
            mat.next_x(nxt, part), nxt is not None,
        )  # fmt: skip

    clipped = _drive((mat,), order, mode, parts, whole, kernel_step, torch_step)
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
    out_np = out.numpy()
    h_state = h.to(dtype).clone().contiguous()
    pre, z_gate = torch.empty(m_count, batch, hidden, dtype=dtype), torch.empty(m_count, batch, hidden, dtype=dtype)
    pre_np, z_np, h_np = pre.numpy(), z_gate.numpy(), h_state.numpy()
    fixed_c, fixed_h = _fixed(bits, cell_max, ty), _fixed(bits, 1.0, ty)
    mats = (rz, nx, nh)
    whole = mode == KERNEL and all(mat.per_instance for mat in mats)
    parts = _parts(m_count, batch, 4 * hidden, split_rows=whole)
    convs, dacs = (rz.converter if mode == KERNEL else None, nx.converter if mode == KERNEL else None,
                   nh.converter if mode == KERNEL else None), (rz.dac, nx.dac, nh.dac)  # fmt: skip

    def kernel_step(blocks, t, nxt, prods, parts):  # counts: DAC clippings of rz, nh; saturations of nx, nh
        b_rz, b_nx, b_nh = blocks
        m, b0, b1 = b_rz.m, b_rz.b0, b_rz.b1
        keys, reads = (b_rz.key, b_nx.key, b_nh.key), (b_rz.read, b_nx.read, b_nh.read)
        state = (np.uint64(t), b0, m, pre_np[m, b0:b1], z_np[m, b0:b1], fixed_c, fixed_h, h_np[m, b0:b1],
                 out_np[m, t, b0:b1])  # fmt: skip
        wls, nxts = (b_rz.wl, b_nx.wl, b_nh.wl), (b_rz.next(nxt), b_nx.next(nxt))
        if parts == 1:
            return _gru_rows(tuple(prods), convs, keys, reads, *state, wls, dacs, n_x, nxts, nxt is not None)
        # (numba's parallel loops take no tuples of tuples of arrays: the matrices' passed one by one)
        return _gru_rows_parallel(parts, *prods, *convs, keys, reads, *state, *wls, *dacs, n_x, *nxts, nxt is not None)

    def torch_step(part, t, nxt, converted):
        (a_rz,), (a_nx,), (a_nh,) = converted
        _gru_update(_sl(a_rz, part), _sl(a_nx, part), _sl(a_nh, part), _sl(pre_np, part), _sl(z_np, part), *fixed_c)
        clips = _gru_hidden(
            _sl(z_np, part), _sl(pre_np, part), _sl(h_np, part), fixed_h, _sl(out_np[:, t], part),
            (rz.word_lines(*part), nx.word_lines(*part), nh.word_lines(*part)), dacs, n_x,
            (rz.next_x(nxt, part), nx.next_x(nxt, part)), nxt is not None,
        )  # fmt: skip
        return np.array([clips[0], clips[1], 0, 0], np.int64)

    counts = np.zeros(4, np.int64) + _drive(mats, order, mode, parts, whole, kernel_step, torch_step)
    h_last = out[:, order[-1]]
    numel = m_count * steps * batch * hidden
    clip_rz = _h_clipped(h, engine["rz"], n_x) + int(counts[0]) - _h_clipped(h_last, engine["rz"], n_x)
    clip_nh = _h_clipped(h, engine["nh"], 0) + int(counts[1]) - _h_clipped(h_last, engine["nh"], 0)
    rz.count_health(clip_rz, numel, 0, 0)
    nx.count_health(0, 0, int(counts[2]), numel)
    nh.count_health(clip_nh, numel, int(counts[3]), numel)
    return out, (h_last,)

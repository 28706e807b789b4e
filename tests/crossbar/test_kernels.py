"""The NL-ADC's CPU kernels: the AVX-512 block kernel gives the row kernels' (and so the
definition's) values bit for bit; the bfloat16 bit helpers are torch's conversions."""

import numpy as np
import pytest
import torch

from crossbar.periphery import kernels

needs_numba = pytest.mark.skipif(kernels.numba is None, reason="numba not installed")


@needs_numba
@pytest.mark.skipif(not kernels.AVX512, reason="the vector block kernel needs an AVX-512 CPU")
@pytest.mark.parametrize("codes", [32, 16, 8])
def test_block_kernel_equals_the_row_kernels(codes):
    numba = kernels.numba
    rng = np.random.default_rng(codes)
    m_count, cols = 2, 40  # 40 columns: padded to 48 in the tables
    t = np.sort(rng.standard_normal((m_count, cols, codes - 1)).astype(np.float32), axis=2)
    t[0, 3, 2] = t[0, 3, 1]  # a zero-width code
    read_var = (rng.random((m_count, cols, codes - 1)) * 1e-3).astype(np.float32)
    values = np.sort(rng.random((cols, codes)).astype(np.float32), axis=1)
    cmp2 = np.full(cols, 1e-4, np.float32)
    tt, rv, val = kernels.block_tables(torch.from_numpy(t), torch.from_numpy(read_var), torch.from_numpy(values))
    padded = tt.shape[1]
    assert padded == 48 and tt.shape[2] == kernels.BLOCK_CODES
    y = rng.standard_normal((16, padded)).astype(np.float32)
    y[0, :8] = t[1, :8, 2]  # exactly on thresholds
    v = (rng.random((16, padded)) * 1e-2).astype(np.float32)
    z = rng.standard_normal((16, padded)).astype(np.float32)
    cmp2_p = np.zeros(padded, np.float32)
    cmp2_p[:cols] = cmp2

    @numba.njit(error_model="numpy")
    def rows(t_kc, rv_m, values, y, v, z, cmp2, has_var, out):
        cnt = np.empty(y.shape[1], np.uint8)
        yn = np.empty(y.shape[1], np.float32)
        for r in range(y.shape[0]):
            kernels.count_below(t_kc, y[r], cnt)
            kernels.noisy_input(y[r], cnt, rv_m, v[r], z[r], np.float32(1.0), cmp2, has_var, yn)
            kernels.count_below(t_kc, yn, cnt)
            for k in range(y.shape[1]):
                out[r, k] = values[k, cnt[k]]

    @numba.njit(error_model="numpy")
    def block(tt, rv, val, y, v, z, cmp2, has_var, out):
        kernels.convert_block(tt, rv, val, y, v, z, cmp2, np.float32(1.0), has_var, out)

    for m in range(m_count):
        for has_var in (True, False):
            want, got = np.empty((16, cols), np.float32), np.empty((16, padded), np.float32)
            rows(np.ascontiguousarray(t[m].T), read_var[m], values, y[:, :cols].copy(), v[:, :cols].copy(),
                 z[:, :cols].copy(), cmp2, has_var, want)  # fmt: skip
            block(tt[m], rv[m], val, y, v, z, cmp2_p, has_var, got)
            assert np.array_equal(got[:, :cols], want), (m, has_var)


@needs_numba
def test_bfloat16_bits_are_torch_conversions():
    numba = kernels.numba
    x = np.concatenate(
        [np.random.default_rng(0).standard_normal(20_000) * 10.0 ** np.arange(-4, 4).repeat(2500), [0.0, -0.0, 1.0]]
    ).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf))])  # ties of the rounding among them

    @numba.njit
    def to_bits(x, out):
        for i in range(x.shape[0]):
            out[i] = kernels.bfloat16_bits(x[i])

    @numba.njit
    def to_value(b, out):
        for i in range(b.shape[0]):
            out[i] = kernels.bfloat16_value(b[i])

    bits = np.empty(x.shape, np.uint16)
    to_bits(x, bits)
    want = torch.from_numpy(x).to(torch.bfloat16)
    assert np.array_equal(bits, want.view(torch.int16).numpy().view(np.uint16))
    back = np.empty(x.shape, np.float32)
    to_value(bits, back)
    assert np.array_equal(back, want.float().numpy())

"""The cell's digital tanh (rnn_models.cell_math.tanh_digital): tanh to double precision, rounded
once to the datapath's type, the same bits from its torch form and the fused kernels' form."""

import numpy as np
import pytest
import torch

from rnn_models.cell_math import numba, tanh_digital


def _grid(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.linspace(-25, 25, 100_001),
            rng.standard_normal(50_000) * 3,
            [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5 * np.log(3), 19.06, 20.0, 40.0, np.inf, -np.inf, np.nan],
        ]
    )
    return torch.from_numpy(x).to(dtype)


def test_float32_values_are_correctly_rounded():
    x = _grid(torch.float32)
    got = tanh_digital(x)
    want = torch.from_numpy(np.tanh(x.double().numpy())).float()
    finite = ~torch.isnan(x)
    assert torch.equal(got[finite], want[finite])
    assert torch.isnan(got[~finite]).all()
    assert torch.signbit(tanh_digital(torch.tensor([-0.0]))).item()


def test_float64_values_are_within_four_ulp():
    x = _grid(torch.float64)[:-1]
    got, want = tanh_digital(x).numpy(), np.tanh(x.numpy())
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)))


@pytest.mark.skipif(numba is None, reason="numba not installed")
@pytest.mark.parametrize("dtype, ty", [(torch.float32, np.float32), (torch.float64, np.float64)])
def test_kernel_form_gives_the_same_bits(dtype, ty):
    from rnn_models.cell_math import tanh_digital64

    @numba.njit(error_model="numpy")
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = tanh_digital64(x[i])

    x = _grid(dtype).numpy()
    out = np.empty_like(x)
    run(x, out)
    assert np.array_equal(out.view(np.uint8), tanh_digital(torch.from_numpy(x)).numpy().view(np.uint8))

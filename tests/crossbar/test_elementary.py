"""The digital unit's tanh and sigmoid (crossbar.elementary): float32 results correctly rounded,
float64 within a few ulp, the same bits from the torch forms and the kernels' forms."""

import numpy as np
import pytest
import scipy.special
import torch

from crossbar.elementary import numba, sigmoid_digital, tanh_digital


def _grid(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.linspace(-110, 110, 200_001),
            rng.standard_normal(50_000) * 4,
            [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5 * np.log(3), 19.06, 20.0, 40.0, 700.0, -700.0],
            [np.inf, -np.inf, np.nan],
        ]
    )
    return torch.from_numpy(x).to(dtype)


REFERENCES = {"tanh": (tanh_digital, np.tanh), "sigmoid": (sigmoid_digital, scipy.special.expit)}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float32_values_are_correctly_rounded(name):
    fn, ref = REFERENCES[name]
    x = _grid(torch.float32)
    got = fn(x)
    want = torch.from_numpy(ref(x.double().numpy())).float()
    finite = ~torch.isnan(x)
    assert torch.equal(got[finite], want[finite])
    assert torch.isnan(got[~finite]).all()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float64_values_are_within_four_ulp(name):
    fn, ref = REFERENCES[name]
    x = _grid(torch.float64)[:-1]
    x = x[x.abs() < 700]
    got, want = fn(x).numpy(), ref(x.numpy())
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)))


def test_signed_zero_passes_through_tanh():
    assert torch.signbit(tanh_digital(torch.tensor([-0.0]))).item()


@pytest.mark.skipif(numba is None, reason="numba not installed")
@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype, ty", [(torch.float32, np.float32), (torch.float64, np.float64)])
def test_kernel_forms_give_the_same_bits(name, dtype, ty):
    from crossbar.elementary import sigmoid64, tanh64

    kernel_fn = {"tanh": tanh64, "sigmoid": sigmoid64}[name]

    @numba.njit(error_model="numpy")
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = kernel_fn(x[i])

    x = _grid(dtype).numpy()
    out = np.empty_like(x)
    run(x, out)
    assert np.array_equal(out.view(np.uint8), REFERENCES[name][0](torch.from_numpy(x)).numpy().view(np.uint8))

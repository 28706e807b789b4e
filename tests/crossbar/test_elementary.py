"""The digital unit's tanh and sigmoid (crossbar.elementary), computed in the datapath's precision:
float32 in float32 arithmetic within 2 ulp, float64 within a few ulp, other types correctly
rounded from double; the same bits from the torch forms and the kernels' forms."""

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
            [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5 * np.log(3), 9.0, 9.1, 19.06, 20.0, 40.0, 87.0, -87.0],
            [88.5, -88.5, 700.0, -700.0, np.inf, -np.inf, np.nan],
        ]
    )
    return torch.from_numpy(x).to(dtype)


REFERENCES = {"tanh": (tanh_digital, np.tanh), "sigmoid": (sigmoid_digital, scipy.special.expit)}


def _ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 values lie between a and b (same-sign values)."""
    assert np.all((np.signbit(a) == np.signbit(b)) | (a == 0) | (b == 0))
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float32_values_are_within_two_ulp(name):
    fn, ref = REFERENCES[name]
    x = _grid(torch.float32)
    got = fn(x)
    assert got.dtype == torch.float32
    finite = ~torch.isnan(x)
    assert torch.isnan(got[~finite]).all()
    want = torch.from_numpy(ref(x.double().numpy())).float()
    # where the result is a normal float32 (sigmoid below x = -87.3 is subnormal: see the cap)
    normal = finite & ((want.abs() >= torch.finfo(torch.float32).tiny) | (x == 0))
    if name == "tanh":
        assert normal.equal(finite)
    dist = _ulp_distance(got[normal].numpy(), want[normal].numpy())
    assert dist.max() <= 2
    assert 0 < np.mean(dist == 0) < 1  # float32 arithmetic: mostly, not always, correctly rounded


def test_float32_sigmoid_stays_at_its_cap_below_minus_88():
    x = torch.tensor([-88.0, -88.5, -200.0, -np.inf])
    got = sigmoid_digital(x)
    assert torch.all(got == got[0]) and 6.0e-39 < got[0].item() < 6.1e-39


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float64_values_are_within_four_ulp(name):
    fn, ref = REFERENCES[name]
    x = _grid(torch.float64)[:-1]
    x = x[x.abs() < 700]
    got, want = fn(x).numpy(), ref(x.numpy())
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_other_types_are_double_precision_correctly_rounded(name):
    fn, ref = REFERENCES[name]
    x = _grid(torch.float16)
    got = fn(x)
    want = torch.from_numpy(ref(x.double().numpy())).to(torch.float16)
    finite = ~torch.isnan(x)
    assert got.dtype == torch.float16 and torch.equal(got[finite], want[finite])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_zero_passes_through_tanh(dtype):
    assert torch.signbit(tanh_digital(torch.tensor([-0.0], dtype=dtype))).item()


@pytest.mark.skipif(numba is None, reason="numba not installed")
@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_forms_give_the_same_bits(name, dtype):
    from crossbar.elementary import sigmoid_unit, tanh_unit

    kernel_fn = {"tanh": tanh_unit, "sigmoid": sigmoid_unit}[name]

    @numba.njit(error_model="numpy")
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = kernel_fn(x[i])

    x = _grid(dtype).numpy()
    # and the edges: subnormals, the largest finite values, NaNs with payloads and either sign
    edges = np.array([1e-40, -1e-40, 1.4e-45, -1.4e-45, 3.4e38, -3.4e38, 1.7e38, -1.7e38], x.dtype)
    bits = np.uint32 if x.dtype == np.float32 else np.uint64
    top = 0x7FC00000 if x.dtype == np.float32 else 0x7FF8000000000000
    sign = 0x80000000 if x.dtype == np.float32 else 0x8000000000000000
    nans = np.array([top | 1, top | 0x12345, sign | top | 7], bits).view(x.dtype)
    x = np.concatenate([x, edges, nans])
    out = np.empty_like(x)
    run(x, out)
    assert np.array_equal(out.view(np.uint8), REFERENCES[name][0](torch.from_numpy(x)).numpy().view(np.uint8))


def test_the_unit_functions_are_for_kernels_only():
    from crossbar.elementary import tanh_unit

    with pytest.raises(NotImplementedError, match="tanh_digital"):
        tanh_unit(0.5)

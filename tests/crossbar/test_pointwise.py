"""Element-wise physics written once (crossbar.pointwise): the torch form on tensors and the
compiled scalar form the CPU kernels use give identical bits on the same values."""

import numpy as np
import pytest
import torch

from crossbar.periphery import kernels
from crossbar.periphery.dac import dac_step, quantize_input
from crossbar.periphery.sampling import comparison_variance, noisy_value
from crossbar.pointwise import clip, compiled, horner, nonneg, one_minus, rint, saturating_round
from crossbar.tile import column_output, output_variance
from rnn_models.analog import fixed_point, fixed_point_grid
from rnn_models.cell_math import gru_candidate_input, gru_hidden, lstm_cell, lstm_hidden

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba not installed")
numba = kernels.numba

DTYPES = [(torch.float32, np.float32), (torch.float64, np.float64)]


def _values(ty, n=4000, seed=0, scale=3.0):
    """Random values plus the hard cases: signed zeros, exact rounding ties of a 1/15 and a 1/16
    grid, range edges and their neighbours."""
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, -2.5, 4.0, -4.0, 3.875, -3.875]
    special += [(k + 0.5) / 15 for k in range(-16, 16)] + [(k + 0.5) / 16 for k in range(-17, 17)]
    x = np.concatenate([np.array(special), rng.standard_normal(n) * scale]).astype(ty)
    edges = np.array([1.0, -1.0, 4.0, -4.0], ty)
    return np.concatenate([x, np.nextafter(edges, ty(0)), np.nextafter(edges, ty(10) * edges)])


def _both(fn, tensor_args, scalar_args, ty):
    """``fn`` on tensors (torch) and, element by element, its compiled form on numpy scalars."""
    ref = fn(*tensor_args)
    ufunc = numba.vectorize(nopython=True)(compiled(fn).py_func)
    arrays = [np.asarray(a, dtype=ty) for a in scalar_args]
    return ref.numpy(), ufunc(*arrays)


def _identical(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), "not bit for bit (signed zeros included)"


@pytest.mark.parametrize("dt,ty", DTYPES)
@pytest.mark.parametrize("bits,limit", [(5, 1.0), (8, 4.0), (3, 1.0)])
def test_fixed_point_registers(dt, ty, bits, limit):
    x = _values(ty)
    lo, hi, step = fixed_point_grid(bits, limit)
    ref, fast = _both(saturating_round, (torch.from_numpy(x), lo, hi, step), (x, lo, hi, step), ty)
    _identical(ref, fast)
    _identical(fixed_point(torch.from_numpy(x), bits, limit).numpy(), fast)


@pytest.mark.parametrize("dt,ty", DTYPES)
def test_dac_levels(dt, ty):
    from crossbar.config import DACConfig

    x = _values(ty, seed=1, scale=0.8)
    dac = DACConfig(bits=5, x_max=1.0)
    step = dac_step(dac)
    ref, fast = _both(saturating_round, (torch.from_numpy(x), -1.0, 1.0, step), (x, -1.0, 1.0, step), ty)
    _identical(quantize_input(torch.from_numpy(x), dac).numpy(), fast)
    _identical(ref, fast)


@pytest.mark.parametrize("dt,ty", DTYPES)
def test_column_output_and_variance(dt, ty):
    y = _values(ty, seed=2, scale=300.0)
    drift = np.full_like(y, 0.93)
    ref, fast = _both(column_output, (torch.from_numpy(y), 47.3, torch.from_numpy(drift)), (y, 47.3, drift), ty)
    _identical(ref, fast)
    gain = np.full_like(y, 1.0 / (47.3 * 0.93) ** 2)
    ref, fast = _both(output_variance, (torch.from_numpy(y), torch.from_numpy(gain)), (y, gain), ty)
    _identical(ref, fast)
    assert (fast >= 0).all()


@pytest.mark.parametrize("dt,ty", DTYPES)
@pytest.mark.parametrize("fn,arity", [(lstm_cell, 4), (lstm_hidden, 2), (gru_candidate_input, 3), (gru_hidden, 3)])
def test_cell_updates(dt, ty, fn, arity):
    args = [_values(ty, seed=10 + k, scale=1.0) for k in range(arity)]
    ref, fast = _both(fn, [torch.from_numpy(a) for a in args], args, ty)
    _identical(ref, fast)


def _clip(x, lo, hi):  # a primitive's own body is its torch form: compile a caller of it
    return clip(x, lo, hi)


def _rint(x):
    return rint(x)


def _nonneg(x):
    return nonneg(x)


def _one_minus(x):
    return one_minus(x)


@pytest.mark.parametrize("dt,ty", DTYPES)
def test_primitives(dt, ty):
    x = _values(ty, seed=3)
    for fn, extra in ((_clip, (-1.0, 2.0)), (_rint, ()), (_nonneg, ()), (_one_minus, ())):
        ref, fast = _both(fn, (torch.from_numpy(x), *extra), (x, *extra), ty)
        _identical(ref, fast)


def test_a_mismatch_is_caught():
    """The comparison can fail: a scalar form computed in the wrong order differs in some bits."""
    x = _values(np.float32, seed=4, scale=1.0)
    y, z = _values(np.float32, seed=5, scale=1.0), _values(np.float32, seed=6, scale=1.0)
    ref = lstm_cell(*(torch.from_numpy(a) for a in (x, y, z, x))).numpy()
    other = (y.astype(np.float64) * x + x.astype(np.float64) * z).astype(np.float32)  # in double
    assert not np.array_equal(ref, other)


_comparison_variance = compiled(comparison_variance)


def _comparison_without_input(ramp_var, v2, cmp2):  # the compiled form with no input variance
    return _comparison_variance(ramp_var, v2, cmp2, None)


@pytest.mark.parametrize("dt,ty", DTYPES)
def test_read_noise_sampling(dt, ty):
    """How a variance becomes a sample (crossbar.periphery.sampling), the one definition behind the
    tile's read, the converters' noisy input and the NL-ADC comparison."""
    rng = np.random.default_rng(7)
    y, z = _values(ty, seed=8), rng.standard_normal(_values(ty).size).astype(ty)
    var = np.abs(_values(ty, seed=9, scale=0.01)).astype(ty)
    ref, fast = _both(noisy_value, [torch.from_numpy(a) for a in (y, var, z)], (y, var, z), ty)
    _identical(ref, fast)
    t = [torch.from_numpy(a) for a in (var, y * y)]
    ref, fast = _both(comparison_variance, (t[0], 0.81, 1e-4, t[1]), (var, 0.81, 1e-4, y * y), ty)
    _identical(ref, fast)
    fast = numba.vectorize(nopython=True)(_comparison_without_input)(var, ty(0.81), ty(1e-4))
    _identical(comparison_variance(t[0], 0.81, 1e-4, None).numpy(), fast)


def test_the_kernel_cache_is_keyed_on_every_source(tmp_path):
    """numba keys a cached kernel on its own file only; the project's cache folder is named by a
    digest of all its sources, so a changed helper in another file is a fresh cache, not a stale
    kernel that still has the old helper compiled in."""
    from crossbar.pointwise import source_digest

    for rel, text in {"pkg/a.py": "x = 1\n", "pkg/sub/b.py": "y = 2\n", "other/c.py": "z = 3\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    before = source_digest(tmp_path, ["pkg"])
    assert source_digest(tmp_path, ["pkg"]) == before
    (tmp_path / "other" / "c.py").write_text("z = 4\n")  # not one of the packages
    assert source_digest(tmp_path, ["pkg"]) == before
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")
    assert source_digest(tmp_path, ["pkg"]) != before


@pytest.mark.skipif(numba is None, reason="numba not installed")
def test_project_kernels_cache_in_the_digest_folder():
    from crossbar.normals import normal_row
    from crossbar.pointwise import kernel_cache_dir

    folder = kernel_cache_dir()
    if folder is None:
        pytest.skip("no writable cache folder here: numba caches next to the sources")
    assert "kernels-" in folder
    assert normal_row._cache._cache_path.startswith(folder)  # numba's locator for this kernel


@pytest.mark.parametrize("dt,ty", DTYPES)
def test_horner_polynomials(dt, ty):
    """The shared polynomial step (the digital functions' and the normals' series): torch and
    compiled forms agree bit for bit, and both are c0 x^2 + c1 x + c2 written out."""
    coefs = tuple(ty(c) for c in (1 / 6, -0.5, 1.0))
    x = _values(ty, seed=5)

    @numba.vectorize(nopython=True)
    def compiled_horner(v):
        return horner(coefs, v)

    ref = horner(tuple(float(c) for c in coefs), torch.from_numpy(x)).numpy()
    _identical(ref, compiled_horner(x))
    _identical(ref, (coefs[0] * x + coefs[1]) * x + coefs[2])

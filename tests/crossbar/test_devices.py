"""Device model statistics against their analytic values."""
import math

import pytest
import torch

from crossbar import devices
from crossbar.config import default_config
from crossbar.rng import generator


def _dev(**changes):
    return default_config(**{f"device.{k}": v for k, v in changes.items()}).device


def test_programming_noise_sigma_abs_and_rel():
    n = 200_000
    target = torch.full((n,), 50.0, dtype=torch.float64)
    for changes, expected in [({"programming": {"sigma_abs": 2.0}}, 2.0),
                              ({"programming": {"sigma_rel": 0.04}}, 2.0),
                              ({"programming": {"sigma_abs": 1.5, "sigma_rel": 0.04}}, 2.5)]:
        p = devices.program(target, _dev(**changes), generator(1, "t"))
        assert float((p.g - 50).std()) == pytest.approx(expected, rel=0.02)
        assert abs(float((p.g - 50).mean())) < 4 * expected / math.sqrt(n)


def test_sigma_table_interpolates():
    dev = _dev(programming={"table": {"g": [0.0, 100.0], "sigma": [1.0, 3.0]}})
    s = devices.noise_sigma(torch.tensor([0.0, 50.0, 100.0, 200.0]), dev.programming)
    assert torch.allclose(s, torch.tensor([1.0, 2.0, 3.0, 3.0]))


@pytest.mark.parametrize("p_off, p_on", [(0.01, 0.0), (0.0, 0.02), (0.05, 0.05)])
def test_stuck_rates_within_binomial_bounds(p_off, p_on):
    n = 100_000
    dev = _dev(g_min=1.0, stuck_off_prob=p_off, stuck_on_prob=p_on)
    p = devices.program(torch.full((n,), 50.0), dev, generator(3, "t"))
    for prob, val, code in [(p_off, 1.0, -1), (p_on, 100.0, 1)]:
        count = int((p.stuck == code).sum())
        sd = math.sqrt(n * prob * (1 - prob))
        assert abs(count - n * prob) <= 4 * sd + 1
        assert torch.all(p.g[p.stuck == code] == val)


def test_levels_and_range_clip():
    dev = _dev(g_min=10.0, g_max=90.0, levels=5)
    p = devices.program(torch.tensor([0.0, 12.0, 31.0, 49.0, 200.0]), dev, generator(0, "t"))
    assert p.g.tolist() == [10.0, 10.0, 30.0, 50.0, 90.0]


def test_d2d_range_variation():
    dev = _dev(range_d2d_rel=0.05)
    p = devices.program(torch.full((100_000,), 100.0), dev, generator(0, "t"))
    assert float(p.g_max_dev.std()) == pytest.approx(5.0, rel=0.03)
    assert torch.all(p.g <= p.g_max_dev + 1e-9)


def test_drift_power_law():
    dev = _dev(drift={"nu": 0.05, "nu_std": 0.0, "t0": 20.0, "t_inference": 2000.0})
    p = devices.program(torch.full((10,), 40.0), dev, generator(0, "t"))
    g_t = devices.drift(p.g, p.nu, 2000.0, 20.0)
    assert torch.allclose(g_t / p.g, torch.full((10,), (2000 / 20) ** -0.05))
    assert torch.equal(devices.drift(p.g, p.nu, 10.0, 20.0), p.g)


def test_conductance_dependent_drift_and_accumulated_noise():
    n = 100_000
    table = {"g": [0.0, 100.0], "nu": [0.1, 0.02], "nu_std": [0.02, 0.004]}
    acc = {"g": [0.0, 100.0], "q": [0.04, 0.01], "t_read": 1e-6}
    dev = _dev(drift={"nu_table": table, "accumulated_noise": acc, "t0": 20.0, "t_inference": 2000.0})
    target = torch.cat([torch.full((n,), 0.0), torch.full((n,), 50.0)]).double()
    p = devices.program(target, dev, generator(0, "t"))
    assert float(p.nu[:n].mean()) == pytest.approx(0.1, rel=0.01)
    assert float(p.nu[n:].mean()) == pytest.approx(0.06, rel=0.01)
    assert float(p.nu[n:].std()) == pytest.approx(0.012, rel=0.02)
    g_t = devices.at_inference(torch.full_like(target, 50.0), p, dev.drift)   # every device at 50 uS
    drifted = 50.0 * (2000 / 20) ** -p.nu[n:]
    rel = (g_t[n:] - drifted) / drifted
    assert float(rel.std()) == pytest.approx(0.025 * math.sqrt(math.log((2000 + 1e-6) / 2e-6)), rel=0.02)
    # without the extra features the draws (and so every existing result) are unchanged
    plain = _dev(drift={"nu": 0.06, "nu_std": 0.012})
    assert p.z_acc is not None and devices.program(target, plain, generator(0, "t")).z_acc is None
    assert torch.equal(devices.program(target, plain, generator(0, "t")).g, p.g)


def test_drift_tables_are_validated():
    from crossbar.config import load_config
    from crossbar.errors import CrossbarInputError

    for bad, msg in [({"g": [0.0, 1.0, 2.0], "nu": [0.1, 0.1], "nu_std": [0.0, 0.0, 0.0]}, "must match"),
                     ({"g": [1.0, 0.0], "nu": [0.1, 0.1], "nu_std": [0.0, 0.0]}, "increasing"),
                     ({"g": [0.0, 1.0], "nu": [0.1, -0.1], "nu_std": [0.0, 0.0]}, ">= 0")]:
        with pytest.raises(CrossbarInputError, match=msg):
            load_config("ideal").replace(**{"device.drift.nu_table": bad})


def test_read_noise_fresh_each_read():
    spec = _dev(read_noise={"sigma_abs": 0.5}).read_noise
    g = torch.full((50_000,), 30.0)
    gen = generator(0, "read")
    a, b = devices.read(g, spec, gen), devices.read(g, spec, gen)
    assert not torch.equal(a, b)
    assert float((a - 30).std()) == pytest.approx(0.5, rel=0.03)

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
    for changes, expected in [
        ({"programming": {"sigma_abs": 2.0}}, 2.0),
        ({"programming": {"sigma_rel": 0.04}}, 2.0),
        ({"programming": {"sigma_abs": 1.5, "sigma_rel": 0.04}}, 2.5),
    ]:
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
    g_t = devices.at_inference(torch.full_like(target, 50.0), p, dev.drift)  # every device at 50 uS
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

    for bad, msg in [
        ({"g": [0.0, 1.0, 2.0], "nu": [0.1, 0.1], "nu_std": [0.0, 0.0, 0.0]}, "must match"),
        ({"g": [1.0, 0.0], "nu": [0.1, 0.1], "nu_std": [0.0, 0.0]}, "increasing"),
        ({"g": [0.0, 1.0], "nu": [0.1, -0.1], "nu_std": [0.0, 0.0]}, ">= 0"),
    ]:
        with pytest.raises(CrossbarInputError, match=msg):
            load_config("ideal").replace(**{"device.drift.nu_table": bad})


def test_read_noise_fresh_each_read():
    spec = _dev(read_noise={"sigma_abs": 0.5}).read_noise
    g = torch.full((50_000,), 30.0)
    gen = generator(0, "read")
    a, b = devices.read(g, spec, gen), devices.read(g, spec, gen)
    assert not torch.equal(a, b)
    assert float((a - 30).std()) == pytest.approx(0.5, rel=0.03)


# ------------------------------------------------------------------ empirical (measured) mode
P = [0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0]


def _mixture_quantiles(rng, n=200_000, tail=0.05):
    """Quantiles at P of a heavy-tailed error: 95 % N(0, 1) and 5 % near +40 uS."""
    x = rng.standard_normal(n)
    k = rng.random(n) < tail
    x[k] = 40 + rng.standard_normal(k.sum())
    import numpy as np

    return [float(v) for v in np.quantile(x, P)]


def _empirical_dev(relaxation=None, **changes):
    import numpy as np

    rng = np.random.default_rng(0)
    q = _mixture_quantiles(rng)
    prog = {"quantiles": {"g": [10.0, 50.0], "p": P, "q": [q, [2 * v for v in q]]}}
    drift = {} if relaxation is None else {"relaxation": relaxation}
    return _dev(g_min=0.0, g_max=100.0, programming=prog, drift=drift, **changes)


def test_empirical_programming_resamples_the_measured_distribution():
    import numpy as np

    dev = _empirical_dev()
    n = 100_000
    target = torch.cat([torch.full((n,), 10.0), torch.full((n,), 30.0)]).double()
    p = devices.program(target, dev, generator(1, "t"))
    e10, e30 = (p.g[:n] - 10).numpy(), (p.g[n:] - 30).numpy()
    q = dev.programming.quantiles.q
    # inverse-CDF sampling reproduces the table's quantiles (linear between them) ...
    for j in (2, 3, 4, 5, 6):
        assert float(np.quantile(e10, P[j])) == pytest.approx(q[0][j], abs=0.05)
    # ... the heavy tail included: P(error > 30 uS) is the table's (a Gaussian of the same std, about
    # 9 uS, would give 0.0005)
    expected = 1 - float(np.interp(30.0, q[0], P))
    assert expected > 0.01
    assert float((e10 > 30).mean()) == pytest.approx(expected, abs=4 * math.sqrt(expected / n))
    # between the bins the quantiles are interpolated (30 uS: the mean of the two rows)
    assert float(np.median(e30)) == pytest.approx(0.5 * (q[0][4] + q[1][4]), abs=0.05)
    assert torch.all(p.g >= 0)


def test_empirical_relaxation_by_target_reproduces_each_time_and_keeps_ranks():
    import numpy as np

    t_tab = [0.0, 100.0, 10000.0]
    q_t = [[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]]  # t = 0 (first read)
    q_t.append([v - 1.0 for v in q_t[0]])  # 100 s: shifted down by 1 uS
    q_t.append([2 * v - 3.0 for v in q_t[0]])  # 1e4 s: broadened
    relax = {"reference": "target", "g": [20.0], "t": t_tab, "p": P, "q": [q_t]}
    prog = {"quantiles": {"g": [20.0], "p": P, "q": [q_t[0]]}}
    dev = _dev(g_min=0.0, g_max=100.0, programming=prog, drift={"relaxation": relax, "t_inference": 1e4})
    n = 100_000
    target = torch.full((n,), 20.0, dtype=torch.float64)
    p = devices.program(target, dev, generator(2, "t"))
    for t, row in ((1e4, q_t[2]), (100.0, q_t[1]), (0.0, q_t[0])):
        spec = dev.drift.model_copy(update={"t_inference": t}) if t > 0 else None
        g_t = devices.at_inference(p.g, p, spec) if spec else p.g
        for j in (1, 3, 4, 5, 7):
            assert float(np.quantile((g_t - 20).numpy(), P[j])) == pytest.approx(row[j], abs=0.06), (t, j)
    # 1000 s lies half-way between 100 s and 1e4 s in log t
    g_1k = devices.conductance_at(p.g, p, dev.drift, torch.full_like(target, 1000.0))
    assert float(torch.median(g_1k - 20)) == pytest.approx(0.5 * (q_t[1][4] + q_t[2][4]), abs=0.06)
    # one rank per device: the order of the devices is kept over time
    g_4 = devices.at_inference(p.g, p, dev.drift)
    assert float(np.corrcoef(np.argsort(np.argsort(p.g.numpy())), np.argsort(np.argsort(g_4.numpy())))[0, 1]) > 0.999
    # beyond the last measured time the relaxation is held
    late = devices.conductance_at(p.g, p, dev.drift, torch.full_like(target, 1e6))
    assert torch.allclose(late, g_4)


def test_empirical_relaxation_by_first_read_adds_an_independent_change():
    import numpy as np

    q0 = [0.0] * len(P)
    q1 = [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    relax = {"reference": "first_read", "g": [10.0, 90.0], "t": [0.0, 1000.0], "p": P, "q": [[q0, q1], [q0, q1]]}
    dev = _dev(
        g_min=0.0, g_max=100.0, programming={"sigma_abs": 1.0}, drift={"relaxation": relax, "t_inference": 1000.0}
    )
    target = torch.full((100_000,), 50.0, dtype=torch.float64)
    p = devices.program(target, dev, generator(3, "t"))
    change = (devices.at_inference(p.g, p, dev.drift) - p.g).numpy()
    assert float(np.median(change)) == pytest.approx(0.0, abs=0.05)
    assert float(np.quantile(change, 0.25)) == pytest.approx(-1.0, abs=0.05)
    assert abs(float(np.corrcoef(change, (p.g - 50).numpy())[0, 1])) < 0.02


def test_empirical_features_off_draw_nothing_and_on_draw_last():
    plain = _dev(range_d2d_rel=0.05, stuck_off_prob=0.01, programming={"sigma_abs": 1.0})
    target = torch.linspace(1, 99, 5000)
    a = devices.program(target, plain, generator(4, "t"))
    emp = _empirical_dev(range_d2d_rel=0.05, stuck_off_prob=0.01)
    b = devices.program(target, emp, generator(4, "t"))
    assert torch.equal(a.g_max_dev, b.g_max_dev) and torch.equal(a.stuck, b.stuck)
    # the plain config consumes exactly the four classic draws
    gen = generator(4, "t")
    for draw in (torch.randn, torch.randn, torch.rand, torch.randn):
        draw(target.shape, generator=gen)
    gen2 = generator(4, "t")
    devices.program(target, plain, gen2)
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=gen2))


def test_conductance_at_is_at_inference_with_a_time_per_device():
    dev = _dev(
        drift={
            "nu": 0.05,
            "nu_std": 0.01,
            "t_inference": 3000.0,
            "accumulated_noise": {"g": [0.0, 100.0], "q": [0.03, 0.01], "t_read": 1e-6},
        }
    )
    target = torch.linspace(1, 100, 1000, dtype=torch.float64)
    p = devices.program(target, dev, generator(0, "t"))
    assert torch.equal(
        devices.at_inference(p.g, p, dev.drift),
        devices.conductance_at(p.g, p, dev.drift, torch.full_like(target, 3000.0)),
    )


def test_empirical_device_programs_a_tile_and_an_nladc():
    from crossbar.config import load_config
    from crossbar.periphery.nladc import NLADC, compile_design
    from crossbar.tile import Tile

    q_t = [[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]]
    q_t.append([2 * v - 1.0 for v in q_t[0]])
    device = {
        "g_min": 0.0,
        "g_max": 100.0,
        "programming": {"quantiles": {"g": [20.0, 80.0], "p": P, "q": [q_t[0], q_t[0]]}},
        "drift": {
            "relaxation": {"reference": "target", "g": [20.0, 80.0], "t": [0.0, 1e4], "p": P, "q": [q_t, q_t]},
            "t_inference": 1e4,
        },
    }
    cfg = load_config("rram_nladc_5b").replace(device=device)
    w, b = torch.randn(8, 12, generator=torch.Generator().manual_seed(0)), torch.zeros(8)
    t1, t2 = Tile(w, b, cfg).program(0, 2), Tile(w, b, cfg).program(0, 2)
    assert torch.equal(t1.g_pos, t2.g_pos) and not torch.equal(t1.g_pos[0], t1.g_pos[1])
    design = compile_design("sigmoid", 5, cfg.nl_adc.level_spacing)
    adc = NLADC(design, cfg, 4).program(0, 2)  # calibration re-programs the bias devices one by one
    assert torch.isfinite(adc.thresholds).all()


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"programming": {"quantiles": {"g": [1.0], "p": [0.0, 1.0], "q": [[1.0, 0.0]]}}}, "non-decreasing"),
        ({"programming": {"quantiles": {"g": [1.0], "p": [0.0, 0.5], "q": [[0.0, 1.0]]}}}, "from 0 to 1"),
        ({"programming": {"quantiles": {"g": [1.0, 2.0], "p": [0.0, 1.0], "q": [[0.0, 1.0]]}}}, "must match"),
        (
            {"programming": {"sigma_abs": 1.0, "quantiles": {"g": [1.0], "p": [0.0, 1.0], "q": [[0.0, 1.0]]}}},
            "not both",
        ),
        ({"read_noise": {"quantiles": {"g": [1.0], "p": [0.0, 1.0], "q": [[0.0, 1.0]]}}}, "read_noise.quantiles"),
        (
            {
                "drift": {
                    "nu": 0.1,
                    "relaxation": {
                        "reference": "target",
                        "g": [1.0],
                        "t": [0.0, 1.0],
                        "p": [0.0, 1.0],
                        "q": [[[0.0, 1.0], [0.0, 1.0]]],
                    },
                }
            },
            "replaces the power-law",
        ),
        (
            {
                "drift": {
                    "relaxation": {
                        "reference": "target",
                        "g": [1.0],
                        "t": [0.0, 1.0],
                        "p": [0.0, 1.0],
                        "q": [[[0.0, 1.0]]],
                    }
                }
            },
            "must match",
        ),
        ({"read_noise": {"flicker": {"tau": [1.0, 0.5], "g": [1.0], "sigma": [[0.1, 0.1]]}}}, "increasing"),
        ({"programming": {"flicker": {"tau": [1.0], "g": [1.0], "sigma": [[0.1]]}}}, "programming.flicker"),
    ],
)
def test_empirical_tables_are_validated(bad, msg):
    from crossbar.config import load_config
    from crossbar.errors import CrossbarInputError

    with pytest.raises(CrossbarInputError, match=msg):
        load_config("ideal").replace(device={**load_config("ideal").device.model_dump(), **bad})


def test_flicker_components_are_ornstein_uhlenbeck():
    import numpy as np

    from crossbar.config import FlickerNoise

    spec = FlickerNoise(tau=[0.05], g=[0.0, 100.0], sigma=[[1.0], [3.0]])
    n_series, n = 400, 200
    t = np.tile(np.arange(n) * 0.01, n_series)
    group = np.repeat(np.arange(n_series), n)
    g_ref = np.full(n_series, 50.0)  # sigma 2 uS at 50 uS
    x = devices.flicker(g_ref, spec, group, t, generator(0, "f")).reshape(n_series, n)
    assert float(x.std()) == pytest.approx(2.0, rel=0.03)
    lag1 = float(np.mean(x[:, 1:] * x[:, :-1]) / np.mean(x * x))
    assert lag1 == pytest.approx(math.exp(-0.01 / 0.05), abs=0.01)
    # irregular read times (the step-by-step path) follow the same statistics
    t_irr = np.tile(np.r_[0.0, 0.01, 0.02, 0.1, 0.11], 20_000)
    g_irr = np.repeat(np.arange(20_000), 5)
    y = devices.flicker(np.full(20_000, 50.0), spec, g_irr, t_irr, generator(1, "f")).reshape(20_000, 5)
    assert float(np.corrcoef(y[:, 0], y[:, 1])[0, 1]) == pytest.approx(math.exp(-0.2), abs=0.02)
    assert float(np.corrcoef(y[:, 2], y[:, 3])[0, 1]) == pytest.approx(math.exp(-1.6), abs=0.02)
    again = devices.flicker(np.full(20_000, 50.0), spec, g_irr, t_irr, generator(1, "f"))
    assert np.array_equal(again, y.reshape(-1))

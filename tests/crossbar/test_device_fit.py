"""fit-device / simulate-device: the measurement format, its errors, the fits on synthetic devices
with known statistics, held-out simulation, and (when ../shared/data is present) the real RRAM data."""

import argparse
import csv
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from crossbar.config import load_config
from crossbar.device_cli import (
    add_fit_device_arguments,
    add_simulate_device_arguments,
    run_fit_device,
    run_simulate_device,
)
from crossbar.device_fit import core_sigma, ks, load_device, windowed_sigma
from crossbar.errors import CrossbarInputError
from crossbar.measurements import parse_columns, read_measurements

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """../shared/data/<name>, or skip with a clear message (as tests.conftest.shared_data; not
    imported from there so that `pytest tests/crossbar/test_device_fit.py` works without -m)."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"dataset {path} not present (tests that need ../shared/data are skipped)")
    return path


def cli(*argv) -> int:
    """The two commands as `crossbar` wires them (exit code; errors print one line)."""
    parser = argparse.ArgumentParser(prog="crossbar")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit-device")
    add_fit_device_arguments(f)
    f.set_defaults(func=run_fit_device)
    s = sub.add_parser("simulate-device")
    add_simulate_device_arguments(s)
    s.set_defaults(func=run_simulate_device)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def write_csv(path, header, cols):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in zip(*cols):
            w.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    return path


def read_sim(path):
    with open(path) as f:
        r = csv.DictReader(f)
        return [row for row in r]


LEVELS = 10.0 + 10.0 * np.arange(8)  # 8 target levels, 10 .. 80 uS
TIMES = (0.0, 1.0, 100.0, 1e4)


def synthetic_relaxation(n_dev=4000, seed=0, stuck_on=0.02):
    """Write-verify + relaxation data with heavy tails: programming error t(3) x 0.8 uS, a change
    after programming that broadens with log t (t(3) x 0.4 log10(1 + t / 0.1) uS) and drifts down by
    0.5 % of G per decade; a fraction ``stuck_on`` reads ~150 uS whatever its target."""
    rng = np.random.default_rng(seed)
    level = np.arange(n_dev) % len(LEVELS)
    target = LEVELS[level]
    g0 = target + 0.8 * rng.standard_t(3, n_dev)
    stuck = rng.random(n_dev) < stuck_on
    g0[stuck] = 150 + rng.standard_normal(stuck.sum())
    rows = {"device_id": [], "g_us": [], "target_lo_us": [], "target_hi_us": [], "t_s": []}
    slow = rng.standard_t(3, n_dev)
    for t in TIMES:
        g = g0 + 0.4 * math.log10(1 + t / 0.1) * slow - 0.005 * g0 * math.log10(1 + t)
        g[stuck] = g0[stuck]
        rows["device_id"] += [f"d{i}" for i in range(n_dev)]
        rows["g_us"] += list(np.maximum(g, 0.0))
        rows["target_lo_us"] += list(target - 1.5)
        rows["target_hi_us"] += list(target + 1.5)
        rows["t_s"] += [t] * n_dev
    return {k: np.array(v) for k, v in rows.items()}, stuck


def _subset(rows, mask_dev):
    ids = rows["device_id"]
    keep = np.isin(ids, mask_dev)
    return {k: v[keep] for k, v in rows.items()}


def _held_out(tmp_path, rows):
    ids = np.unique(rows["device_id"])
    perm = np.random.default_rng(1).permutation(len(ids))
    fit_ids, test_ids = ids[perm[: len(ids) // 2]], ids[perm[len(ids) // 2 :]]
    fit_rows, test_rows = _subset(rows, fit_ids), _subset(rows, test_ids)
    names = ["device_id", "g_us", "target_lo_us", "target_hi_us", "t_s"]
    fit_csv = write_csv(tmp_path / "fit.csv", names, [fit_rows[k] for k in names])
    tgt_names = ["device_id", "target_lo_us", "target_hi_us", "t_s"]
    tgt_csv = write_csv(tmp_path / "targets.csv", tgt_names, [test_rows[k] for k in tgt_names])
    return fit_rows, test_rows, fit_csv, tgt_csv


def test_fit_and_simulate_held_out_heavy_tailed_devices(tmp_path, capsys):
    rows, stuck = synthetic_relaxation(n_dev=8000)
    fit_rows, test_rows, fit_csv, tgt_csv = _held_out(tmp_path, rows)
    dev_json, rep_json = tmp_path / "dev.json", tmp_path / "report.json"
    assert (
        cli(
            "fit-device",
            fit_csv,
            "--out",
            dev_json,
            "--report",
            rep_json,
            "--t-inference",
            "1e4",
            "--plots",
            tmp_path / "plots",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "programming error" in out and "stuck at ON" in out and "KS distance" in out
    dev = load_device(dev_json)
    assert dev.programming.quantiles is not None and dev.drift.relaxation.reference == "target"
    assert dev.levels == 8 and dev.g_min == 10.0 and dev.g_max == 80.0 and dev.drift.t_inference == 1e4
    assert "sha256" in dev.description and "fit.csv" in dev.description
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "distributions_first_read.png",
        "distributions_last_time.png",
        "ks_per_bin_and_time.png",
        "programming_sigma.png",
    ]
    report = json.loads(rep_json.read_text())
    n_fit = len(np.unique(fit_rows["device_id"]))
    p_on = report["programming"]["stuck_on"]
    assert abs(p_on - 0.02) <= 4 * math.sqrt(0.02 * 0.98 / n_fit), p_on
    assert report["programming"]["stuck_off"] < 0.002  # t(3) tails below the lowest window are rare
    # held-out half: simulate its targets and times, compare with its measurements
    sim_csv = tmp_path / "sim.csv"
    assert cli("simulate-device", dev_json, "--targets", tgt_csv, "--out", sim_csv, "--seed", "3") == 0
    sim_rows = read_sim(sim_csv)
    assert [r["device_id"] for r in sim_rows] == list(test_rows["device_id"])
    assert list(sim_rows[0]) == ["device_id", "target_lo_us", "target_hi_us", "t_s", "g_us"]
    sim = np.array([float(r["g_us"]) for r in sim_rows])
    meas, t = test_rows["g_us"], test_rows["t_s"]
    target = 0.5 * (test_rows["target_lo_us"] + test_rows["target_hi_us"])
    ks_last = [ks(meas[(t == 1e4) & (target == lv)], sim[(t == 1e4) & (target == lv)]) for lv in LEVELS]
    assert np.median(ks_last) <= 0.12, ks_last
    for pair in (LEVELS[:2], LEVELS[2:4], LEVELS[4:6], LEVELS[6:]):  # programming-error core sigma
        m = (t == 0) & np.isin(target, pair)  # per quarter of the levels
        assert core_sigma(sim[m] - target[m]) == pytest.approx(core_sigma(meas[m] - target[m]), rel=0.15)
    # a Gaussian matched in mean and std per level fails the same test (the check can fail)
    rng = np.random.default_rng(5)
    gauss = np.empty(len(meas))
    for lv in LEVELS:
        f = (fit_rows["t_s"] == 1e4) & (0.5 * (fit_rows["target_lo_us"] + fit_rows["target_hi_us"]) == lv)
        m = target == lv
        gauss[m] = rng.normal(fit_rows["g_us"][f].mean(), fit_rows["g_us"][f].std(), m.sum())
    ks_gauss = [ks(meas[(t == 1e4) & (target == lv)], gauss[(t == 1e4) & (target == lv)]) for lv in LEVELS]
    assert np.median(ks_gauss) > 0.2
    # same seed, same numbers; another seed, other numbers
    again = tmp_path / "sim2.csv"
    assert cli("simulate-device", dev_json, "--targets", tgt_csv, "--out", again, "--seed", "3") == 0
    assert again.read_bytes() == sim_csv.read_bytes()
    other = tmp_path / "sim3.csv"
    assert cli("simulate-device", dev_json, "--targets", tgt_csv, "--out", other, "--seed", "4") == 0
    assert other.read_bytes() != sim_csv.read_bytes()


def test_targets_unknown_fit_relaxation_relative_to_the_first_read(tmp_path, capsys):
    rows, _stuck = synthetic_relaxation(n_dev=3000, seed=2)
    names = ["device_id", "g_us", "t_s"]
    data = write_csv(tmp_path / "m.csv", names, [rows[k] for k in names])
    assert cli("fit-device", data, "--out", tmp_path / "d.json") == 0
    out = capsys.readouterr().out
    assert "programming error not fitted" in out and "first_read-referenced" in out
    dev = load_device(tmp_path / "d.json")
    assert dev.programming.quantiles is None and dev.drift.relaxation.reference == "first_read"
    # simulate every device from its measured first read: the later reads' distribution per
    # conductance band comes back
    first = {d: g for d, g, t in zip(rows["device_id"], rows["g_us"], rows["t_s"]) if t == 0}
    tg = np.array([first[d] for d in rows["device_id"]])
    write_csv(tmp_path / "tg.csv", ["device_id", "target_g_us", "t_s"], [rows["device_id"], tg, rows["t_s"]])
    assert (
        cli("simulate-device", tmp_path / "d.json", "--targets", tmp_path / "tg.csv", "--out", tmp_path / "s.csv") == 0
    )
    sim = np.array([float(r["g_us"]) for r in read_sim(tmp_path / "s.csv")])
    last = rows["t_s"] == 1e4
    change_m, change_s = rows["g_us"][last] - tg[last], sim[last] - tg[last]
    assert ks(change_m, change_s) < 0.05
    assert np.std(change_s) == pytest.approx(np.std(change_m), rel=0.2)


def test_read_noise_from_repeated_reads(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n_dev, reads = 600, 8
    g_true = rng.uniform(10, 100, n_dev)
    sigma = np.sqrt(0.3**2 + (0.02 * g_true) ** 2)
    dev_ids = np.repeat([f"c{i}" for i in range(n_dev)], reads)
    g = np.repeat(g_true, reads) + np.repeat(sigma, reads) * rng.standard_normal(n_dev * reads)
    idx = np.tile(np.arange(reads), n_dev)
    path = write_csv(
        tmp_path / "reads.csv", ["device_id", "g_us", "read_idx", "t_s"], [dev_ids, g, idx, np.zeros(n_dev * reads)]
    )
    assert cli("fit-device", path, "--out", tmp_path / "d.json", "--report", tmp_path / "r.json") == 0
    rep = json.loads((tmp_path / "r.json").read_text())["read_noise_repeated"]
    assert rep["abs_rel"]["sigma_abs"] == pytest.approx(0.3, abs=0.1)
    assert rep["abs_rel"]["sigma_rel"] == pytest.approx(0.02, rel=0.1)
    dev = load_device(tmp_path / "d.json")
    import torch

    from crossbar.devices import noise_sigma

    s = noise_sigma(torch.tensor([20.0, 80.0], dtype=torch.float64), dev.read_noise)
    assert s.tolist() == pytest.approx([math.hypot(0.3, 0.4), math.hypot(0.3, 1.6)], rel=0.12)


def _ou(rng, n, dt, tau, sigma):
    rho = math.exp(-dt / tau)
    from scipy.signal import lfilter

    e = sigma * math.sqrt(1 - rho**2) * rng.standard_normal(n)
    e[0] = sigma * rng.standard_normal()
    return lfilter([1.0], [1.0, -rho], e)


def test_time_series_read_noise_windowed_sigma_and_psd(tmp_path, capsys):
    rng = np.random.default_rng(4)
    fs, n = 100.0, 30_000
    rows = {"device_id": [], "t_s": [], "g_us": []}
    for name, g0, scale in (("lo", 20.0, 1.0), ("hi", 80.0, 2.0)):
        x = g0 + scale * (0.1 * rng.standard_normal(n) + _ou(rng, n, 1 / fs, 0.3, 0.2) + _ou(rng, n, 1 / fs, 10.0, 0.4))
        rows["device_id"] += [name] * n
        rows["t_s"] += list(np.arange(n) / fs)
        rows["g_us"] += list(x)
    path = write_csv(tmp_path / "ts.csv", ["device_id", "t_s", "g_us"], [rows[k] for k in ("device_id", "t_s", "g_us")])
    assert (
        cli(
            "fit-device", path, "--out", tmp_path / "d.json", "--report", tmp_path / "r.json", "--plots", tmp_path / "p"
        )
        == 0
    )
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["time_series_events"] == 2
    for s in rep["time_series"]:
        assert -2.0 < s["psd_slope"] < -0.2
        assert s["window_fit_max_rel_err"] < 0.1
    for g in rep["goodness"]["time_series"]:
        for T, r in g["windowed_sigma_ratio"].items():
            if float(T) <= 10:
                assert r == pytest.approx(1.0, abs=0.2), (g["series"], T, r)
    dev = load_device(tmp_path / "d.json")
    means = [float(np.mean(rows["g_us"][:n])), float(np.mean(rows["g_us"][n:]))]
    assert dev.read_noise.flicker is not None and dev.read_noise.table.g == pytest.approx(means, rel=1e-6)
    assert dev.read_noise.flicker.g == dev.read_noise.table.g
    assert (tmp_path / "p" / "read_noise.png").is_file()
    # white part of the fit: 0.1 uS (lo) and 0.2 uS (hi) per read
    assert dev.read_noise.table.sigma == pytest.approx([0.1, 0.2], rel=0.25)


def test_units_and_column_mapping_give_the_same_fit(tmp_path, capsys):
    rows, _ = synthetic_relaxation(n_dev=800, seed=6)
    g = rows["g_us"]
    keep = g > 0
    sub = {k: v[keep] for k, v in rows.items()}
    write_csv(
        tmp_path / "us.csv",
        ["device_id", "g_us", "target_lo_us", "target_hi_us", "t_s"],
        [sub[k] for k in ("device_id", "g_us", "target_lo_us", "target_hi_us", "t_s")],
    )
    write_csv(
        tmp_path / "ohm.tsv",
        ["cell", "R", "R_hi", "R_lo", "time"],
        [sub["device_id"], 1e6 / sub["g_us"], 1e6 / sub["target_lo_us"], 1e6 / sub["target_hi_us"], sub["t_s"]],
    )
    text = (tmp_path / "ohm.tsv").read_text().replace(",", "\t")
    (tmp_path / "ohm.tsv").write_text(text)
    assert cli("fit-device", tmp_path / "us.csv", "--out", tmp_path / "a.json") == 0
    assert (
        cli(
            "fit-device",
            tmp_path / "ohm.tsv",
            "--out",
            tmp_path / "b.json",
            "--units",
            "ohm",
            "--columns",
            "device_id=cell,g_us=R,target_lo_us=R_hi,target_hi_us=R_lo,t_s=time",
        )
        == 0
    )
    a, b = load_device(tmp_path / "a.json"), load_device(tmp_path / "b.json")
    assert np.allclose(a.programming.quantiles.q, b.programming.quantiles.q, atol=2e-4)
    assert np.allclose(a.drift.relaxation.q, b.drift.relaxation.q, atol=2e-4)
    m = read_measurements(tmp_path / "us.csv")
    s = write_csv(tmp_path / "s.csv", ["device_id", "g_us"], [sub["device_id"], sub["g_us"] * 1e-6])
    assert np.allclose(read_measurements(s, units="S").g, m.g)


def test_parametric_method_gives_a_gaussian_and_stuck_probabilities(tmp_path, capsys):
    rows, _ = synthetic_relaxation(n_dev=3000, seed=8, stuck_on=0.03)
    names = ["device_id", "g_us", "target_lo_us", "target_hi_us", "t_s"]
    data = write_csv(tmp_path / "m.csv", names, [rows[k] for k in names])
    assert cli("fit-device", data, "--out", tmp_path / "d.json", "--method", "parametric") == 0
    assert "relaxation is reported but not modelled" in capsys.readouterr().out
    dev = load_device(tmp_path / "d.json")
    assert dev.programming.quantiles is None and dev.drift.relaxation is None
    assert dev.stuck_on_prob == pytest.approx(0.03, abs=4 * math.sqrt(0.03 * 0.97 / 3000))
    # the core sigma of t(3) x 0.8 uS (std within 5 robust sigmas): about 1.11 uS
    assert np.median(dev.programming.table.sigma) == pytest.approx(1.11, rel=0.15)


def test_base_writes_a_whole_config_the_simulator_programs(tmp_path, capsys):
    rows, _ = synthetic_relaxation(n_dev=800, seed=7)
    names = ["device_id", "g_us", "target_lo_us", "target_hi_us", "t_s"]
    data = write_csv(tmp_path / "m.csv", names, [rows[k] for k in names])
    assert cli("fit-device", data, "--out", tmp_path / "cfg.json", "--base", "rram_nladc_5b") == 0
    cfg = load_config(tmp_path / "cfg.json")
    base = load_config("rram_nladc_5b")
    assert cfg.adc == base.adc and cfg.nl_adc == base.nl_adc
    assert cfg.device.drift.relaxation is not None and cfg.device.drift.t_inference == base.device.drift.t_inference
    assert "fit-device" in cfg.description and base.description[:50] in cfg.description
    import torch

    from crossbar.tile import Tile

    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    tile = Tile(w, torch.zeros(6), cfg).program(0, 1)
    assert torch.isfinite(tile.g_pos).all()


# ------------------------------------------------------------------------------ bad input
GOOD = "device_id,g_us,t_s\nd0,10.5,0\nd0,10.1,1\nd1,20.0,0\n"


@pytest.mark.parametrize(
    "text, args, fragments",
    [
        ("", [], ["empty file"]),
        ("device_id,g_us\n", [], ["no data rows"]),
        ("device_id,t_s\nd0,0\n", [], ["missing required column 'g_us'", "--columns g_us="]),
        ("device_id,g_us\nd0,10\nd1,abc\n", [], ["row 2 (line 3)", "g_us", "'abc' is not a number", ">= 0 uS"]),
        ("device_id,g_us\nd0,10\nd1,-3\n", [], ["row 2 (line 3)", "negative conductance"]),
        ("device_id,g_us\nd0,10\nd1,nan\n", [], ["row 2", "not finite"]),
        ("device_id,g_us\nd0,10\nd1,\n", [], ["row 2", "empty value"]),
        ("device_id,g_us\nd0,10,3\n", [], ["row 1 (line 2) has 3 fields but the header has 2"]),
        ("device_id,g_us\n,10\n", [], ["row 1", "empty device_id"]),
        ("device_id,g_us,t_s\nd0,10,-1\n", [], ["row 1", "t_s", "negative"]),
        (
            "device_id,R\nd0,0\n",
            ["--units", "ohm", "--columns", "g_us=R"],
            ["row 1", "g_us (file column 'R')", "non-positive resistance"],
        ),
        ("device_id,g_us\nd0,10\n", ["--columns", "g_us=G"], ["maps g_us to 'G'", "no such column"]),
        ("device_id,g_us\nd0,10\n", ["--columns", "gus=g_us"], ["'gus' is not a column of the format"]),
        ("device_id,g_us,target_lo_us,target_hi_us\nd0,10,12,11\n", [], ["row 1", "above target_hi_us", "lo <= hi"]),
        ("device_id,g_us,target_lo_us,target_hi_us\nd0,10,9,\n", [], ["row 1", "target_hi_us", "both"]),
        ("device_id,g_us,target_lo_us\nd0,10,9\n", [], ["needs both target_lo_us and target_hi_us"]),
        (
            "device_id,g_us,target_g_us\nd0,10,10\nd0,11,12\n",
            [],
            ["row 2", "device 'd0' (program '0')", "one programming event has one target"],
        ),
        ("device_id,g_us,verify_ok\nd0,10,maybe\n", [], ["row 1", "verify_ok", "'maybe'", "yes/no"]),
        ("device_id,g_us,g_us\nd0,1,2\n", [], ["column 'g_us' appears twice"]),
    ],
)
def test_bad_measurement_files_give_one_line_errors(tmp_path, capsys, text, args, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert cli("fit-device", path, "--out", tmp_path / "d.json", *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert str(path) in err or "--columns" in err
    for frag in fragments:
        assert frag in err, (frag, err)
    assert not (tmp_path / "d.json").exists()


def test_simulate_device_input_errors_and_inputs_never_overwritten(tmp_path, capsys):
    data = tmp_path / "m.csv"
    data.write_text(GOOD)
    assert cli("fit-device", data, "--out", data) == 2
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert data.read_text() == GOOD
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({"g_min": 0.0, "g_max": 100.0, "programming": {"sigma_abs": 1.0}}))
    tg = tmp_path / "t.csv"
    tg.write_text("device_id,target_g_us,t_s\nd0,10,0\nd1,,0\n")
    assert cli("simulate-device", dev, "--targets", tg, "--out", tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert "row 2" in err and "device 'd1' has no target" in err and not (tmp_path / "s.csv").exists()
    assert cli("simulate-device", dev, "--targets", tg, "--out", tg) == 2
    assert "never overwritten" in capsys.readouterr().err
    dev.write_text(json.dumps({"g_min": 0.0, "g_max": 100.0, "programming": {"sigma_abs": -1.0}}))
    tg.write_text("device_id,target_g_us\nd0,10\n")
    assert cli("simulate-device", dev, "--targets", tg, "--out", tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert "device.programming.sigma_abs" in err and str(dev) in err
    # a measured g_us column in a targets file is kept as measured_g_us
    dev.write_text(json.dumps({"g_min": 0.0, "g_max": 100.0}))
    tg.write_text("device_id,target_g_us,g_us\nd0,10,10.4\n")
    assert cli("simulate-device", dev, "--targets", tg, "--out", tmp_path / "s.csv") == 0
    assert read_sim(tmp_path / "s.csv") == [
        {"device_id": "d0", "target_g_us": "10", "measured_g_us": "10.4", "g_us": "10"}
    ]


def test_parse_columns_and_measurement_basics(tmp_path):
    assert parse_columns("device_id=addr, g_us=G") == {"device_id": "addr", "g_us": "G"}
    with pytest.raises(CrossbarInputError, match="NAME=COLUMN"):
        parse_columns("device_id")
    p = tmp_path / "m.csv"
    p.write_text("# comment\n" + GOOD.replace(",", ";"))
    m = read_measurements(p)
    assert m.n == 3 and m.g.tolist() == [10.5, 10.1, 20.0] and np.isnan(m.target).all()
    gi, dev, prog = m.groups()
    assert gi.tolist() == [0, 0, 1] and dev.tolist() == ["d0", "d1"]


# ------------------------------------------------------------------------------ real data
def _script():
    spec = importlib.util.spec_from_file_location("fit_levy_rram", REPO / "scripts" / "fit_levy_rram.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_real_rram_tech_b_acceptance(tmp_path):
    """Issue 17's acceptance on the measured tech B cells (fit one half, simulate the other)."""
    data = shared_data("rram_levy_relaxation")
    start = time.perf_counter()
    res = _script().tech_b(data, tmp_path, seed=0, plots=None, quiet=True)
    assert res["ks_1e4_median"] <= 0.15
    assert res["ks_1e4_gaussian_median"] > 0.2  # a Gaussian matched per level fails it
    assert res["programming_pass"], res["programming_sigma"]
    assert res["ks_1e4_median_targets_unknown"] <= 0.15
    assert res["device_json_bytes"] < 200_000
    assert time.perf_counter() - start < 60


def test_real_rram_tech_a_windowed_read_noise(tmp_path):
    """Tech A read noise: the fitted flicker model reproduces each cell's windowed sigma (0.1..30 s
    here; the 100 s window of the acceptance script is left to it: it is noisy for one realisation)."""
    data = shared_data("rram_levy_relaxation")
    mod = _script()
    a = mod.load_tech_a(data)
    n = 20_000  # 50 s of each cell keeps the test short
    rows = [["cell", "t_s", "g_us"]]
    for lv, x in zip(a["level"], a["g_S"][:, :n] * 1e6):
        rows += [[f"level{lv}", f"{i / a['fs']:.6f}", repr(float(v))] for i, v in enumerate(x)]
    path = tmp_path / "a.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert (
        cli(
            "fit-device",
            path,
            "--out",
            tmp_path / "d.json",
            "--columns",
            "device_id=cell",
            "--report",
            tmp_path / "r.json",
        )
        == 0
    )
    rep = json.loads((tmp_path / "r.json").read_text())
    assert all(s["psd_slope"] < -0.5 for s in rep["time_series"])
    for g in rep["goodness"]["time_series"]:
        for T, r in g["windowed_sigma_ratio"].items():
            if float(T) <= 10:
                assert abs(r - 1) <= 0.3, (g["series"], T, r)
    x = a["g_S"][0, :n] * 1e6
    assert windowed_sigma(x, 400) > windowed_sigma(x, 40)  # 1/f: sigma grows with the window

"""Cost model: hand-counted accounting, unit consistency, library errors, the CLI report."""

import json
import math

import pytest

from crossbar.config import default_config, load_config
from crossbar.cost.accounting import estimate, nl_time_ratio
from crossbar.cost.library import REQUIRED, load_library
from crossbar.cost.workload import CellWork, MatrixLoad, Workload, paper_shape
from crossbar.errors import CrossbarInputError
from rnn_models.cli import main

COMPONENTS = {
    name: {
        "description": name,
        "node_nm": 16,
        "energy_pj": 1.0 + i,
        "area_um2": 10.0 + i,
        "latency_cycles": 1,
        "source": "test figure",
    }
    for i, name in enumerate(REQUIRED)
}


def _library(tmp_path, components=COMPONENTS, **extra):
    data = {
        "format": "crossbar.cost_library",
        "version": 1,
        "scaling": {"model": "test", "source": "test source", "vdd_v": {"16": 0.8, "45": 0.9}},
        "components": components,
        **extra,
    }
    path = tmp_path / "lib.json"
    path.write_text(json.dumps(data))
    return path


def _tiny_workload(g_load=1000.0):
    # LSTM 3 -> 2: rows 3 + 2 + bias = 6, cols 4 * 2 = 8
    return Workload(
        "tiny",
        "hand example",
        [MatrixLoad("lstm", 6, 8, "nl", True, True, g_load)],
        [CellWork("lstm", "lstm", 2)],
        steps_per_inference=5,
    )


def test_hand_counted_example(tmp_path):
    lib = load_library(_library(tmp_path))
    cfg = default_config(
        **{
            "array.rows": 4,
            "array.cols": 4,
            "array.partial_sums": "analog",
            "array.v_read": 0.2,
            "nl_adc.reset_cycles": 2,
            "nl_adc.bias_devices": 5,
            "device.g_min": 1.0,
            "device.g_max": 101.0,
            "dac.bits": 8,
            "datapath.bits": 8,
            "cost.node_nm": 16,
            "cost.clock_ghz": 1.0,
            "cost.input_activity": 1.0,
        }
    )
    e = estimate(_tiny_workload(), cfg, lib, bits=3, architecture="nl_adc")
    pj = 1e-12
    E = {name: c["energy_pj"] * pj for name, c in COMPONENTS.items()}
    A = {name: c["area_um2"] for name, c in COMPONENTS.items()}
    # the NL-ADC schedule by hand (3-bit mid-tread designs of the LSTM's sigmoid and tanh): thresholds
    # f^-1 of the level boundaries, the ramp starts one step below the first, kappa puts the largest
    # step at g_max = 101 uS, the bias (|x_lo| kappa) needs ceil(need / (5 devices x 0.8 g_max)) cycles
    sched = {}
    for name, inv, lo, hi in (
        ("sigmoid", lambda p: math.log(p / (1 - p)), 0.0, 1.0),
        ("tanh", math.atanh, -1.0, 1.0),
    ):
        levels = [lo + (hi - lo) * k / 7 for k in range(8)]
        t = [inv(0.5 * (a + b)) for a, b in zip(levels, levels[1:])]
        x_lo, x_hi = t[0] - (t[1] - t[0]), t[-1] + (t[-1] - t[-2])
        steps = [t[0] - x_lo] + [b - a for a, b in zip(t, t[1:])] + [x_hi - t[-1]]
        kappa = 101.0 / max(steps)
        bias = math.ceil(-x_lo * kappa / (5 * 0.8 * 101.0))
        sched[name] = (2**3 + bias + 2, kappa * (x_hi - x_lo) + (-x_lo) * kappa)  # cycles, uS x cycles
    assert sched["sigmoid"][0] == sched["tanh"][0] == 11  # 8 ramp steps + 1 bias cycle + 2 reset
    conv = 11
    charge = max(c for _, c in sched.values())
    arrays = 2 * 2  # ceil(6/4) x ceil(8/4)
    # cycles: conversion + element-wise (2 units on 2 lanes: 3 multiplies + 1 add, then a 1-cycle PWL tanh)
    assert e["cycles_per_step"] == {"mvm_and_conversion": conv, "elementwise": 4 + 1, "total": conv + 5}
    assert e["latency_per_step_s"] == pytest.approx((conv + 5) * 1e-9)
    assert e["latency_per_inference_s"] == pytest.approx(5 * (conv + 5) * 1e-9)
    got = e["energy_by_component"]
    assert got["mac_array/array_read"] == pytest.approx(0.2**2 * 1000e-6 * conv * 1e-9)
    assert got["mac_array/word_line_drivers"] == pytest.approx(6 * 2 * 8 * E["word_line_driver"])
    assert got["nl_processing/column_converters"] == pytest.approx(8 * conv * E["column_converter"])
    assert got["nl_processing/counters"] == pytest.approx(arrays * conv * 2 * E["flip_flop"])
    assert got["nl_processing/latches"] == pytest.approx(8 * 3 * E["flip_flop"])
    assert got["nl_processing/ramp_columns"] == pytest.approx(8 * 0.2**2 * charge * 1e-6 * 1e-9)
    # through the wires the ramp devices deliver less (MatrixLoad.ramp_charge_factor): the ramp energy scales
    import dataclasses

    wl = _tiny_workload()
    wl.matrices[0] = dataclasses.replace(wl.matrices[0], ramp_charge_factor=0.6)
    wired = estimate(wl, cfg, lib, bits=3, architecture="nl_adc")["energy_by_component"]
    assert wired["nl_processing/ramp_columns"] == pytest.approx(0.6 * got["nl_processing/ramp_columns"])
    area = e["area_by_component_mm2"]
    assert area["mac_array/array_read"] == pytest.approx(2 * 48 * A["rram_cell"] * 1e-6)
    assert area["nl_processing/ramp_columns"] == pytest.approx(8 * (8 + 5) * A["rram_cell"] * 1e-6)
    assert e["ops_per_step"] == 2 * 48
    layer = e["layers"][0]
    assert (layer["arrays"], layer["conversions_per_run"], layer["cycles_per_conversion"]) == (4, 8, conv)
    assert layer["utilisation"] == pytest.approx(48 / (4 * 16))
    assert (layer["weight_devices"], layer["ramp_devices"]) == (96, 8 * (8 + 5))
    cells = e["layers"][1]
    assert (cells["multiplies_per_step"], cells["adds_per_step"], cells["digital_tanh_per_step"]) == (6, 2, 2)


@pytest.mark.parametrize("preset", ["rram_nladc_3b", "rram_nladc_5b", "rram_nladc_8b", "pcm_nladc_5b_drift"])
def test_cost_model_counts_the_simulated_nladc_cycles(preset):
    """One definition: each layer's cycles per conversion in the cost report equal the slowest
    programmed NL-ADC the simulator builds for that layer's functions (bias phase included)."""
    from crossbar.periphery.readout import ColumnReadout

    cfg = load_config(preset)
    e = estimate(paper_shape("paper-lm", cfg), cfg, load_library(), cfg.adc.bits)
    simulated = {
        "nl": max(ColumnReadout(cfg, f, 4).cycles_per_conversion() for f in ("sigmoid", "tanh")),
        "linear": ColumnReadout(cfg, "identity", 4, in_range=(cfg.adc.in_min, cfg.adc.in_max)).cycles_per_conversion(),
    }
    for layer in e["layers"]:
        if "readout" in layer:
            assert layer["cycles_per_conversion"] == simulated[layer["readout"]], layer["layer"]
    assert simulated["nl"] > 2**cfg.adc.bits + cfg.nl_adc.reset_cycles  # the bias phase is counted
    assert e["cycles_per_step"]["mvm_and_conversion"] == simulated["nl"]


def test_units_are_consistent():
    cfg = load_config("rram_nladc_5b")
    lib = load_library()
    for name in ("paper-kws", "paper-lm"):
        w = paper_shape(name, cfg)
        for arch in ("nl_adc", "conventional", "digital"):
            e = estimate(w, cfg, lib, 5, arch)
            # power x efficiency = throughput; area efficiency x area = throughput
            assert e["tops_per_w"] * e["power_mw"] * 1e-3 == pytest.approx(e["peak_tops"], rel=1e-9)
            assert e["tops_per_mm2"] * e["area_mm2"] == pytest.approx(e["peak_tops"], rel=1e-9)
            assert e["energy_per_inference_j"] == pytest.approx(w.steps_per_inference * e["energy_per_step_j"])
            assert sum(e["energy_breakdown"].values()) == pytest.approx(e["energy_per_step_j"])
            assert sum(e["area_by_component_mm2"].values()) == pytest.approx(e["area_mm2"])
    # array read energy ~ V_read^2; the clock changes time, not energy
    w = paper_shape("paper-lm", cfg)
    base = estimate(w, cfg, lib, 5)
    hot = estimate(w, cfg.replace(**{"array.v_read": 0.4}), lib, 5)
    assert hot["energy_by_component"]["mac_array/array_read"] == pytest.approx(
        4 * base["energy_by_component"]["mac_array/array_read"]
    )
    fast = estimate(w, cfg.replace(**{"cost.clock_ghz": 2.0}), lib, 5)
    assert fast["latency_per_step_s"] == pytest.approx(base["latency_per_step_s"] / 2)
    assert fast["energy_by_component"]["nl_processing/column_converters"] == pytest.approx(
        base["energy_by_component"]["nl_processing/column_converters"]
    )


def test_node_scaling_follows_the_library_model(tmp_path):
    lib = load_library(_library(tmp_path))
    assert lib.energy_j("adder_8b", 45) == pytest.approx(lib.energy_j("adder_8b", 16) * (45 / 16) * (0.9 / 0.8) ** 2)
    assert lib.area_um2("adder_8b", 45) == pytest.approx(lib.area_um2("adder_8b", 16) * (45 / 16) ** 2)
    with pytest.raises(CrossbarInputError, match="outside the scaling table"):
        lib.energy_j("adder_8b", 7)


def test_library_errors_are_clear(tmp_path):
    missing = {k: v for k, v in COMPONENTS.items() if k != "sar_adc"}
    with pytest.raises(CrossbarInputError, match="missing component.*sar_adc"):
        load_library(_library(tmp_path, missing))
    bad = {**COMPONENTS, "adder_8b": {**COMPONENTS["adder_8b"], "energy_pj": -1}}
    with pytest.raises(CrossbarInputError, match="components.adder_8b.energy_pj"):
        load_library(_library(tmp_path, bad))
    nosource = {**COMPONENTS, "flip_flop": {k: v for k, v in COMPONENTS["flip_flop"].items() if k != "source"}}
    with pytest.raises(CrossbarInputError, match="components.flip_flop.source"):
        load_library(_library(tmp_path, nosource))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CrossbarInputError, match="invalid JSON"):
        load_library(tmp_path / "broken.json")
    with pytest.raises(CrossbarInputError, match="not found"):
        load_library(tmp_path / "absent.json")
    nolat = {
        **COMPONENTS,
        "activation_pwl": {k: v for k, v in COMPONENTS["activation_pwl"].items() if k != "latency_cycles"},
    }
    lib = load_library(_library(tmp_path, nolat))
    with pytest.raises(CrossbarInputError, match="activation_pwl.*latency_cycles"):
        estimate(_tiny_workload(), default_config(), lib, 5)


def test_shipped_library_reproduces_table1_lm_and_kws_energy():
    """Regression of the Table-1 comparison in docs/cost_model.md (the documented KWS 8-bit area deviation excepted)."""
    lib = load_library()
    table = {
        ("paper-lm", 5): (47.9, 27.6),
        ("paper-lm", 8): (7.2, 7.8),
        ("paper-kws", 5): (31.0, 39.48),
        ("paper-kws", 8): (4.0, None),
    }
    for (name, bits), (tops_w, tops_mm2) in table.items():
        cfg = load_config(f"rram_nladc_{bits}b")
        e = estimate(paper_shape(name, cfg), cfg, lib, bits)
        assert abs(e["tops_per_w"] / tops_w - 1) < 0.3
        if tops_mm2:
            assert abs(e["tops_per_mm2"] / tops_mm2 - 1) < 0.3


def test_nl_processing_time_of_fig1c():
    cfg = load_config("rram_conventional_adc_5b")
    r = nl_time_ratio(512, 32, 5, cfg, load_library())
    conv = 32 + cfg.nl_adc.reset_cycles
    assert r["mvm_cycles"] == conv
    assert r["ratio"]["lut"] == pytest.approx(math.ceil(5 * 512 / 32) / conv)
    assert r["ratio"]["pwl"] == pytest.approx(2 * math.ceil(5 * 512 / 32) / conv)


def test_report_cli(tmp_path, capsys):
    out = tmp_path / "rep"
    assert (
        main(["report", "--config", "rram_nladc_5b", "--model", "paper-kws", "--bits", "5,8", "--out", str(out)]) == 0
    )
    rep = json.loads((out / "report.json").read_text())
    for key in ("tops_per_w", "tops_per_mm2", "power_mw", "area_mm2", "peak_tops", "energy_breakdown"):
        assert set(rep[key]) == {"5", "8"}
    assert set(rep["energy_breakdown"]["5"]) == {"mac_array", "nl_processing", "rest"}
    assert set(rep["paper_table1"]) == {"5", "8"}
    for png in ("energy_breakdown.png", "efficiency.png", "latency.png"):
        assert (out / png).stat().st_size > 1000
    assert "Against the paper's Table 1" in (out / "report.md").read_text()
    # one bit width: plain numbers; a shipped checkpoint as the model
    assert main(["report", "--config", "rram_nladc_5b", "--model", "kws", "--out", str(tmp_path / "k")]) == 0
    rep = json.loads((tmp_path / "k" / "report.json").read_text())
    assert isinstance(rep["tops_per_w"], float) and rep["workload"]["steps_per_inference"] > 1
    assert main(["report", "--config", "rram_nladc_5b", "--model", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "--model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--config", "rram_nladc_5b", "--model", "paper-lm", "--bits", "5,x", "--out", str(tmp_path)])


def test_config_library_path_resolves_inside_the_config_folder(tmp_path):
    lib = _library(tmp_path)
    cfg = json.loads(load_config("rram_nladc_5b").model_dump_json())
    cfg["cost"]["library"] = lib.name
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert (
        main(["report", "--config", str(tmp_path / "c.json"), "--model", "paper-kws", "--out", str(tmp_path / "r")])
        == 0
    )
    cfg["cost"]["library"] = "../lib.json"
    (tmp_path / "d.json").write_text(json.dumps(cfg))
    assert (
        main(["report", "--config", str(tmp_path / "d.json"), "--model", "paper-kws", "--out", str(tmp_path / "r2")])
        == 2
    )


def test_checkpoint_like_models_and_cell_modes():
    import torch
    from torch import nn

    from rnn_models.workload import from_model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(6, 5, num_layers=2)
            self.fc = nn.Linear(5, 3)

    torch.manual_seed(0)
    cfg = load_config("rram_nladc_5b")
    w = from_model(Net(), cfg, "net", steps=7, per_sequence=("fc",))
    # per GRU layer: [x, h] -> r, z (NL-ADC), x -> n_x and h -> n_h (linear), as the analog GRU
    assert [m.rows for m in w.matrices] == [6 + 5 + 1, 6 + 1, 5 + 1, 5 + 5 + 1, 5 + 1, 5 + 1, 5 + 1]
    assert [m.cols for m in w.matrices] == [10, 5, 5, 10, 5, 5, 3] and not w.matrices[-1].per_step
    assert [m.readout for m in w.matrices[:3]] == ["nl", "linear", "linear"]
    assert all(m.g_load_us > 0 for m in w.matrices) and [c.kind for c in w.cells] == ["gru", "gru"]
    lib = load_library()
    for arch in ("nl_adc", "conventional", "digital"):
        e = estimate(w, cfg, lib, 5, arch)
        assert e["energy_per_step_j"] > 0 and e["latency_per_inference_s"] > 7 * e["latency_per_step_s"]
    # tanh(c) on an NL-ADC column: a second conversion (the simulator's cell NL-ADC: 36 cycles)
    # instead of a 2-cycle PWL on the lanes (16 units fit the 32 lanes in one pass), and only in
    # the NL-ADC architecture
    from crossbar.periphery.readout import ColumnReadout

    lstm = paper_shape("paper-kws", cfg)
    base = estimate(lstm, cfg, lib, 5)["cycles_per_step"]["elementwise"]
    nl_cell = cfg.replace(**{"nl_adc.functions.cell": "nl_adc"})
    cell_cfg = nl_cell.replace(**{"adc.kind": "nl_ramp", "adc.range_mode": "function"})
    cell_conv = ColumnReadout(cell_cfg, "tanh", 16).cycles_per_conversion()
    assert cell_conv == 36
    assert estimate(lstm, nl_cell, lib, 5)["cycles_per_step"]["elementwise"] == base - 2 + cell_conv
    conv = estimate(lstm, nl_cell, lib, 5, "conventional")
    assert "nl_processing/cell_tanh_nladc" not in conv["energy_by_component"]


def test_ramp_charge_factor_through_the_wires():
    """The NL-ADC ramps' charge with IR drop: 1 with ideal wires; else what the design's ramp and
    bias devices deliver through one array's wires, solved here on the array assembled by hand
    (weight rows, then per column its bias devices and one row per ramp step: near_sense)."""
    import torch

    from crossbar.cost.workload import ramp_charge_factor
    from crossbar.parasitics import effective_matrix
    from crossbar.periphery.nladc import NLADC, readout_design
    from crossbar.tile import Tile

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(6, 5, generator=g) * 0.5, torch.randn(6, generator=g) * 0.1
    base = load_config("rram_nladc_5b").replace(**{"adc.bits": 3, "array.rows": 64, "array.cols": 64})
    cols = torch.arange(6)
    assert ramp_charge_factor(w, b, base, [(cols, "sigmoid")]) == 1.0
    wired = base.replace(**{"array.wires.r_wl": 2.0, "array.wires.r_bl": 1.0, "array.wires.r_access": 500.0})
    got = ramp_charge_factor(w, b, wired, [(cols, "sigmoid")])

    adc = NLADC(readout_design("sigmoid", wired), wired, 6)
    nb, steps = adc.g_bias_target.numel(), adc.g_ramp_target.numel()
    g_pos = Tile(w.double(), b.double(), wired, x_max=1.0).g_target_pos.double()  # (6 rows, 6 cols)
    extra = torch.cat([adc.g_bias_target, adc.g_ramp_target])[:, None].expand(nb + steps, 6)
    t = effective_matrix(torch.cat([g_pos, extra]), wired.array.wires)[g_pos.shape[0] :]
    cycles = torch.tensor([adc.bias_cycles] * nb + [1] * steps, dtype=torch.float64)[:, None]
    want = float((t * cycles).sum() / (extra * cycles).sum())
    assert got == pytest.approx(want, rel=1e-9)
    assert 0.5 < got < 1.0
    steeper = wired.replace(**{"array.wires.r_wl": 8.0})
    assert ramp_charge_factor(w, b, steeper, [(cols, "sigmoid")]) < got

"""crossbar export / evaluate --measured: the design layout, the round trip, measured values used,
and one clear error for every bad measured folder."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from crossbar.config import load_config
from crossbar.errors import CrossbarInputError
from rnn_models.convert import analog_layers, calibrate, convert_to_analog, program
from rnn_models.export import COLUMNS, MANIFEST, export_design, load_measured

SMALL = {"array.rows": 4, "array.cols": 8}  # 12 x 24 LSTM matrix -> 3 x 3 arrays


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[..., -1, :])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Tiny().eval(), torch.randn(4, 7, 5)


def _analog(model, x, name, **over):
    cfg = load_config(name)
    if over:
        cfg = cfg.replace(**over)
    ana = convert_to_analog(model, cfg).eval()
    calibrate(ana, [x])
    return ana


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _edit(folder, fn):
    """Rewrite every CSV of an exported folder: ``fn(row)`` sets row['measured_g_us']."""
    man = json.loads((folder / MANIFEST).read_text())
    for t in man["tiles"]:
        for a in t["arrays"]:
            rows = _rows(folder / a["file"])
            for r in rows:
                fn(a["id"], r)
            with open(folder / a["file"], "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                w.writeheader()
                w.writerows(rows)
    return man


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """rram_nladc_5b on 4 x 8 arrays, instance 3 exported with measured = programmed."""
    model, x = tiny
    ana = _analog(model, x, "rram_nladc_5b", **SMALL)
    out = tmp_path_factory.mktemp("design") / "d"
    man = export_design(ana, out, instance=3, fill="programmed")
    return ana, out, man, ana(x)


def test_manifest_and_csv_hold_the_design(exported):
    ana, out, man, _ = exported
    layers = dict(analog_layers(ana))
    assert man["format"] == "crossbar.design" and man["version"] == 1 and man["instance"] == 3 and man["seed"] == 0
    assert man["units"]["conductance"] == "uS" and man["units"]["voltage"] == "V"
    assert [t["id"] for t in man["tiles"]] == ["lstm/_l0", "fc/fc"]
    lstm = man["tiles"][0]
    mat = layers["lstm"]._engines["_l0"]["mat"]
    tile = mat.tile
    assert lstm["array_shape"] == [4, 8] and lstm["matrix_rows"] == 12 and lstm["matrix_cols"] == 24
    assert lstm["conductance_scale_us_per_weight"] == pytest.approx(tile.scale)
    blocks = lstm["input_blocks"]
    assert [(b["name"], b["first_row"], b["rows"]) for b in blocks] == [("x", 0, 5), ("h", 5, 6), ("bias", 11, 1)]
    assert (
        blocks[0]["dac_full_scale"] == pytest.approx(layers["lstm"].input_scale) and blocks[1]["dac_full_scale"] == 1.0
    )
    for b in blocks:
        assert b["word_line_gain"] == pytest.approx(float(tile.row_gain[b["first_row"]]))
        assert b["word_line_amplitude_v"] == pytest.approx(b["word_line_gain"] * 0.2)
    ifo = lstm["readouts"][0]
    assert ifo["name"] == "ifo" and ifo["adc"]["kind"] == "nl_ramp" and ifo["adc"]["function"] == "sigmoid"
    assert ifo["adc"]["codes"] == 32 and len(ifo["adc"]["thresholds"]) == 31 and ifo["adc"]["bias_devices"] == 5
    assert ifo["adc"]["kappa_us_per_unit"] == pytest.approx(mat.readouts[0].nladc.kappa)
    assert man["datapath"]["bits"] == 12 and man["datapath"]["c"]["lsb"] == pytest.approx(8 / 2048)
    assert man["dac"]["bits"] == 8 and man["array"]["v_read_v"] == 0.2
    assert len(lstm["arrays"]) == 9 and len(man["tiles"][1]["arrays"]) == 2
    assert man["totals"]["devices"] == sum(a["devices"] for t in man["tiles"] for a in t["arrays"])

    # every weight of the LSTM matrix: once in G+, once in G-, target and programmed instance 3
    nl = [ro.nladc for ro in mat.readouts]
    seen, ids = {}, set()
    ramp_rows = 0
    for a in lstm["arrays"]:
        rows = _rows(out / a["file"])
        assert list(rows[0]) == list(COLUMNS)
        for r in rows:
            assert r["device_id"] not in ids
            ids.add(r["device_id"])
            assert r["measured_g_us"] == r["programmed_g_us"]
            if r["role"] == "weight":
                i, j = int(r["matrix_row"]), int(r["matrix_col"])
                seen[(r["plane"], i, j)] = r
                assert int(r["row"]) == i - a["matrix_rows"][0] and int(r["col"]) == j - a["matrix_cols"][0]
            else:
                assert r["role"] in ("nladc_bias", "nladc_ramp") and a["row_block"] == 2 and r["plane"] == "pos"
                ramp_rows += 1
                k, step, c = int(r["row"]) - 4, int(r["step"]), int(r["matrix_col"])
                assert k == (step if r["role"] == "nladc_bias" else 5 + step)  # bias rows first, after the weights
                g = 0 if r["readout"] == "ifo" else 1
                target = nl[g].g_ramp_target[step] if r["role"] == "nladc_ramp" else nl[g].g_bias_target[step]
                assert float(r["target_g_us"]) == pytest.approx(float(target), rel=1e-12)
                assert int(r["col"]) == c - a["matrix_cols"][0]
        if a["row_block"] == 2:
            assert a["planes"] == {"pos": [4 + 37, 8], "neg": [4, 8]} and a["nladc_rows"] == {"first": 4, "count": 37}
    assert ramp_rows == 24 * 37
    assert len(seen) == 2 * 12 * 24
    tp, tn = tile.g_target_pos, tile.g_target_neg
    for (plane, i, j), r in seen.items():
        g_t, g_p = (tp, tile.g_pos) if plane == "pos" else (tn, tile.g_neg)
        assert float(np.float32(r["target_g_us"])) == float(g_t[i, j])  # float32 values, shortest repr
        assert float(np.float32(r["programmed_g_us"])) == float(g_p[0, i, j])


def test_programmed_values_are_instance_m(tiny, exported):
    model, x = tiny
    _, out, man, _ = exported
    ana = _analog(model, x, "rram_nladc_5b", **SMALL)
    program(ana, 0, 5)  # holds instances 0..4: instance 3 is its local index 3
    second = export_design(ana, out.parent / "again", instance=3)
    assert second["totals"] == man["totals"]
    a = man["tiles"][0]["arrays"][-1]
    assert [r["programmed_g_us"] for r in _rows(out / a["file"])] == [
        r["programmed_g_us"] for r in _rows(out.parent / "again" / a["file"])
    ]
    assert all(r["measured_g_us"] == "" for r in _rows(out.parent / "again" / a["file"]))


def test_programmed_values_as_measured_reproduce_the_simulated_instance(tiny, exported):
    model, x = tiny
    _, out, _, ref = exported
    ana = _analog(model, x, "rram_nladc_5b", **SMALL)
    summary = load_measured(ana, out, instances=1, first=3)
    assert summary["devices"] == 2 * 12 * 24 + 24 * 37 + 2 * 7 * 3 + 3 * 37
    assert summary["exported_instance"] == 3 and summary["instances"] == 1
    assert torch.equal(ana(x), ref)  # read noise, periphery, thresholds: bit for bit instance 3
    two = _analog(model, x, "rram_nladc_5b", **SMALL)
    load_measured(two, out, instances=2, first=3)
    tile = dict(analog_layers(two))["lstm"]._engines["_l0"]["mat"].tile
    assert torch.equal(tile.g_pos[0], tile.g_pos[1])  # every instance is the same measured chip
    y = two(x.expand(2, *x.shape))
    assert torch.equal(y[0], ref) and not torch.equal(y[1], ref)  # its own read noise and periphery


def test_ideal_targets_as_measured_reproduce_the_float_model(tiny, tmp_path):
    model, x = tiny
    ana = _analog(model, x, "ideal")
    export_design(ana, tmp_path / "d")
    _edit(tmp_path / "d", lambda _a, r: r.__setitem__("measured_g_us", r["target_g_us"]))  # the chip team's file
    chip = _analog(model, x, "ideal")
    load_measured(chip, tmp_path / "d")
    with torch.no_grad():
        assert torch.allclose(chip(x), model(x), atol=1e-5, rtol=0)


def test_measured_values_are_used(tiny, tmp_path):
    model, x = tiny
    ana = _analog(model, x, "ideal")
    export_design(ana, tmp_path / "d", fill="target")
    base = _analog(model, x, "ideal")
    load_measured(base, tmp_path / "d")
    y0 = base(x)

    def bump(array, r):  # one G+ device of the classifier, W[1, 2], measured 5 uS higher
        if array == "fc/fc/r0c0" and r["plane"] == "pos" and r["matrix_row"] == "2" and r["matrix_col"] == "1":
            r["measured_g_us"] = repr(float(r["measured_g_us"]) + 5.0)

    _edit(tmp_path / "d", bump)
    chip = _analog(model, x, "ideal")
    load_measured(chip, tmp_path / "d")
    tile = dict(analog_layers(chip))["fc"]._mat.tile
    h = model.lstm(x)[0][..., -1, :]
    expect = y0.clone()
    expect[:, 1] += h[:, 2] * 5.0 / tile.scale / float(dict(analog_layers(chip))["fc"]._mat.chip_scale[2])
    y = chip(x)
    assert not torch.allclose(y, y0) and torch.allclose(y, expect, atol=1e-4)


def test_a_measured_ramp_device_moves_the_nladc_thresholds(tiny, exported, tmp_path):
    model, x = tiny
    _, out, _, _ = exported
    shutil.copytree(out, tmp_path / "d")

    def bump(array, r):  # ramp device 10 of column 4 (gate i), +20 uS
        if r["role"] == "nladc_ramp" and r["matrix_col"] == "4" and r["step"] == "10":
            r["measured_g_us"] = repr(float(r["measured_g_us"]) + 20.0)

    _edit(tmp_path / "d", bump)
    ref = _analog(model, x, "rram_nladc_5b", **SMALL)
    load_measured(ref, out, first=3)
    chip = _analog(model, x, "rram_nladc_5b", **SMALL)
    load_measured(chip, tmp_path / "d", first=3)
    t0 = dict(analog_layers(ref))["lstm"]._engines["_l0"]["mat"].readouts[0].nladc.thresholds[0]
    t1 = dict(analog_layers(chip))["lstm"]._engines["_l0"]["mat"].readouts[0].nladc.thresholds[0]
    diff = (t1 - t0).abs() > 1e-6
    assert (
        diff[4, 10:].all() and not diff[4, :10].any() and not diff[torch.arange(18) != 4].any()
    )  # ifo: tile columns 0-11, 18-23


def test_addresses_are_those_of_the_simulated_arrays(tiny, tmp_path, monkeypatch):
    """With IR drop the physical arrays crossbar.layout solves are exactly the CSVs' devices at
    their (row, col) addresses (shared ramps near the drivers, ramp rows far from the integrators)."""
    layout = pytest.importorskip("crossbar.layout")
    model, x = tiny
    over = {
        **SMALL,
        "array.cols": 16,
        "array.wires.r_wl": 1.0,
        "array.wires.r_bl": 1.0,
        "array.wires.ramp_rows": "far_sense",
        "nl_adc.shared_ramp": True,
        "array.wires.shared_ramp_column": "near_driver",
    }
    ana = _analog(model, x, "rram_nladc_5b", **over)
    man = export_design(ana, tmp_path / "d", instance=1)
    tile = dict(analog_layers(ana))["lstm"]._engines["_l0"]["mat"].tile
    seen = []
    real = layout.effective_matrices

    def record(stacks, w, **kw):
        seen.extend(g[0].clone() for g in stacks)
        return real(stacks, w, **kw)

    monkeypatch.setattr(layout, "effective_matrices", record)
    layout.effective_arrays(tile.g_pos, tile.g_neg, tile.config.array, tile.extra_rows, tile.extra_cols)
    arrays = {(a["row_block"], a["col_block"]): a for a in man["tiles"][0]["arrays"]}
    order = [(rb, cb, p) for cb in range(2) for rb in range(3) for p in ("pos", "neg")]
    assert len(seen) == len(order)
    for (rb, cb, plane), g in zip(order, seen):
        a = arrays[(rb, cb)]
        dense = torch.zeros(*a["planes"][plane], dtype=torch.float64)
        for r in _rows(tmp_path / "d" / a["file"]):
            if r["plane"] == plane:
                v = r["programmed_g_us"]  # weights are float32 values, NL-ADC devices float64
                dense[int(r["row"]), int(r["col"])] = float(np.float32(v)) if r["role"] == "weight" else float(v)
        assert torch.equal(dense, g.double()), (rb, cb, plane)


@pytest.mark.parametrize(
    "case, message",
    [
        ("shape", "array shape"),
        ("other_array", "another array shape"),
        ("same_shape_array", "holds the devices of array"),
        ("missing_file", "the file is missing"),
        ("missing_manifest", "manifest.json is missing"),
        ("text", "is not a number"),
        ("negative", "negative conductance"),
        ("blank", "is blank"),
        ("inf", "not finite"),
        ("ohm", "over 10 x the config's g_max"),
        ("misnamed", "is not the device at plane"),
        ("no_array_size", "no 'array' entry"),
        ("duplicate", "appears twice"),
        ("dropped_row", "no device at plane"),
        ("no_column", "measured_g_us missing from the header"),
        ("other_model", "tiles do not match"),
    ],
)
def test_bad_measured_folders_are_one_clear_error(tiny, tmp_path, case, message):
    model, x = tiny
    ana = _analog(model, x, "ideal", **SMALL)
    d = tmp_path / "d"
    man = export_design(ana, d, fill="target")
    arrays = man["tiles"][0]["arrays"]
    first, last = d / arrays[0]["file"], d / arrays[-1]["file"]
    cfg = {**SMALL}
    lines = first.read_text().splitlines()
    if case == "shape":
        cfg["array.rows"] = 8
    elif case == "other_array":  # fc: rows 0-3 and 4-6 (h rows 4, 5 + the bias row)
        fc = man["tiles"][1]["arrays"]
        shutil.copy(d / fc[0]["file"], d / fc[1]["file"])
    elif case == "same_shape_array":  # two 4 x 8 arrays of the LSTM matrix
        shutil.copy(first, last)
    elif case == "missing_file":
        first.unlink()
    elif case == "missing_manifest":
        (d / MANIFEST).unlink()
    elif case in ("text", "negative", "blank", "inf", "ohm", "misnamed"):
        value = {"text": "12,5 uS", "negative": "-0.5", "blank": "", "inf": "inf", "ohm": "25000"}.get(case)
        rows = _rows(first)
        if case == "misnamed":
            rows[3]["device_id"] += "x"
        else:
            rows[3]["measured_g_us"] = value
        with open(first, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    elif case == "no_array_size":
        manifest = json.loads((d / MANIFEST).read_text())
        del manifest["array"]
        (d / MANIFEST).write_text(json.dumps(manifest))
    elif case == "duplicate":
        first.write_text("\n".join(lines + [lines[5]]) + "\n")
    elif case == "dropped_row":
        first.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    elif case == "no_column":
        first.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    other = model
    if case == "other_model":
        other = nn.Sequential()
        other.add_module("lstm", nn.LSTM(5, 6, batch_first=True))
    chip = convert_to_analog(other, load_config("ideal").replace(**cfg)).eval()
    with pytest.raises(CrossbarInputError, match=message) as err:
        load_measured(chip, d)
    assert "\n" not in str(err.value)
    if case in ("text", "negative", "blank", "inf", "ohm"):  # names the file, line, row/col and what the device is
        assert arrays[0]["file"] in str(err.value) and "line 5" in str(err.value) and "matrix row" in str(err.value)


# ---------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    from rnn_models.checkpoint import save_checkpoint
    from rnn_models.data import speech
    from rnn_models.tasks.kws import KWSLSTM
    from tests.conftest import gsc_folder

    tmp = tmp_path_factory.mktemp("kwsx")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSBAR_CACHE", str(tmp / "cache"))
    torch.manual_seed(1)
    model = KWSLSTM(40, 8, 12)
    meta = {
        "task": "gsc12",
        "classes": speech.TASK_CLASSES["gsc12"],
        "settings": speech.FeatureSettings().__dict__,
        "dev_fraction": 0.34,
        "split_seed": 0,
        "calibration_features": torch.randn(3, 20, 40).half(),
    }
    save_checkpoint(tmp / "k.pt", "kws", {"n_mels": 40, "hidden_size": 8, "classes": 12}, model, meta)
    data = gsc_folder(tmp / "gsc", per_word=2)
    yield tmp, data
    mp.undo()


@pytest.mark.filterwarnings("ignore::UserWarning")  # random calibration features: DAC clipping warnings
def test_cli_export_then_evaluate_the_measured_chip(kws, capsys):
    from rnn_models.cli import main

    tmp, data = kws
    cfg = "rram_nladc_5b"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp / "k.pt"),
                "--config",
                cfg,
                "--out",
                str(tmp / "chip"),
                "--fill-measured",
                "programmed",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    man = json.loads((tmp / "chip" / MANIFEST).read_text())
    assert man["source"]["task"] == "kws" and len(man["source"]["checkpoint_sha256"]) == 64
    assert [t["id"] for t in man["tiles"]] == ["lstm/_l0", "fc/fc"] and man["digital_layers"] == []
    common = [
        "evaluate",
        "kws",
        "--checkpoint",
        str(tmp / "k.pt"),
        "--data",
        str(data),
        "--config",
        cfg,
        "--mc",
        "1",
        "--split",
        "all",
        "--threads",
        "1",
    ]
    assert main(common + ["--json", str(tmp / "sim.json")]) == 0
    assert main(common + ["--measured", str(tmp / "chip"), "--json", str(tmp / "chip.json")]) == 0
    sim, chip = json.loads((tmp / "sim.json").read_text()), json.loads((tmp / "chip.json").read_text())
    assert chip["measured"]["devices"] == man["totals"]["devices"] and chip["measured"]["exported_instance"] == 0
    assert chip["hardware"]["per_instance"] == sim["hardware"]["per_instance"]  # instance 0's devices, measured
    assert "measured" not in sim and set(chip) == set(sim) | {"measured"}
    capsys.readouterr()
    assert main(common + ["--measured", str(tmp / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nowhere" in err
    assert main(common + ["--measured", str(tmp / "chip"), "--sweep", "bits=3"]) == 2
    assert (
        main(["export", "--checkpoint", str(tmp / "k.pt"), "--config", "rram_nladc_5b", "--out", str(tmp / "k.pt")])
        == 2
    )  # the output folder is the input checkpoint

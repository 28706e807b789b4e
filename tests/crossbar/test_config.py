"""Hardware-config schema: presets, schema export, and one clear error per bad-input class."""

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from crossbar.config import (
    PRESET_DIR,
    check_schema_file,
    default_config,
    json_schema,
    load_config,
    preset_paths,
    validate_config,
)
from crossbar.errors import CrossbarInputError


def test_every_preset_validates_and_has_a_description():
    paths = preset_paths()
    names = {p.stem for p in paths}
    assert {
        "ideal",
        "rram_nladc_3b",
        "rram_nladc_4b",
        "rram_nladc_5b",
        "rram_nladc_8b",
        "rram_conventional_adc_5b",
        "pcm_nladc_5b_drift",
    } <= names
    for p in paths:
        cfg = load_config(p)
        assert cfg.name == p.stem
        assert len(cfg.description) > 100, f"{p.name} must say where its numbers come from"


def test_paper_preset_numbers():
    cfg = load_config("rram_nladc_5b")
    assert cfg.adc.kind == "nl_ramp" and cfg.adc.bits == 5
    assert cfg.nl_adc.ramp_devices == 32 and cfg.nl_adc.bias_devices == 5
    assert cfg.array.v_read == pytest.approx(0.2)
    assert cfg.device.drift.nu == 0
    assert load_config("pcm_nladc_5b_drift").device.drift.nu > 0


def test_committed_schema_matches_code():
    check_schema_file(PRESET_DIR / "schema.json")
    schema = json_schema()
    assert "device" in schema["properties"] and schema["properties"]["schema_version"]


def _cfg(**sections):
    data = {"schema_version": 1, "name": "t"}
    data.update(sections)
    return data


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        (_cfg(device={"g_max": "high"}), "device.g_max", "number"),
        (_cfg(device={"g_min": 50.0, "g_max": 10.0}), "device", "g_min"),
        (_cfg(device={"programming": {"sigma_abs": -1}}), "device.programming.sigma_abs", "greater than or equal"),
        (_cfg(adc={"bits": 13}), "adc.bits", "less than or equal to 12"),
        (_cfg(adc={"bits": 0}), "adc.bits", "greater than or equal to 1"),
        (_cfg(device={"stuck_off_prob": 1.5}), "device.stuck_off_prob", "less than or equal to 1"),
        (_cfg(device={"stuck_on_prob": -0.1}), "device.stuck_on_prob", "greater than or equal"),
        (_cfg(device={"colour": "red"}), "device.colour", "unknown key"),
        (_cfg(adc={"kind": "flash"}), "adc.kind", "ideal"),
        (_cfg(array={"v_read": float("inf")}), "array.v_read", "finite"),
        ({"name": "t"}, "schema_version", "missing"),
        (_cfg(nl_adc={"ramp_devices": 16}, adc={"bits": 5}), "ramp_devices", "2^adc.bits"),
    ],
)
def test_bad_values_name_the_field(data, field, fragment):
    with pytest.raises(CrossbarInputError) as info:
        validate_config(data, source="cfg.json")
    msg = str(info.value)
    assert msg.startswith("cfg.json: ")
    assert field in msg and fragment in msg, msg


def test_wrong_schema_version():
    with pytest.raises(CrossbarInputError, match="schema_version = 2"):
        validate_config({"schema_version": 2, "name": "x"}, source="c.json")


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,,}')
    with pytest.raises(CrossbarInputError, match=r"bad.json: invalid JSON at line 1"):
        load_config(bad)
    nan = tmp_path / "nan.json"
    nan.write_text('{"schema_version": 1, "name": "x", "device": {"g_max": NaN}}')
    with pytest.raises(CrossbarInputError, match="NaN is not valid JSON"):
        load_config(nan)
    with pytest.raises(CrossbarInputError, match="config file not found"):
        load_config(tmp_path / "nope.json")
    top = tmp_path / "list.json"
    top.write_text("[1, 2]")
    with pytest.raises(CrossbarInputError, match="top level must be a JSON object"):
        load_config(top)


def test_config_is_immutable_and_replace_validates():
    cfg = default_config()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.adc.bits = 3  # immutable
    assert cfg.replace(**{"adc.bits": 3}).adc.bits == 3
    with pytest.raises(CrossbarInputError, match="adc.bits"):
        cfg.replace(**{"adc.bits": 99})
    with pytest.raises(CrossbarInputError, match="unknown config field"):
        cfg.replace(**{"adc.colour": 1})


def _crossbar(*args):
    return subprocess.run([sys.executable, "-m", "rnn_models.cli", *args], capture_output=True, text=True)


def test_cli_validate_ok_and_errors(tmp_path):
    presets = [str(p) for p in PRESET_DIR.glob("*.json")]
    res = _crossbar("validate", *presets)
    assert res.returncode == 0, res.stderr
    for p in presets:
        assert f"ok {p}" in res.stdout
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps(_cfg(device={"g_min": 500})))
    res = _crossbar("validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "b.json: device" in res.stderr and "g_min" in res.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["train", "lm", "--data", "x", "--out", "y", "--epochs", "-1"],
        ["train", "lm", "--data", "x", "--out", "y", "--lr", "nan"],
        ["train", "kws", "--data", "x", "--out", "y", "--dev-fraction", "1.5"],
        ["evaluate", "kws", "--data", "x", "--config", "ideal", "--mc", "0"],
    ],
)
def test_cli_rejects_bad_numbers_with_exit_2(args):
    res = _crossbar(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "must be" in res.stderr

"""Translation to and from aihwkit settings (no aihwkit needed; tests/peers compares the simulators)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from crossbar.config import default_config, load_config
from crossbar.errors import CrossbarInputError
from crossbar.interop import device_from_aihwkit, io_from_aihwkit, io_to_aihwkit, pcm_like_device


def test_pcm_like_tables_follow_aihwkit_formulas():
    dev = pcm_like_device(g_max=25.0, t_inference=3600.0)
    cfg = default_config(device=dev)  # a valid device section
    d = cfg.device
    assert d.drift.t0 == 20.0 and d.drift.t_inference == 3620.0 and d.g_min == 0.0
    g = np.array(d.programming.table.g)
    rel = g / 25.0
    assert np.allclose(d.programming.table.sigma, 0.26348 + 1.9650 * rel - 1.1731 * rel**2)
    i = int(np.argmin(abs(g - 2.5)))  # g_rel ~ 0.1
    assert d.drift.nu_table.nu[i] == pytest.approx(min(max(-0.0155 * math.log(rel[i]) + 0.0244, 0.049), 0.1))
    assert d.drift.nu_table.nu_std[i] == pytest.approx(min(max(-0.0125 * math.log(rel[i]) - 0.0059, 0.008), 0.045))
    assert d.drift.accumulated_noise.q[-1] == pytest.approx(0.0088)
    scaled = pcm_like_device(g_max=50.0, prog_noise_scale=2.0)
    assert scaled["programming"]["table"]["sigma"][-1] == pytest.approx(2 * 2 * (0.26348 + 1.9650 - 1.1731))


def test_device_from_an_aihwkit_like_object():
    PCMLikeNoiseModel = type("PCMLikeNoiseModel", (SimpleNamespace,), {})  # read by attribute only
    model = PCMLikeNoiseModel(
        g_max=25.0,
        prog_coeff=[0.26348, 1.9650, -1.1731],
        prog_coeff_g_max_reference=25.0,
        t_0=20.0,
        t_read=250e-9,
        prog_noise_scale=1.0,
        read_noise_scale=0.5,
        drift_scale=1.0,
    )
    dev = device_from_aihwkit(model, 10.0)
    assert dev["drift"]["accumulated_noise"]["q"][-1] == pytest.approx(0.0044)
    with pytest.raises(CrossbarInputError, match="only PCMLikeNoiseModel"):
        device_from_aihwkit(SimpleNamespace())


def test_io_mapping_round_trip_and_limits():
    cfg = load_config("rram_conventional_adc_5b").replace(
        **{"adc.range_mode": "fixed", "adc.in_min": -10.0, "adc.in_max": 10.0}
    )
    io = io_to_aihwkit(cfg)
    assert io["inp_res"] == pytest.approx(1 / 254) and io["out_res"] == pytest.approx(1 / 30)
    back, notes = io_from_aihwkit(SimpleNamespace(**io, is_perfect=False))
    assert back["dac.bits"] == 8 and back["adc.bits"] == 5 and back["adc.in_max"] == 10.0
    assert any("out_res" in n for n in notes)
    _, notes = io_from_aihwkit(
        SimpleNamespace(
            inp_res=1 / 126, inp_bound=1.0, out_res=-1, out_bound=12, out_noise=0.06, w_noise=0.0, is_perfect=False
        )
    )
    assert notes == ["out_noise=0.06"]
    with pytest.raises(CrossbarInputError, match="no aihwkit counterpart"):
        io_to_aihwkit(load_config("rram_nladc_5b"))
    with pytest.raises(CrossbarInputError, match="integer b"):
        io_from_aihwkit(SimpleNamespace(inp_res=0.3, inp_bound=1.0, out_res=-1, out_bound=1, is_perfect=False))
    assert io_from_aihwkit(SimpleNamespace(is_perfect=True))[0] == {"dac.bits": None, "adc.kind": "ideal"}


def test_cli_writes_a_pcm_like_config(tmp_path):
    from rnn_models.cli import main

    out = tmp_path / "pcm.json"
    assert (
        main(
            ["pcm-like", "--base", "rram_nladc_5b", "--t-inference", "3600", "--drift-scale", "0.5", "--out", str(out)]
        )
        == 0
    )
    cfg = load_config(out)
    assert cfg.name == "rram_nladc_5b_pcm_like" and cfg.device.drift.t_inference == 3620.0
    assert cfg.adc.kind == "nl_ramp"  # the base's periphery is kept
    assert cfg.device.drift.nu_table.nu[-1] == pytest.approx(0.049 * 0.5)
    assert main(["pcm-like", "--compensation", "--out", str(tmp_path / "c.json")]) == 0
    assert load_config(tmp_path / "c.json").device.drift.compensation
    assert main(["pcm-like", "--g-max", "0", "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()

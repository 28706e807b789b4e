"""IR drop through the whole pipeline: NL-ADC ramps on the arrays, the fast path, training."""

import pytest
import torch

from crossbar.config import load_config
from crossbar.layout import effective_arrays
from crossbar.parasitics import effective_matrix
from crossbar.periphery.readout import ColumnReadout, program_chip
from crossbar.tile import Tile
from rnn_models import AnalogLSTM, fastpath
from rnn_models.convert import calibrate

WIRES = {"array.wires.r_wl": 1.0, "array.wires.r_bl": 1.0}


def _cfg(**over):
    base = {"adc.bits": 3, "nl_adc.ramp_devices": 8, "simulation.dtype": "float64", **WIRES}
    return load_config("rram_nladc_5b").replace(**{**base, **over})


@pytest.mark.parametrize("placement", ["near_sense", "far_sense"])
def test_nladc_thresholds_come_from_the_rows_of_the_arrays_effective_matrix(placement):
    cfg = _cfg(
        **{
            "array.wires.ramp_rows": placement,
            "nl_adc.calibration": False,
            "nl_adc.integrator_gain_sigma": 0.0,
            "nl_adc.comparator_offset_sigma": 0.0,
        }
    )
    gen = torch.Generator().manual_seed(0)
    tile = Tile(torch.randn(6, 10, generator=gen, dtype=torch.float64) * 0.3, torch.zeros(6, dtype=torch.float64), cfg)
    ro = ColumnReadout(cfg, "sigmoid", 6)
    program_chip(tile, [ro], [torch.arange(6)], ["ro"], 0, 1)
    nl = ro.nladc
    nb, L = nl.g_bias_target.numel(), nl.design.codes
    ex = tile.extra_rows[0]
    assert ex.shape == (nb + L, 6) and (ex > 0).all()
    g = torch.cat([tile.g_pos[0], ex], 0) if placement == "near_sense" else torch.cat([ex, tile.g_pos[0]], 0)
    t = effective_matrix(g.double(), cfg.array.wires)
    t_ex = t[11:] if placement == "near_sense" else t[: nb + L]
    tb, tr = t_ex[:nb].t(), t_ex[nb:].t()
    expect = nl._thresholds(tr, tb, torch.ones(6, 1, dtype=torch.float64), torch.zeros(6, 1, dtype=torch.float64))
    assert torch.allclose(nl.ramp_thresholds[0], expect, rtol=1e-12, atol=1e-12)
    # the weights see the ramp devices' load: the tile's T+ is the weight rows of the same solve
    t_w = t[:11] if placement == "near_sense" else t[nb + L :]
    assert torch.allclose(tile.effective_conductances()[0][0], t_w, rtol=1e-12, atol=1e-12)
    before = nl.ramp_thresholds.clone()
    assert torch.equal(nl.refresh().ramp_thresholds, before)


def test_shared_ramp_is_an_extra_bit_line():
    cfg = _cfg(**{"nl_adc.shared_ramp": True, "nl_adc.calibration": False})
    tile = Tile(torch.full((5, 4), 0.2, dtype=torch.float64), None, cfg)
    ro = ColumnReadout(cfg, "sigmoid", 5)
    program_chip(tile, [ro], [torch.arange(5)], ["ro"], 0, 1)
    ((block, dev),) = tile.extra_cols.values()
    assert block == 0 and dev.shape[1] == ro.nladc.g_bias_target.numel() + ro.nladc.design.codes
    assert (tile.extra_rows == 0).all()
    _, _, _, t_cols = effective_arrays(tile.g_pos, tile.g_neg, cfg.array, tile.extra_rows, tile.extra_cols)
    assert torch.all(t_cols[next(iter(t_cols))] < dev)  # attenuated by the wires


def _calibrated(**over):
    model = AnalogLSTM(12, 16, config=_cfg(**over)).eval()
    calibrate(model, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))])
    return model


def _run(model, x, fast):
    model.fast_path = fast
    model.program(3, 2)
    with torch.no_grad():
        return model(x)


@pytest.mark.skipif(fastpath.numba is None, reason="numba not installed")
@pytest.mark.parametrize(
    "over",
    [
        {},
        {"array.wires.ir_drop_aware_programming": True},
        {"nl_adc.shared_ramp": True, "array.wires.ramp_rows": "far_sense"},
    ],
)
def test_fast_path_equals_reference_with_ir_drop(over):
    model = _calibrated(**over)
    x = (torch.randn(7, 3, 12, generator=torch.Generator().manual_seed(1)) * 2).expand(2, 7, 3, 12)
    ref, fast = _run(model, x, False), _run(model, x, True)
    assert torch.equal(ref[0], fast[0]) and torch.equal(ref[1][0], fast[1][0]) and torch.equal(ref[1][1], fast[1][1])
    ideal = AnalogLSTM(12, 16, config=_cfg(**{"array.wires.r_wl": 0.0, "array.wires.r_bl": 0.0})).eval()
    with pytest.warns(UserWarning, match="saved with another hardware config"):  # weights only
        ideal.load_state_dict(model.state_dict())
    calibrate(ideal, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))])
    assert not torch.equal(_run(ideal, x, True)[0], ref[0])


def test_hardware_aware_training_differentiates_through_the_attenuation():
    model = AnalogLSTM(12, 16, config=_cfg()).train()
    calibrate(model, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))])
    model.train()
    out, _ = model(torch.randn(5, 2, 12, generator=torch.Generator().manual_seed(2)))
    out.sum().backward()
    assert model.weight_ih_l0.grad is not None and torch.isfinite(model.weight_ih_l0.grad).all()


def test_ir_drop_aware_programming_of_weights_and_ramp_together():
    cfg = _cfg(
        **{
            "array.wires.ir_drop_aware_programming": True,
            "array.wires.aware_iterations": 4,
            "nl_adc.calibration": False,
            "device.programming.sigma_abs": 0.0,
            "device.programming.sigma_rel": 0.0,
            "device.stuck_off_prob": 0.0,
            "device.range_d2d_rel": 0.0,
            "array.wires.r_wl": 2.0,
            "array.wires.r_bl": 2.0,
            "nl_adc.comparator_offset_sigma": 0.0,
            "nl_adc.integrator_gain_sigma": 0.0,
        }
    )
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(16, 20, generator=gen, dtype=torch.float64) * 0.3
    tile = Tile(w, torch.zeros(16, dtype=torch.float64), cfg)
    ro = ColumnReadout(cfg, "sigmoid", 16)
    kappa0 = ro.nladc.kappa
    program_chip(tile, [ro], [torch.arange(16)], ["ro"], 0, 1)
    nl = ro.nladc
    assert nl.kappa <= kappa0  # headroom for the boosted largest ramp devices
    t_pos, t_neg, t_extra, _ = tile.effective_conductances()
    # the weights' targets: the mapping on s x the conductance span (headroom), s <= 1
    s_w, g_min = tile.aware_span_scale(), cfg.device.g_min
    assert 0 < s_w <= 1 and tile.scale == pytest.approx(tile._mapping_scale * s_w, rel=1e-15)
    for t, tgt in ((t_pos[0], tile.g_target_pos), (t_neg[0], tile.g_target_neg)):
        rel = (t / (g_min + s_w * (tgt - g_min)) - 1).abs()
        assert rel.max() < 2e-3
    # so the effective weights are the mapped ones
    mapped = (tile.g_target_pos - tile.g_target_neg) / tile._mapping_scale * tile.row_gain[:, None]
    assert torch.allclose(tile.effective_weights()[0], mapped, rtol=0, atol=2e-3 * tile.w_ref)
    nb, L = nl.g_bias_target.numel(), nl.design.codes
    ramp = t_extra[0, nb : nb + L]  # (L, C) effective ramp devices
    assert ((ramp / nl.g_ramp_target[:, None] - 1).abs().max()) < 2e-3
    # thresholds then sit where the design puts them (no calibration needed)
    from crossbar.periphery.nladc import inl_lsb

    assert inl_lsb(nl.design, nl.thresholds[0]).abs().max() < 0.05


def test_cost_read_load_through_the_wires():
    from crossbar.cost.workload import mapped_g_load

    gen = torch.Generator().manual_seed(4)
    w, b = torch.randn(12, 9, generator=gen), torch.randn(12, generator=gen)
    base = load_config("rram_nladc_5b")
    ideal = mapped_g_load(w, b, base)
    tile = Tile(w.double(), b.double(), base, x_max=1.0)
    a2 = (tile.row_gain**2)[:, None]
    assert ideal == pytest.approx(float((a2 * tile.g_target_pos).sum() + (a2 * tile.g_target_neg).sum()), rel=1e-6)
    wired = base.replace(**WIRES)
    load = mapped_g_load(w, b, wired)
    t = Tile(w.double(), b.double(), wired, x_max=1.0)
    t_pos, t_neg, _, _ = effective_arrays(t.g_target_pos[None], t.g_target_neg[None], wired.array)
    assert load == pytest.approx(float((a2 * t_pos[0]).sum() + (a2 * t_neg[0]).sum()), rel=1e-12)
    assert load < ideal

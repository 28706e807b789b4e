"""Pinned results: deterministic numbers of the shipped models and of the cost model, exactly (or
at rel 1e-6 for accumulated floats), so that a modelling change shows up as a test diff.

When a change of the model is intended, re-run the commands in the comments, update the numbers
and say why in the CHANGELOG."""

import pytest

from tests.conftest import REPO, shared_data

# crossbar report --config rram_nladc_5b --model paper-lm --bits 5,8 (and paper-kws):
# (TOPS/W, TOPS/mm^2, energy per inference J, power mW, area mm^2) per bit width
COST = {
    "paper-lm": {
        "5": (52.50445432763093, 26.94079151665971, 4.758826716698381e-08, 349.9137291689986, 0.6819409667456788),
        "8": (7.1240939883064085, 8.597982527520116, 3.507247383458489e-07, 974.2353842940246, 0.8072294194864197),
    },
    "paper-kws": {
        "5": (31.351148088455776, 30.400889207243335, 1.510630483654889e-08, 3.776576209137222, 0.0038946229234567897),
        "8": (4.470926509742499, 2.2692354809521897, 1.0592882682548874e-07, 4.012455561571542, 0.007905479219753085),
    },
}


@pytest.mark.parametrize("model", sorted(COST))
def test_paper_shape_cost_reports_are_pinned(model):
    from crossbar.cost.report import build_report

    r = build_report("rram_nladc_5b", model, [5, 8])
    for bits, want in COST[model].items():
        got = tuple(
            r[k][bits] for k in ("tops_per_w", "tops_per_mm2", "energy_per_inference_j", "power_mw", "area_mm2")
        )
        assert got == pytest.approx(want, rel=1e-6), (model, bits)


def test_shipped_kws_model_on_a_fixed_gsc_subset_is_pinned():
    from rnn_models.tasks.kws import evaluate_kws

    data = shared_data("speech_commands_v0.02_test")
    r = evaluate_kws(REPO / "checkpoints" / "kws_gsc12.pt", data, "rram_nladc_5b", 2, limit=400)
    assert r["n_samples"] == 400
    assert r["software"] == pytest.approx(380 / 400, abs=1e-7)
    assert [round(v * 400) for v in r["hardware"]["per_instance"]] == [384, 383]


def test_shipped_lm_on_a_fixed_valid_prefix_is_pinned():
    from rnn_models.tasks.lm import evaluate_lm

    data = shared_data("ptb")
    r = evaluate_lm(REPO / "checkpoints" / "lm_ptb_hwa2.pt", data, "rram_nladc_5b", 2, limit=3000)
    assert r["deployment"] == {"digital_layers": ["decoder"], "from": "checkpoint"}
    assert r["n_samples"] == 2816
    assert r["software"] == pytest.approx(2.052409435667291, rel=1e-6)
    assert r["hardware"]["per_instance"] == pytest.approx([2.0706244621854726, 2.078839854530179], rel=1e-6)

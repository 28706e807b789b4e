"""The fused CPU path of the programmed AnalogLSTM returns exactly the reference loop's numbers."""

import pytest
import torch

from crossbar.config import load_config
from rnn_models import AnalogLSTM, fastpath
from rnn_models.convert import calibrate

pytestmark = pytest.mark.skipif(fastpath.numba is None, reason="numba not installed")


def _run(model, x, fast: bool, hx=None, instances: int = 1):
    model.fast_path = fast
    model.program(3, instances)  # fresh noise generators for both runs
    for e in model._engines.values():
        e["mat"].health = {k: 0 for k in e["mat"].health}
    with torch.no_grad():
        out, (h, c) = model(x, hx)
    health = [dict(e["mat"].health) for e in model._engines.values()]
    return out, h, c, health


def _calibrated(preset: str, layers=1, bidirectional=False, batch_first=False, **overrides):
    cfg = load_config(preset).replace(**overrides) if overrides else preset
    model = AnalogLSTM(
        12, 16, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, config=cfg
    ).eval()
    data = torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))
    calibrate(model, [data.transpose(0, 1) if batch_first else data])
    return model


@pytest.mark.parametrize("preset", ["rram_nladc_5b", "rram_nladc_3b", "pcm_nladc_5b_drift"])
@pytest.mark.parametrize("instances", [1, 3])
def test_fast_path_equals_reference(preset, instances):
    model = _calibrated(preset, layers=2, bidirectional=True)
    x = torch.randn(9, 5, 12, generator=torch.Generator().manual_seed(1)) * 2  # some DAC clipping
    if instances > 1:
        x = x.expand(instances, *x.shape)
    ref = _run(model, x, fast=False, instances=instances)
    calls = []
    original = fastpath.lstm_sequence
    fastpath.lstm_sequence = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        fast = _run(model, x, fast=True, instances=instances)
    finally:
        fastpath.lstm_sequence = original
    assert len(calls) == 4  # 2 layers x 2 directions took the fast path
    for a, b in zip(ref[:3], fast[:3]):
        assert torch.equal(a, b)
    assert ref[3] == fast[3] and ref[3][0]["dac_total"] > 0


@pytest.mark.parametrize("preset", ["rram_nladc_5b", "ideal"])
def test_a_shared_input_gives_what_its_copies_give(preset):
    # instances reading one expanded input share its word lines (computed once): the same outputs
    # and health counts as when every instance has its own copy of the input
    model = _calibrated(preset)
    x = torch.randn(9, 5, 12, generator=torch.Generator().manual_seed(1)) * 2
    shared = _run(model, x.expand(3, *x.shape), fast=True, instances=3)
    copies = _run(model, x.expand(3, *x.shape).contiguous(), fast=True, instances=3)
    for a, b in zip(shared[:3], copies[:3]):
        assert torch.equal(a, b)
    assert shared[3] == copies[3]


def test_fast_path_with_initial_state_batch_first_and_unbatched():
    model = _calibrated("rram_nladc_5b", batch_first=True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 7, 12, generator=g)
    hx = (torch.rand(1, 4, 16, generator=g) * 2 - 1, torch.randn(1, 4, 16, generator=g))
    for args in ((x, hx), (x[0], (hx[0][:, 0], hx[1][:, 0]))):
        ref, fast = _run(model, args[0], False, args[1]), _run(model, args[0], True, args[1])
        for a, b in zip(ref[:3], fast[:3]):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    "overrides",
    [
        {"nl_adc.functions.cell": "digital_lut"},
        {"array.partial_sums": "digital", "array.rows": 16},
        {"array.bias_in_array": False},
    ],
)
def test_configurations_outside_the_kernels_take_the_reference_path(overrides):
    model = _calibrated("rram_nladc_5b", **overrides)
    model.program(0, 1)
    model._prepare()
    x = torch.zeros(1, 2, 3, 12)
    assert not any(fastpath.supported(e, "chip", x) for e in model._engines.values())
    out = _run(model, torch.randn(5, 3, 12), fast=True)[0]
    assert out.shape == (5, 3, 16)


def _healths(model):
    return [dict(m.health) for e in model._engines.values() for m in e.values() if hasattr(m, "health")]


def _reference_and_fast(model, x, cell: str, instances: int, sequences: int) -> list[tuple]:
    """(outputs, states, health counts) of an LSTM or GRU programmed afresh for the reference loop,
    then for the fast path, which must take ``sequences`` layer-direction sequences."""
    seq = "lstm_sequence" if cell == "lstm" else "gru_sequence"
    results = []
    for fast in (False, True):
        model.fast_path = fast
        model.program(3, instances)
        for e in model._engines.values():
            for m in e.values():
                if hasattr(m, "health"):
                    m.health = {k: 0 for k in m.health}
        calls = []
        original = getattr(fastpath, seq)
        setattr(fastpath, seq, lambda *a, calls=calls, original=original, **k: calls.append(1) or original(*a, **k))
        try:
            with torch.no_grad():
                out, state = model(x)
        finally:
            setattr(fastpath, seq, original)
        assert len(calls) == (sequences if fast else 0)
        results.append((out, state if cell == "lstm" else (state,), _healths(model)))
    return results


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "preset, overrides",
    [("ideal", {}), ("rram_nladc_5b", {"simulation.dtype": "float64"}), ("rram_nladc_5b", {})],
    ids=["ideal-row-kernel", "nladc-row-kernel", "nladc-block-kernel"],
)
def test_batches_of_several_row_blocks_equal_the_reference(cell, preset, overrides):
    """The kernels convert a step's rows in blocks of ``kernels.BLOCK`` (the row kernels as the
    vector block kernel): a batch of two whole blocks and a part gives the reference's numbers."""
    from rnn_models import AnalogGRU

    batch = 2 * fastpath.BLOCK + 5
    cfg = load_config(preset).replace(**overrides) if overrides else preset
    cls = AnalogLSTM if cell == "lstm" else AnalogGRU
    model = cls(12, 16, config=cfg).eval()
    dtype = torch.float64 if overrides else torch.float32
    calibrate(model, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0)).to(dtype)])
    x = (torch.randn(4, batch, 12, generator=torch.Generator().manual_seed(1)) * 2).to(dtype)
    results = _reference_and_fast(model, x, cell, instances=1, sequences=1)
    assert all(fastpath._mode(e, "chip", x[:1, :1]) == fastpath.KERNEL for e in model._engines.values())
    (ro, rs, rh), (fo, fs, fh) = results
    assert torch.equal(ro, fo) and all(torch.equal(a, b) for a, b in zip(rs, fs))
    assert rh == fh and (preset == "ideal" or rh[0]["dac_total"] > 0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("preset", ["ideal", "rram_conventional_adc_5b"])
@pytest.mark.parametrize("instances", [1, 3])
def test_ideal_and_conventional_adcs_take_the_fast_path_through_their_readouts(cell, preset, instances):
    """Readouts without an NL-ADC kernel (ideal ADC, linear ramp ADC + digital f) convert through
    their own ``convert`` inside the fast path (TORCH mode): outputs, states, draws and the
    linear readouts' saturation counts are the reference's."""
    from rnn_models import AnalogGRU

    cls = AnalogLSTM if cell == "lstm" else AnalogGRU
    model = cls(12, 16, num_layers=2, bidirectional=True, config=preset).eval()
    calibrate(model, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))])
    x = torch.randn(9, 5, 12, generator=torch.Generator().manual_seed(1)) * 2
    if instances > 1:
        x = x.expand(instances, *x.shape)
    results = _reference_and_fast(model, x, cell, instances, sequences=4)
    x1 = torch.zeros(instances, 1, 1, 12)
    # the ideal converter's functions run in the kernels; the linear ramp ADC through its readouts
    mode = fastpath.KERNEL if preset == "ideal" else fastpath.TORCH
    assert all(fastpath._mode(e, "chip", x1) == mode for e in model._engines.values())
    (ro, rs, rh), (fo, fs, fh) = results
    assert torch.equal(ro, fo) and all(torch.equal(a, b) for a, b in zip(rs, fs))
    assert rh == fh
    if preset != "ideal":
        assert any(h["adc_saturated"] > 0 for h in rh) and rh[0]["dac_total"] > 0


@pytest.mark.parametrize("preset", ["rram_nladc_5b", "pcm_nladc_5b_drift"])
@pytest.mark.parametrize("instances", [1, 3])
def test_gru_fast_path_equals_reference(preset, instances):
    from rnn_models import AnalogGRU

    model = AnalogGRU(12, 16, num_layers=2, bidirectional=True, config=preset).eval()
    calibrate(model, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))])
    x = torch.randn(9, 5, 12, generator=torch.Generator().manual_seed(1)) * 2
    hx = torch.rand(4, 5, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    if instances > 1:
        x, hx = x.expand(instances, *x.shape), hx.expand(instances, *hx.shape)
    results = []
    for fast in (False, True):
        model.fast_path = fast
        model.program(3, instances)
        for e in model._engines.values():
            for key in ("rz", "nx", "nh"):
                e[key].health = {k: 0 for k in e[key].health}
        calls = []
        original = fastpath.gru_sequence
        fastpath.gru_sequence = lambda *a, calls=calls, original=original, **k: calls.append(1) or original(*a, **k)
        try:
            with torch.no_grad():
                out, h = model(x, hx)
        finally:
            fastpath.gru_sequence = original
        assert len(calls) == (4 if fast else 0)
        health = [dict(e[key].health) for e in model._engines.values() for key in ("rz", "nx", "nh")]
        results.append((out, h, health))
    (ro, rh, rhealth), (fo, fh, fhealth) = results
    assert torch.equal(ro, fo) and torch.equal(rh, fh)
    assert rhealth == fhealth and rhealth[1]["adc_total"] > 0 and rhealth[0]["dac_total"] > 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"simulation.dtype": "float64"},
        {"device.read_noise.sigma_rel": 0.0, "nl_adc.comparator_noise_sigma": 0.0},
        {"datapath.bits": None, "dac.bits": None},
        {"adc.kind": "linear_ramp", "simulation.dtype": "float64"},
        {"adc.kind": "ideal", "dac.bits": None},
    ],
)
def test_fast_path_equals_reference_in_other_regimes(overrides):
    """float64 (kernels in double, products by torch.bmm), no conversion noise at all, an ideal DAC
    with a float datapath; the linear ramp ADC in float64 and the ideal ADC with read noise (TORCH
    mode: the readouts convert, the read noise drawn by the ideal converter)."""
    model = _calibrated("rram_nladc_5b", **overrides)
    dtype = torch.float64 if overrides.get("simulation.dtype") == "float64" else torch.float32
    x = (torch.randn(7, 3, 12, generator=torch.Generator().manual_seed(4)) * 2).to(dtype)
    ref = _run(model, x, fast=False)
    calls = []
    original = fastpath.lstm_sequence
    fastpath.lstm_sequence = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        fast = _run(model, x, fast=True)
    finally:
        fastpath.lstm_sequence = original
    assert calls  # the fast path was taken
    for a, b in zip(ref[:3], fast[:3]):
        assert torch.equal(a, b)
    assert ref[3] == fast[3]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("instances", [1, 3])
@pytest.mark.parametrize("preset", ["rram_nladc_5b", "rram_conventional_adc_5b"])
@pytest.mark.parametrize("step_parallel", [True, False])
def test_fast_path_split_over_threads_equals_reference(cell, instances, preset, step_parallel, monkeypatch):
    """The fast path splits the work over threads -- each step's kernel over row parts on numba's
    threads (``STEP_PARALLEL``), or blocks of instances or of one instance's rows run start to end
    on pool threads; every part draws (counter-based normals) and computes what the whole would:
    the reference's numbers."""
    from rnn_models import AnalogGRU

    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # more threads than instances for 1, fewer for 3: both splits
    monkeypatch.setattr(fastpath, "MIN_PARALLEL", 0)
    monkeypatch.setattr(fastpath, "STEP_PARALLEL", step_parallel)
    try:
        cls = AnalogLSTM if cell == "lstm" else AnalogGRU
        model = cls(12, 16, config=preset).eval()
        calibrate(model, [torch.randn(6, 4, 12, generator=torch.Generator().manual_seed(0))])
        x = torch.randn(9, 7, 12, generator=torch.Generator().manual_seed(1)) * 2
        if instances > 1:
            x = x.expand(instances, *x.shape)
        assert len(fastpath._parts(instances, 7, 64, split_rows=True)) == 3
        results = []
        for fast in (False, True):
            model.fast_path = fast
            model.program(3, instances)
            with torch.no_grad():
                out, state = model(x)
            results.append((out, state))
    finally:
        torch.set_num_threads(threads)
    (ref_out, ref_state), (fast_out, fast_state) = results
    assert torch.equal(ref_out, fast_out)
    ref_state, fast_state = (ref_state, fast_state) if cell == "lstm" else ((ref_state,), (fast_state,))
    for a, b in zip(ref_state, fast_state):
        assert torch.equal(a, b)

"""Analog layers: equivalence with torch under the ideal config, MC batching, HWA training, errors."""

import re

import pytest
import torch
from torch import nn

from crossbar.config import load_config
from crossbar.errors import CrossbarInputError
from rnn_models import (
    AnalogGRU,
    AnalogGRUCell,
    AnalogLinear,
    AnalogLSTM,
    AnalogLSTMCell,
    convert_to_analog,
    set_mode,
    to_digital,
)

IDEAL = load_config("ideal")
TOL = 1e-5


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("cls, acls", [(nn.LSTM, AnalogLSTM), (nn.GRU, AnalogGRU)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("row_scaling", ["shared", "per_input_block"])
def test_rnn_equals_torch_with_ideal_config(cls, acls, batch_first, bidirectional, num_layers, row_scaling):
    torch.manual_seed(0)
    cfg = IDEAL.replace(**{"array.row_scaling": row_scaling})
    ref = cls(5, 7, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional).eval()
    ana = acls(5, 7, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional, config=cfg).eval()
    ana.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 5)
    dirs = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * dirs, 3 if batch_first else 4, 7)
    hx = (h0, torch.randn_like(h0)) if cls is nn.LSTM else h0
    (y1, s1), (y2, s2) = ref(x, hx), ana(x, hx)
    assert y1.shape == y2.shape and _rel(y2, y1) < TOL
    for a, b in zip(s1 if cls is nn.LSTM else [s1], s2 if cls is nn.LSTM else [s2]):
        assert a.shape == b.shape and _rel(b, a) < TOL
    # unbatched input, as torch allows
    y1, _ = ref(x[:, 0] if not batch_first else x[0])
    y2, _ = ana(x[:, 0] if not batch_first else x[0])
    assert y1.shape == y2.shape and _rel(y2, y1) < TOL


@pytest.mark.parametrize("cls, acls", [(nn.LSTMCell, AnalogLSTMCell), (nn.GRUCell, AnalogGRUCell)])
def test_cells_equal_torch(cls, acls):
    torch.manual_seed(1)
    ref, ana = cls(4, 6).eval(), acls(4, 6, config=IDEAL).eval()
    ana.load_state_dict(ref.state_dict())
    x = torch.randn(5, 4)
    out_r, out_a = ref(x), ana(x)
    for a, b in zip(out_r if cls is nn.LSTMCell else [out_r], out_a if cls is nn.LSTMCell else [out_a]):
        assert a.shape == b.shape and _rel(b, a) < TOL
    h = torch.randn(5, 6)
    hx = (h, torch.randn(5, 6)) if cls is nn.LSTMCell else h
    r2, a2 = ref(x, hx), ana(x, hx)
    assert _rel(a2[0] if cls is nn.LSTMCell else a2, r2[0] if cls is nn.LSTMCell else r2) < TOL
    assert (ana(x[0])[0] if cls is nn.LSTMCell else ana(x[0])).shape == (6,)


def test_linear_equals_torch_and_state_dict_names_match():
    torch.manual_seed(2)
    ref = nn.Linear(9, 4)
    ana = AnalogLinear(9, 4, config=IDEAL)
    # the parameters keep torch's names; the hardware state is torch's extra state of the layer
    assert set(ana.state_dict()) == set(ref.state_dict()) | {"_extra_state"}
    ana.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 9)
    assert _rel(ana.eval()(x), ref(x)) < TOL
    assert set(AnalogLSTM(3, 4, 2, bidirectional=True).state_dict()) == set(
        nn.LSTM(3, 4, 2, bidirectional=True).state_dict()
    ) | {"_extra_state"}


class _KwsLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 12, batch_first=True)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y.mean(-2))


def test_convert_to_analog_and_back():
    torch.manual_seed(3)
    model = _KwsLike().eval()
    ana = convert_to_analog(model, IDEAL)
    assert isinstance(ana.lstm, AnalogLSTM) and isinstance(ana.fc, AnalogLinear)
    assert isinstance(model.lstm, nn.LSTM)  # the original is untouched
    x = torch.randn(4, 7, 6)
    assert _rel(ana(x), model(x)) < TOL
    back = to_digital(ana)
    assert type(back.lstm) is nn.LSTM and type(back.fc) is nn.Linear
    assert _rel(back(x), model(x)) < 1e-7
    ana_path = convert_to_analog(model, "hw_configs/rram_nladc_5b.json")
    assert ana_path.lstm.hw.name == "rram_nladc_5b"


def _small_chip(**over):
    """A small KWS-like model on a 4-bit ``rram_nladc_5b`` with ``over`` changes, calibrated and
    programmed (seed 2, two instances): (model, its calibration input, the config)."""
    cfg = load_config("rram_nladc_5b").replace(**{"adc.bits": 4, "nl_adc.ramp_devices": 16, **over})
    torch.manual_seed(5)
    ana = convert_to_analog(_KwsLike().eval(), cfg)
    x = torch.randn(4, 6, 6)
    ana.calibrate([x])
    ana.program(2, 2).eval()
    return ana, x, cfg


def _noisy_model():
    torch.manual_seed(4)
    model = _KwsLike().eval()
    ana = convert_to_analog(model, "rram_nladc_5b")
    x = torch.randn(5, 6, 6)
    ana.calibrate([x])
    return ana, x


def test_monte_carlo_batched_equals_sequential_instances():
    ana, x = _noisy_model()
    seq = torch.stack([ana.program(7, 1, first=m)(x) for m in range(3)])
    ana.program(7, 3)
    batched = ana(x.expand(3, *x.shape))
    assert batched.shape == (3, 5, 3)
    assert torch.allclose(batched, seq, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])  # instances differ


def test_program_seed_gives_same_or_new_instances():
    ana, x = _noisy_model()
    a = ana.program(1, 1)(x)
    b = ana.program(1, 1)(x)
    c = ana.program(2, 1)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_monte_carlo_input_needs_the_instance_dimension():
    ana, x = _noisy_model()
    ana.program(0, 2)
    with pytest.raises(CrossbarInputError, match="leading dimension of 2"):
        ana(x)


def test_hwa_training_with_4bit_nladc_lowers_the_loss():
    torch.manual_seed(5)
    # a fixed +-8 ADC range: ranges calibrated on an untrained model would clip the growing logits
    cfg = load_config("rram_nladc_4b").replace(**{"adc.range_mode": "fixed"})
    model = convert_to_analog(_KwsLike(), cfg)
    x = torch.randn(16, 8, 6)
    target = torch.randint(0, 3, (16,))
    model.calibrate([x])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        assert model.lstm.weight_ih_l0.grad is not None and model.lstm.weight_ih_l0.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_calibration_sets_ranges_and_float_mode_is_exact():
    ana, x = _noisy_model()
    assert ana.lstm.input_scale == pytest.approx(float(x.abs().flatten().quantile(0.9999)), rel=1e-3)
    group = ana.fc._mat.groups[0]
    assert group.in_range is not None and group.in_range[0] < 0 < group.in_range[1]
    ref = to_digital(ana)(x)
    set_mode(ana, "float")
    assert _rel(ana(x), ref) < 1e-6
    set_mode(ana, "hardware")
    assert _rel(ana.program(0, 1)(x), ref) > 1e-3


@pytest.mark.parametrize("cls", [AnalogLSTM, AnalogGRU, AnalogLinear])
@pytest.mark.parametrize("sim_dtype", ["float32", "float64"])
def test_calibration_takes_either_float_dtype(cls, sim_dtype):
    """The software paths compute in the parameters' dtype: calibration data in float64 for a
    float32 config, or float32 data for a float64 config, calibrate and run instead of failing
    with a dtype error."""
    from rnn_models.convert import calibrate

    cfg = load_config("rram_nladc_5b").replace(**{"simulation.dtype": sim_dtype})
    for data_dtype, to_double in ((torch.float64, False), (torch.float32, False), (torch.float32, True)):
        model = cls(4, 3, config=cfg).eval()
        if to_double:
            model = model.double()
        shape = (5, 2, 4) if cls is not AnalogLinear else (2, 4)
        data = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=data_dtype)
        calibrate(model, [data])
        assert model.input_scale is not None
        out = model.program(0, 1)(data)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [AnalogLSTM, AnalogGRU, AnalogLinear])
def test_parameters_take_the_simulation_dtype_unless_given(cls):
    """A layer built for a float64 simulation holds float64 weights (it held torch's float32 ones,
    so its chip and its float path disagreed in precision) -- the float32 initial values, cast, and
    the same generator draws after them; an explicit ``dtype`` wins."""
    cfg = load_config("ideal").replace(**{"simulation.dtype": "float64"})
    torch.manual_seed(0)
    double = cls(4, 3, config=cfg)
    after_double = torch.rand(3)
    torch.manual_seed(0)
    single = cls(4, 3, config="ideal")
    assert torch.equal(torch.rand(3), after_double)
    assert {p.dtype for p in double.parameters()} == {torch.float64}
    for a, b in zip(double.parameters(), single.parameters()):
        assert torch.equal(a, b.double())
    assert {p.dtype for p in cls(4, 3, config=cfg, dtype=torch.float32).parameters()} == {torch.float32}
    assert {p.dtype for p in cls(4, 3, config="ideal").parameters()} == {torch.float32}


@pytest.mark.parametrize("cls", [AnalogLSTM, AnalogGRU])
@pytest.mark.parametrize("cell", ["nl_adc", "digital_lut"])
def test_data_aware_cell_converter_designs_from_the_calibration(cls, cell):
    """With ``nl_adc.design = data_aware`` the cell's tanh converter (an NL-ADC of its own, or its
    table) places its levels from a calibration sample of the cell input, like the gates' NL-ADCs;
    the sample travels with the state dict, so a fresh model loaded from it programs the same chip."""
    from rnn_models.convert import calibrate

    cfg = load_config("rram_nladc_5b").replace(**{"nl_adc.design": "data_aware", "nl_adc.functions.cell": cell})
    model = cls(6, 8, num_layers=2, config=cfg).eval()
    calibrate(model, [torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(0))])
    assert all(c.samples is not None and c.samples.numel() > 0 for c in model._cells())
    x = torch.randn(2, 5, 3, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.program(3, 2)(x)[0]
    fresh = cls(6, 8, num_layers=2, config=cfg).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        again = fresh.program(3, 2)(x)[0]  # programs anew from the loaded calibration
    assert torch.equal(out, again)


def test_a_model_copies_after_it_has_run():
    """``copy.deepcopy`` of a programmed model after a forward pass, when its tiles hold oneDNN's
    packed weights (opaque tensors deepcopy cannot read): the copy packs its own and reads the
    chip as the original does."""
    import copy

    from rnn_models.convert import calibrate

    model = AnalogLSTM(6, 8, config=load_config("rram_nladc_5b")).eval()
    calibrate(model, [torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(0))])
    model.program(3, 1)
    x = torch.randn(5, 3, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(x)
        twin = copy.deepcopy(model)
        assert torch.equal(twin(x)[0], model(x)[0])


@pytest.mark.parametrize(
    ("cls", "preset", "overrides"),
    [
        (AnalogLSTM, "ideal", {}),  # no device noise: zero variances everywhere
        (AnalogGRU, "rram_nladc_5b", {"array.bias_in_array": False}),  # h0 = 0: the n-gate's h product
        (AnalogLSTM, "pcm_nladc_5b_drift", {"array.bias_in_array": False}),
    ],
)
def test_training_gradients_are_finite_where_a_variance_is_zero(cls, preset, overrides):
    """Hardware-aware training through a read or a programming draw whose variance is exactly 0
    (a zero input row -- padding, the first step's h -- or a noise-free device) passes back
    finite gradients: the square root's infinite slope at 0 used to make every gradient NaN."""
    cfg = load_config(preset).replace(**overrides) if overrides else load_config(preset)
    model = cls(8, 10, config=cfg).train()
    x = torch.randn(5, 2, 8, generator=torch.Generator().manual_seed(0))
    x[:, 1] = 0.0  # the second sequence is all padding
    out, _ = model(x)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_training_reaches_the_weights_through_ir_drop_aware_programming():
    """With IR-drop-aware programming the pre-distorted targets come from solves outside autograd;
    they carry the mapped targets' gradient (d pre / d target = pre / target), so the weights get
    one -- before, the output had no graph and backward() failed."""
    cfg = load_config("rram_nladc_5b").replace(
        **{"array.wires.r_wl": 1.0, "array.wires.r_bl": 1.0, "array.wires.ir_drop_aware_programming": True}
    )
    model = AnalogGRUCell(5, 6, config=cfg).train()
    out = model(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)))
    out.sum().backward()
    assert model.weight_ih.grad is not None and model.weight_ih.grad.abs().sum() > 0
    assert torch.isfinite(model.weight_ih.grad).all()


def test_a_float64_simulation_with_a_digital_output_layer():
    """``convert_to_analog`` under a float64 config with the output layer kept digital: the whole
    model takes simulation.dtype, so the digital layer meets the analog layers' float64 outputs
    (it failed with a dtype error in calibration and in inference); ``to_digital`` keeps it."""
    from rnn_models.convert import calibrate

    cfg = load_config("rram_nladc_5b").replace(**{"simulation.dtype": "float64"})
    ana = convert_to_analog(_KwsLike(), cfg, exclude=("fc",)).eval()
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0))
    calibrate(ana, [x])
    out = ana.program(0, 1)(x)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    twin = to_digital(ana)  # the digital twin (hardware-aware training validates with it) keeps the dtype
    assert twin(x.double()).dtype == torch.float64


def test_changed_weights_require_reprogramming():
    ana, x = _noisy_model()
    ana.program(0, 1)
    ana(x)
    with torch.no_grad():
        ana.fc.weight.mul_(2)
    with pytest.raises(CrossbarInputError, match="weights changed"):
        ana(x)


def test_bad_layer_inputs_are_clear():
    lstm = AnalogLSTM(3, 4, config=IDEAL)
    with pytest.raises(CrossbarInputError, match="feature size must be 3"):
        lstm(torch.zeros(2, 2, 5))
    with pytest.raises(CrossbarInputError, match="NaN or inf"):
        lstm(torch.full((2, 2, 3), float("nan")))
    with pytest.raises(CrossbarInputError, match="floating-point"):
        lstm(torch.zeros(2, 2, 3, dtype=torch.long))
    with pytest.raises(CrossbarInputError, match="initial state must have shape"):
        lstm(torch.zeros(2, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
    with pytest.raises(CrossbarInputError, match="proj_size"):
        convert_to_analog(nn.LSTM(3, 4, proj_size=2), IDEAL)


def test_analog_checkpoint_roundtrip_and_config_mismatch(tmp_path):
    from rnn_models.checkpoint import load_analog_checkpoint, save_analog_checkpoint

    ana, x = _noisy_model()
    ana.program(3, 2)
    xm = x.expand(2, *x.shape)
    ref = ana(xm)
    path = save_analog_checkpoint(tmp_path / "a.pt", ana, programmed=True)
    torch.manual_seed(99)
    other = convert_to_analog(_KwsLike(), "rram_nladc_5b").eval()
    load_analog_checkpoint(path, other)
    assert other.lstm.instances == 2
    assert torch.allclose(other(xm), ref, atol=1e-6)
    wrong = convert_to_analog(_KwsLike(), "rram_nladc_4b")
    with pytest.raises(CrossbarInputError, match=r"differing fields: adc.bits \(5 vs 4\)"):
        load_analog_checkpoint(path, wrong)
    small = convert_to_analog(nn.Sequential(nn.Linear(3, 2)), "rram_nladc_5b")
    with pytest.raises(CrossbarInputError, match="analog layers"):
        load_analog_checkpoint(path, small)


def test_programmed_chip_is_module_state(tmp_path):
    """state_dict() holds the programmed chip; load_state_dict into a freshly converted model
    reproduces it; deepcopy, .to(dtype) and print work on it; an earlier-layout checkpoint loads."""
    import copy

    from rnn_models.checkpoint import load_analog_checkpoint

    ana, x = _noisy_model()
    ana.program(3, 2)
    xm = x.expand(2, *x.shape)
    sd = ana.state_dict()
    chip = sd["lstm._extra_state"]["chip"]
    assert chip["args"] == [3, 2, 0]
    assert all(t["g_pos"].shape[0] == 2 and t["nladc"] for t in chip["tiles"].values())
    twin = copy.deepcopy(ana)
    ref = ana(xm)
    assert torch.equal(twin(xm), ref)
    torch.manual_seed(99)
    fresh = convert_to_analog(_KwsLike(), "rram_nladc_5b").eval()
    fresh.load_state_dict(sd)
    assert fresh.lstm.instances == 2 and torch.equal(fresh(xm), ref)
    assert "programmed=2 instance(s)" in repr(fresh) and "not programmed" in repr(_KwsLike_analog())
    # .to(dtype): the simulation follows the parameters, the chip is rebuilt from its state
    fresh.double()
    assert fresh.lstm.hw.simulation.dtype == "float64" and fresh.lstm.instances == 2
    g = next(iter(fresh.lstm._chip_matrices)).tile.g_pos
    assert g.dtype == torch.float64
    assert torch.equal(g.float(), next(iter(chip["tiles"].values()))["g_pos"])
    out64 = fresh(xm.double())
    assert out64.dtype == torch.float64 and (out64.float() - ref).abs().max() < 0.05
    fresh.float()
    assert torch.equal(fresh(xm), ref)
    # the earlier checkpoint layout: the analog state beside the weights
    old = {k: v for k, v in sd.items() if not k.endswith("_extra_state")}
    payload = {"format": "crossbar.rnn_checkpoint", "version": 1, "task": "custom", "arch": {}, "meta": {}}
    torch.save(
        {**payload, "state_dict": old, "analog": {"lstm": sd["lstm._extra_state"], "fc": sd["fc._extra_state"]}},
        tmp_path / "old.pt",
    )
    again = convert_to_analog(_KwsLike(), "rram_nladc_5b").eval()
    load_analog_checkpoint(tmp_path / "old.pt", again)
    assert torch.equal(again(xm), ref)


def _KwsLike_analog():
    return convert_to_analog(_KwsLike(), "rram_nladc_5b")


def test_tiles_and_nladcs_are_modules_with_buffers():
    """The chip is in the module tree: tiles and NL-ADCs are nn.Modules whose programmed state is
    buffers (named_buffers, print), not persistent (the layer's extra state carries it), and
    unchanged by a dtype the simulation does not run in."""
    from crossbar.periphery.nladc import NLADC
    from crossbar.tile import Tile

    ana, x = _noisy_model()
    ana.program(3, 2)
    names = dict(ana.named_buffers())
    tile = ana.lstm.engine_l0["mat"].tile
    assert isinstance(tile, Tile) and names["lstm.engine_l0.mat.tile.g_pos"] is tile.g_pos
    assert tile.g_pos.shape[0] == 2 and names["lstm.engine_l0.mat.tile.drift_gain"].shape == (2,)
    nladc = ana.lstm.engine_l0["mat"].readouts[0].nladc
    assert isinstance(nladc, NLADC) and names["lstm.engine_l0.mat.readouts.0.nladc.thresholds"] is nladc.thresholds
    assert "fc._mat.tile.g_pos" in names
    text = repr(ana)
    assert "(tile): Tile(" in text and "(nladc): NLADC(function=sigmoid" in text
    assert not [k for k in ana.state_dict() if "tile" in k or "nladc" in k]  # the extra state carries them
    before = tile.g_pos.clone()
    ana.half()  # parameters in float16; the chip's simulation dtype is not float16: the tile is left alone
    assert tile.g_pos.dtype == torch.float32 and torch.equal(tile.g_pos, before)


def test_health_report_warns_with_numbers_on_clipping():
    from rnn_models.health import HealthWarning, health_report, reset_health

    ana, x = _noisy_model()
    ana.program(0, 1)
    ana(x)
    assert all(v["dac_clip_fraction"] < 0.01 for v in health_report(ana, warn=False).values())
    reset_health(ana)
    ana(x * 20)  # far beyond the calibrated range
    with pytest.warns(HealthWarning) as warned:  # (the classifier's clippings warn too)
        report = health_report(ana)
    assert any(re.match(r"lstm/_l0: \d+\.\d+ % of DAC inputs clipped", str(w.message)) for w in warned)
    assert report["lstm/_l0"]["dac_clip_fraction"] > 0.2


def test_health_report_flags_ir_drop_that_no_gain_explains():
    """With IR drop the report gives each programmed matrix's weight distortion (the worst
    instance's mean per-column gain and residual) and warns above 5 %: the offset mapping's
    reference column at 2 ohm does, the differential mapping at 0.1 ohm does not; IR-drop-aware
    programming (pre-distorted on purpose) and ideal wires report none."""
    from rnn_models.health import HealthWarning, health_report

    def report(**over):
        return _small_chip(**over)[0]

    wires = {"array.wires.r_wl": 2.0, "array.wires.r_bl": 2.0}
    pattern = r"lstm/_l0: IR drop changes the effective weights by \d+\.\d % .*differential mapping"
    with pytest.warns(HealthWarning, match=pattern):
        offset = health_report(report(**wires, **{"array.mapping": "offset"}))
    assert offset["lstm/_l0"]["ir_drop_residual"] > 0.05 and 0 < offset["lstm/_l0"]["ir_drop_gain"] < 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", HealthWarning)
        small = health_report(report(**{"array.wires.r_wl": 0.1, "array.wires.r_bl": 0.1}))
    assert 0 < small["lstm/_l0"]["ir_drop_residual"] < 0.05
    aware = health_report(report(**wires, **{"array.wires.ir_drop_aware_programming": True}), warn=False)
    ideal = health_report(report(), warn=False)
    assert all("ir_drop_residual" not in v for r in (aware, ideal) for v in r.values())


@pytest.mark.parametrize("cls", [AnalogLSTM, AnalogGRU])
def test_cell_tanh_modes(cls):
    """tanh(c) (LSTM) / the candidate tanh (GRU): exact, LUT, or DAC + NL-ADC; all close to exact."""
    torch.manual_seed(6)
    ref = (nn.LSTM if cls is AnalogLSTM else nn.GRU)(4, 8).eval()
    x = torch.randn(12, 3, 4)
    y_ref, _ = ref(x)
    outs = {}
    for mode in ("digital", "digital_lut", "nl_adc"):
        cfg = load_config("ideal").replace(
            **{"nl_adc.functions.cell": mode, "adc.bits": 6, "dac.bits": 10, "dac.x_max": 4.0}
        )
        layer = cls(4, 8, config=cfg).eval()
        layer.load_state_dict(ref.state_dict())
        layer.program(0, 1)
        outs[mode], _ = layer(x)
    assert _rel(outs["digital"], y_ref) < 1e-2  # only the 10-bit DAC differs
    for mode in ("digital_lut", "nl_adc"):
        err = _rel(outs[mode], outs["digital"])
        assert 1e-4 < err < 0.1, (mode, err)  # the 6-bit tanh is quantised, but close


def test_convert_can_keep_layers_digital():
    model = _KwsLike()
    ana = convert_to_analog(model, "rram_nladc_5b", exclude=("fc",))
    assert isinstance(ana.lstm, AnalogLSTM) and type(ana.fc) is nn.Linear
    with pytest.raises(CrossbarInputError, match="no sub-module named"):
        convert_to_analog(model, "rram_nladc_5b", exclude=("decoder",))


def test_digital_partial_sums_are_converted_per_array():
    """partial_sums = digital: each array's partial sum goes through the linear ADC, the digitised
    values are added, then f -- not one conversion of the whole dot product."""
    from crossbar.config import default_config
    from crossbar.periphery.adc import LinearRampADC

    cfg = default_config(
        **{
            "adc.kind": "linear_ramp",
            "adc.bits": 4,
            "adc.range_mode": "fixed",
            "adc.in_min": -4.0,
            "adc.in_max": 4.0,
            "array.rows": 8,
            "array.partial_sums": "digital",
        }
    )
    torch.manual_seed(0)
    lin = AnalogLinear(20, 6, config=cfg).eval()
    x = torch.rand(5, 20) * 2 - 1
    lin.program(0, 1)
    with torch.no_grad():
        out = lin(x)
        rows = torch.cat([x, torch.ones(5, 1)], 1)  # bias row driven at full scale
        w = torch.cat([lin.weight.t(), lin.bias[None, :]], 0)
        adc = LinearRampADC(4, -4.0, 4.0)
        expected = sum(adc.convert(rows[:, s : s + 8] @ w[s : s + 8]) for s in range(0, 21, 8))
        assert torch.allclose(out, expected, atol=1e-5)
        whole = adc.convert(rows @ w)
        assert not torch.allclose(out, whole, atol=1e-3)  # per-array conversion is a different model


def test_digital_partial_sums_use_calibrated_per_array_ranges(tmp_path):
    from crossbar.config import default_config
    from crossbar.periphery.adc import LinearRampADC
    from rnn_models.checkpoint import load_analog_checkpoint, save_analog_checkpoint

    cfg = default_config(
        **{
            "adc.kind": "linear_ramp",
            "adc.bits": 5,
            "adc.range_mode": "calibrated",
            "adc.calibration_percentile": 100.0,
            "array.rows": 8,
            "array.partial_sums": "digital",
        }
    )
    torch.manual_seed(1)
    lin = AnalogLinear(20, 6, config=cfg).eval()
    x = torch.rand(64, 20) * 2 - 1
    lin.start_calibration()
    with torch.no_grad():
        lin(x)
    lin.finish_calibration()
    blocks = lin._mat.groups[0].block_ranges
    rows = torch.cat([x, torch.ones(64, 1)], 1)
    w = torch.cat([lin.weight.t(), lin.bias[None, :]], 0).detach()
    parts = [rows[:, s : s + 8] @ w[s : s + 8] for s in range(0, 21, 8)]
    assert len(blocks) == 3
    for (lo, hi), p in zip(blocks, parts):  # percentile 100: the largest |partial sum| of each array
        assert hi == -lo and hi == pytest.approx(float(p.abs().max()), rel=1e-5)
    lin.program(0, 1)
    with torch.no_grad():
        out = lin(x)
    expected = sum(LinearRampADC(5, lo, hi).convert(p) for (lo, hi), p in zip(blocks, parts))
    assert torch.allclose(out, expected, atol=1e-5)
    # the per-array ranges travel with an analog checkpoint
    save_analog_checkpoint(tmp_path / "a.pt", lin)
    again = AnalogLinear(20, 6, config=cfg).eval()
    load_analog_checkpoint(tmp_path / "a.pt", again)
    assert again._mat.groups[0].block_ranges == blocks


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"adc.kind": "linear_ramp", "nl_adc.functions.cell": "nl_adc"},
        {"array.wires.r_wl": 1.0, "array.wires.r_bl": 1.0},
        {"array.wires.r_wl": 1.0, "array.wires.r_bl": 1.0, "array.wires.ir_drop_aware_programming": True},
        {
            "array.wires.r_wl": 2.0,
            "array.wires.r_bl": 1.0,
            "nl_adc.shared_ramp": True,
            "array.wires.ramp_rows": "far_sense",
            "array.wires.shared_ramp_column": "near_driver",
            "array.mapping": "offset",
        },
        # data-aware converters designed from float64 calibration samples (saved as they are)
        {"nl_adc.design": "data_aware", "simulation.dtype": "float64", "datapath.bits": None},
    ],
)
def test_load_state_dict_rebuilds_the_chip_without_programming(over, monkeypatch):
    """A programmed model's state_dict loaded into a fresh model reproduces its outputs bit for bit
    with no device drawn, no NL-ADC calibrated and no IR-drop solve before the first MVM."""
    from crossbar import layout
    from crossbar.periphery.nladc import NLADC
    from crossbar.tile import Tile

    solve = layout.effective_matrices
    ana, x, cfg = _small_chip(**over)
    xm = x.expand(2, *x.shape)
    ref = ana(xm)
    sd = ana.state_dict()
    assert sd["lstm._extra_state"]["chip"]["format"] == 2
    fresh = convert_to_analog(_KwsLike(), cfg).eval()

    def refuse(*a, **k):
        raise AssertionError("programmed again")

    monkeypatch.setattr(Tile, "program", refuse)
    monkeypatch.setattr(NLADC, "program", refuse)
    monkeypatch.setattr(layout, "effective_matrices", refuse)
    fresh.load_state_dict(sd)
    monkeypatch.setattr(layout, "effective_matrices", solve)
    assert fresh.lstm.instances == 2 and torch.equal(fresh(xm), ref)
    a, b = ana.lstm.engine_l0["mat"], fresh.lstm.engine_l0["mat"]
    assert a.tile.scale == b.tile.scale and torch.equal(a.tile.g_pos, b.tile.g_pos)
    for ra, rb in zip(a.readouts, b.readouts):
        if ra.nladc is not None:
            assert torch.equal(ra.nladc.thresholds, rb.nladc.thresholds) and ra.nladc.kappa == rb.nladc.kappa
            assert repr(ra.nladc) == repr(rb.nladc)
    # a state saved before the chip carried everything (no "format") programs again, identically
    monkeypatch.undo()
    old = {k: v for k, v in sd.items()}
    old["lstm._extra_state"] = {**sd["lstm._extra_state"], "chip": dict(sd["lstm._extra_state"]["chip"])}
    del old["lstm._extra_state"]["chip"]["format"]
    again = convert_to_analog(_KwsLike(), cfg).eval()
    again.load_state_dict(old)
    assert torch.equal(again(xm), ref)


def test_a_malformed_calibration_sample_in_a_state_is_one_clear_error():
    cfg = load_config("rram_nladc_5b").replace(**{"nl_adc.design": "data_aware"})
    torch.manual_seed(6)
    ana = convert_to_analog(_KwsLike().eval(), cfg)
    ana.calibrate([torch.randn(4, 6, 6)])
    sd = ana.state_dict()
    groups = sd["lstm._extra_state"]["groups"]
    key = next(k for k, g in groups.items() if g["samples"] is not None)
    groups[key] = {**groups[key], "samples": torch.zeros(3, 2)}
    target = convert_to_analog(_KwsLike(), cfg)
    with pytest.raises(
        CrossbarInputError, match="AnalogLSTM/_l0/.*: the calibration sample must be a 1-D float tensor"
    ):
        target.load_state_dict(sd)
    # checked before anything was set: the layer keeps its (uncalibrated) ranges
    assert target.lstm.input_scale is None
    assert all(g.in_range is None for mat, *_ in target.lstm._matrices().values() for g in mat.groups)

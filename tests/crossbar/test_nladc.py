"""NL-ADC: exact with ideal devices (property tests), calibration, faults, V_read robustness."""

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbar.config import default_config, load_config
from crossbar.errors import CrossbarInputError
from crossbar.normals import NormalStream
from crossbar.periphery.functions import get_activation
from crossbar.periphery.nladc import NLADC, compile_design, inl_lsb, level_grid

MONOTONIC = ["sigmoid", "tanh", "hard_sigmoid", "softsign", "clipped_relu", "identity"]
IDEAL64 = default_config(**{"simulation.dtype": "float64", "adc.kind": "nl_ramp"})


def _quantised_level(act, x, bits, spacing="mid_tread"):
    """Index of the level of f(x) on the uniform output grid, and the distance to a boundary."""
    values, bounds = level_grid(*act.out_range, 2**bits, spacing)
    fx = act.f(x.double())
    idx = (fx[:, None] > bounds[None, :]).sum(1)
    dist = (fx[:, None] - bounds[None, :]).abs().min(1).values
    return idx, values, dist


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fn=st.sampled_from(MONOTONIC),
    bits=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
    spacing=st.sampled_from(["mid_tread", "mid_rise"]),
)
def test_ideal_devices_give_exactly_the_quantised_function(fn, bits, seed, spacing):
    design = compile_design(fn, bits, spacing)
    adc = NLADC(design, IDEAL64, columns=3).program(seed, 2)
    act = get_activation(fn)
    x = design.x_lo + (design.x_hi - design.x_lo) * torch.rand(
        400, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    y = x.view(1, -1, 1).expand(2, -1, 3)
    codes = adc.codes(y)
    level, values, dist = _quantised_level(act, x, bits, spacing)
    clear = dist > 1e-9  # away from a level boundary, where f^-1 rounding cannot matter
    assert torch.equal(codes[0, clear, 0], level[clear])
    assert torch.equal(codes[1], codes[0])
    assert torch.allclose(adc.convert(y)[0, clear, 0], values[level[clear]])
    # thresholds monotonic; ramp conductances inside the device range
    assert torch.all(torch.diff(adc.thresholds, dim=-1) >= 0)
    g = adc.g_ramp_target
    assert torch.all(g >= IDEAL64.device.g_min - 1e-12) and torch.all(g <= IDEAL64.device.g_max + 1e-9)


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 10), fn=st.sampled_from(["gelu", "silu"]))
def test_non_monotonic_functions_use_a_lut_and_stay_close(bits, fn):
    design = compile_design(fn, bits)
    act = get_activation(fn)
    assert design.needs_lut and design.pieces == 2
    assert design.hardware_summary()["lut_bits"] == 2**bits * bits
    x = torch.linspace(design.x_lo, design.x_hi, 5001, dtype=torch.float64)
    step = (act.out_range[1] - act.out_range[0]) / (design.levels_used - 1)
    assert float((design.ideal_convert(x) - act.f(x)).abs().max()) <= 0.5 * step + 1e-6
    adc = NLADC(design, IDEAL64, 2).program(0, 1)
    y = x.view(1, -1, 1).expand(1, -1, 2)
    assert torch.equal(adc.codes(y)[0, :, 0], design.ideal_codes(x))


def test_python_callable_activation():
    design = compile_design(lambda x: x**3, 4, domain=(-1.0, 1.0))
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    assert float((design.ideal_convert(x) - x**3).abs().max()) <= 1 / 15 + 1e-9
    with pytest.raises(CrossbarInputError, match="domain"):
        compile_design(lambda x: x, 4)
    with pytest.raises(CrossbarInputError, match="unknown activation"):
        compile_design("exp", 4)


def test_data_aware_design_beats_uniform_on_its_data():
    samples = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.7
    act = get_activation("tanh")
    uni = compile_design("tanh", 3)
    aware = compile_design("tanh", 3, design="data_aware", samples=samples)

    def mse(d):
        return float((d.ideal_convert(samples) - act.f(samples)).pow(2).mean())

    assert aware.needs_lut and mse(aware) < 0.7 * mse(uni)


def _preset(**changes):
    return load_config("rram_nladc_5b").replace(**changes)


def test_calibration_halves_inl_on_the_5bit_preset():
    cfg = _preset()
    design = compile_design("sigmoid", 5, cfg.nl_adc.level_spacing)
    adc = NLADC(design, cfg, 64).program(0, 10)
    before = float(adc.calibration.inl_max_before.mean())
    after = float(adc.calibration.inl_max_after.mean())
    assert after * 2 <= before, (before, after)


@pytest.mark.parametrize("shared", [False, True])
def test_an_instance_is_the_same_programmed_alone_or_with_others(shared):
    """The calibration searches all instances at once; instance m's devices and thresholds are
    those it gets programmed alone, bit for bit."""
    cfg = load_config("rram_nladc_5b").replace(**{"nl_adc.shared_ramp": shared})
    design = compile_design("sigmoid", 5, cfg.nl_adc.level_spacing)
    together = NLADC(design, cfg, 16).program(2, 3)
    for m in range(3):
        alone = NLADC(design, cfg, 16).program(2, 1, first=m)
        assert torch.equal(alone.thresholds[0], together.thresholds[m])
        assert torch.equal(alone.read_var[0], together.read_var[m])
        assert torch.equal(alone.calibration.inl_max_after[0], together.calibration.inl_max_after[m])


def test_stuck_off_ramp_device_is_partly_compensated():
    cfg = _preset(**{"device.stuck_off_prob": 0.0, "device.stuck_on_prob": 0.0})
    design = compile_design("tanh", 5)
    clean = NLADC(design, cfg, 32).program(1, 4)
    faulty = NLADC(design, cfg, 32).program(1, 4, inject_stuck_off=[12])
    before = faulty.calibration.inl_max_before.mean()
    after = faulty.calibration.inl_max_after.mean()
    assert before > clean.calibration.inl_max_before.mean() + 0.5  # the fault is visible
    assert after < 0.75 * before  # calibration compensates part of it
    assert after > clean.calibration.inl_max_after.mean()  # but not all of it


def test_vread_sweep_ratiometric_vs_fixed_reference():
    from crossbar.characterize import characterize, parse_sweep

    cfg = _preset(**{"device.stuck_off_prob": 0.0, "device.stuck_on_prob": 0.0})
    ch = characterize(cfg, "sigmoid", mc=4, columns=8, vread=parse_sweep("0.15:0.25:0.01"))
    assert ch.shift_nl.max() <= 1
    assert ch.shift_conv.max() >= 3


def test_comparator_offset_is_the_only_thing_vread_moves():
    cfg = _preset(**{"nl_adc.comparator_offset_sigma": 0.0, "nl_adc.comparator_noise_sigma": 0.0})
    design = compile_design("sigmoid", 5)
    adc = NLADC(design, cfg, 8).program(0, 2)
    y = torch.linspace(-6, 6, 999).view(1, -1, 1).expand(2, -1, 8)
    for s in (0.75, 1.25):
        assert torch.equal(adc.codes(y * s, v_scale=s, noisy=False), adc.codes(y, noisy=False))


def test_shared_ramp_columns_differ_only_by_offset():
    cfg = _preset(**{"nl_adc.shared_ramp": True})
    adc = NLADC(compile_design("tanh", 5), cfg, 6).program(0, 2)
    ramp = adc.ramp_thresholds
    assert torch.allclose(ramp, ramp[:, :1, :].expand_as(ramp))
    per_col = NLADC(compile_design("tanh", 5), _preset(), 6).program(0, 2).ramp_thresholds
    assert not torch.allclose(per_col, per_col[:, :1, :].expand_as(per_col))


def test_noise_needs_a_normal_stream_and_is_seeded():
    cfg = _preset()
    adc = NLADC(compile_design("sigmoid", 5), cfg, 4).program(0, 2)
    y = torch.zeros(2, 100, 4)
    with pytest.raises(CrossbarInputError, match="noise is on"):
        adc.codes(y)
    stream = NormalStream(0, "n", 0, 2)
    a = adc.codes(y, stream.at(read=3))
    b = adc.codes(y, NormalStream(0, "n", 0, 2).at(read=3))
    assert torch.equal(a, b)
    assert not torch.equal(a, adc.codes(y, stream.at(read=4)))  # another read draws other normals
    with pytest.raises(CrossbarInputError, match=r"NL-ADC input must be"):
        adc.codes(torch.zeros(3, 5, 4), stream.at())


def test_inl_definition_on_a_hand_example():
    design = compile_design("identity", 2, input_range=(-1.0, 1.0))  # thresholds -2/3, 0, 2/3
    assert torch.allclose(design.thresholds, torch.tensor([-2 / 3, 0.0, 2 / 3], dtype=torch.float64))
    realised = torch.tensor([-2 / 3 + 1 / 3, 0.0, 2 / 3], dtype=torch.float64)  # first shifted half a step
    assert torch.allclose(inl_lsb(design, realised), torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64))


def test_conversion_time_counts_cycles():
    cfg = _preset()
    adc = NLADC(compile_design("sigmoid", 5), cfg, 1)
    assert adc.cycles_per_conversion == 32 + adc.bias_cycles + cfg.nl_adc.reset_cycles


def test_cli_adc_writes_summary_and_plots(tmp_path):
    from crossbar.characterize import SUMMARY_KEYS
    from rnn_models.cli import main

    out, js = tmp_path / "adc", tmp_path / "s.json"
    assert (
        main(
            [
                "adc",
                "--config",
                "rram_nladc_4b",
                "--mc",
                "3",
                "--columns",
                "4",
                "--out",
                str(out),
                "--json",
                str(js),
                "--vread-sweep",
                "0.15:0.25:0.05",
            ]
        )
        == 0
    )
    summary = json.loads(js.read_text())
    assert set(summary) == {"sigmoid", "tanh"}
    for fn in summary.values():
        for key in SUMMARY_KEYS:
            assert set(fn[key]) == {"mean", "std"}
    assert (out / "transfer_sigmoid.png").stat().st_size > 1000 and (out / "vread_sweep.png").exists()
    assert main(["adc", "--config", "rram_nladc_4b", "--vread-sweep", "bad"]) == 2


# ------------------------------------------------------------- fused CPU kernel == torch definition
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("v_scale", [1.0, 0.83])
def test_cpu_kernel_codes_equal_the_torch_definition(dtype, v_scale):
    from crossbar.periphery import kernels
    from crossbar.periphery.nladc import reference_codes

    if not kernels.available():
        pytest.skip("numba not installed")
    cfg = load_config("rram_nladc_5b").replace(
        **{"simulation.dtype": "float64" if dtype == torch.float64 else "float32", "device.stuck_off_prob": 0.05}
    )  # ties: zero-width codes
    design = compile_design(get_activation("tanh"), 5, "mid_tread")
    adc = NLADC(design, cfg, 48).program(3, 3)
    y = torch.randn(3, 40, 48, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 2
    y[0, 0, :8] = adc.effective_thresholds(v_scale)[0, :8, 5]  # exactly on a threshold
    in_var = torch.rand(3, 40, 48, dtype=dtype, generator=torch.Generator().manual_seed(2)) * 1e-3
    at = NormalStream(0, "n", 0, 3).at(read=0)
    noise = at.draw(y.shape, dtype)
    cmp_sigma = cfg.nl_adc.comparator_noise_sigma * adc.span
    t = adc.effective_thresholds(v_scale)
    for var in (None, in_var):
        fast = adc.codes(y, at, v_scale, var=var)
        ref = reference_codes(y, t, adc.read_var, noise, v_scale, cmp_sigma, var)
        assert torch.equal(fast, ref)
        values = adc.convert(y, at, v_scale, var=var)  # the kernel's value path
        assert torch.equal(values, design.values.to(dtype)[ref])
    # the input variance moves codes (it is drawn with the converter's noise)
    assert not torch.equal(adc.codes(y, at, v_scale, var=in_var * 100), adc.codes(y, at, v_scale))
    quiet = adc.codes(y, None, v_scale, noisy=False, var=in_var)
    assert torch.equal(quiet, torch.searchsorted(t, y.transpose(1, 2).contiguous()).transpose(1, 2))


def test_kernel_and_definition_agree_next_to_a_threshold():
    """A case met in the LM evaluation: the noisy input lands within one float32 ulp of a threshold,
    where a 1-ulp error of the noise amplitude's square root decides the code."""
    from crossbar.periphery import kernels
    from crossbar.periphery.nladc import reference_codes

    if not kernels.available():
        pytest.skip("numba not installed")
    t = torch.tensor(
        [
            -2.0260772705078125,
            -1.4574859142303467,
            -1.1926411390304565,
            -1.0081347227096558,
            -0.8604618310928345,
            -0.738069474697113,
            -0.6438055634498596,
            -0.5402060151100159,
            -0.4497110843658447,
            -0.38412415981292725,
            -0.30467528104782104,
            -0.23767825961112976,
            -0.17424476146697998,
            -0.11187949776649475,
            -0.047854576259851456,
            0.01761641353368759,
            0.07710220664739609,
            0.1341714859008789,
            0.20305675268173218,
            0.2694847583770752,
            0.35224294662475586,
            0.42834144830703735,
            0.5112186670303345,
            0.5964184403419495,
            0.6911917924880981,
            0.7935579419136047,
            0.9209964871406555,
            1.0745035409927368,
            1.2583895921707153,
            1.5405669212341309,
            2.088411569595337,
        ]
    ).view(1, 1, 31)
    read_var = torch.full((1, 1, 31), 0.00021263725648168474)
    yt = torch.tensor([[[0.2517327070236206]]])
    noise = torch.tensor([[[0.988385021686554]]])
    cmp_sigma = 0.010485645146218027
    ref = reference_codes(yt, t, read_var, noise, 1.0, cmp_sigma)
    fast = kernels.nl_codes(yt, t, read_var, noise, 1.0, cmp_sigma**2)
    assert torch.equal(ref, fast)
    # the definition's noise amplitude is the correctly rounded float32 square root
    var = read_var[0, 0, 19] + cmp_sigma**2
    assert float(torch.sqrt(var.double()).float()) == float(torch.tensor(math.sqrt(float(var))).float())


def test_linear_readout_samples_the_column_variance_once_per_conversion():
    """A linear ADC readout adds the array's read noise (variance ``var``) before quantising: the
    converted values' spread matches sqrt(var) (fine ADC), and without ``var`` nothing is drawn."""
    from crossbar.periphery.readout import ColumnReadout

    cfg = load_config("rram_conventional_adc_5b").replace(
        **{"adc.bits": 12, "adc.range_mode": "fixed", "adc.in_min": -4.0, "adc.in_max": 4.0}
    )
    ro = ColumnReadout(cfg, "identity", 3)
    y = torch.zeros(1, 20_000, 3)
    var = torch.tensor([0.01, 0.04, 0.25]).expand(1, 20_000, 3)
    stream = NormalStream(0, "n", 0, 1)
    out = ro.convert(y, stream.at(), var=var)
    assert torch.allclose(out.std(1)[0], var[0, 0].sqrt(), rtol=0.03)
    # without var nothing is drawn: noise changes nothing, and zero inputs stay the zero code
    assert torch.equal(ro.convert(y, stream.at()), ro.convert(y, None))
    assert torch.equal(ro.convert(y, None), torch.zeros_like(y) + ro.convert(torch.zeros(1, 1, 3), None))
    blocks = ro.convert_blocks(
        y.unsqueeze(2).expand(1, 20_000, 2, 3).contiguous(),
        stream.at(),
        var=var.unsqueeze(2).expand(1, 20_000, 2, 3),
    )
    assert torch.allclose(blocks.std(1)[0], (2 * var[0, 0]).sqrt(), rtol=0.03)  # two noisy partial sums


@pytest.mark.parametrize(("fn", "lo", "hi", "extremum"), [("gelu", -8.0, 8.0, -0.7518), ("silu", -40.0, 8.0, -1.2785)])
def test_rounding_noise_in_a_flat_tail_is_not_an_extremum(fn, lo, hi, extremum):
    """torch's float64 GELU below x = -5.5 is rounding noise around ~1e-15 (1 + erf cancels); the
    piece finder used to cut there at every sign change of the noise (69 'pieces' of GELU on
    [-8, 8]). Now: the one true minimum (SiLU, accurate far out, as before)."""
    from crossbar.periphery.functions import monotonic_pieces

    pieces = monotonic_pieces(get_activation(fn), lo, hi)
    assert len(pieces) == 2 and pieces[0][1] == pytest.approx(extremum, abs=0.01)

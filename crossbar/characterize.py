"""NL-ADC characterisation: transfer curves, INL/DNL, RMSE, V_read robustness, plots.

Definitions (ours, stated in docs/nladc.md):

* INL of threshold k (LSB) = c(T_real_k) - k, where c maps the ideal thresholds to 0, 1, ... and is
  linear in between (so an error is measured in units of the *local* step, the natural LSB of a
  non-uniform quantiser).  DNL of code k = c(T_real_{k+1}) - c(T_real_k) - 1; a missing code has DNL -1.
* Per instance, a column metric (max |INL|, RMS INL, max |DNL|) is averaged over the columns; the
  summary gives mean and std over the M Monte-Carlo instances.
* RMSE: root-mean-square of NL-ADC output - exact f(x) over a uniform input grid on the ramp span,
  with per-conversion noise on.
* V_read sweep: codes at each V_read vs the codes at the nominal V_read on the same inputs, no
  per-conversion noise; the max |code shift| over inputs, columns and sweep points, per instance.
  The conventional ADC is a uniform ramp ADC with a fixed reference over the same span and bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crossbar.config import HardwareConfig
from crossbar.errors import CrossbarInputError
from crossbar.io import pyplot, save_figure, write_json
from crossbar.normals import NormalStream
from crossbar.periphery.adc import LinearRampADC
from crossbar.periphery.functions import get_activation
from crossbar.periphery.nladc import NLADC, NLADCDesign, compile_design, dnl_lsb, inl_lsb

SUMMARY_KEYS = (
    "inl_max_lsb",
    "inl_rms_lsb",
    "dnl_max_lsb",
    "rmse",
    "inl_max_lsb_uncalibrated",
    "vread_max_code_shift_nladc",
    "vread_max_code_shift_conventional",
)


def design_for(config: HardwareConfig, function: str, bits: int | None = None) -> NLADCDesign:
    """The NL-ADC design a config asks for (range from ``adc.range_mode``)."""
    adc = config.adc
    rng = (adc.in_min, adc.in_max) if adc.range_mode == "fixed" else None
    return compile_design(function, bits or adc.bits, config.nl_adc.level_spacing, input_range=rng)


def parse_sweep(text: str) -> np.ndarray:
    """``'0.15:0.25:0.01'`` -> array of V_read values (inclusive of the end)."""
    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise CrossbarInputError(
            f"--vread-sweep {text!r}: expected START:STOP:STEP in volts, e.g. 0.15:0.25:0.01"
        ) from None
    if not (0 < start <= stop) or step <= 0 or (stop - start) / step > 10_000:
        raise CrossbarInputError(f"--vread-sweep {text!r}: need 0 < START <= STOP, STEP > 0, at most 10000 points")
    return np.round(np.arange(start, stop + step / 2, step), 10)


@dataclass
class Characterisation:
    function: str
    design: NLADCDesign
    metrics: dict  # name -> per-instance tensor (M,)
    x: torch.Tensor  # input grid
    curves_cal: torch.Tensor  # (M, n) output of column 0 per instance, calibrated
    curves_uncal: torch.Tensor  # (M, n) uncalibrated
    vread: np.ndarray
    shift_nl: np.ndarray  # (len(vread),) max code shift over instances
    shift_conv: np.ndarray

    def summary(self) -> dict:
        return {k: {"mean": float(v.mean()), "std": float(v.std(unbiased=False))} for k, v in self.metrics.items()}


def characterize(
    config: HardwareConfig,
    function: str,
    mc: int | None = None,
    columns: int = 16,
    vread: np.ndarray | None = None,
    seed: int | None = None,
    points: int = 2001,
) -> Characterisation:
    """Program ``mc`` instances of ``columns`` NL-ADCs for ``function`` and measure them."""
    mc = config.simulation.mc_instances if mc is None else mc
    seed = config.simulation.seed if seed is None else seed
    design = design_for(config, function)
    act = get_activation(function)
    cal_cfg = config.replace(**{"nl_adc.calibration": True})
    uncal_cfg = config.replace(**{"nl_adc.calibration": False})
    cal = NLADC(design, cal_cfg, columns).program(seed, mc, name=f"char/{function}")
    uncal = NLADC(design, uncal_cfg, columns).program(seed, mc, name=f"char/{function}")

    def column_mean(t):  # (M, C) -> (M,)
        return t.double().mean(-1).cpu()

    # the realised thresholds (M, C, L-1) at nominal V_read (raises if not programmed)
    t_cal, t_uncal = cal.effective_thresholds(), uncal.effective_thresholds()
    inl = inl_lsb(design, t_cal.double())
    inl_u = inl_lsb(design, t_uncal.double())
    dnl = dnl_lsb(design, t_cal.double())
    x = torch.linspace(design.x_lo, design.x_hi, points, dtype=cal.dtype, device=cal.device)
    y = x.view(1, -1, 1).expand(mc, -1, columns)
    noise = NormalStream(seed, f"char-noise/{function}", 0, mc, cal.device).at(read=0)
    out = cal.convert(y, noise)
    rmse = (out.double() - act.f(y.double())).pow(2).mean((1, 2)).sqrt().cpu()
    metrics = {
        "inl_max_lsb": column_mean(inl.abs().amax(-1)),
        "inl_rms_lsb": column_mean(inl.pow(2).mean(-1).sqrt()),
        "dnl_max_lsb": column_mean(dnl.abs().amax(-1)) if dnl.numel() else torch.zeros(mc, dtype=torch.float64),
        "rmse": rmse,
        "inl_max_lsb_uncalibrated": column_mean(inl_u.abs().amax(-1)),
    }
    metrics["missing_code_fraction"] = (
        (dnl <= -1 + 1e-9).double().mean((1, 2)).cpu() if dnl.numel() else torch.zeros(mc, dtype=torch.float64)
    )
    steps = torch.diff(t_cal, dim=-1)
    metrics["monotonic_fraction"] = (steps > 0).all(-1).double().mean(-1).cpu() if steps.numel() else torch.ones(mc)

    vread = parse_sweep("0.15:0.25:0.01") if vread is None else vread
    v_nom = config.array.v_read
    conv = LinearRampADC(design.bits, design.x_lo, design.x_hi)
    base_nl = cal.codes(y, v_scale=1.0, noisy=False)
    base_conv = conv.codes(y)
    per_inst_nl = torch.zeros(mc, dtype=torch.float64)
    per_inst_conv = torch.zeros(mc, dtype=torch.float64)
    shift_nl, shift_conv = [], []
    for v in vread:
        s = float(v) / v_nom
        d_nl = (cal.codes(y * s, v_scale=s, noisy=False) - base_nl).abs().amax((1, 2)).double().cpu()
        d_conv = (conv.codes(y * s) - base_conv).abs().amax((1, 2)).double().cpu()
        per_inst_nl = torch.maximum(per_inst_nl, d_nl)
        per_inst_conv = torch.maximum(per_inst_conv, d_conv)
        shift_nl.append(float(d_nl.max()))
        shift_conv.append(float(d_conv.max()))
    metrics["vread_max_code_shift_nladc"] = per_inst_nl
    metrics["vread_max_code_shift_conventional"] = per_inst_conv
    curve_cal = out[:, :, 0].cpu()
    curve_uncal = uncal.convert(y, noise)[:, :, 0].cpu()  # the same normals as the calibrated curve
    return Characterisation(
        function,
        design,
        metrics,
        x.cpu(),
        curve_cal,
        curve_uncal,
        np.asarray(vread),
        np.asarray(shift_nl),
        np.asarray(shift_conv),
    )


def plot_transfer(ch: Characterisation, path: str | Path, max_curves: int = 8) -> Path:
    """Transfer curve PNG: exact f, ideal quantised f, realised instances (with / without calibration)."""
    plt = pyplot()

    act = get_activation(ch.function)
    x = ch.x.double()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, curves, title in (
        (axes[0], ch.curves_uncal, "without bias calibration"),
        (axes[1], ch.curves_cal, "with bias calibration"),
    ):
        for m in range(min(max_curves, curves.shape[0])):
            ax.plot(
                x, curves[m], lw=0.8, alpha=0.6, color="tab:blue", label="realised (MC instances)" if m == 0 else None
            )
        ax.plot(
            x, ch.design.ideal_convert(x), color="k", lw=1.2, drawstyle="steps-mid", label=f"ideal {ch.design.bits}-bit"
        )
        ax.plot(x, act.f(x), color="tab:red", lw=1.0, ls="--", label=f"exact {ch.function}")
        ax.set_title(f"{ch.function} NL-ADC, {ch.design.bits} bit: {title}")
        ax.set_xlabel("column dot product (pre-activation units)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("NL-ADC output")
    axes[1].legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def plot_vread(chs: list[Characterisation], path: str | Path, v_nom: float) -> Path:
    """Max code shift vs V_read for the NL-ADC and the conventional fixed-reference ramp ADC."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for ch in chs:
        ax.plot(ch.vread, ch.shift_nl, "o-", label=f"NL-ADC ({ch.function})")
        ax.plot(ch.vread, ch.shift_conv, "s--", label=f"conventional ramp ADC ({ch.function} range)")
    ax.axvline(v_nom, color="gray", lw=0.8)
    ax.set_xlabel("V_read (V)")
    ax.set_ylabel("max |code shift| vs nominal V_read (LSB)")
    ax.set_title("Read-voltage robustness (cf. paper Fig. 3b)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def run_characterisation(
    config: HardwareConfig,
    functions: list[str],
    mc: int | None,
    vread: np.ndarray,
    out_dir: str | Path | None,
    json_path: str | Path | None,
    columns: int = 16,
) -> dict:
    """Characterise each function; write PNGs to ``out_dir`` and the JSON summary; return the summary."""
    chs = [characterize(config, fn, mc, columns=columns, vread=vread) for fn in functions]
    summary = {ch.function: ch.summary() for ch in chs}
    if out_dir is not None:
        out = Path(out_dir)
        for ch in chs:
            plot_transfer(ch, out / f"transfer_{ch.function}.png")
        plot_vread(chs, out / "vread_sweep.png", config.array.v_read)
        write_json(out / "adc_summary.json", summary)
    if json_path is not None:
        write_json(json_path, summary)
    return summary

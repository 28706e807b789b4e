"""Translation between our hardware config and IBM aihwkit's inference settings.

aihwkit (the field's reference simulator) describes a device by a noise model -- most often
``PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019): programming noise with a quadratic
sigma(G), conductance-dependent drift exponents and accumulated 1/f noise at the time of
inference -- and the periphery by ``IOParameters`` (DAC ``inp_res`` / ``inp_bound``, ADC
``out_res`` / ``out_bound``, ``out_noise``, ...).  The functions here turn those into our config
sections and back, so aihwkit users can bring their settings.  None of them imports aihwkit; an
aihwkit object is read through its attributes.

Mapping (details in docs/aihwkit.md):

* ``PCMLikeNoiseModel(g_max, prog_coeff, t_0, t_read, *_scale)`` + ``t_inference`` ->
  ``device``: g_min 0, g_max, programming sigma(G) table of the polynomial, drift ``nu_table`` of
  its log-fits (mean, std), ``accumulated_noise`` of its 1/f term, ``t0 = t_0`` and
  ``t_inference = t_0 + t_inference`` (aihwkit counts inference time from the end of programming,
  we from programming);
* ``SinglePairConductanceConverter`` -> ``array.mapping = differential``, ``weight_scale = max``;
* ``inp_res = 1 / (2^b - 2)``, ``inp_bound`` <-> ``dac.bits = b``, ``dac.x_max`` (same grid:
  2^b - 1 levels over [-bound, bound]); ``inp_res <= 0`` <-> ``dac.bits = null``;
* ``out_res <= 0`` <-> ``adc.kind = ideal``; ``out_res = 1 / (2^b - 2)``, ``out_bound`` <-> a
  ``linear_ramp`` ADC with ``bits = b`` over fixed [-out_bound, out_bound] -- approximate: aihwkit
  has 2^b - 1 levels including 0, our ramp ADC 2^b levels spanning the range;
* not translatable (named by :func:`io_from_aihwkit`): aihwkit's per-vector noise / bound
  management, ``out_noise`` (a Gaussian on the output, not per device), ``w_noise``; our NL-ADC has
  no aihwkit counterpart.
"""

from __future__ import annotations

import math

import numpy as np

from crossbar.config import HardwareConfig
from crossbar.errors import CrossbarInputError

# aihwkit's PCMLikeNoiseModel defaults (aihwkit 1.2, inference/noise/pcm.py)
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
PCM_PROG_G_MAX_REFERENCE = 25.0


def _pcm_grid(g_max: float, points: int) -> np.ndarray:
    """Conductances for the tables: 0, then log-spaced from 1e-4 g_max to g_max (the PCM fits are
    functions of log G, so a log grid keeps linear interpolation close to them)."""
    return np.concatenate([[0.0], np.geomspace(1e-4 * g_max, g_max, points - 1)])


def pcm_like_device(
    g_max: float = 25.0,
    prog_coeff=PCM_PROG_COEFF,
    prog_coeff_g_max_reference: float | None = None,
    t_0: float = 20.0,
    t_read: float = 250e-9,
    t_inference: float = 0.0,
    prog_noise_scale: float = 1.0,
    read_noise_scale: float = 1.0,
    drift_scale: float = 1.0,
    points: int = 257,
) -> dict:
    """Our ``device`` section (a dict) for aihwkit's ``PCMLikeNoiseModel`` with these arguments and
    an inference at ``t_inference`` seconds after programming (aihwkit's ``drift_analog_weights``).

    The polynomial and log fits are tabulated on ``points`` conductances (linear interpolation in
    between; at the default 257 points the tables differ from the formulas by < 0.1 %).
    Differences that remain (documented): aihwkit draws nu = |mu + sigma z|, we clip mu + sigma z at
    0 (differs only below -mu/sigma, i.e. z < -2 at the lowest conductances); aihwkit re-derives a
    single-device pair from the programmed weight before drifting it, we drift both devices.
    """
    if g_max <= 0 or t_0 <= 0 or t_read <= 0 or t_inference < 0 or points < 3:
        raise CrossbarInputError(
            f"pcm_like_device: need g_max, t_0, t_read > 0, t_inference >= 0, points >= 3; got "
            f"g_max={g_max}, t_0={t_0}, t_read={t_read}, t_inference={t_inference}, points={points}"
        )
    ref = g_max if prog_coeff_g_max_reference is None else prog_coeff_g_max_reference
    if tuple(prog_coeff) == PCM_PROG_COEFF and prog_coeff_g_max_reference is None:
        ref = PCM_PROG_G_MAX_REFERENCE
    g = _pcm_grid(g_max, points)
    rel = g / g_max
    sigma_prog = sum(c * rel**i for i, c in enumerate(prog_coeff)) * (g_max / ref) * prog_noise_scale
    if (sigma_prog < 0).any():
        raise CrossbarInputError("pcm_like_device: the programming polynomial is negative on [0, g_max]")
    rel_c = np.clip(rel, 1e-7, None)  # aihwkit's _ZERO_CLIP
    nu = np.clip(-0.0155 * np.log(rel_c) + 0.0244, 0.049, 0.1) * drift_scale
    nu_std = np.clip(-0.0125 * np.log(rel_c) - 0.0059, 0.008, 0.045) * drift_scale
    q = np.clip(0.0088 / np.clip(rel**0.65, 1e-3, None), None, 0.2) * read_noise_scale
    return {
        "name": "aihwkit_pcm_like",
        "g_min": 0.0,
        "g_max": float(g_max),
        "levels": None,
        "programming": {"sigma_abs": 0.0, "sigma_rel": 0.0, "table": {"g": g.tolist(), "sigma": sigma_prog.tolist()}},
        "read_noise": {"sigma_abs": 0.0, "sigma_rel": 0.0, "table": None},
        "stuck_off_prob": 0.0,
        "stuck_on_prob": 0.0,
        "range_d2d_rel": 0.0,
        "drift": {
            "nu": 0.0,
            "nu_std": 0.0,
            "nu_table": {"g": g.tolist(), "nu": nu.tolist(), "nu_std": nu_std.tolist()},
            "accumulated_noise": {"g": g.tolist(), "q": q.tolist(), "t_read": float(t_read)},
            "t0": float(t_0),
            "t_inference": float(t_0 + t_inference),
            "compensation": False,
        },
    }


def device_from_aihwkit(noise_model, t_inference: float = 0.0, points: int = 257) -> dict:
    """Our ``device`` section for an aihwkit ``PCMLikeNoiseModel`` instance (read by attribute)."""
    if type(noise_model).__name__ != "PCMLikeNoiseModel":
        raise CrossbarInputError(
            f"device_from_aihwkit: only PCMLikeNoiseModel is translated, got {type(noise_model).__name__}"
        )
    return pcm_like_device(
        g_max=float(noise_model.g_max),
        prog_coeff=tuple(noise_model.prog_coeff),
        prog_coeff_g_max_reference=float(noise_model.prog_coeff_g_max_reference),
        t_0=float(noise_model.t_0),
        t_read=float(noise_model.t_read),
        t_inference=t_inference,
        prog_noise_scale=float(noise_model.prog_noise_scale),
        read_noise_scale=float(noise_model.read_noise_scale),
        drift_scale=float(noise_model.drift_scale),
        points=points,
    )


def _bits_from_res(res: float, what: str) -> int | None:
    """aihwkit resolution (1/steps, or steps when > 1; <= 0 = none) -> our bit width."""
    if res <= 0:
        return None
    steps = 1.0 / res if res < 1 else res
    bits = math.log2(steps + 2)
    if abs(bits - round(bits)) > 1e-6:
        raise CrossbarInputError(
            f"aihwkit {what} = {res} is not 1 / (2^b - 2) for an integer b: no matching "
            f"{'DAC' if what == 'inp_res' else 'ADC'} in our config"
        )
    return int(round(bits))


def io_from_aihwkit(io) -> tuple[dict, list[str]]:
    """Config overrides for aihwkit ``IOParameters`` ``io`` (read by attribute), and notes on its
    settings that are only approximated or have no counterpart here (to report, not silently drop)."""
    out: dict[str, str | int | float | None] = {}  # dotted config key -> value
    if getattr(io, "is_perfect", False):
        out.update({"dac.bits": None, "adc.kind": "ideal"})
        return out, []
    skipped: list[str] = []
    bits = _bits_from_res(float(io.inp_res), "inp_res")
    out.update({"dac.bits": bits, "dac.x_max": float(io.inp_bound), "dac.range_mode": "fixed"})
    obits = _bits_from_res(float(io.out_res), "out_res")
    if obits is None:
        out["adc.kind"] = "ideal"
    else:
        out.update(
            {
                "adc.kind": "linear_ramp",
                "adc.bits": obits,
                "adc.range_mode": "fixed",
                "adc.in_min": -float(io.out_bound),
                "adc.in_max": float(io.out_bound),
            }
        )
        skipped.append(
            f"out_res={io.out_res}: approximated by {2**obits} levels over the range "
            f"(aihwkit: {2**obits - 1} including 0)"
        )
    for name in ("out_noise", "w_noise", "inp_noise", "ir_drop"):
        if float(getattr(io, name, 0.0) or 0.0) > 0:
            skipped.append(f"{name}={getattr(io, name)}")
    for name in ("noise_management", "bound_management"):
        value = getattr(io, name, None)
        if value is not None and getattr(value, "name", str(value)).upper() != "NONE":
            skipped.append(f"{name}={getattr(value, 'name', value)}")
    return out, skipped


def io_to_aihwkit(config: HardwareConfig) -> dict:
    """aihwkit ``IOParameters`` fields for our DAC / ADC sections (an NL-ADC has no counterpart)."""
    dac, adc = config.dac, config.adc
    io = {
        "inp_res": -1.0 if dac.bits is None else 1.0 / (2**dac.bits - 2),
        "inp_bound": float(dac.x_max),
        "out_noise": 0.0,
        "w_noise": 0.0,
        "inp_noise": 0.0,
    }
    if adc.kind == "nl_ramp":
        raise CrossbarInputError("io_to_aihwkit: the NL-ADC (adc.kind = nl_ramp) has no aihwkit counterpart")
    if adc.kind == "ideal":
        io.update({"out_res": -1.0, "out_bound": -1.0})
    else:
        if adc.range_mode != "fixed" or adc.in_min != -adc.in_max:
            raise CrossbarInputError(
                "io_to_aihwkit: aihwkit's ADC is symmetric and fixed: needs adc.range_mode "
                "'fixed' with in_min = -in_max"
            )
        io.update({"out_res": 1.0 / (2**adc.bits - 2), "out_bound": float(adc.in_max)})
    return io

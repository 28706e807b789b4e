"""Hardware configuration: the JSON schema (pydantic v2), loading and validation.

A hardware config is one JSON file with ``"schema_version": 1`` and the sections ``device``,
``array``, ``dac``, ``adc``, ``nl_adc``, ``cost`` and ``simulation``.  Only this module reads raw
JSON; everything else receives an immutable :class:`HardwareConfig`.

Units: conductance in uS, voltage in V, time in s, resistance in ohm.

Bad input raises :class:`crossbar.errors.CrossbarInputError` whose message names the file, the JSON
path of the field (e.g. ``device.g_max``), the offending value and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator
from pydantic_core import ErrorDetails

from crossbar.errors import CrossbarInputError
from crossbar.periphery.functions import REGISTRY as ACTIVATIONS

SCHEMA_VERSION = 1


def _preset_dir() -> Path:
    """The folder of the shipped presets: package data of the ``hw_configs`` package (found with
    ``importlib.resources``, so it works from a plain ``pip install`` as from a source checkout)."""
    from importlib.resources import files

    try:
        return Path(str(files("hw_configs")))
    except ModuleNotFoundError:  # a broken install: name it rather than fail later
        return Path(__file__).resolve().parent.parent / "hw_configs"


PRESET_DIR = _preset_dir()

# A finite float: NaN and +-inf are rejected everywhere in the schema.
_FINITE = {"allow_inf_nan": False}


class _Section(BaseModel):
    """Base of every section: immutable, unknown keys are an error, floats must be finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True, strict=True)


def _check_table(g: list, columns: dict) -> None:
    for name, values in columns.items():
        if len(values) != len(g):
            raise ValueError(f"g has {len(g)} entries but {name} has {len(values)}; they must match")
        if any(v < 0 for v in values):
            raise ValueError(f"{name} values must be >= 0")
    if any(b <= a for a, b in zip(g, g[1:])):
        raise ValueError("g must be strictly increasing")


class SigmaTable(_Section):
    """A measured sigma(G) table, linearly interpolated (clamped at the ends)."""

    g: list[float] = Field(min_length=2, max_length=4096, description="conductances, uS, increasing")
    sigma: list[float] = Field(min_length=2, max_length=4096, description="sigma at each g, uS, >= 0")

    @model_validator(mode="after")
    def _check(self) -> SigmaTable:
        _check_table(self.g, {"sigma": self.sigma})
        return self


MAX_TABLE_VALUES = 2_000_000  # numbers in one measured-distribution table


def _drop_when_default(data: dict, defaults: dict) -> dict:
    """Leave optional extension fields out of a dump while they hold their default, so configs that
    do not use them dump (and hash, e.g. in sweep unit keys) exactly as before they existed."""
    for key, default in defaults.items():
        if key in data and data[key] == default:
            del data[key]
    return data


def _check_probabilities(p: list[float]) -> None:
    if p[0] != 0 or p[-1] != 1:
        raise ValueError(f"p must run from 0 to 1 (got {p[0]!r} .. {p[-1]!r})")
    if any(b <= a for a, b in zip(p, p[1:])):
        raise ValueError("p must be strictly increasing")


def _check_quantile_rows(rows: list[list[float]], n_p: int, where: str) -> None:
    for i, row in enumerate(rows):
        if len(row) != n_p:
            raise ValueError(f"{where}[{i}] has {len(row)} quantiles but p has {n_p}; they must match")
        if any(b < a for a, b in zip(row, row[1:])):
            raise ValueError(f"{where}[{i}] must be non-decreasing (quantiles of a distribution)")


class ErrorQuantiles(_Section):
    """A measured distribution of the programming error G - G_target (uS) per target-conductance bin,
    as an inverse-CDF table (the empirical device mode).

    A device with target G_target and its own uniform rank u in [0, 1) gets G_target + Q(G_target, u):
    Q is linear in u between the probabilities ``p`` and linear in G between the bin centres ``g``
    (clamped at the ends), i.e. the measured errors are resampled, heavy tails and stuck devices
    included, instead of being summarised by a Gaussian."""

    g: list[float] = Field(
        min_length=1, max_length=4096, description="bin centres (target conductance), uS, strictly increasing"
    )
    p: list[float] = Field(
        min_length=2, max_length=1001, description="cumulative probabilities, strictly increasing from 0 to 1"
    )
    q: list[list[float]] = Field(
        min_length=1,
        max_length=4096,
        description="q[i][j]: quantile p[j] of G - G_target at g[i], uS (non-decreasing in j)",
    )

    @model_validator(mode="after")
    def _check(self) -> ErrorQuantiles:
        if any(b <= a for a, b in zip(self.g, self.g[1:])):
            raise ValueError("g must be strictly increasing")
        if len(self.q) != len(self.g):
            raise ValueError(f"g has {len(self.g)} bins but q has {len(self.q)} rows; they must match")
        if len(self.g) * len(self.p) > MAX_TABLE_VALUES:
            raise ValueError(f"the table has more than {MAX_TABLE_VALUES} values")
        _check_probabilities(self.p)
        _check_quantile_rows(self.q, len(self.p), "q")
        return self


class FlickerNoise(_Section):
    """Slow, time-correlated read noise (1/f-like): a sum of Ornstein-Uhlenbeck (Lorentzian)
    components with correlation times ``tau`` and standard deviations sigma_k(G), linear in G
    between the rows of ``g`` (clamped at the ends).  Components log-spaced in tau with suitable
    weights approximate a 1/f^alpha spectrum between 1/(2 pi tau_max) and 1/(2 pi tau_min).

    It adds to each read of a time series (``crossbar simulate-device``); a crossbar inference is one
    short read per device, whose noise is the per-read (white) part of the :class:`NoiseSpec`."""

    tau: list[float] = Field(min_length=1, max_length=256, description="correlation times, s, strictly increasing, > 0")
    g: list[float] = Field(min_length=1, max_length=4096, description="conductances, uS, strictly increasing")
    sigma: list[list[float]] = Field(
        min_length=1, max_length=4096, description="sigma[i][k]: standard deviation of component k at g[i], uS, >= 0"
    )

    @model_validator(mode="after")
    def _check(self) -> FlickerNoise:
        if any(t <= 0 for t in self.tau) or any(b <= a for a, b in zip(self.tau, self.tau[1:])):
            raise ValueError("tau must be > 0 and strictly increasing")
        if any(b <= a for a, b in zip(self.g, self.g[1:])):
            raise ValueError("g must be strictly increasing")
        if len(self.sigma) != len(self.g):
            raise ValueError(f"g has {len(self.g)} entries but sigma has {len(self.sigma)} rows; they must match")
        for i, row in enumerate(self.sigma):
            if len(row) != len(self.tau):
                raise ValueError(f"sigma[{i}] has {len(row)} values but tau has {len(self.tau)}; they must match")
            if any(v < 0 for v in row):
                raise ValueError(f"sigma[{i}] values must be >= 0")
        return self


class NoiseSpec(_Section):
    """Gaussian conductance noise: sigma(G) = sqrt(sigma_abs^2 + (sigma_rel*G)^2), or a table, or (for
    the programming error only) a measured distribution (``quantiles``).

    Used for programming error (drawn once per device instance) and read noise (drawn per read;
    ``flicker`` adds slow, time-correlated read noise to time series of reads).
    """

    sigma_abs: float = Field(0.0, ge=0, le=1e4, description="absolute sigma, uS")
    sigma_rel: float = Field(0.0, ge=0, le=10, description="sigma relative to the target conductance")
    table: SigmaTable | None = Field(None, description="measured sigma(G); replaces abs/rel when given")
    quantiles: ErrorQuantiles | None = Field(
        None,
        description="programming error only: measured "
        "distribution of G - G_target per conductance bin, resampled "
        "(empirical mode); replaces the Gaussian when given",
    )
    flicker: FlickerNoise | None = Field(
        None, description="read noise only: slow 1/f-like noise of reads in a time series (null = none)"
    )

    @model_validator(mode="after")
    def _check_quantiles(self) -> NoiseSpec:
        if self.quantiles is not None and (self.table is not None or self.sigma_abs or self.sigma_rel):
            raise ValueError("give either quantiles or sigma_abs / sigma_rel / table, not both")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        return _drop_when_default(handler(self), {"quantiles": None, "flicker": None})

    @property
    def is_zero(self) -> bool:
        """True when there is no per-read (white) Gaussian noise (``flicker`` is not part of it)."""
        return self.table is None and self.quantiles is None and self.sigma_abs == 0 and self.sigma_rel == 0


class DriftTable(_Section):
    """Drift exponent statistics as a function of the target conductance (linear interpolation,
    clamped at the ends), e.g. PCM's conductance-dependent drift."""

    g: list[float] = Field(min_length=2, max_length=4096, description="conductances, uS, increasing")
    nu: list[float] = Field(min_length=2, max_length=4096, description="mean drift exponent at each g")
    nu_std: list[float] = Field(min_length=2, max_length=4096, description="its device-to-device spread")

    @model_validator(mode="after")
    def _check(self) -> DriftTable:
        _check_table(self.g, {"nu": self.nu, "nu_std": self.nu_std})
        return self


class AccumulatedNoise(_Section):
    """Low-frequency (1/f) conductance noise accumulated between programming and the read at
    ``t_inference``: G(t) gets |G(t)| * q(G_prog) * sqrt(ln((t + t_read) / (2 t_read))) * z, one z per
    device (a frozen perturbation, not per-read noise).  The form of aihwkit's PCM-like model
    (Nandakumar et al., ICECS 2019)."""

    g: list[float] = Field(min_length=2, max_length=4096, description="conductances, uS, increasing")
    q: list[float] = Field(min_length=2, max_length=4096, description="relative 1/f amplitude at each g")
    t_read: float = Field(250e-9, gt=0, le=1, description="read duration of the 1/f fit, s")

    @model_validator(mode="after")
    def _check(self) -> AccumulatedNoise:
        _check_table(self.g, {"q": self.q})
        return self


class RelaxationQuantiles(_Section):
    """Measured relaxation after programming as an inverse-CDF table per conductance bin and time
    since programming (the empirical device mode).

    Each device has its own uniform rank u.  Its conductance at time t gets the increment
    Q(key, t, u) - Q(key, t[0], u) (Q linear in u between ``p``, linear in the key between the bin
    centres ``g``, linear in log t between the times -- linear in t from t[0] = 0 -- held at the last
    time beyond ``t[-1]``; no change before t[0]).  ``reference`` says what the table describes:

    * ``target``: q = G(t) - G_target, binned by the target conductance; t[0] is the first read, so
      q[:, 0] is the programming error (the same rank u as ``programming.quantiles`` when given:
      a device that lands high stays high in its distribution, as the measured marginals at every
      time are reproduced exactly);
    * ``first_read``: q = G(t) - G(t[0]), binned by the conductance at the first read (targets
      unknown); the rank is drawn independently of the programming error.
    """

    reference: Literal["target", "first_read"] = Field(
        description="target: G(t) - G_target by target bin; first_read: G(t) - G(t[0]) by G(t[0]) bin"
    )
    g: list[float] = Field(min_length=1, max_length=4096, description="bin centres, uS, strictly increasing")
    t: list[float] = Field(
        min_length=2,
        max_length=1024,
        description="times since the end of programming, s, strictly increasing, >= 0; t[0] = the first read",
    )
    p: list[float] = Field(
        min_length=2, max_length=1001, description="cumulative probabilities, strictly increasing from 0 to 1"
    )
    q: list[list[list[float]]] = Field(
        min_length=1,
        max_length=4096,
        description="q[i][k][j]: quantile p[j] at g[i] and t[k], uS (non-decreasing in j)",
    )

    @model_validator(mode="after")
    def _check(self) -> RelaxationQuantiles:
        if any(b <= a for a, b in zip(self.g, self.g[1:])):
            raise ValueError("g must be strictly increasing")
        if self.t[0] < 0 or any(b <= a for a, b in zip(self.t, self.t[1:])):
            raise ValueError("t must be >= 0 and strictly increasing")
        if len(self.g) * len(self.t) * len(self.p) > MAX_TABLE_VALUES:
            raise ValueError(f"the table has more than {MAX_TABLE_VALUES} values")
        _check_probabilities(self.p)
        if len(self.q) != len(self.g):
            raise ValueError(f"g has {len(self.g)} bins but q has {len(self.q)}; they must match")
        for i, per_t in enumerate(self.q):
            if len(per_t) != len(self.t):
                raise ValueError(f"q[{i}] has {len(per_t)} times but t has {len(self.t)}; they must match")
            _check_quantile_rows(per_t, len(self.p), f"q[{i}]")
        return self


class DriftSpec(_Section):
    """Power-law conductance drift G(t) = G(t0) * (t / t0)^(-nu), nu ~ N(nu, nu_std) per device
    (clipped at 0), optionally conductance-dependent (``nu_table``), plus optional accumulated 1/f
    noise (``accumulated_noise``) -- or a measured relaxation table (``relaxation``, the empirical
    mode) instead of all of them."""

    nu: float = Field(0.0, ge=0, le=1, description="drift exponent (0 = no drift)")
    nu_std: float = Field(0.0, ge=0, le=1, description="device-to-device spread of nu")
    nu_table: DriftTable | None = Field(
        None, description="nu and nu_std vs target conductance; replaces nu / nu_std when given"
    )
    accumulated_noise: AccumulatedNoise | None = Field(
        None, description="1/f noise accumulated until t_inference (null = none)"
    )
    t0: float = Field(20.0, gt=0, le=1e9, description="time of programming verification, s")
    t_inference: float = Field(20.0, gt=0, le=1e12, description="time of the read after programming, s")
    compensation: bool = Field(
        False,
        description="global drift compensation: rescale column outputs by the mean drift factor measured on the array",
    )
    relaxation: RelaxationQuantiles | None = Field(
        None,
        description="measured relaxation table (empirical "
        "mode) used at t_inference; replaces the power law "
        "and the accumulated noise (null = none)",
    )

    @model_validator(mode="after")
    def _check_relaxation(self) -> DriftSpec:
        if self.relaxation is not None and (
            self.nu or self.nu_std or self.nu_table is not None or self.accumulated_noise is not None
        ):
            raise ValueError(
                "relaxation replaces the power-law drift and the accumulated noise: with a "
                "relaxation table nu and nu_std must be 0 and nu_table / accumulated_noise null"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        return _drop_when_default(handler(self), {"relaxation": None})


class DeviceConfig(_Section):
    """The memristor: conductance range, levels and non-idealities."""

    name: str = Field("ideal", max_length=200)
    g_min: float = Field(0.0, ge=0, le=1e6, description="lowest programmable conductance, uS")
    g_max: float = Field(100.0, gt=0, le=1e6, description="highest programmable conductance, uS")
    levels: int | None = Field(
        None, ge=2, le=65536, description="programmable levels evenly spaced in [g_min, g_max]; null = analog"
    )
    programming: NoiseSpec = Field(default_factory=NoiseSpec, description="static programming error")
    read_noise: NoiseSpec = Field(default_factory=NoiseSpec, description="per-read noise")
    stuck_off_prob: float = Field(0.0, ge=0, le=1, description="probability a device is stuck at g_min")
    stuck_on_prob: float = Field(0.0, ge=0, le=1, description="probability a device is stuck at g_max")
    range_d2d_rel: float = Field(0.0, ge=0, le=1, description="device-to-device relative sigma of each device's g_max")
    drift: DriftSpec = Field(default_factory=DriftSpec)
    description: str = Field(
        "",
        max_length=20_000,
        description="where the device numbers come from (e.g. the provenance that `crossbar fit-device` writes)",
    )

    @model_validator(mode="after")
    def _check(self) -> DeviceConfig:
        if self.g_min >= self.g_max:
            raise ValueError(f"g_min ({self.g_min}) must be smaller than g_max ({self.g_max})")
        if self.stuck_off_prob + self.stuck_on_prob > 1:
            raise ValueError("stuck_off_prob + stuck_on_prob must not exceed 1")
        if self.read_noise.quantiles is not None:
            raise ValueError(
                "read_noise.quantiles is not supported: quantiles describe the programming error "
                "(read noise is Gaussian per read, plus optional flicker)"
            )
        if self.programming.flicker is not None:
            raise ValueError("programming.flicker is not supported: flicker is read noise (read_noise.flicker)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        return _drop_when_default(handler(self), {"description": ""})


class WiresConfig(_Section):
    """Wire parasitics of every physical array (IR drop; ``crossbar.parasitics``), ohm; 0 = ideal.

    Word lines are driven at their column-0 end, bit lines held at the integrators' virtual ground
    at their row-(rows-1) end; each cell is 1 / G in series with ``r_access``."""

    r_wl: float = Field(0.0, ge=0, le=1e6, description="word-line resistance between neighbouring cells, ohm")
    r_bl: float = Field(0.0, ge=0, le=1e6, description="bit-line resistance between neighbouring cells, ohm")
    r_driver: float = Field(0.0, ge=0, le=1e6, description="word-line driver output resistance, ohm")
    r_sense: float = Field(0.0, ge=0, le=1e6, description="bit line to the integrator's virtual ground, ohm")
    r_access: float = Field(
        0.0, ge=0, le=1e9, description="access transistor (1T1R, gate fully on) in series with every cell, ohm"
    )
    ir_drop_aware_programming: bool = Field(
        False,
        description="pre-distort weight, ramp and bias targets so the array's effective matrix "
        "approaches them (fixed-point iterations, bounded by g_min/g_max)",
    )
    aware_iterations: int = Field(3, ge=1, le=20, description="fixed-point iterations of IR-drop-aware programming")
    ramp_rows: Literal["near_sense", "far_sense"] = Field(
        "near_sense",
        description="where the NL-ADC's ramp and bias rows sit in the last row-block of a "
        "column block: after the weight rows, next to the integrators "
        "(near_sense), or before them, at the far end of the bit lines",
    )
    shared_ramp_column: Literal["near_driver", "far_driver"] = Field(
        "far_driver",
        description="with nl_adc.shared_ramp: the ramp column sits before the weight "
        "columns (next to the word-line drivers) or after them",
    )

    @property
    def ideal(self) -> bool:
        """True when every resistance is 0 (exactly the results without the wire model)."""
        return not (self.r_wl or self.r_bl or self.r_driver or self.r_sense or self.r_access)


class ArrayConfig(_Section):
    """One physical crossbar array and how weights map onto it."""

    rows: int = Field(256, ge=1, le=1_000_000, description="word lines (inputs) per physical array")
    cols: int = Field(256, ge=1, le=1_000_000, description="bit lines (outputs) per physical array")
    mapping: Literal["differential", "offset"] = Field(
        "differential",
        description="differential: w ~ G+ - G-, two devices per weight; offset: w ~ G - "
        "G_ref with one reference column at mid-range per array",
    )
    weight_scale: Literal["max", "percentile"] = Field(
        "max", description="weight value that maps to the full conductance span: max |w| or a percentile"
    )
    weight_percentile: float = Field(
        99.9, gt=0, le=100, description="percentile of |w| when weight_scale is 'percentile' (larger weights clip)"
    )
    row_scaling: Literal["shared", "per_input_block"] = Field(
        "shared",
        description="shared: one weight reference (conductance scale) for the whole matrix; "
        "per_input_block: each input block of a layer (its input x, its recurrent "
        "state h, the bias row) gets its own weight reference, and that block's "
        "word-line drivers read at amplitude a = w_ref_block / max w_ref_block <= 1 "
        "(one extra DAC reference voltage per block)",
    )
    v_read: float = Field(0.2, gt=0, le=10, description="nominal read voltage, V")
    wires: WiresConfig = Field(
        default_factory=WiresConfig, description="wire parasitics (IR drop); all 0 = ideal wires"
    )
    partial_sums: Literal["digital", "analog"] = Field(
        "digital",
        description="how a column split over several row-blocks (arrays) is summed: digital = "
        "one ADC conversion per block, added digitally; analog = the blocks' "
        "bit-line currents are joined before one conversion (needed by the NL-ADC)",
    )
    bias_in_array: bool = Field(True, description="biases as an extra row driven at full-scale input")

    @model_validator(mode="before")
    @classmethod
    def _legacy_wire_resistance(cls, data: Any) -> Any:
        """The old ``wire_resistance`` (recorded, never simulated) is refused with how to convert it."""
        if isinstance(data, dict) and "wire_resistance" in data:
            raise ValueError(
                f"wire_resistance = {data['wire_resistance']!r} is replaced by the array.wires section "
                "(it was recorded but never simulated): delete it to keep the earlier results (ideal "
                'wires), or write "wires": {"r_wl": R, "r_bl": R} to simulate R ohm per segment'
            )
        return data


class DACConfig(_Section):
    """Input digital-to-analog conversion (word-line drivers)."""

    bits: int | None = Field(
        None,
        ge=2,
        le=16,
        description="input resolution (sign-magnitude, zero included); null = ideal (no quantisation, no clipping)",
    )
    range_mode: Literal["fixed", "calibrated"] = Field("fixed")
    x_max: float = Field(
        1.0, gt=0, le=1e6, description="inputs are quantised over [-x_max, x_max] (fixed mode, or before calibration)"
    )
    clip: bool = Field(True, description="clip inputs beyond the range (else: error)")
    calibration_percentile: float = Field(99.99, gt=0, le=100)


AdcKind = Literal["ideal", "linear_ramp", "nl_ramp"]


MAX_ADC_BITS = 12


def check_bit_widths(bits: list[int], what: str) -> list[int]:
    """``bits`` if they are distinct ADC resolutions in 1..MAX_ADC_BITS, else one
    ``CrossbarInputError`` starting with ``what`` (the option or field being checked)."""
    if not bits or any(not 1 <= b <= MAX_ADC_BITS for b in bits) or len(set(bits)) != len(bits):
        raise CrossbarInputError(f"{what}: bit widths must be distinct, in 1..{MAX_ADC_BITS}")
    return bits


def bit_widths(text: str, what: str) -> list[int]:
    """``"3,4,5,8"`` -> [3, 4, 5, 8], checked by :func:`check_bit_widths`."""
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise CrossbarInputError(f"{what}: bit widths must be comma-separated integers, e.g. 3,4,5,8") from None
    return check_bit_widths(bits, what)


class ADCConfig(_Section):
    """Column-output conversion: the kind of ADC and its range."""

    kind: AdcKind = Field(
        "ideal",
        description="ideal: no quantisation; linear_ramp: conventional uniform "
        "ramp ADC with a fixed reference, activation in digital; "
        "nl_ramp: the in-memory NL-ADC",
    )
    bits: int = Field(8, ge=1, le=MAX_ADC_BITS)
    range_mode: Literal["fixed", "calibrated", "function"] = Field(
        "function",
        description="fixed: [in_min, in_max]; calibrated: from data; function: the "
        "activation's own input range (NL-ADC default)",
    )
    in_min: float = Field(-8.0, description="lower end of the input range (pre-activation units)")
    in_max: float = Field(8.0, description="upper end of the input range (pre-activation units)")
    calibration_percentile: float = Field(99.9, gt=50, le=100)

    @model_validator(mode="after")
    def _check(self) -> ADCConfig:
        if self.in_min >= self.in_max:
            raise ValueError(f"in_min ({self.in_min}) must be smaller than in_max ({self.in_max})")
        return self


if TYPE_CHECKING:
    ActivationName = str
else:  # the names of the activation registry (crossbar.periphery.functions), one list
    ActivationName = Literal[tuple(ACTIVATIONS)]


class RoleFunctions(_Section):
    """Which function each RNN role computes, and where."""

    gate: ActivationName = Field("sigmoid", description="LSTM i/f/o and GRU r/z gates")
    candidate: ActivationName = Field("tanh", description="LSTM g / GRU n candidate")
    cell: Literal["digital", "digital_lut", "nl_adc"] = Field(
        "digital", description="tanh(c): exact digital, a 2^bits LUT, or an NL-ADC fed by a DAC"
    )


class NLADCConfig(_Section):
    """The in-memory nonlinear ramp ADC (used when ``adc.kind`` is ``nl_ramp``)."""

    ramp_devices: int | None = Field(
        None,
        ge=2,
        le=4096,
        description="ramp memristors per column; null = 2^bits (one per counter step; the only value supported)",
    )
    bias_devices: int = Field(5, ge=1, le=64, description="bias-calibration memristors (paper: 5)")
    calibration: bool = Field(
        True,
        description="re-choose the bias conductances after programming to "
        "minimise the max |INL| of the realised thresholds",
    )
    calibration_iterations: int = Field(2, ge=1, le=20, description="program-and-verify rounds of the bias")
    level_spacing: Literal["mid_tread", "mid_rise"] = Field(
        "mid_tread",
        description="mid_tread: output levels include f's range ends (a gate can be exactly "
        "0 or 1); mid_rise: levels at the centres of L equal bins",
    )
    design: Literal["uniform", "data_aware"] = Field(
        "uniform", description="uniform output levels (paper) or thresholds fitted to data (Lloyd-Max)"
    )
    comparator_offset_sigma: float = Field(
        0.0, ge=0, le=1, description="static per-column comparator offset, sigma as a fraction of the ramp span"
    )
    comparator_noise_sigma: float = Field(
        0.0, ge=0, le=1, description="per-conversion comparator noise, sigma as a fraction of the ramp span"
    )
    integrator_gain_sigma: float = Field(
        0.0, ge=0, le=1, description="per-column relative gain error of the ramp integrator"
    )
    shared_ramp: bool = Field(
        False,
        description="one ramp column shared by all columns of an array (else each column has its own ramp devices)",
    )
    reset_cycles: int = Field(2, ge=0, le=1024, description="counter reset / overhead cycles per conversion")
    functions: RoleFunctions = Field(default_factory=RoleFunctions)


class DatapathConfig(_Section):
    """The digital element-wise datapath of the RNN cell (c = f*c + i*g, h = o*tanh(c), ...)."""

    bits: int | None = Field(None, ge=2, le=32, description="signed fixed-point width of c and h; null = float")
    cell_max: float = Field(
        8.0, gt=0, le=1e6, description="c is held in [-cell_max, cell_max] (saturating); h in [-1, 1]"
    )


class CostConfig(_Section):
    """Technology for the cost model."""

    node_nm: float = Field(16.0, ge=3, le=250, description="CMOS technology node, nm")
    clock_ghz: float = Field(1.0, gt=0, le=20, description="clock frequency, GHz")
    library: str = Field(
        "default", max_length=500, description="component library: 'default' or a JSON file relative to this config"
    )
    digital_nl_units: int = Field(
        32,
        ge=1,
        le=1_000_000,
        description="parallel digital units: activation "
        "units of the conventional architecture, element-wise lanes of all",
    )
    digital_nl_kind: Literal["lut", "pwl", "cordic"] = Field(
        "lut",
        description="digital sigmoid/tanh unit: look-up table (1 cycle), piecewise-linear (2 cycles) or "
        "CORDIC (bits + 2 cycles)",
    )
    conventional_adc: Literal["ramp", "sar"] = Field(
        "ramp",
        description="column ADC of the conventional architecture: ramp (2^N + reset cycles, shared "
        "reference ramp per array) or SAR (N + reset cycles)",
    )
    input_activity: float = Field(
        1.0, ge=0, le=1, description="mean (x / x_max)^2 of the word-line inputs (1 = peak: every row at full scale)"
    )
    digital_macs: int = Field(256, ge=1, le=1_000_000, description="FP16 MAC units of the digital reference")

    @field_validator("library")
    @classmethod
    def _contained(cls, value: str) -> str:
        """A library path is resolved relative to the config file and may not leave its folder."""
        from pathlib import PurePosixPath, PureWindowsPath

        if value != "default":
            parts = PurePosixPath(value.replace("\\", "/")).parts
            if PureWindowsPath(value).is_absolute() or value.startswith("/") or ".." in parts or "~" in value:
                raise ValueError(
                    "must be 'default' or a path inside the config's folder (no absolute paths, '..' or '~')"
                )
        return value


class SimulationConfig(_Section):
    """Seeds, Monte-Carlo instances and the torch device."""

    seed: int = Field(0, ge=0, le=2**63 - 1)
    mc_instances: int = Field(1, ge=1, le=100_000)
    dtype: Literal["float32", "float64"] = Field("float32")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="auto = cuda when available")
    variance_precision: Literal["bfloat16", "full"] = Field(
        "bfloat16",
        description="precision of the product that gives each column's read-noise variance "
        "(sum_j x_j^2 sigma_j^2): bfloat16 operands and result, summed in float32 (faster; the "
        "variance within 0.5 %, the noise sigma within 0.25 %), or full = the dtype above",
    )


def get_field(data: dict, dotted: str) -> Any:
    """The value at a dotted path (``"device.read_noise.sigma_rel"``) of a config's ``model_dump()``."""
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise CrossbarInputError(f"unknown config field {dotted!r}")
        node = node[key]
    return node


def set_field(data: dict, dotted: str, value: Any) -> None:
    """Set the value at a dotted path of a config's ``model_dump()`` (the path must exist)."""
    *parents, leaf = dotted.split(".")
    node: Any = data
    for key in parents:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            raise CrossbarInputError(f"unknown config field {dotted!r}")
        node = node[key]
    if leaf not in node:
        raise CrossbarInputError(f"unknown config field {dotted!r}")
    node[leaf] = value


#: Fields derived from another field: ``{derived path: (source path, rule)}``.  The one mechanism
#: for coupled fields (used by :meth:`HardwareConfig.replace`, hence by sweeps): when a change sets
#: the source, a derived field that followed the old source follows the new one.
COUPLED_FIELDS: dict[str, tuple[str, Any]] = {
    "nl_adc.ramp_devices": ("adc.bits", lambda bits: 2**bits),  # one ramp device per counter step
}


class HardwareConfig(_Section):
    """A complete hardware description (one JSON file)."""

    schema_version: Literal[1] = Field(description="version of this schema; must be 1")
    name: str = Field(max_length=200)
    description: str = Field(
        "", max_length=20_000, description="where every number comes from (paper, publication, assumption)"
    )
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    array: ArrayConfig = Field(default_factory=ArrayConfig)
    dac: DACConfig = Field(default_factory=DACConfig)
    adc: ADCConfig = Field(default_factory=ADCConfig)
    nl_adc: NLADCConfig = Field(default_factory=NLADCConfig)
    datapath: DatapathConfig = Field(default_factory=DatapathConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @model_validator(mode="after")
    def _check(self) -> HardwareConfig:
        if self.nl_adc.ramp_devices is not None and self.nl_adc.ramp_devices != 2**self.adc.bits:
            raise ValueError(
                f"nl_adc.ramp_devices ({self.nl_adc.ramp_devices}) must be null or 2^adc.bits = {2**self.adc.bits}"
            )
        return self

    def replace(self, **changes: Any) -> HardwareConfig:
        """A validated copy with dotted-path changes, e.g. ``replace(**{"adc.bits": 4})``.

        Coupled fields (:data:`COUPLED_FIELDS`) follow their source: a derived field that held the
        value derived from the old source (or null = "derived") is set from the new source unless the
        changes set it explicitly.  So ``replace(**{"adc.bits": 4})`` of a config with
        ``nl_adc.ramp_devices = 32`` and 5 bits gives ramp_devices 16.
        """
        data = self.model_dump()
        for dotted, value in changes.items():
            set_field(data, dotted, value)
        for derived, (source, rule) in COUPLED_FIELDS.items():
            if source in changes and derived not in changes:
                old = get_field(self.model_dump(), derived)
                if old is not None and old == rule(get_field(self.model_dump(), source)):
                    set_field(data, derived, rule(get_field(data, source)))
        return validate_config(data, source="<replace>")

    def torch_device(self):
        """The torch device this config asks for (``auto`` -> cuda when available)."""
        import torch

        want = self.simulation.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise CrossbarInputError("simulation.device is 'cuda' but no CUDA device is available")
        return torch.device(want)

    def torch_dtype(self):
        import torch

        return {"float32": torch.float32, "float64": torch.float64}[self.simulation.dtype]


def _format_error(err: ErrorDetails, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    value = err.get("input")
    try:
        shown = repr(value)
    except RecursionError:
        shown = "<deeply nested value>"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (not part of schema version 1)"
    elif err["type"] == "missing":
        return f"{source}: {loc or '<root>'}: required field is missing"
    where = loc or "<root>"
    if isinstance(value, dict):  # a whole-section check: the message names the fields
        return f"{source}: {where}: {msg.removeprefix('Value error, ')}"
    return f"{source}: {where} = {shown}: {msg.removeprefix('Value error, ')}"


def validate_config(data: Any, source: str = "<config>") -> HardwareConfig:
    """Validate a parsed JSON object into a :class:`HardwareConfig` (one clear error on failure)."""
    if not isinstance(data, dict):
        raise CrossbarInputError(f"{source}: the top level must be a JSON object, got {type(data).__name__}")
    if "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        raise CrossbarInputError(
            f"{source}: schema_version = {data['schema_version']!r}: this version of crossbar reads "
            f"schema_version {SCHEMA_VERSION}"
        )
    try:
        return HardwareConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _format_error(errors[0], source)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise CrossbarInputError(first + more) from None
    except RecursionError:
        raise CrossbarInputError(f"{source}: the JSON is nested too deeply") from None


def _no_duplicate_keys(pairs: list) -> dict:
    """JSON object hook: a key given twice is an error (JSON would silently keep the last)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


MAX_CONFIG_BYTES = 10 * 1024 * 1024


def load_config(path: str | Path | HardwareConfig | dict) -> HardwareConfig:
    """Load and validate a hardware-config JSON file (a loaded config is returned as is).

    A bare preset name (``rram_nladc_5b``) resolves to ``hw_configs/<name>.json``.
    """
    if isinstance(path, HardwareConfig):
        return path
    if isinstance(path, dict):  # an already parsed JSON object
        return validate_config(path, source="<dict>")
    if not isinstance(path, (str, Path)):
        raise CrossbarInputError(
            f"a config is a HardwareConfig, a dict, a JSON path or a preset name; got {type(path).__name__}"
        )
    p = Path(path)
    if not p.exists() and not p.suffix and (PRESET_DIR / f"{p.name}.json").is_file():
        p = PRESET_DIR / f"{p.name}.json"
    if not p.exists():
        raise CrossbarInputError(
            f"{path}: config file not found (give a path or a preset name: {', '.join(q.stem for q in preset_paths())})"
        )
    if not p.is_file():
        raise CrossbarInputError(f"{path}: not a regular file (a config is a JSON file)")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise CrossbarInputError(f"{path}: config file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = p.read_bytes().decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError:
        raise CrossbarInputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CrossbarInputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise CrossbarInputError(f"{path}: {exc}") from None
    except RecursionError:
        raise CrossbarInputError(f"{path}: the JSON is nested too deeply") from None
    return validate_config(data, source=str(path))


def json_schema() -> dict:
    """The JSON Schema of a hardware config (exported to ``hw_configs/schema.json``)."""
    schema = HardwareConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "crossbar hardware config (schema_version 1)"
    return schema


def check_schema_file(path: str | Path) -> None:
    """Check that a JSON Schema file equals the schema this code exports (else a clear error)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CrossbarInputError(f"{path}: cannot read JSON Schema ({exc})") from None
    if data != json.loads(json.dumps(json_schema())):
        raise CrossbarInputError(
            f"{path}: JSON Schema is out of date with the code; regenerate it with `crossbar schema --out {path}`"
        )


def is_json_schema_file(path: str | Path) -> bool:
    """True for a JSON document whose top level has a ``$schema`` key."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size > MAX_CONFIG_BYTES:  # never block on a FIFO or read a huge file
        return False
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "$schema" in data


def preset_paths() -> list[Path]:
    """The shipped presets (every ``hw_configs/*.json`` except the schema)."""
    return sorted(p for p in PRESET_DIR.glob("*.json") if p.name != "schema.json")


def default_config(**changes: Any) -> HardwareConfig:
    """An ideal config (every non-ideality off), with optional dotted-path changes."""
    cfg = HardwareConfig(schema_version=1, name="ideal")
    return cfg.replace(**changes) if changes else cfg


def _flat_config(cfg) -> dict:
    """A config's ``model_dump()`` as {dotted field path: value}."""
    out = {}

    def walk(prefix, node):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(key, v)
            else:
                out[key] = v

    walk("", cfg.model_dump())
    return out


def config_difference(a, b) -> list[str]:
    """Human-readable differing fields of two hardware configs (``name``/``description`` ignored)."""
    fa, fb = _flat_config(a), _flat_config(b)
    return [
        f"{k} ({fa.get(k)!r} vs {fb.get(k)!r})"
        for k in sorted(set(fa) | set(fb))
        if k not in ("name", "description") and fa.get(k) != fb.get(k)
    ]

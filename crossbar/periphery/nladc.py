"""The NL-ADC: a ramp ADC whose ramp is made in memory and pre-distorted so its code is f(x).

Model (the paper's principle; the details are our reconstruction, named here and in docs/nladc.md):

* **Design** (:func:`compile_design`): ``L = 2^bits`` output codes.  Output levels are uniform over
  f's output range (``mid_tread``: the range ends are levels; ``mid_rise``: bin centres), the
  boundaries between adjacent levels are mapped through f^-1 to input thresholds T_0 < ... <
  T_{L-2}, and code c outputs level c.  For a non-monotonic f (GELU, SiLU) the thresholds are every
  input where f crosses a level boundary, with the number of levels reduced until they fit in L
  codes, and a code-to-value table (LUT) gives each code's value.  ``design='data_aware'`` places
  the levels by Lloyd-Max on f(samples) (minimum expected squared output error; needs a LUT).
* **Ramp** (:class:`NLADC`): the ramp spans [x_lo, x_hi].  At cycle k the integrator adds the charge of
  ramp device k read at V_read, so the ramp after cycle k is R_k = (B + sum_{m<=k} G_m) / kappa: device
  m holds G_m = kappa (T_m - T_{m-1}) with T_{-1} = x_lo, T_{L-1} = x_hi (2^bits devices), and kappa
  (uS per pre-activation unit) puts the largest step at g_max.  The comparator flips when the ramp
  passes the column signal; the latched count is the code = #{k : R_k < y}.
* **Bias** (ours): the ramp start B = kappa x_lo comes from ``bias_devices`` memristors (paper: 5),
  all of the polarity of x_lo, read for ``bias_cycles`` cycles before the ramp (the smallest count that
  leaves 20 % headroom below g_max for calibration); those cycles add to the conversion time.
* **Calibration** (ours): after programming, the realised thresholds are measured (noise-free) and
  the bias is re-programmed to shift every threshold by the delta that minimises the max |INL|
  (golden-section search); ``calibration_iterations`` program-and-verify rounds.
* **Non-idealities**: ramp and bias devices pass through the same device model as the weights
  (programming error, levels, stuck-at, d2d range, drift).  Per-column static comparator offset and
  per-conversion comparator noise (sigma as a fraction of the ramp span), per-ramp integrator gain
  error.  Read noise of the ramp devices accumulates along the ramp; it enters as its marginal at
  the crossing: one Gaussian draw per conversion with variance sum_{m<=k} sigma(G_m)^2 / kappa^2
  (+ the bias devices'), k the noise-free code (an approximation of the random walk).
* **Ratio-metric read**: signal and ramp both scale with V_read, so thresholds scale by
  V_actual / V_nominal exactly as the signal does; only the comparator offset does not scale.

Shapes: realised thresholds are (M, C, L-1) for M instances and C columns; ``convert`` takes
(M, B, C) analog outputs and works on the whole tensor at once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from crossbar import devices
from crossbar.config import HardwareConfig
from crossbar.errors import CrossbarInputError
from crossbar.periphery import kernels
from crossbar.periphery.adc import input_range
from crossbar.periphery.functions import Activation, _bisect, crossings, get_activation, monotonic_pieces
from crossbar.periphery.sampling import comparison_variance, noisy_value
from crossbar.rng import generator, randn

if TYPE_CHECKING:
    from crossbar.normals import NoiseAt

BIAS_HEADROOM = 0.8  # bias devices are targeted at <= 80 % of g_max, leaving room for calibration


# ---------------------------------------------------------------------------------------- design
@dataclass(frozen=True)
class NLADCDesign:
    """Ideal thresholds and code values of one NL-ADC (float64, pre-activation units)."""

    function: str
    bits: int
    thresholds: torch.Tensor  # (L-1,) ascending
    values: torch.Tensor  # (L,) output value of each code
    x_lo: float  # ramp start
    x_hi: float  # ramp end
    needs_lut: bool  # True when values are not affine in the code
    levels_used: int  # distinct output levels (< L for non-monotonic functions)
    pieces: int  # monotonic pieces of f over the ramp span

    @property
    def codes(self) -> int:
        return self.values.numel()

    @property
    def steps(self) -> torch.Tensor:
        """Ramp increments (L,): T_m - T_{m-1} with T_{-1} = x_lo and T_{L-1} = x_hi."""
        edges = torch.cat(
            [
                torch.tensor([self.x_lo], dtype=torch.float64),
                self.thresholds,
                torch.tensor([self.x_hi], dtype=torch.float64),
            ]
        )
        return torch.diff(edges)

    def ideal_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes an ideal NL-ADC gives for inputs ``x`` (any shape)."""
        t = self.thresholds.to(x.device, x.dtype)
        return torch.searchsorted(t, x.contiguous(), right=False)

    def ideal_convert(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.to(x.device, x.dtype)[self.ideal_codes(x)]

    def hardware_summary(self) -> dict:
        """Extra hardware this design needs (for the cost model)."""
        return {
            "function": self.function,
            "bits": self.bits,
            "ramp_devices": self.codes,
            "needs_lut": self.needs_lut,
            "lut_bits": self.codes * self.bits if self.needs_lut else 0,
            "levels_used": self.levels_used,
            "pieces": self.pieces,
        }


# ---------------------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class RampSchedule:
    """One NL-ADC conversion as the counter sequences it -- the one definition the simulator
    (:attr:`NLADC.cycles_per_conversion`) and the cost model (``crossbar.cost.accounting``) share.

    Cycle by cycle: ``bias_cycles`` cycles reading the ``bias_devices`` bias memristors (the ramp
    start), then ``ramp_steps`` cycles reading one ramp device each (the counter counts these),
    then ``reset_cycles`` cycles resetting the integrator (``nl_adc.reset_cycles``).
    """

    ramp_steps: int
    bias_cycles: int
    reset_cycles: int
    bias_devices: int
    ramp_charge_us: float  # sum over the conversion of the conductance read, uS x cycles (1 cycle each)

    @property
    def cycles(self) -> int:
        """Counter cycles of one conversion: bias phase + ramp + reset."""
        return self.bias_cycles + self.ramp_steps + self.reset_cycles

    @property
    def devices(self) -> int:
        """Memristors of one ramp column: one per ramp step plus the bias devices."""
        return self.ramp_steps + self.bias_devices


def ramp_kappa(design: NLADCDesign, g_max: float) -> float:
    """uS per pre-activation unit: the largest ramp step is programmed at ``g_max`` (uS)."""
    top = float(design.steps.max())
    return g_max / top if top > 0 else 1.0


def bias_cycles(x_lo: float, kappa: float, bias_devices: int, g_max: float) -> int:
    """Cycles the bias devices are read: the fewest that leave ``BIAS_HEADROOM`` below ``g_max``
    (uS) on each of ``bias_devices`` devices while they add the ramp start |x_lo| kappa (uS x cycles)."""
    need = abs(x_lo) * kappa
    return max(1, math.ceil(need / (bias_devices * BIAS_HEADROOM * g_max))) if need > 0 else 1


def ramp_schedule(design: NLADCDesign, config: HardwareConfig) -> RampSchedule:
    """The conversion sequence of ``design`` under ``config`` (kappa from ``device.g_max``)."""
    g_max, nb = config.device.g_max, config.nl_adc.bias_devices
    kappa = ramp_kappa(design, g_max)
    n_bias = bias_cycles(design.x_lo, kappa, nb, g_max)
    charge = kappa * float(design.steps.sum()) + abs(design.x_lo) * kappa  # ramp devices + bias reads
    return RampSchedule(design.codes, n_bias, config.nl_adc.reset_cycles, nb, charge)


def readout_design(
    function, config: HardwareConfig, in_range=None, samples: torch.Tensor | None = None, bits: int | None = None
) -> NLADCDesign:
    """The design a column readout of ``function`` compiles under ``config`` (at ``bits``, default
    ``adc.bits``): the ramp spans f's own domain when ``adc.range_mode`` is ``function``, else
    ``in_range`` (``fixed``: adc.in_min/in_max); a linear function always uses a range
    (``in_range`` or adc.in_min/in_max)."""
    adc = config.adc
    act = get_activation(function)
    rng = input_range(adc, in_range)
    use_range = rng if (adc.range_mode != "function" or act.linear) else None
    if use_range is None and act.linear:
        use_range = (adc.in_min, adc.in_max)
    return compile_design(
        act,
        adc.bits if bits is None else bits,
        config.nl_adc.level_spacing,
        input_range=use_range,
        design=config.nl_adc.design,
        samples=samples,
    )


def level_grid(lo: float, hi: float, levels: int, spacing: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (levels,), boundaries (levels-1,)) of a uniform grid over [lo, hi]."""
    if spacing == "mid_tread":
        values = torch.linspace(lo, hi, levels, dtype=torch.float64)
    elif spacing == "mid_rise":
        d = (hi - lo) / levels
        values = lo + (torch.arange(levels, dtype=torch.float64) + 0.5) * d
    else:
        raise CrossbarInputError(f"level spacing {spacing!r} is not 'mid_tread' or 'mid_rise'")
    return values, 0.5 * (values[1:] + values[:-1])


def lloyd_max(y: torch.Tensor, levels: int, lo: float, hi: float, iters: int = 100) -> torch.Tensor:
    """1-D Lloyd-Max quantiser levels for samples ``y`` (start: uniform grid over [lo, hi])."""
    values = torch.linspace(lo, hi, levels, dtype=torch.float64)
    y = y.to(torch.float64).flatten()
    for _ in range(iters):
        bounds = 0.5 * (values[1:] + values[:-1])
        idx = torch.searchsorted(bounds, y)
        sums = torch.zeros(levels, dtype=torch.float64).index_add_(0, idx, y)
        counts = torch.zeros(levels, dtype=torch.float64).index_add_(0, idx, torch.ones_like(y))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), values)
        new = torch.sort(new).values
        if torch.allclose(new, values, atol=1e-12):
            break
        values = new
    return values


def _ramp_span(thresholds: torch.Tensor, domain: tuple[float, float], codes: int) -> tuple[float, float]:
    """Ramp span: one extra step of the neighbouring width beyond the outer thresholds, within the domain."""
    lo, hi = domain
    if thresholds.numel() >= 2:
        x_lo = max(lo, float(thresholds[0] - (thresholds[1] - thresholds[0])))
        x_hi = min(hi, float(thresholds[-1] + (thresholds[-1] - thresholds[-2])))
    else:
        x_lo, x_hi = lo, hi
    if thresholds.numel():
        x_lo = min(x_lo, float(thresholds[0]))
        x_hi = max(x_hi, float(thresholds[-1]))
    return x_lo, x_hi


def compile_design(
    fn,
    bits: int,
    level_spacing: str = "mid_tread",
    input_range=None,
    design: str = "uniform",
    samples: torch.Tensor | None = None,
    out_range=None,
    domain=None,
) -> NLADCDesign:
    """Pre-distort an NL-ADC for ``fn`` at ``bits`` bits.

    ``fn``: a registry name or a Python callable (then ``domain`` is needed).  ``input_range``:
    (lo, hi) fixing the ramp span; default the span the thresholds need within f's domain.
    ``design='data_aware'`` with ``samples`` (pre-activations the layer sees) fits the levels by
    Lloyd-Max; the uniform design is the paper's.
    """
    if not (isinstance(bits, int) and 1 <= bits <= 12):
        raise CrossbarInputError(f"NL-ADC bits must be an integer in 1..12, got {bits!r}")
    act: Activation = get_activation(fn, out_range=out_range, domain=domain)
    codes = 2**bits
    dom: tuple[float, float] = (float(input_range[0]), float(input_range[1])) if input_range is not None else act.domain
    if not dom[0] < dom[1]:
        raise CrossbarInputError(f"NL-ADC input range must be increasing, got {dom}")
    pieces = monotonic_pieces(act, dom[0], dom[1])
    # a linear readout outputs over its input range; other functions over their own range
    y_lo, y_hi = dom if act.linear and out_range is None else act.out_range

    if design == "data_aware":
        if samples is None or samples.numel() == 0:
            raise CrossbarInputError(
                "the data-aware NL-ADC design (nl_adc.design = 'data_aware') needs a sample of the "
                "pre-activations: calibrate the model on data first, or use nl_adc.design = 'uniform'"
            )
        if len(pieces) > 1:
            raise CrossbarInputError(
                f"the data-aware design supports monotonic functions; "
                f"{act.name} has {len(pieces)} monotonic pieces on {dom}"
            )
        ys = act.f(samples.detach().to(torch.float64).flatten().clamp(*dom))
        values = lloyd_max(ys, codes, y_lo, y_hi)
        boundaries = 0.5 * (values[1:] + values[:-1])
        thresholds = _monotonic_thresholds(act, boundaries, dom)
        increasing = _increasing(act, dom)
        values = values if increasing else values.flip(0)
        lo, hi = dom if input_range is not None else _ramp_span(thresholds, dom, codes)
        return NLADCDesign(act.name, bits, thresholds, values, lo, hi, True, codes, 1)
    if design != "uniform":
        raise CrossbarInputError(f"NL-ADC design {design!r} is not 'uniform' or 'data_aware'")

    if len(pieces) == 1:
        values, boundaries = level_grid(y_lo, y_hi, codes, level_spacing)
        thresholds = _monotonic_thresholds(act, boundaries, dom)
        if not _increasing(act, dom):
            values = values.flip(0)
        lo, hi = dom if input_range is not None else _ramp_span(thresholds, dom, codes)
        return NLADCDesign(act.name, bits, thresholds, values, lo, hi, False, codes, 1)

    # non-monotonic: the most levels whose boundary crossings fit in `codes` codes
    best = None
    for levels in range(codes, 1, -1):
        values, boundaries = level_grid(y_lo, y_hi, levels, level_spacing)
        t = crossings(act, boundaries, *dom)
        if t.numel() + 1 <= codes:
            best = (levels, values, t)
            break
    if best is None:
        raise CrossbarInputError(f"{act.name} cannot be represented with {codes} codes on {dom}")
    levels, values, t = best
    # pad unused codes with thresholds at the ramp end (codes that never occur)
    pad = codes - 1 - t.numel()
    thresholds = torch.cat([t, torch.full((pad,), dom[1], dtype=torch.float64)])
    mids = torch.cat(
        [torch.tensor([dom[0]], dtype=torch.float64), thresholds, torch.tensor([dom[1]], dtype=torch.float64)]
    )
    centres = 0.5 * (mids[1:] + mids[:-1])
    fc = act.f(centres)
    code_values = values[torch.argmin((fc[:, None] - values[None, :]).abs(), 1)]
    return NLADCDesign(act.name, bits, thresholds, code_values, dom[0], dom[1], True, levels, len(pieces))


def _increasing(act: Activation, dom) -> bool:
    return bool(act.f(torch.tensor(dom[1], dtype=torch.float64)) >= act.f(torch.tensor(dom[0], dtype=torch.float64)))


def _monotonic_thresholds(act: Activation, boundaries: torch.Tensor, dom) -> torch.Tensor:
    """f^-1 of each boundary by bisection on ``dom`` (clamped to the ends), ascending in x."""
    t = _bisect(act.f, dom[0], dom[1], boundaries.to(torch.float64))
    return torch.sort(t).values


# ------------------------------------------------------------------------------- INL / DNL
def code_position(design: NLADCDesign, x: torch.Tensor) -> torch.Tensor:
    """Continuous code coordinate of inputs: ideal threshold k maps to k, linear in between and
    extrapolated with the end step widths (so INL is in LSB of the local step)."""
    t = design.thresholds.to(x.device, x.dtype)
    if t.numel() == 1:
        return (x - t[0]) / max(design.x_hi - design.x_lo, 1e-12) * 2
    idx = torch.searchsorted(t, x.contiguous()).clamp(1, t.numel() - 1)
    t0, t1 = t[idx - 1], t[idx]
    width = (t1 - t0).clamp(min=1e-12)
    return (idx - 1).to(x.dtype) + (x - t0) / width


def inl_lsb(design: NLADCDesign, realised: torch.Tensor) -> torch.Tensor:
    """INL of each realised threshold (..., L-1), in LSB."""
    k = torch.arange(design.codes - 1, dtype=realised.dtype, device=realised.device)
    return code_position(design, realised) - k


def dnl_lsb(design: NLADCDesign, realised: torch.Tensor) -> torch.Tensor:
    """DNL of each inner code (..., L-2), in LSB (-1 = missing code)."""
    pos = code_position(design, realised)
    return torch.diff(pos, dim=-1) - 1.0


def best_offset(design: NLADCDesign, realised: torch.Tensor, iters: int = 80) -> torch.Tensor:
    """The shift delta (...) of all thresholds that minimises max_k |INL_k| (golden section).

    max_k |INL_k(delta)| is quasi-convex in delta (each term is monotonic in delta), so golden
    section search on [-span, span] finds its minimum.
    """
    span = design.x_hi - design.x_lo
    lo = torch.full(realised.shape[:-1], -span, dtype=realised.dtype, device=realised.device)
    hi = -lo
    phi = (math.sqrt(5) - 1) / 2

    def cost(d):
        return inl_lsb(design, realised + d.unsqueeze(-1)).abs().amax(-1)

    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(iters):
        left = fa <= fb
        hi = torch.where(left, b, hi)
        lo = torch.where(left, lo, a)
        a_new, b_new = hi - phi * (hi - lo), lo + phi * (hi - lo)
        a, b = a_new, b_new
        fa, fb = cost(a), cost(b)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------- hardware
def _ratio(effective: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Attenuation effective / g (1 where g = 0)."""
    return torch.where(g > 0, effective / g.clamp(min=1e-300), torch.ones_like(g))


@dataclass
class CalibrationReport:
    inl_max_before: torch.Tensor  # (M, C) max |INL| in LSB before calibration
    inl_max_after: torch.Tensor  # (M, C) after


def reference_codes(
    y: torch.Tensor,
    t: torch.Tensor,
    read_var: torch.Tensor,
    noise: torch.Tensor | None,
    v_scale: float,
    cmp_sigma: float,
    in_var: torch.Tensor | None = None,
) -> torch.Tensor:
    """The NL-ADC conversion's definition: (M, B, C) codes for inputs ``y`` (M, B, C) against
    thresholds ``t`` (M, C, L-1).

    Code = number of thresholds below the input.  With ``noise`` (M, B, C standard normals) the
    input first gets sd * noise, one Gaussian for everything that is noisy at the comparison:
    sd^2 = read_var[ideal code] * v_scale^2 (the ramp's accumulated read noise where it crosses the
    input) + cmp_sigma^2 (comparator) + ``in_var`` (the input's own variance: the array's read noise
    on the column, (M, B, C)) -- :func:`~crossbar.periphery.sampling.comparison_variance` and
    :func:`~crossbar.periphery.sampling.noisy_value` (the root correctly rounded, so the CPU kernel
    and torch on CPU or CUDA agree).
    """
    yt = y.transpose(1, 2).contiguous()  # (M, C, B): searchsorted per column
    code = torch.searchsorted(t, yt, right=False)
    if noise is not None:
        s = comparison_variance(
            torch.gather(read_var, 2, code.clamp(max=read_var.shape[-1] - 1)),
            v_scale**2,
            cmp_sigma**2,
            None if in_var is None else in_var.transpose(1, 2),
        )
        code = torch.searchsorted(t, noisy_value(yt, s, noise.transpose(1, 2)), right=False)
    return code.transpose(1, 2)


class NLADC(nn.Module):
    """A bank of NL-ADCs for ``columns`` columns and M device instances (state: programmed devices).

    Use: ``NLADC(design, config, columns).program(seed, instances)`` then ``convert(y)``.

    An ``nn.Module``: the calibrated state -- ``thresholds``, ``ramp_thresholds`` (M, C, L-1),
    ``offsets`` (M, C, 1), ``read_var`` (M, C, L-1) -- are buffers (not persistent and not moved by
    ``.to()``, as :class:`crossbar.tile.Tile`'s: the owning layer's state and rebuild carry them).
    """

    thresholds: torch.Tensor | None
    ramp_thresholds: torch.Tensor | None
    offsets: torch.Tensor | None
    read_var: torch.Tensor | None

    def __init__(self, design: NLADCDesign, config: HardwareConfig, columns: int):
        super().__init__()
        self.design, self.config, self.columns = design, config, int(columns)
        self.device = config.torch_device()
        self.dtype = config.torch_dtype()
        dev = config.device
        steps = design.steps
        if bool((steps < 0).any()):
            raise CrossbarInputError("NL-ADC thresholds must be ascending")
        self.kappa = ramp_kappa(design, dev.g_max)  # uS per pre-activation unit
        self.g_ramp_target = self.kappa * steps  # (L,) uS, float64
        self.range_violations = int(((self.g_ramp_target < dev.g_min) & (self.g_ramp_target > 0)).sum())
        self.schedule = ramp_schedule(design, config)
        nb = self.schedule.bias_devices
        need = abs(design.x_lo) * self.kappa
        self.bias_sign = -1.0 if design.x_lo < 0 else 1.0
        self.bias_cycles = self.schedule.bias_cycles
        self.g_bias_target = torch.full((nb,), need / (nb * self.bias_cycles), dtype=torch.float64)
        # programmed state (set by program() / restore())
        # (M, C, L-1) realised thresholds (nominal V_read, offset and gain), the same without the
        # comparator offsets, (M, C, 1) comparator offsets, (M, C, L-1) accumulated ramp read-noise variance
        for name in ("thresholds", "ramp_thresholds", "offsets", "read_var"):
            self.register_buffer(name, None, persistent=False)
        self._has_read_noise: bool | None = None
        self._sorted: bool | None = None
        self._t_kc: torch.Tensor | None = None
        self.calibration: CalibrationReport | None = None
        self.ramp_scales: list[float] = []  # the scale_ramp() factors applied to the design, in order

    @property
    def span(self) -> float:
        return self.design.x_hi - self.design.x_lo

    def scale_ramp(self, s: float) -> NLADC:
        """Use ``s`` x kappa uS per pre-activation unit (0 < s <= 1): every ramp and bias target
        scales by s, the thresholds (ramp / kappa) do not -- the headroom below g_max that
        IR-drop-aware programming needs to boost the largest ramp devices."""
        if not 0 < s <= 1:
            raise CrossbarInputError(f"NL-ADC ramp scale {s!r} must be in (0, 1]")
        self.kappa *= s
        self.ramp_scales = [*self.ramp_scales, float(s)]  # a new list: copies do not share it
        self.schedule = replace(self.schedule, ramp_charge_us=self.schedule.ramp_charge_us * s)
        self.g_ramp_target = self.g_ramp_target * s
        self.g_bias_target = self.g_bias_target * s
        g_min = self.config.device.g_min
        self.range_violations = int(((self.g_ramp_target < g_min) & (self.g_ramp_target > 0)).sum())
        return self

    @property
    def cycles_per_conversion(self) -> int:
        """Counter cycles of one conversion (:class:`RampSchedule`: bias phase + ramp + reset)."""
        return self.schedule.cycles

    # -------------------------------------------------------------- programming + calibration
    def program(
        self,
        seed: int | None = None,
        instances: int | None = None,
        name: str = "nladc",
        inject_stuck_off: list[int] | None = None,
        first: int = 0,
        site=None,
    ) -> NLADC:
        """Program ramp and bias devices for every instance (and column unless the ramp is shared),
        then calibrate the bias when ``nl_adc.calibration`` is on.

        ``inject_stuck_off``: ramp-device indices forced stuck at OFF in every ramp (fault tests).
        ``site``: where the devices sit in the array with IR drop (:class:`crossbar.tile.RampSite`);
        then every threshold -- measured by the calibration and realised -- comes from the devices'
        effective conductances through the wires (all other devices in place), the ramp read noise
        is attenuated like the ramp, and with ``array.wires.ir_drop_aware_programming`` the ramp and
        bias targets are pre-distorted.  Without a site the devices are their conductances.
        """
        cfg, dev = self.config, self.config.device
        seed = cfg.simulation.seed if seed is None else int(seed)
        m_count = cfg.simulation.mc_instances if instances is None else int(instances)
        ramps = 1 if cfg.nl_adc.shared_ramp else self.columns
        L = self.design.codes
        ramp_t, read_var, offsets = [], [], []
        before, after = [], []
        ramp_target = self.g_ramp_target.expand(ramps, L)
        bias_target0 = self.g_bias_target.expand(ramps, -1)
        if site is not None and cfg.array.wires.ir_drop_aware_programming:
            ramp_target, bias_target0 = site.aware_targets(
                ramp_target, bias_target0, cfg.array.wires.aware_iterations, dev
            )
        self._site, self._devices = site, []
        if site is not None:
            site.warm()  # the arrays' weight rows of all instances solved at once (IR drop)
        # every instance's first draws (ramp, gain, offsets, bias); with IR drop what those devices
        # deliver through the wires, all instances in one batch of solves; then each instance's
        # calibration (an instance draws from its own generator, in the same order as ever)
        drawn = []
        for m in range(first, first + m_count):
            gen = generator(seed, f"program/{name}", m, "cpu")
            ramp = devices.program(ramp_target.clone(), dev, gen)
            g_ramp = ramp.g
            if inject_stuck_off:
                g_ramp[:, list(inject_stuck_off)] = dev.g_min
            gains_m = (1 + cfg.nl_adc.integrator_gain_sigma * randn((ramps, 1), gen, torch.float64)).clamp(min=0.05)
            offs_m = cfg.nl_adc.comparator_offset_sigma * self.span * randn((self.columns, 1), gen, torch.float64)
            bias = devices.program(bias_target0.clone(), dev, gen)
            drawn.append((gen, ramp, g_ramp, gains_m, offs_m, bias))
        first_effective: list = [None] * m_count
        if site is not None and drawn:
            first_effective = site.effective_many(
                list(range(m_count)), torch.stack([d[2] for d in drawn]), torch.stack([d[5].g for d in drawn])
            )
        # with IR drop the calibration measures the array once, exactly (the batch above); later
        # reads of the instance's devices use that measurement's attenuation (calibration only
        # re-programs the bias devices, a few cells of the array)
        attenuation: list[tuple[torch.Tensor, torch.Tensor]] = []
        t_reals: list[torch.Tensor] = []
        biases = [d[5] for d in drawn]
        for (_gen, _ramp, g_ramp, gains_m, offs_m, bias), e_first in zip(drawn, first_effective):
            delivered = (g_ramp, bias.g)
            if site is not None:
                delivered = e_first
                attenuation.append((_ratio(e_first[0], g_ramp), _ratio(e_first[1], bias.g)))
            t_reals.append(self._thresholds(*delivered, gains_m, offs_m))
            before.append(inl_lsb(self.design, t_reals[-1]).abs().amax(-1))

        def eff(i: int, g_r: torch.Tensor, g_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """What instance ``i``'s devices deliver to the integrator."""
            if site is None:
                return g_r, g_b
            a_r, a_b = attenuation[i]
            return a_r * g_r, a_b * g_b

        if cfg.nl_adc.calibration and drawn:
            for _ in range(cfg.nl_adc.calibration_iterations):
                # the best shift of every instance's thresholds in one search (element-wise over
                # instances and columns: the same numbers as one instance at a time)
                deltas = best_offset(self.design, torch.stack(t_reals))  # (M, C)
                for i, (gen, _ramp, g_ramp, gains_m, offs_m, _b) in enumerate(drawn):
                    delta = deltas[i]
                    if ramps == 1:
                        delta = delta.mean(0, keepdim=True)  # one bias for a shared ramp
                    # shift the ramp start by delta: B' = B + delta kappa / gain, realised by the
                    # bias devices programmed one after another with verify (device limits apply)
                    shift = (delta[:, None] * self.kappa / gains_m) / (self.bias_sign * self.bias_cycles)
                    bias = biases[i]
                    biases[i] = self._program_bias_sequential(bias.g.sum(-1, keepdim=True) + shift, bias, dev, gen)
                    t_reals[i] = self._thresholds(*eff(i, g_ramp, biases[i].g), gains_m, offs_m)
        for i, ((_gen, ramp, g_ramp, gains_m, offs_m, _b), bias, t_real) in enumerate(zip(drawn, biases, t_reals)):
            m = first + i
            after.append(inl_lsb(self.design, t_real).abs().amax(-1))
            # drift to the time of inference (ramp and bias devices drift like the weights)
            g_ramp_t = devices.at_inference(g_ramp, ramp, dev.drift)
            g_bias_t = devices.at_inference(bias.g, bias, dev.drift)
            offsets.append(offs_m)
            final: Callable = lambda a, b, i=i: eff(i, a, b)  # noqa: E731
            if site is not None:
                site.attach(m - first, g_ramp_t, g_bias_t)
                self._devices.append((g_ramp_t, g_bias_t, gains_m))
                if not site.deferred:  # exact now (else refresh() computes it with every device final)
                    final = lambda a, b, m_local=m - first: site.effective(m_local, a, b)  # noqa: E731
            t_m, var_m = self._realised(g_ramp_t, g_bias_t, gains_m, final)
            ramp_t.append(t_m)
            read_var.append(var_m)
        self.ramp_thresholds = torch.stack(ramp_t).to(self.device, self.dtype)  # (M, C, L-1)
        self.offsets = torch.stack(offsets).to(self.device, self.dtype)  # (M, C, 1)
        self.thresholds = self.ramp_thresholds + self.offsets
        self.read_var = torch.stack(read_var).to(self.device, self.dtype)  # (M, C, L-1)
        self._has_read_noise = self._sorted = self._t_kc = None
        self.calibration = CalibrationReport(torch.stack(before), torch.stack(after))
        self.seed, self.name = seed, name
        return self

    def _realised(self, g_ramp_t, g_bias_t, gains_m, eff):
        """Thresholds (C, L-1) without comparator offset and ramp read-noise variances (C, L-1) of
        one instance's devices at inference; ``eff`` maps devices to what reaches the integrator."""
        dev = self.config.device
        e_ramp, e_bias = eff(g_ramp_t, g_bias_t)
        t_m = self._thresholds(e_ramp, e_bias, gains_m, torch.zeros(self.columns, 1, dtype=torch.float64))
        var = devices.noise_sigma(g_ramp_t, dev.read_noise) ** 2
        bvar_dev = devices.noise_sigma(g_bias_t, dev.read_noise) ** 2
        if e_ramp is not g_ramp_t:  # through the wires: sigma attenuated like the conductance
            var = var * _ratio(e_ramp, g_ramp_t) ** 2
            bvar_dev = bvar_dev * _ratio(e_bias, g_bias_t) ** 2
        bvar = bvar_dev.sum(-1, keepdim=True) * self.bias_cycles**2
        var_m = ((torch.cumsum(var, -1)[..., :-1] + bvar) * (gains_m / self.kappa) ** 2).expand(self.columns, -1)
        return t_m, var_m

    def refresh(self) -> NLADC:
        """Recompute the realised thresholds from the devices' effective conductances after other
        devices of the array changed (IR drop: another NL-ADC's devices were placed); a no-op
        without a site."""
        site = getattr(self, "_site", None)
        if site is None or self.thresholds is None:
            return self
        ramp_t, read_var = [], []
        nb, L = self.g_bias_target.numel(), self.design.codes
        for m_local, (g_r, g_b, gains_m) in enumerate(self._devices):
            t_m, var_m = self._realised(g_r, g_b, gains_m, lambda a, b, m=m_local: site.from_tile(m, nb, L))
            ramp_t.append(t_m)
            read_var.append(var_m)
        self.restore(
            torch.stack(ramp_t).to(self.device, self.dtype),
            self._programmed(self.offsets),
            torch.stack(read_var).to(self.device, self.dtype),
        )
        return self

    @staticmethod
    def _program_bias_sequential(total: torch.Tensor, bias, dev, gen):
        """Program-and-verify the bias devices one by one so their sum approaches ``total`` (R, 1).

        Device j is targeted at (total - realised sum of devices < j) / (devices left); the last one
        absorbs the residual, so only its programming error (and the device limits) remain.
        """
        nb = bias.g.shape[-1]
        g = bias.g.clone()
        done = torch.zeros_like(total)
        for j in range(nb):
            target = ((total - done) / (nb - j)).clamp(dev.g_min, dev.g_max)
            one = devices.program(target, dev, gen)
            g[:, j : j + 1] = one.g
            bias.nu[:, j : j + 1] = one.nu
            if bias.z_acc is not None:
                bias.z_acc[:, j : j + 1] = one.z_acc
            done = done + one.g
        return devices.ProgrammedDevices(g=g, g_max_dev=bias.g_max_dev, nu=bias.nu, stuck=bias.stuck, z_acc=bias.z_acc)

    def _thresholds(self, g_ramp, g_bias, gain=1.0, offset=0.0) -> torch.Tensor:
        """Realised thresholds (C, L-1) from ramp (R, L) and bias (R, nb) conductances."""
        start = self.bias_sign * self.bias_cycles * g_bias.sum(-1, keepdim=True)
        ramp = (start + torch.cumsum(g_ramp, -1)[..., :-1]) / self.kappa * gain
        return ramp.expand(self.columns, -1) + offset

    # ------------------------------------------------------------------------- conversion
    @property
    def instances(self) -> int:
        return 0 if self.thresholds is None else self.thresholds.shape[0]

    def restore(self, ramp_thresholds: torch.Tensor, offsets: torch.Tensor, read_var: torch.Tensor) -> None:
        """Set a programmed state saved earlier (an analog checkpoint): (M, C, L-1) ramp thresholds,
        comparator offsets and read-noise variances."""
        self.ramp_thresholds, self.offsets, self.read_var = ramp_thresholds, offsets, read_var
        self.thresholds = ramp_thresholds + offsets
        self._has_read_noise = self._sorted = self._t_kc = None

    def programmed_state(self) -> dict:
        """Everything :meth:`program` decided, as CPU tensors and plain values: what
        :meth:`load_programmed_state` needs to rebuild this NL-ADC on a fresh design without
        drawing or calibrating again."""
        ramp_t, offsets, read_var = self.ramp_thresholds, self.offsets, self.read_var
        if ramp_t is None or offsets is None or read_var is None:
            raise CrossbarInputError("the NL-ADC is not programmed yet: call program(seed) first")
        cal = self.calibration
        return {
            "ramp_thresholds": ramp_t.cpu(),
            "offsets": offsets.cpu(),
            "read_var": read_var.cpu(),
            "ramp_scales": list(self.ramp_scales),
            "seed": self.seed,
            "name": self.name,
            "inl_max_before": None if cal is None else cal.inl_max_before.cpu(),
            "inl_max_after": None if cal is None else cal.inl_max_after.cpu(),
        }

    def load_programmed_state(self, state: dict) -> NLADC:
        """Rebuild the programmed NL-ADC from :meth:`programmed_state` (on this NL-ADC's device and
        dtype): the design's ramp scale (IR-drop-aware headroom), thresholds, offsets, read-noise
        variances and calibration report."""
        if self.ramp_scales:
            raise CrossbarInputError("load_programmed_state needs a fresh NL-ADC design (its ramp was scaled)")
        for s in state["ramp_scales"]:  # the same factors in the same order: the same kappa bit for bit
            self.scale_ramp(float(s))
        dev, dt = self.device, self.dtype
        self.restore(state["ramp_thresholds"].to(dev, dt), state["offsets"].to(dev, dt), state["read_var"].to(dev, dt))
        before, after = state.get("inl_max_before"), state.get("inl_max_after")
        self.calibration = None if before is None or after is None else CalibrationReport(before, after)
        self.seed, self.name = state["seed"], state["name"]
        self._site, self._devices = None, []
        return self

    def effective_thresholds(self, v_scale: float = 1.0) -> torch.Tensor:
        """(M, C, L-1) thresholds at V_read = v_scale x nominal (the comparator offset does not scale)."""
        thresholds = self._programmed(self.thresholds)
        if v_scale == 1.0:
            return thresholds
        return self._programmed(self.ramp_thresholds) * v_scale + self._programmed(self.offsets)

    def codes(
        self,
        y: torch.Tensor,
        noise: NoiseAt | None = None,
        v_scale: float = 1.0,
        noisy: bool = True,
        var: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Integer codes (M, B, C) for analog column outputs ``y`` (M, B, C).

        ``var`` (M, B, C): variance of ``y`` itself (the array's read noise), drawn together with the
        converter's own noise as one Gaussian per conversion (see :func:`reference_codes`) from
        ``noise`` (:class:`crossbar.normals.NoiseAt`: this conversion's place in a normal stream).
        ``noisy=False`` leaves out all per-conversion noise (comparator, ramp and array read noise).
        """
        t = self.effective_thresholds(v_scale)
        if y.dim() != 3 or y.shape[0] != t.shape[0] or y.shape[-1] != self.columns:
            raise CrossbarInputError(
                f"NL-ADC input must be (M={t.shape[0]}, B, C={self.columns}), got {tuple(y.shape)}"
            )
        y = y.to(t.dtype)
        read_var = self._programmed(self.read_var)
        cmp_sigma = self.comparator_sigma
        z = None
        if noisy and self.draws_noise(var is not None):
            if noise is None:
                raise CrossbarInputError(
                    "NL-ADC noise is on: pass the conversion's noise (NormalStream.at()) to codes()/convert()"
                )
            z = noise.draw(y.shape, y.dtype, y.device)
        in_var = var.to(y.dtype) if (z is not None and var is not None) else None
        if self.kernel_ok(y, v_scale):
            return kernels.nl_codes(y, t, read_var, z, v_scale**2, cmp_sigma**2, in_var, self.thresholds_kc(v_scale))
        return reference_codes(y, t, read_var, z, v_scale, cmp_sigma, in_var)

    @property
    def comparator_sigma(self) -> float:
        """Per-conversion comparator noise sigma in input units (a fraction of the ramp span)."""
        return self.config.nl_adc.comparator_noise_sigma * self.span

    def draws_noise(self, input_variance: bool) -> bool:
        """Whether a (noisy) conversion draws a Gaussian: comparator noise, ramp read noise, or an
        input with its own variance (the array's read noise)."""
        return self.comparator_sigma > 0 or self.has_read_noise or input_variance

    @property
    def has_read_noise(self) -> bool:
        """Whether the ramp devices have read noise (cached per programming)."""
        if self._has_read_noise is None:
            rv = self._programmed(self.read_var)
            self._has_read_noise = bool(rv.max() > 0) if rv.numel() else False
        return self._has_read_noise

    def kernel_ok(self, y: torch.Tensor, v_scale: float) -> bool:
        """Whether the CPU kernel computes this conversion (else the torch definition does)."""
        if self._sorted is None:  # realised ramps are monotonic; the CPU kernel relies on it
            t = self._programmed(self.thresholds)
            self._sorted = bool((t[..., 1:] >= t[..., :-1]).all())
        return y.device.type == "cpu" and kernels.available() and not y.requires_grad and self._sorted and v_scale > 0

    def thresholds_kc(self, v_scale: float = 1.0) -> torch.Tensor:
        """Thresholds as (M, L-1, C), the CPU kernel's layout (cached at nominal V_read)."""
        if v_scale != 1.0:
            return self.effective_thresholds(v_scale).transpose(1, 2).contiguous()
        if self._t_kc is None:
            self._t_kc = self._programmed(self.thresholds).transpose(1, 2).contiguous()
        return self._t_kc

    @staticmethod
    def _programmed(state: torch.Tensor | None) -> torch.Tensor:
        """``state`` of a programmed NL-ADC, or the error that says to program it first."""
        if state is None:
            raise CrossbarInputError("the NL-ADC is not programmed yet: call program(seed, instances) first")
        return state

    def convert(
        self,
        y: torch.Tensor,
        noise: NoiseAt | None = None,
        v_scale: float = 1.0,
        noisy: bool = True,
        var: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Activation values (M, B, C) straight from the codes (no digital activation needed)."""
        values = self.design.values.to(y.device, y.dtype)
        return values[self.codes(y, noise, v_scale, noisy, var)]

    def extra_repr(self) -> str:
        nl = self.config.nl_adc
        return (
            f"function={self.design.function}, bits={self.design.bits}, columns={self.columns}, "
            f"ramp={'shared' if nl.shared_ramp else 'per-column'}, bias_devices={nl.bias_devices}, "
            f"calibration={nl.calibration}, instances={self.instances}"
        )

    def _apply(self, fn, recurse=True):
        """Buffers stay as programmed (see the class docstring)."""
        return self

    def __copy__(self):
        """A shallow copy whose buffers can be replaced without touching the original's (a plain
        ``copy.copy`` of a module shares its buffer dict)."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        for key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            new.__dict__[key] = copy.copy(self.__dict__[key])
        return new

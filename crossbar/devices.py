"""The memristor device model: pure functions on conductance tensors (uS).

``program`` turns target conductances into the conductances one device instance really holds
(range limits, device-to-device range variation, discrete levels, programming error, stuck
devices); ``read`` adds per-read noise; ``drift`` applies power-law relaxation after programming.

Modelling choices (ours; the paper does not give its device statistics):

* programming error and read noise are Gaussian with sigma(G) = sqrt(sigma_abs^2 + (sigma_rel G)^2)
  or a measured sigma(G) table (linear interpolation, clamped at the ends);
* a programmed device cannot leave its own range [g_min, g_max_i]: results are clipped;
* each device's upper limit g_max_i = g_max (1 + range_d2d_rel z) (device-to-device variation);
* a stuck-at-OFF device reads g_min, a stuck-at-ON device its own g_max_i, whatever its target;
* drift: G(t) = G(t0) (t / t0)^(-nu_i), nu_i ~ N(nu, nu_std) clipped at 0, drawn per device (nu,
  nu_std optionally functions of the target conductance);
* optional accumulated 1/f noise at the time of inference (the form of aihwkit's PCM-like model);
* empirical mode (measured devices, ``crossbar fit-device``): the programming error and the
  relaxation after programming are resampled from measured distributions -- inverse-CDF tables of
  quantiles per conductance bin (and per time since programming), one uniform rank per device --
  instead of Gaussians and a power law, because real RRAM relaxation is heavy-tailed;
* optional slow read noise of time series (``read_noise.flicker``): a sum of Ornstein-Uhlenbeck
  components (a 1/f-like spectrum), see :func:`flicker`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from crossbar.autograd import straight_through
from crossbar.config import DeviceConfig, DriftSpec, ErrorQuantiles, FlickerNoise, NoiseSpec, RelaxationQuantiles
from crossbar.errors import CrossbarInputError
from crossbar.pointwise import zero_slope_at_zero
from crossbar.rng import rand, randn


def interpolate(g: torch.Tensor, table_g: list[float], values: list[float]) -> torch.Tensor:
    """Piecewise-linear table lookup at ``g`` (clamped to the table's ends)."""
    xs = torch.tensor(table_g, dtype=g.dtype, device=g.device)
    ys = torch.tensor(values, dtype=g.dtype, device=g.device)
    gc = g.clamp(xs[0], xs[-1])
    idx = torch.searchsorted(xs, gc.contiguous(), right=True).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    return y0 + (y1 - y0) * (gc - x0) / (x1 - x0)


def noise_sigma(g: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """Noise sigma (uS) at conductance ``g`` (uS) for a :class:`NoiseSpec`."""
    if spec.table is not None:
        return interpolate(g, spec.table.g, spec.table.sigma)
    var = spec.sigma_abs**2 + (spec.sigma_rel * g) ** 2
    # under autograd (hardware-aware training) a zero variance -- no noise, or G = 0 with only
    # relative noise -- passes back 0, not NaN
    return zero_slope_at_zero(torch.sqrt, var) if var.requires_grad else torch.sqrt(var)


def _bracket(x: torch.Tensor, xs: torch.Tensor):
    """Indices i0, i1 and weight w with value = (1 - w) v[i0] + w v[i1]: linear interpolation on the
    increasing grid ``xs`` (clamped at its ends; a one-point grid gives that point)."""
    if len(xs) == 1:
        zero = torch.zeros(x.shape, dtype=torch.long, device=x.device)
        return zero, zero, torch.zeros_like(x)
    xc = x.clamp(xs[0], xs[-1])
    i1 = torch.searchsorted(xs, xc.contiguous(), right=True).clamp(1, len(xs) - 1)
    i0 = i1 - 1
    return i0, i1, (xc - xs[i0]) / (xs[i1] - xs[i0])


def _time_bracket(t: torch.Tensor, ts: torch.Tensor):
    """Like :func:`_bracket` over the table times: linear in log t, linear in t from ts[0] = 0 to
    ts[1]; no change before ts[0] (weight 0 at index 0), held after ts[-1]."""
    tc = t.clamp(ts[0], ts[-1])
    i1 = torch.searchsorted(ts, tc.contiguous(), right=True).clamp(1, len(ts) - 1)
    i0 = i1 - 1
    t0, t1 = ts[i0], ts[i1]
    lin = (tc - t0) / (t1 - t0)
    with torch.no_grad():
        safe0 = torch.where(t0 > 0, t0, torch.ones_like(t0))
    logw = (torch.log(tc.clamp(min=1e-300)) - torch.log(safe0)) / (torch.log(t1) - torch.log(safe0))
    return i0, i1, torch.where(t0 > 0, logw, lin).clamp(0, 1)


def _table(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def error_quantile(target: torch.Tensor, spec: ErrorQuantiles, u: torch.Tensor) -> torch.Tensor:
    """Q(target, u): the measured programming error (uS) of rank ``u`` at ``target`` (uS)."""
    g, p, q = _table(spec.g, target), _table(spec.p, target), _table(spec.q, target)
    b0, b1, wb = _bracket(target, g)
    p0, p1, wp = _bracket(u, p)
    qf, n_p = q.reshape(-1), q.shape[1]

    def at(b):
        lo, hi = qf.take(b * n_p + p0), qf.take(b * n_p + p1)
        return lo + (hi - lo) * wp

    at0, at1 = at(b0), at(b1)
    return at0 + (at1 - at0) * wb


def relaxation_quantile(key: torch.Tensor, spec: RelaxationQuantiles, t, u: torch.Tensor) -> torch.Tensor:
    """Q(key, t, u) of a relaxation table (uS) for bin keys ``key`` (uS), times ``t`` (s, a number or
    a tensor broadcastable to ``key``) and ranks ``u``."""
    g, ts, p, q = (_table(spec.g, key), _table(spec.t, key), _table(spec.p, key), _table(spec.q, key))
    t = torch.as_tensor(t, dtype=key.dtype, device=key.device).expand_as(key)
    b0, b1, wb = _bracket(key, g)
    k0, k1, wt = _time_bracket(t, ts)
    p0, p1, wp = _bracket(u, p)

    qf, n_t, n_p = q.reshape(-1), q.shape[1], q.shape[2]

    def at(b, k):
        base = (b * n_t + k) * n_p
        lo, hi = qf.take(base + p0), qf.take(base + p1)
        return lo + (hi - lo) * wp

    first = at(b0, k0) + (at(b0, k1) - at(b0, k0)) * wt
    second = at(b1, k0) + (at(b1, k1) - at(b1, k0)) * wt
    return first + (second - first) * wb


def relax(g: torch.Tensor, p: ProgrammedDevices, spec: RelaxationQuantiles, t) -> torch.Tensor:
    """Conductances ``g`` (uS, as programmed into ``p``) ``t`` s after programming under a measured
    relaxation table: g + Q(key, t, u) - Q(key, t[0], u), clipped at 0 uS; stuck devices stay put."""
    if spec.reference == "target":
        key = p.z_acc
        if key is None:
            raise CrossbarInputError(
                "these devices were programmed without the relaxation table's targets "
                "(program them with the device config that holds the table)"
            )
    else:
        key = g
    u = p.nu
    inc = relaxation_quantile(key, spec, t, u) - relaxation_quantile(key, spec, spec.t[0], u)
    return torch.where(p.stuck != 0, g, (g + inc).clamp(min=0.0))


def quantize_to_levels(g: torch.Tensor, dev: DeviceConfig) -> torch.Tensor:
    """Round ``g`` to the nearest of ``dev.levels`` evenly spaced levels in [g_min, g_max]."""
    if dev.levels is None:
        return g
    step = (dev.g_max - dev.g_min) / (dev.levels - 1)
    return straight_through(g, dev.g_min + torch.round((g - dev.g_min) / step).clamp(0, dev.levels - 1) * step)


@dataclass
class ProgrammedDevices:
    """What one programming pass leaves on the chip (all tensors have the target's shape).

    With a measured relaxation table (``drift.relaxation``, empirical mode) the power-law drift and
    the accumulated noise are off, and their two per-device fields carry the table's per-device
    state instead: ``nu`` the device's rank u in [0, 1) in the measured distributions and, for a
    ``target``-referenced table, ``z_acc`` its (quantised) target conductance in uS.  Code that
    copies devices field by field (the NL-ADC's sequential bias programming) so keeps them.
    """

    g: torch.Tensor  # conductance right after programming, uS
    g_max_dev: torch.Tensor  # each device's own upper limit, uS
    nu: torch.Tensor  # each device's drift exponent (empirical relaxation: its rank u)
    stuck: torch.Tensor  # int8: 0 ok, -1 stuck at OFF, +1 stuck at ON
    z_acc: torch.Tensor | None = None  # standard normal of the accumulated 1/f noise (when modelled;
    #                                    empirical relaxation by target: the device's target, uS)


def program(g_target: torch.Tensor, dev: DeviceConfig, gen: torch.Generator) -> ProgrammedDevices:
    """Program target conductances (uS) through the device model with generator ``gen``.

    The draws happen in a fixed order (range, programming error, stuck, drift, then -- each only
    when modelled -- accumulated noise, the empirical programming rank, the empirical relaxation
    rank) so that the result depends only on the generator's state and the target's shape, and a
    feature that is off draws nothing.

    Empirical mode: with ``programming.quantiles`` the programmed conductance is target + Q(target, u)
    (clipped at 0 uS only: the measured distribution is the device's range, reads above g_max
    included); with ``drift.relaxation`` each device gets a rank for :func:`at_inference` (the same
    rank as its programming error for a ``target``-referenced table, an independent one for a
    ``first_read`` table).
    """
    shape, dtype, device = g_target.shape, g_target.dtype, g_target.device
    z_range = randn(shape, gen, dtype, device)
    z_prog = randn(shape, gen, dtype, device)
    u_stuck = rand(shape, gen, dtype, device)
    z_nu = randn(shape, gen, dtype, device)
    spec = dev.drift
    quantiles, relaxation = dev.programming.quantiles, spec.relaxation
    # drawn last and only when modelled, so the other draws do not depend on them
    z_acc = None if spec.accumulated_noise is None else randn(shape, gen, dtype, device)
    u_prog = None if quantiles is None else rand(shape, gen, dtype, device)
    u_relax = None
    if relaxation is not None:
        shared = relaxation.reference == "target" and u_prog is not None
        u_relax = u_prog if shared else rand(shape, gen, dtype, device)

    g_max_dev = (dev.g_max * (1 + dev.range_d2d_rel * z_range)).clamp(min=dev.g_min)
    target = quantize_to_levels(g_target.clamp(dev.g_min, dev.g_max), dev)
    target = torch.minimum(target, g_max_dev)
    if quantiles is None:
        g = target + noise_sigma(target, dev.programming) * z_prog
        g = torch.maximum(torch.minimum(g, g_max_dev), torch.full_like(g, dev.g_min))
    else:
        assert u_prog is not None  # drawn above whenever the quantile table is modelled
        g = (target + error_quantile(target, quantiles, u_prog)).clamp(min=0.0)

    stuck = torch.zeros(shape, dtype=torch.int8, device=device)
    off = u_stuck < dev.stuck_off_prob
    on = (u_stuck >= dev.stuck_off_prob) & (u_stuck < dev.stuck_off_prob + dev.stuck_on_prob)
    stuck[off], stuck[on] = -1, 1
    g = torch.where(off, torch.full_like(g, dev.g_min), g)
    g = torch.where(on, g_max_dev, g)

    if relaxation is not None:  # the table's per-device state (see ProgrammedDevices)
        assert u_relax is not None  # drawn above whenever the relaxation table is modelled
        nu = u_relax
        z_acc = target.clone() if relaxation.reference == "target" else None
    elif spec.nu_table is None:
        nu = (spec.nu + spec.nu_std * z_nu).clamp(min=0.0)
    else:  # conductance-dependent drift, by the device's target
        tab = spec.nu_table
        nu = (interpolate(target, tab.g, tab.nu) + interpolate(target, tab.g, tab.nu_std) * z_nu).clamp(min=0.0)
    return ProgrammedDevices(g=g, g_max_dev=g_max_dev, nu=nu, stuck=stuck, z_acc=z_acc)


def drift(g: torch.Tensor, nu: torch.Tensor, t: float, t0: float) -> torch.Tensor:
    """Conductance at time ``t`` (s) after programming verified at ``t0`` (s): g (t/t0)^-nu."""
    if t <= t0:
        return g
    return g * (t / t0) ** (-nu)


def at_inference(g: torch.Tensor, p: ProgrammedDevices, spec: DriftSpec) -> torch.Tensor:
    """Conductances ``g`` (uS, as programmed into ``p``) at ``spec.t_inference``: power-law drift,
    then the accumulated 1/f noise |G(t)| q(G) sqrt(ln((t + t_read) / (2 t_read))) z when modelled
    (clipped at 0 uS) -- or, with a measured relaxation table, :func:`relax` at t_inference."""
    if spec.relaxation is not None:
        return relax(g, p, spec.relaxation, spec.t_inference)
    g_t = drift(g, p.nu, spec.t_inference, spec.t0)
    acc = spec.accumulated_noise
    if acc is None or p.z_acc is None:
        return g_t
    amplitude = math.sqrt(math.log((spec.t_inference + acc.t_read) / (2 * acc.t_read)))
    return (g_t + g_t.abs() * interpolate(g, acc.g, acc.q) * amplitude * p.z_acc).clamp(min=0.0)


def conductance_at(g: torch.Tensor, p: ProgrammedDevices, spec: DriftSpec, t: torch.Tensor) -> torch.Tensor:
    """:func:`at_inference` with a time per device: conductances ``g`` (uS, as programmed into ``p``)
    at ``t`` (s since programming, a tensor of ``g``'s shape), e.g. the reads of a measurement
    file.  The same model (and, in float64, the same numbers at t = t_inference); the accumulated
    noise is 0 before t reaches t_read."""
    if spec.relaxation is not None:
        return relax(g, p, spec.relaxation, t)
    t = torch.as_tensor(t, dtype=g.dtype, device=g.device).expand_as(g)
    g_t = torch.where(t > spec.t0, g * (t / spec.t0) ** (-p.nu), g)
    acc = spec.accumulated_noise
    if acc is None or p.z_acc is None:
        return g_t
    amplitude = torch.sqrt(torch.log((t + acc.t_read) / (2 * acc.t_read)).clamp(min=0.0))
    return (g_t + g_t.abs() * interpolate(g, acc.g, acc.q) * amplitude * p.z_acc).clamp(min=0.0)


def read(g: torch.Tensor, spec: NoiseSpec, gen: torch.Generator) -> torch.Tensor:
    """One noisy read of conductances ``g`` (uS); the noise is drawn fresh at every call."""
    if spec.is_zero:
        return g
    return g + noise_sigma(g, spec) * randn(g.shape, gen, g.dtype, g.device)


def flicker(
    g_ref: np.ndarray, spec: FlickerNoise, group: np.ndarray, t: np.ndarray, gen: torch.Generator
) -> np.ndarray:
    """Slow read noise (uS) of reads in time series: one value per read.

    ``group[r]`` is the index into ``g_ref`` (each series' conductance, uS, which sets the
    components' sigmas) of read r and ``t[r]`` its time (s).  Each series starts stationary and each
    component k follows x(t') = rho x(t) + sigma_k sqrt(1 - rho^2) z with rho = exp(-(t' - t) / tau_k)
    (exact for any spacing of the reads).  One standard normal per read and component, drawn from
    ``gen`` in the order of the reads.
    """
    group = np.asarray(group, dtype=np.int64)
    t = np.asarray(t, dtype=np.float64)
    n, tau = len(t), np.asarray(spec.tau, dtype=np.float64)
    z = randn((n, len(tau)), gen, torch.float64).numpy()
    gq = np.asarray(g_ref, dtype=np.float64)
    table_g, table_s = np.asarray(spec.g, dtype=np.float64), np.asarray(spec.sigma, dtype=np.float64)
    sig = np.stack([np.interp(gq, table_g, table_s[:, k]) for k in range(len(tau))], axis=1)  # (series, K)
    order = np.lexsort((t, group))
    gs, ts = group[order], t[order]
    start = np.ones(n, dtype=bool)
    start[1:] = gs[1:] != gs[:-1]
    dt = np.empty(n)
    dt[0] = np.inf
    dt[1:] = np.diff(ts)
    dt[start] = np.inf
    rho = np.exp(-dt[:, None] / tau[None, :])  # 0 at the start of each series
    e = sig[gs] * np.sqrt(1.0 - rho**2) * z[order]
    x = _ar1(e, rho, start)
    out = np.empty(n)
    out[order] = x.sum(axis=1)
    return out


def _ar1(e: np.ndarray, rho: np.ndarray, start: np.ndarray) -> np.ndarray:
    """x[r] = rho[r] x[r-1] + e[r] (rows sorted by series; rho = 0 at a series' start)."""
    from scipy.signal import lfilter

    n = len(e)
    x = np.empty_like(e)
    bounds = np.flatnonzero(start).tolist() + [n]
    irregular = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = rho[a + 1 : b]
        if b - a >= 64 and np.all(seg == seg[0]):  # evenly spaced: one linear filter per component
            for k in range(e.shape[1]):
                x[a:b, k] = lfilter([1.0], [1.0, -seg[0, k]], e[a:b, k])
        else:
            irregular.append((a, b))
    if irregular:  # step through the reads' positions, all irregular series at once
        starts = np.array([a for a, _ in irregular])
        lengths = np.array([b - a for a, b in irregular])
        x[starts] = e[starts]
        for j in range(1, int(lengths.max())):
            rows = starts[lengths > j] + j
            x[rows] = rho[rows] * x[rows - 1] + e[rows]
    return x

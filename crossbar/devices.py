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
* optional accumulated 1/f noise at the time of inference (the form of aihwkit's PCM-like model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crossbar.autograd import straight_through
from crossbar.config import DeviceConfig, DriftSpec, NoiseSpec
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
    return torch.sqrt(spec.sigma_abs ** 2 + (spec.sigma_rel * g) ** 2)


def quantize_to_levels(g: torch.Tensor, dev: DeviceConfig) -> torch.Tensor:
    """Round ``g`` to the nearest of ``dev.levels`` evenly spaced levels in [g_min, g_max]."""
    if dev.levels is None:
        return g
    step = (dev.g_max - dev.g_min) / (dev.levels - 1)
    return straight_through(g, dev.g_min + torch.round((g - dev.g_min) / step).clamp(0, dev.levels - 1) * step)


@dataclass
class ProgrammedDevices:
    """What one programming pass leaves on the chip (all tensors have the target's shape)."""

    g: torch.Tensor          # conductance right after programming, uS
    g_max_dev: torch.Tensor  # each device's own upper limit, uS
    nu: torch.Tensor         # each device's drift exponent
    stuck: torch.Tensor      # int8: 0 ok, -1 stuck at OFF, +1 stuck at ON
    z_acc: torch.Tensor | None = None  # standard normal of the accumulated 1/f noise (when modelled)


def program(g_target: torch.Tensor, dev: DeviceConfig, gen: torch.Generator) -> ProgrammedDevices:
    """Program target conductances (uS) through the device model with generator ``gen``.

    The draws happen in a fixed order (range, programming error, stuck, drift) so that the result
    depends only on the generator's state and the target's shape.
    """
    shape, dtype, device = g_target.shape, g_target.dtype, g_target.device
    z_range = randn(shape, gen, dtype, device)
    z_prog = randn(shape, gen, dtype, device)
    u_stuck = rand(shape, gen, dtype, device)
    z_nu = randn(shape, gen, dtype, device)

    g_max_dev = (dev.g_max * (1 + dev.range_d2d_rel * z_range)).clamp(min=dev.g_min)
    target = quantize_to_levels(g_target.clamp(dev.g_min, dev.g_max), dev)
    target = torch.minimum(target, g_max_dev)
    g = target + noise_sigma(target, dev.programming) * z_prog
    g = torch.maximum(torch.minimum(g, g_max_dev), torch.full_like(g, dev.g_min))

    stuck = torch.zeros(shape, dtype=torch.int8, device=device)
    off = u_stuck < dev.stuck_off_prob
    on = (u_stuck >= dev.stuck_off_prob) & (u_stuck < dev.stuck_off_prob + dev.stuck_on_prob)
    stuck[off], stuck[on] = -1, 1
    g = torch.where(off, torch.full_like(g, dev.g_min), g)
    g = torch.where(on, g_max_dev, g)

    spec = dev.drift
    if spec.nu_table is None:
        nu = (spec.nu + spec.nu_std * z_nu).clamp(min=0.0)
    else:  # conductance-dependent drift, by the device's target
        tab = spec.nu_table
        nu = (interpolate(target, tab.g, tab.nu) + interpolate(target, tab.g, tab.nu_std) * z_nu).clamp(min=0.0)
    # drawn last and only when modelled, so the other draws do not depend on it
    z_acc = None if spec.accumulated_noise is None else randn(shape, gen, dtype, device)
    return ProgrammedDevices(g=g, g_max_dev=g_max_dev, nu=nu, stuck=stuck, z_acc=z_acc)


def drift(g: torch.Tensor, nu: torch.Tensor, t: float, t0: float) -> torch.Tensor:
    """Conductance at time ``t`` (s) after programming verified at ``t0`` (s): g (t/t0)^-nu."""
    if t <= t0:
        return g
    return g * (t / t0) ** (-nu)


def at_inference(g: torch.Tensor, p: ProgrammedDevices, spec: DriftSpec) -> torch.Tensor:
    """Conductances ``g`` (uS, as programmed into ``p``) at ``spec.t_inference``: power-law drift,
    then the accumulated 1/f noise |G(t)| q(G) sqrt(ln((t + t_read) / (2 t_read))) z when modelled
    (clipped at 0 uS)."""
    g_t = drift(g, p.nu, spec.t_inference, spec.t0)
    acc = spec.accumulated_noise
    if acc is None or p.z_acc is None:
        return g_t
    amplitude = math.sqrt(math.log((spec.t_inference + acc.t_read) / (2 * acc.t_read)))
    return (g_t + g_t.abs() * interpolate(g, acc.g, acc.q) * amplitude * p.z_acc).clamp(min=0.0)


def read(g: torch.Tensor, spec: NoiseSpec, gen: torch.Generator) -> torch.Tensor:
    """One noisy read of conductances ``g`` (uS); the noise is drawn fresh at every call."""
    if spec.is_zero:
        return g
    return g + noise_sigma(g, spec) * randn(g.shape, gen, g.dtype, g.device)

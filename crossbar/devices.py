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
* drift: G(t) = G(t0) (t / t0)^(-nu_i), nu_i ~ N(nu, nu_std) clipped at 0, drawn per device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from crossbar.autograd import straight_through
from crossbar.config import DeviceConfig, NoiseSpec
from crossbar.rng import rand, randn


def noise_sigma(g: torch.Tensor, spec: NoiseSpec) -> torch.Tensor:
    """Noise sigma (uS) at conductance ``g`` (uS) for a :class:`NoiseSpec`."""
    if spec.table is not None:
        xs = torch.tensor(spec.table.g, dtype=g.dtype, device=g.device)
        ys = torch.tensor(spec.table.sigma, dtype=g.dtype, device=g.device)
        gc = g.clamp(xs[0], xs[-1])
        idx = torch.searchsorted(xs, gc.contiguous(), right=True).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
        return y0 + (y1 - y0) * (gc - x0) / (x1 - x0)
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

    nu = (dev.drift.nu + dev.drift.nu_std * z_nu).clamp(min=0.0)
    return ProgrammedDevices(g=g, g_max_dev=g_max_dev, nu=nu, stuck=stuck)


def drift(g: torch.Tensor, nu: torch.Tensor, t: float, t0: float) -> torch.Tensor:
    """Conductance at time ``t`` (s) after programming verified at ``t0`` (s): g (t/t0)^-nu."""
    if t <= t0:
        return g
    return g * (t / t0) ** (-nu)


def read(g: torch.Tensor, spec: NoiseSpec, gen: torch.Generator) -> torch.Tensor:
    """One noisy read of conductances ``g`` (uS); the noise is drawn fresh at every call."""
    if spec.is_zero:
        return g
    return g + noise_sigma(g, spec) * randn(g.shape, gen, g.dtype, g.device)

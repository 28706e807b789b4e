"""Activation registry: the functions an NL-ADC can compute.

Each :class:`Activation` has the torch function, its output range (where the NL-ADC's output
levels live), a default input range (where the ramp runs when the config does not fix one) and,
for sigmoid and tanh, the digital unit's form that a programmed chip computes after an ideal or a
conventional ADC (:mod:`crossbar.elementary`; :meth:`Activation.chip`).
Inverses are not stored: :func:`crossings` finds every input where f crosses a level by bisection,
so any callable works, monotonic or not (GELU, SiLU), through the same code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from crossbar.elementary import sigmoid_digital, tanh_digital
from crossbar.errors import CrossbarInputError


@dataclass(frozen=True)
class Activation:
    """A scalar function f applied elementwise, with its ranges."""

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    out_range: tuple[float, float]  # output levels span this range
    domain: tuple[float, float]  # default ramp input range
    linear: bool = False  # a linear readout: its range comes from calibration, the output
    # spans the input range, and saturation loses information
    digital: Callable[[torch.Tensor], torch.Tensor] | None = None  # the chip's digital unit's f

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)

    def chip(self, x: torch.Tensor) -> torch.Tensor:
        """f as a programmed chip computes it digitally (after an ideal or a conventional ADC): the
        digital unit's form where there is one (sigmoid, tanh: :mod:`crossbar.elementary`), else f."""
        return self.f(x) if self.digital is None else self.digital(x)


def _relu6(x):
    return x.clamp(0.0, 6.0)


REGISTRY: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("sigmoid", torch.sigmoid, (0.0, 1.0), (-8.0, 8.0), digital=sigmoid_digital),
        Activation("tanh", torch.tanh, (-1.0, 1.0), (-4.0, 4.0), digital=tanh_digital),
        # torch's hardsigmoid: relu6(x + 3) / 6
        Activation("hard_sigmoid", F.hardsigmoid, (0.0, 1.0), (-3.0, 3.0)),
        Activation("softsign", F.softsign, (-1.0, 1.0), (-32.0, 32.0)),
        # clipped ReLU = ReLU6
        Activation("clipped_relu", _relu6, (0.0, 6.0), (-0.5, 6.0)),
        Activation("identity", lambda x: x, (-1.0, 1.0), (-1.0, 1.0), linear=True),
        Activation("gelu", F.gelu, (-0.17, 4.0), (-4.0, 4.0)),
        Activation("silu", F.silu, (-0.28, 4.0), (-6.0, 4.0)),
    ]
}


def get_activation(fn: str | Activation | Callable, out_range=None, domain=None) -> Activation:
    """Look up a named activation, or wrap a Python callable (``out_range`` and ``domain`` needed).

    Named functions come from a fixed registry; nothing is ever evaluated from a string.
    """
    if isinstance(fn, Activation):
        act = fn
    elif isinstance(fn, str):
        if fn not in REGISTRY:
            raise CrossbarInputError(f"unknown activation {fn!r}; known: {', '.join(REGISTRY)}")
        act = REGISTRY[fn]
    elif callable(fn):
        if domain is None:
            raise CrossbarInputError("a callable activation needs domain=(x_lo, x_hi)")
        name = getattr(fn, "__name__", "callable")
        if out_range is None:
            xs = torch.linspace(domain[0], domain[1], 4097, dtype=torch.float64)
            ys = fn(xs)
            out_range = (float(ys.min()), float(ys.max()))
        act = Activation(name, fn, tuple(out_range), tuple(domain))
    else:
        raise CrossbarInputError(f"activation must be a name or a callable, got {type(fn).__name__}")
    if out_range is not None or domain is not None:
        act = Activation(act.name, act.f, tuple(out_range or act.out_range), tuple(domain or act.domain))
    if not act.out_range[0] < act.out_range[1] or not act.domain[0] < act.domain[1]:
        raise CrossbarInputError(
            f"activation {act.name!r}: ranges must be increasing, got out_range={act.out_range}, domain={act.domain}"
        )
    return act


def monotonic_pieces(act: Activation, lo: float, hi: float, grid: int = 8193) -> list[tuple[float, float]]:
    """Split [lo, hi] at the extrema of f into pieces on which f is monotonic.  Steps smaller than
    1e-12 of f's span count as flat: rounding noise in a flat tail (torch's float64 GELU below
    x = -5.5, where 1 + erf cancels) is not an extremum."""
    xs = torch.linspace(lo, hi, grid, dtype=torch.float64)
    y = act.f(xs)
    dy = torch.diff(y)
    d = torch.where(dy.abs() > 1e-12 * float(y.max() - y.min()), torch.sign(dy), torch.zeros_like(dy))
    cuts = [lo]
    last = 0.0
    for i, s in enumerate(d.tolist()):
        if s == 0:
            continue
        if last != 0 and s != last:
            cuts.append(float(xs[i]))
        last = s
    cuts.append(hi)
    return list(zip(cuts[:-1], cuts[1:]))


def _bisect(f, a: float, b: float, targets: torch.Tensor, iters: int = 80) -> torch.Tensor:
    """x in [a, b] with f(x) = target for a monotonic f on [a, b] (vectorised over targets)."""
    increasing = bool(f(torch.tensor(b, dtype=torch.float64)) >= f(torch.tensor(a, dtype=torch.float64)))
    lo = torch.full_like(targets, a)
    hi = torch.full_like(targets, b)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = f(mid) < targets if increasing else f(mid) > targets
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def crossings(act: Activation, boundaries: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Sorted inputs in (lo, hi) where f crosses any of ``boundaries`` (float64)."""
    found = []
    for a, b in monotonic_pieces(act, lo, hi):
        fa = float(act.f(torch.tensor(a, dtype=torch.float64)))
        fb = float(act.f(torch.tensor(b, dtype=torch.float64)))
        inside = boundaries[(boundaries > min(fa, fb)) & (boundaries < max(fa, fb))]
        if inside.numel():
            found.append(_bisect(act.f, a, b, inside.to(torch.float64)))
    if not found:
        return torch.empty(0, dtype=torch.float64)
    return torch.sort(torch.cat(found)).values

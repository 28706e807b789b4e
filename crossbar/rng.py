"""Seeded random generators, one per purpose.

Every random draw in the simulator comes from a ``torch.Generator`` made here from
``(seed, purpose, instance)``.  Purposes are independent streams, so changing how many numbers one
purpose draws (say read noise) never changes another (say programming).  Each Monte-Carlo instance
has its own stream, so a batch of M instances equals M separate runs with the same seeds.
"""

from __future__ import annotations

import hashlib

import torch

from crossbar.errors import CrossbarInputError


def derive_seed(seed: int, purpose: str, instance: int = 0) -> int:
    """A stable 63-bit seed for ``(seed, purpose, instance)`` (same on every platform)."""
    digest = hashlib.sha256(f"{int(seed)}|{purpose}|{int(instance)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, purpose: str, instance: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``(seed, purpose, instance)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, purpose, instance))
    return gen


def randn(shape, gen: torch.Generator, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal draws (drawn on the generator's device, then moved)."""
    return torch.randn(shape, generator=gen, dtype=dtype, device=gen.device).to(device)


def rand(shape, gen: torch.Generator, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Uniform [0, 1) draws."""
    return torch.rand(shape, generator=gen, dtype=dtype, device=gen.device).to(device)


def instance_generators(
    seed: int, purpose: str, first: int, count: int, device: str | torch.device = "cpu"
) -> list[torch.Generator]:
    """Generators for instances ``first .. first+count-1`` of one purpose."""
    return [generator(seed, purpose, first + m, device) for m in range(count)]


def randn_instances(gens, shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal draws of shape (M, *shape): instance m from ``gens[m]``.

    ``gens`` may also be a single generator, which then draws the whole (M, *shape) block
    (faster, but instance m then depends on M)."""
    if isinstance(gens, torch.Generator):
        return randn(tuple(shape), gens, dtype, device)
    if len(gens) == 1:  # the same draws without the copy of a stack
        return randn(tuple(shape[1:]), gens[0], dtype, device).unsqueeze(0)
    return torch.stack([randn(tuple(shape[1:]), g, dtype, device) for g in gens])


MAX_INSTANCES = 100_000


def check_instance_args(seed, instances, first) -> None:
    """One clear error for a seed, Monte-Carlo instance count or first instance that is not allowed
    (the arguments of every ``program()``)."""
    for name, value, lo in (("seed", seed, 0), ("instances", instances, 1), ("first", first, 0)):
        if value is None and name != "first":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise CrossbarInputError(f"program(): {name} must be an integer >= {lo}, got {value!r}")
    if instances is not None and instances > MAX_INSTANCES:
        raise CrossbarInputError(f"program(): at most {MAX_INSTANCES} instances, got {instances}")

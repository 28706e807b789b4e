"""The component library: energy, area and latency figures with their sources, and node scaling.

A library is a JSON file (``format`` = ``crossbar.cost_library``)::

    {"format": "crossbar.cost_library", "version": 1,
     "scaling": {"model": ..., "source": ..., "vdd_v": {"45": 0.9, "16": 0.8, ...}},
     "components": {"<name>": {"description": ..., "node_nm": 45, "energy_pj": 0.2, "per": "operation",
                               "area_um2": 282, "latency_cycles": 1, "source": ..., "calibrated": null}}}

Every figure names its ``source``; a figure fitted to a target says how in ``calibrated``.

Node scaling (``scaling``): classical constant-field scaling (Dennard et al., IEEE JSSC 9(5), 1974)
with each node's nominal supply -- area ~ L^2, switched capacitance ~ L, energy ~ C * Vdd^2 -- so

    area(L) = area(L0) * (L / L0)^2,     energy(L) = energy(L0) * (L / L0) * (Vdd(L) / Vdd(L0))^2.

Stillmaker & Baas (Integration 58, 2017) show that below ~22 nm this classical rule can be off by
a factor of several; figures close to the target node keep the error small, which is why the
default library prefers sources near 16 nm and states every figure's own node.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crossbar.errors import CrossbarInputError

DEFAULT_LIBRARY = Path(__file__).with_name("default_library.json")
FORMAT = "crossbar.cost_library"
MAX_LIBRARY_BYTES = 2_000_000

#: components the accounting reads (a library must define all of them)
REQUIRED = (
    "rram_cell",
    "word_line_driver",
    "column_converter",
    "ramp_reference",
    "flip_flop",
    "adder_8b",
    "multiplier_8b",
    "fp16_adder",
    "fp16_multiplier",
    "sram_read_64b_8kb",
    "sram_bitcell",
    "sar_adc",
    "activation_lut",
    "activation_pwl",
    "activation_cordic",
)


class Component(BaseModel):
    """One component: figures at ``node_nm`` and where they come from."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    node_nm: float = Field(ge=3, le=250)
    energy_pj: float | None = Field(None, ge=0, le=1e9, description="energy per `per`, pJ")
    per: str = Field("operation", min_length=1, description="what one energy unit is")
    area_um2: float | None = Field(None, ge=0, le=1e12)
    latency_cycles: float | None = Field(None, ge=0, le=1e6)
    source: str = Field(min_length=3)
    calibrated: str | None = Field(None, description="how the figure was fitted, when it was")


class Scaling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    source: str = Field(min_length=3)
    vdd_v: dict[str, float] = Field(min_length=2)


class Library(BaseModel):
    """A validated component library."""

    model_config = ConfigDict(extra="forbid")

    format: str
    version: int
    description: str = ""
    scaling: Scaling
    components: dict[str, Component]

    # ------------------------------------------------------------------ scaled figures
    def _get(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise CrossbarInputError(f"component library: no component {name!r}") from None

    def vdd(self, node_nm: float) -> float:
        """Nominal supply (V) at ``node_nm``, log-linear between the listed nodes."""
        table = sorted((float(k), v) for k, v in self.scaling.vdd_v.items())
        nodes = [n for n, _ in table]
        if not nodes[0] <= node_nm <= nodes[-1]:
            raise CrossbarInputError(
                f"component library: node {node_nm} nm is outside the scaling table ({nodes[0]:g}-{nodes[-1]:g} nm)"
            )
        for (n0, v0), (n1, v1) in zip(table, table[1:]):
            if n0 <= node_nm <= n1:
                t = 0.0 if n1 == n0 else (math.log(node_nm) - math.log(n0)) / (math.log(n1) - math.log(n0))
                return v0 + t * (v1 - v0)
        return table[-1][1]

    def energy_j(self, name: str, node_nm: float) -> float:
        """Energy per operation of ``name`` scaled to ``node_nm``, J."""
        c = self._get(name)
        if c.energy_pj is None:
            raise CrossbarInputError(f"component library: {name!r} has no energy_pj")
        factor = (node_nm / c.node_nm) * (self.vdd(node_nm) / self.vdd(c.node_nm)) ** 2
        return c.energy_pj * 1e-12 * factor

    def area_um2(self, name: str, node_nm: float) -> float:
        """Area of ``name`` scaled to ``node_nm``, um^2."""
        c = self._get(name)
        if c.area_um2 is None:
            raise CrossbarInputError(f"component library: {name!r} has no area_um2")
        return c.area_um2 * (node_nm / c.node_nm) ** 2

    def latency_cycles(self, name: str) -> float:
        c = self._get(name)
        if c.latency_cycles is None:
            raise CrossbarInputError(f"component library: {name!r} has no latency_cycles")
        return c.latency_cycles

    def sources(self) -> dict[str, dict]:
        """{component: {source, calibrated, node_nm}} for reports."""
        return {
            k: {"source": c.source, "calibrated": c.calibrated, "node_nm": c.node_nm}
            for k, c in self.components.items()
        }


def load_library(path: str | Path | None = None) -> Library:
    """Load and validate a library (``None`` or ``"default"``: the shipped one)."""
    p = DEFAULT_LIBRARY if path in (None, "default") else Path(path)
    if not p.is_file():
        raise CrossbarInputError(f"component library {str(p)!r} not found")
    if p.stat().st_size > MAX_LIBRARY_BYTES:
        raise CrossbarInputError(f"component library {str(p)!r} is larger than {MAX_LIBRARY_BYTES} bytes")
    try:
        data = json.loads(p.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CrossbarInputError(f"component library {p}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CrossbarInputError(
            f"component library {p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise CrossbarInputError(f"component library {p}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CrossbarInputError(f"component library {p}: 'format' must be {FORMAT!r}")
    try:
        lib = Library.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise CrossbarInputError(f"component library {p}: field {where!r}: {err['msg']}") from None
    missing = [name for name in REQUIRED if name not in lib.components]
    if missing:
        raise CrossbarInputError(
            f"component library {p}: missing component(s) {', '.join(missing)} "
            f"(the accounting needs {', '.join(REQUIRED)})"
        )
    for key in lib.scaling.vdd_v:
        try:
            float(key)
        except ValueError:
            raise CrossbarInputError(f"component library {p}: scaling.vdd_v key {key!r} is not a node in nm") from None
    return lib


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (use finite numbers)")

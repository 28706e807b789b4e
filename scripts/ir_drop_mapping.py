"""Which weight mapping survives IR drop?  The MVM error of a tile with the differential and the
offset mapping vs wire resistance.

One weight matrix of ``--rows`` inputs (the bias row included) x ``--cols`` outputs on one physical
array (``array.rows`` / ``array.cols`` its size), ideal devices (no programming or read noise, g_min
1, g_max 100 uS: only the wires differ), weights normal with standard deviation 0.25 clipped to
[-1, 1], inputs uniform in [-1, 1].  For each r = r_wl = r_bl (ohm) and mapping the tile's column
outputs y (pre-activation units) are compared with the same tile's at r = 0 (y0):

* gain: the least-squares k of y ~ k y0 (a pure attenuation, which the NL-ADC's ramp can partly
  track and a calibration can rescale);
* residual: |y - k y0| / |y0| (Frobenius norms over inputs and columns), what no gain removes.

differential: G+ and G- in two arrays of the same layout, the signal T+ - T-; offset: one array
whose last bit line (the end far from the drivers) is the reference column at g_mid, subtracted
from every output (see crossbar/layout.py); "+ aware": the mapping before it with IR-drop-aware
programming (``array.wires.ir_drop_aware_programming``, 3 iterations).

A second table moves the offset mapping's reference column: the tile's programmed devices (r = 0
programming) assembled into one array by hand with the reference column first (next to the
drivers), in the middle or last (the simulator's layout, which the first table's tile uses), each
solved with :func:`crossbar.parasitics.effective_matrix`; the residual as above.  The simulator
itself places the reference column last only.  Run:

    .venv/bin/python scripts/ir_drop_mapping.py [--rows 169] [--cols 256] [--r 0.01,0.03,0.1,0.3,1]
"""

from __future__ import annotations

import argparse
import math

import torch

from crossbar.config import default_config
from crossbar.layout import reference_column
from crossbar.parasitics import effective_matrix
from crossbar.rng import generator
from crossbar.tile import Tile


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"error: {name} {text!r}: expected comma-separated numbers") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise SystemExit(f"error: {name} {text!r}: expected finite resistances >= 0 ohm")
    return values


def _tile(w: torch.Tensor, b: torch.Tensor, mapping: str, r: float = 0.0, aware: bool = False) -> Tile:
    """The weights ``w`` (out, inputs) and bias ``b`` programmed (instance 0) on one physical array
    with ideal devices, r = r_wl = r_bl ohm (``aware``: with IR-drop-aware programming)."""
    changes = {"array.rows": w.shape[1] + 1, "array.cols": w.shape[0], "array.mapping": mapping}
    # (the offset mapping's reference column is one more bit line after array.cols)
    changes.update({"device.g_min": 1.0, "device.g_max": 100.0, "simulation.dtype": "float64"})
    changes.update({"array.wires.r_wl": r, "array.wires.r_bl": r, "array.wires.ir_drop_aware_programming": aware})
    return Tile(w, b, default_config(**changes)).program(0, 1)


def _gain_and_residual(y: torch.Tensor, y0: torch.Tensor) -> tuple[float, float]:
    """The least-squares gain k of y ~ k y0 and the residual |y - k y0| / |y0| (Frobenius)."""
    k = float((y * y0).sum() / (y0 * y0).sum())
    return k, float((y - k * y0).norm() / y0.norm())


def mvm_error(
    mapping: str, r: float, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, aware: bool = False
) -> tuple[float, float]:
    """(gain, residual) of the tile's outputs at r ohm (``aware``: with IR-drop-aware programming)
    against the same tile at 0 ohm."""

    def outputs(r_ohm: float) -> torch.Tensor:  # (B, out): the row blocks summed
        return _tile(w, b, mapping, r_ohm, aware).mvm(x)[0].sum(-2)

    return _gain_and_residual(outputs(r), outputs(0.0))


def reference_position(r: float, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, position: str) -> float:
    """The residual (as :func:`mvm_error`) of the offset mapping at r ohm with its reference column
    at ``position`` (first / middle / last) in an array assembled from the tile's devices."""
    cols = w.shape[0]
    tile = _tile(w, b, "offset")
    g_w = tile.g_pos[0]  # (rows, cols) weights, (rows, 1) reference
    g_ref = reference_column(tile.g_neg[0], slice(None), slice(0, cols))
    xq = tile.word_line_inputs(x)[0]  # (B, rows) word-line amplitudes
    k = {"first": 0, "middle": cols // 2, "last": cols}[position]
    t = effective_matrix(torch.cat([g_w[:, :k], g_ref, g_w[:, k:]], 1), r_wl=r, r_bl=r, progress=False)
    y = xq @ (torch.cat([t[:, :k], t[:, k + 1 :]], 1) - t[:, k : k + 1])
    return _gain_and_residual(y, xq @ (g_w - g_ref))[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=169, help="weight rows: inputs + the bias row (2..1024)")
    ap.add_argument("--cols", type=int, default=256, help="output columns (1..1024)")
    ap.add_argument("--r", default="0.01,0.03,0.1,0.3,1", help="r_wl = r_bl values, ohm")
    ap.add_argument("--batch", type=int, default=64, help="input vectors (1..4096)")
    args = ap.parse_args()
    if not 2 <= args.rows <= 1024:
        raise SystemExit(f"error: --rows {args.rows}: expected 2..1024")
    if not 1 <= args.cols <= 1024:
        raise SystemExit(f"error: --cols {args.cols}: expected 1..1024")
    if not 1 <= args.batch <= 4096:
        raise SystemExit(f"error: --batch {args.batch}: expected 1..4096")
    rs = _floats(args.r, "--r")
    gen = generator(0, "scripts/ir_drop_mapping")
    w = (0.25 * torch.randn(args.cols, args.rows - 1, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    b = (0.25 * torch.randn(args.cols, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    x = torch.rand(args.batch, args.rows - 1, generator=gen, dtype=torch.float64) * 2 - 1
    print(
        f"{args.rows} weight rows x {args.cols} columns, ideal devices (1-100 uS), {args.batch} inputs: "
        "gain and residual of the outputs against r = 0"
    )
    variants = (("differential", False), ("differential", True), ("offset", False), ("offset", True))
    heads = ("differential gain", "+ aware gain", "offset gain", "+ aware gain")
    print(f"{'r_ohm':<8}" + "".join(f"{h:>{len(h) + 2}}{'residual':>10}" for h in heads))
    for r in rs:
        cells = [mvm_error(m, r, w, b, x, aware) for m, aware in variants]
        line = "".join(f"{k:>{len(h) + 2}.3f}{res:>10.3f}" for (k, res), h in zip(cells, heads))
        print(f"{r:<8g}{line}", flush=True)
    print("offset mapping, residual by the reference column's position (an array assembled by hand)")
    positions = ("first", "middle", "last")
    print(f"{'r_ohm':<8}" + "".join(f"{p:>10}" for p in positions))
    for r in rs:
        print(f"{r:<8g}" + "".join(f"{reference_position(r, w, b, x, p):>10.3f}" for p in positions), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

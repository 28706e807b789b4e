"""Which weight mapping survives IR drop?  The MVM error of a tile with the differential and the
offset mapping vs wire resistance.

One weight matrix of ``--rows`` inputs (the bias row included) x ``--cols`` outputs on one physical
array (``array.rows`` / ``array.cols`` its size), ideal devices (no programming or read noise, g_min
1, g_max 100 uS: only the wires differ), weights N(0, 0.25) clipped to [-1, 1], inputs uniform in
[-1, 1].  For each r = r_wl = r_bl (ohm) and mapping the tile's column outputs y (pre-activation
units) are compared with the same tile's at r = 0 (y0):

* gain: the least-squares k of y ~ k y0 (a pure attenuation, which the NL-ADC's ramp can partly
  track and a calibration can rescale);
* residual: |y - k y0| / |y0| (Frobenius norms over inputs and columns), what no gain removes.

differential: G+ and G- in two arrays of the same layout, the signal T+ - T-; offset: one array
whose last bit line (the end far from the drivers) is the reference column at g_mid, subtracted
from every output (see crossbar/layout.py); "+ aware": the mapping before it with IR-drop-aware
programming (``array.wires.ir_drop_aware_programming``, 3 iterations).  Run:

    .venv/bin/python scripts/ir_drop_mapping.py [--rows 169] [--cols 256] [--r 0.01,0.03,0.1,0.3,1]
"""

from __future__ import annotations

import argparse
import math

import torch

from crossbar.config import default_config
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


def mvm_error(
    mapping: str, r: float, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, aware: bool = False
) -> tuple[float, float]:
    """(gain, residual) of the tile's outputs at r ohm (``aware``: with IR-drop-aware programming)
    against the same tile at 0 ohm."""
    rows, cols = w.shape[1] + 1, w.shape[0]

    def outputs(r_ohm: float) -> torch.Tensor:
        cfg = default_config(
            **{
                "array.rows": rows,
                "array.cols": cols + 1,  # room for the offset mapping's reference column
                "array.mapping": mapping,
                "device.g_min": 1.0,
                "device.g_max": 100.0,
                "simulation.dtype": "float64",
                "array.wires.r_wl": r_ohm,
                "array.wires.r_bl": r_ohm,
                "array.wires.ir_drop_aware_programming": aware,
            }
        )
        return Tile(w, b, cfg).program(0, 1).mvm(x)[0].sum(-2)  # (B, out): the row blocks summed

    y0, y = outputs(0.0), outputs(r)
    k = float((y * y0).sum() / (y0 * y0).sum())
    return k, float((y - k * y0).norm() / y0.norm())


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

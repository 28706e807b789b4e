"""Does the NL-ADC's ramp track the array under IR drop?  Code error (LSB) vs wire resistance.

One physical array of N x N cells (N = 64, 128, 256): N - E weight rows (inputs + the bias row)
and, for the NL-ADC, its E = 2^bits ramp + bias rows (per-column ramps, ``array.wires.ramp_rows``),
N sigmoid columns, ideal devices (no programming / read noise: only the wires differ), bias
calibration on (``nl_adc.calibration``, as the presets).  For each r = r_wl = r_bl (ohm) and
instance, random inputs x in [-1, 1] go through the tile and the converter; the code error is
|code(hardware) - code(ideal pre-activation, ideal converter)| in LSB, over all columns and inputs.

* conventional: a 5-bit uniform ramp ADC with a fixed (off-array) reference over the NL-ADC's ramp
  span, then sigmoid digitally (the same weights, no ramp rows in the array);
* nladc: the in-memory NL-ADC, ramp rows next to the integrators (near_sense) or at the far end of
  the bit lines (far_sense);
* nladc+aware: the same with IR-drop-aware programming (weights, ramp and bias targets
  pre-distorted; ``array.wires.ir_drop_aware_programming``);
* shared ramp (``--variants shared_near,shared_far``): one ramp for all N columns
  (``nl_adc.shared_ramp``), the paper's extra column of memristors: its own bit line, before the
  weight columns next to the word-line drivers (``array.wires.shared_ramp_column = near_driver``)
  or after them at the far end (``far_driver``), its devices on the extra rows next to the
  integrators.  A shared ramp is calibrated once for all its columns.

Also printed: the mean attenuation T/G of the weight devices and of the ramp devices (tracking
means they are equal).  Run:

    .venv/bin/python scripts/ir_drop_adc_error.py [--sizes 64,128,256] [--r 0,0.1,0.3,1,2,5] [--mc 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from crossbar.config import default_config
from crossbar.periphery.adc import LinearRampADC
from crossbar.periphery.readout import ColumnReadout, program_chip
from crossbar.rng import generator
from crossbar.tile import Tile

BITS = 5


def _config(n: int, r: float, **extra):
    changes = {
        "array.rows": n,
        "array.cols": n,
        "array.partial_sums": "analog",
        "device.g_min": 1.0,
        "device.g_max": 100.0,
        "adc.kind": "nl_ramp",
        "adc.bits": BITS,
        "nl_adc.ramp_devices": 2**BITS,
        "simulation.dtype": "float64",
        "array.wires.r_wl": r,
        "array.wires.r_bl": r,
    }
    changes.update(extra)
    return default_config(**changes)


def _problem(n: int, e: int, batch: int):
    n_in = n - e - 1  # inputs; + the bias row = n - e weight rows
    gen = generator(16, f"ir_drop_adc_error/{n}")
    sigma = 2.5 / math.sqrt(n_in / 3)  # pre-activation std ~2.5 for x ~ U(-1, 1)
    w = torch.randn(n, n_in, generator=gen, dtype=torch.float64) * sigma
    b = torch.randn(n, generator=gen, dtype=torch.float64) * 0.5
    x = torch.rand(batch, n_in, generator=gen, dtype=torch.float64) * 2 - 1
    return w, b, x


def _attenuation(t: torch.Tensor, g: torch.Tensor) -> float:
    mask = g > 0
    return float((t[mask] / g[mask]).mean())


def run_nladc(n, r, mc, batch, **extra):
    cfg = _config(n, r, **extra)
    ro = ColumnReadout(cfg, "sigmoid", n)
    e = ro.nladc.g_ramp_target.numel() + ro.nladc.g_bias_target.numel()
    w, b, x = _problem(n, e, batch)
    tile = Tile(w, b, cfg, x_max=1.0)
    program_chip(tile, [ro], [torch.arange(n)], ["ro"], 0, mc)
    y = tile.mvm(x)[:, :, 0]  # (M, B, N)
    codes = ro.nladc.codes(y, noisy=False)
    y_ideal = torch.cat([x, torch.ones(batch, 1, dtype=x.dtype)], 1) @ torch.cat([w.t(), b[None]], 0)
    ideal = ro.design.ideal_codes(y_ideal)
    err = (codes - ideal[None]).abs().double()
    att_w = att_r = 1.0
    if tile.ir_drop:
        t_pos, _, t_extra, t_cols = tile.effective_conductances()
        att_w = _attenuation(t_pos, tile.g_pos.double())
        if tile.extra_cols:  # a shared ramp: the devices of its own column
            key = next(iter(tile.extra_cols))
            att_r = _attenuation(t_cols[key], tile.extra_cols[key][1])
        else:  # per-column ramps: devices on the extra rows
            att_r = _attenuation(t_extra, tile.extra_rows)
    return float(err.mean()), float(err.max()), att_w, att_r, ro.design


def run_conventional(n, r, mc, batch, design):
    cfg = _config(
        n,
        r,
        **{"adc.kind": "linear_ramp", "adc.range_mode": "fixed", "adc.in_min": design.x_lo, "adc.in_max": design.x_hi},
    )
    e = 2**BITS + cfg.nl_adc.bias_devices
    w, b, x = _problem(n, e, batch)
    tile = Tile(w, b, cfg, x_max=1.0).program(0, mc)
    adc = LinearRampADC(BITS, design.x_lo, design.x_hi)
    y = tile.mvm(x)[:, :, 0]
    y_ideal = torch.cat([x, torch.ones(batch, 1, dtype=x.dtype)], 1) @ torch.cat([w.t(), b[None]], 0)
    err = (adc.codes(y) - adc.codes(y_ideal)[None]).abs()
    return float(err.mean()), float(err.max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--r", default="0,0.1,0.3,1,2,5", help="r_wl = r_bl values, ohm")
    ap.add_argument("--mc", type=int, default=3, help="instances (independent programmings)")
    ap.add_argument("--batch", type=int, default=256, help="input vectors per instance")
    ap.add_argument(
        "--variants",
        default="conventional,nladc,nladc_far,nladc_aware",
        help="of conventional, nladc, nladc_far, nladc_aware, shared_near, shared_far (nladc always runs)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        rs = [float(s) for s in args.r.split(",")]
    except ValueError:
        raise SystemExit(f"error: --sizes {args.sizes!r} / --r {args.r!r}: expected comma-separated numbers") from None
    if not all(40 <= n <= 1024 for n in sizes):
        raise SystemExit(f"error: --sizes {args.sizes!r}: each 40..1024 (the NL-ADC needs 37 of the rows)")
    if not all(math.isfinite(r) and r >= 0 for r in rs):
        raise SystemExit(f"error: --r {args.r!r}: finite resistances >= 0 ohm")
    if not (1 <= args.mc <= 1000 and 1 <= args.batch <= 100_000):
        raise SystemExit(f"error: --mc {args.mc} / --batch {args.batch}: expected 1..1000 / 1..100000")
    variants = args.variants.split(",")
    known = {"conventional", "nladc", "nladc_far", "nladc_aware", "shared_near", "shared_far"}
    if not set(variants) <= known:
        raise SystemExit(f"error: --variants {args.variants!r}: each must be one of {', '.join(sorted(known))}")
    shared = [v for v in variants if v.startswith("shared_")]
    print(
        f"{BITS}-bit sigmoid readout, ideal devices, {args.mc} instances x {args.batch} inputs; code error "
        f"= mean |code - ideal code| (max) in LSB; A = mean T/G of weight / ramp devices"
    )
    print(
        "N    r_ohm  conventional    nladc(near_sense)  A_w    A_ramp  nladc(far_sense)   nladc+aware"
        + "".join(f"  {v} (A_ramp)" for v in shared)
    )
    for n in sizes:
        for r in rs:
            t0 = time.perf_counter()
            row = {}
            mean, mx, aw, ar, design = run_nladc(n, r, args.mc, args.batch)
            row["nladc"] = f"{mean:6.3f} ({mx:2.0f})"
            if "conventional" in variants:
                c_mean, c_max = run_conventional(n, r, args.mc, args.batch, design)
                row["conventional"] = f"{c_mean:6.3f} ({c_max:2.0f})"
            if "nladc_far" in variants:
                f_mean, f_max, *_ = run_nladc(n, r, args.mc, args.batch, **{"array.wires.ramp_rows": "far_sense"})
                row["far"] = f"{f_mean:6.3f} ({f_max:2.0f})"
            if "nladc_aware" in variants and r > 0:
                a_mean, a_max, *_ = run_nladc(
                    n, r, args.mc, args.batch, **{"array.wires.ir_drop_aware_programming": True}
                )
                row["aware"] = f"{a_mean:6.3f} ({a_max:2.0f})"
            for v in shared:
                side = {"shared_near": "near_driver", "shared_far": "far_driver"}[v]
                s_mean, s_max, _, s_ar, _ = run_nladc(
                    n, r, args.mc, args.batch, **{"nl_adc.shared_ramp": True, "array.wires.shared_ramp_column": side}
                )
                row[v] = f"{s_mean:6.3f} ({s_max:2.0f}) {s_ar:.3f}"
            print(
                f"{n:<4} {r:<6g} {row.get('conventional', '-'):<15} {row['nladc']:<18} {aw:.3f}  {ar:.3f}   "
                f"{row.get('far', '-'):<18} {row.get('aware', row['nladc'] if r == 0 else '-'):<14}"
                + "".join(f"  {row[v]:<22}" for v in shared)
                + f"   [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

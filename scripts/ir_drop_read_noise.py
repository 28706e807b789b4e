"""How exact is read noise through the attenuation map A = T / G (sigma x A, or sigma x A^2)?

The tile draws per-read device noise in the variance form var_j = sum_i v_i^2 (A_ij sigma_ij)^2 (the
exact form without wires, with A = 1).  With wires a noisy device also changes its neighbours'
currents, so this is an approximation.  Here it is compared with the exact column-current spread:
``--samples`` noisy conductance draws G + sigma z (sigma = ``--sigma-rel`` x G), each solved through
the wires exactly (crossbar.parasitics.column_currents), for one input vector.  Prints the ratio of
predicted to Monte-Carlo standard deviation per column (its mean, min and max) and the Monte-Carlo
standard error of that ratio.

    .venv/bin/python scripts/ir_drop_read_noise.py [--n 128] [--r 1] [--sigma-rel 0.05] [--samples 400]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from crossbar.parasitics import Wires, attenuation, column_currents, effective_matrix
from crossbar.rng import generator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--r", type=float, default=1.0, help="r_wl = r_bl, ohm")
    ap.add_argument("--sigma-rel", type=float, default=0.05)
    ap.add_argument("--samples", type=int, default=400)
    args = ap.parse_args()
    n, w = args.n, Wires(r_wl=args.r, r_bl=args.r)
    gen = generator(16, "ir_drop_read_noise")
    g = (1 + 99 * torch.rand((n, n), generator=gen, dtype=torch.float64)).numpy()
    v = (0.2 * torch.rand((1, n), generator=gen, dtype=torch.float64)).numpy()
    sigma = args.sigma_rel * g
    a = attenuation(g, effective_matrix(g, w))
    pred = np.sqrt((v[0, :, None] ** 2 * (a * sigma) ** 2).sum(0))
    pred2 = np.sqrt((v[0, :, None] ** 2 * (a * a * sigma) ** 2).sum(0))
    pred_ideal = np.sqrt((v[0, :, None] ** 2 * sigma**2).sum(0))
    cur = np.empty((args.samples, n))
    for s in range(args.samples):
        z = torch.randn((n, n), generator=gen, dtype=torch.float64).numpy()
        cur[s] = column_currents(np.clip(g + sigma * z, 0, None), v, w.r_wl, w.r_bl)[0]
    mc = cur.std(0, ddof=1)
    ratio = pred / mc
    print(
        f"{n}x{n} array, r_wl = r_bl = {args.r} ohm, read noise sigma = {args.sigma_rel:.0%} of G, "
        f"{args.samples} exact noisy solves, one input vector in [0, 0.2] V"
    )
    print(
        f"predicted sd (A = T/G) / Monte-Carlo sd per column: mean {ratio.mean():.4f}, min {ratio.min():.4f}, "
        f"max {ratio.max():.4f} (MC standard error of one column's ratio ~ "
        f"{1 / math.sqrt(2 * (args.samples - 1)):.4f}; "
        f"of the mean over columns ~ {1 / math.sqrt(2 * (args.samples - 1) * n):.4f})"
    )
    r2 = pred2 / mc
    print(
        f"predicted sd (A^2: dT/dG of a device behind a Thevenin resistance) / Monte-Carlo sd: mean {r2.mean():.4f}, "
        f"min {r2.min():.4f}, max {r2.max():.4f}"
    )
    print(f"without attenuation (A = 1) the prediction would be {(pred_ideal / mc).mean():.4f} x the Monte-Carlo sd")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

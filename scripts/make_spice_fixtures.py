"""Regenerate the ngspice fixtures of the IR-drop model (tests/data/spice/*.npz).

Each case is one array with its wire parasitics: conductances (uS), a few input vectors (V) and the
column currents ngspice computes (uA, its DC operating points), so the tests check
``crossbar.parasitics`` against SPICE without needing ngspice.  Needs ``ngspice`` on PATH (Debian
package ``ngspice``).  Run from the repository root:

    .venv/bin/python scripts/make_spice_fixtures.py [--out tests/data/spice]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import torch

from crossbar.io import atomic_path
from crossbar.netlist import run_ngspice
from crossbar.parasitics import Wires, column_currents
from crossbar.rng import generator

# name: (rows, cols, wires in ohm, fraction of open cells)
CASES = {
    "a16_wires": (16, 16, Wires(r_wl=1.0, r_bl=1.0), 0.0),
    "a32_all": (32, 32, Wires(r_wl=2.0, r_bl=2.0, r_driver=5.0, r_sense=5.0, r_access=500.0), 0.05),
    "ns24x40": (24, 40, Wires(r_wl=0.5, r_bl=2.0, r_driver=10.0, r_sense=3.0, r_access=300.0), 0.1),
    "ns40x24": (40, 24, Wires(r_wl=3.0, r_bl=0.3, r_driver=2.0, r_sense=7.0, r_access=1000.0), 0.0),
}


def case_data(name: str, rows: int, cols: int, open_frac: float):
    """Conductances in 1..100 uS (some open) and 3 input vectors: all rows at 0.2 V, signed, and
    half the rows at 0 V -- drawn from the project's seeded generators."""
    gen = generator(2026, f"spice_fixture/{name}")
    g = 1.0 + 99.0 * torch.rand((rows, cols), generator=gen, dtype=torch.float64)
    g = torch.where(torch.rand((rows, cols), generator=gen, dtype=torch.float64) < open_frac, 0.0, g)
    v_signed = 0.4 * torch.rand(rows, generator=gen, dtype=torch.float64) - 0.2
    v_half = torch.where(torch.arange(rows) % 2 == 0, 0.2, 0.0).to(torch.float64)
    v = torch.stack([torch.full((rows,), 0.2, dtype=torch.float64), v_signed, v_half])
    return g.numpy(), v.numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/spice")
    args = ap.parse_args()
    version = subprocess.run(["ngspice", "--version"], capture_output=True, text=True).stdout
    version = next((ln.strip("* ").strip() for ln in version.splitlines() if "ngspice-" in ln), "ngspice")
    for name, (rows, cols, w, open_frac) in CASES.items():
        g, v = case_data(name, rows, cols, open_frac)
        i_spice = run_ngspice(g, v, w)
        ours = column_currents(g, v, w.r_wl, w.r_bl, w.r_driver, w.r_sense, w.r_access)
        err = float(np.max(np.abs(ours - i_spice) / np.abs(i_spice)))
        path = Path(args.out) / f"{name}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    g_us=g,
                    v=v,
                    i_ua=i_spice,
                    r_wl=w.r_wl,
                    r_bl=w.r_bl,
                    r_driver=w.r_driver,
                    r_sense=w.r_sense,
                    r_access=w.r_access,
                    ngspice=version,
                )
        print(f"{name}: {rows} x {cols}, {w}, max relative error of crossbar.parasitics vs ngspice {err:.2e} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

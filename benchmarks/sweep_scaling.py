"""Sweep scaling: the same 16-unit `crossbar sweep` on 1 and on 2 local Dask worker processes,
measured side by side in one run (wall time including cluster start, speed-up, parallel
efficiency = speed-up / workers), and a check that both give the same results.

    python benchmarks/sweep_scaling.py [--data ../shared/data/fsdd] [--workers 1,2]

The sweep: the shipped FSDD model, NL-ADC 4 / 5 bit x read noise 0.5 / 1 / 2 / 4 %, 4 instances per
point in blocks of 2 = 16 units.  Run it on an otherwise idle machine (one core per worker).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rnn_models.sweep import parse_spec, run_sweep  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fsdd"))
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = ap.parse_args()
    spec = parse_spec(
        {
            "task": "kws",
            "checkpoint": str(REPO / "checkpoints" / "kws_fsdd.pt"),
            "data": args.data,
            "split": "dev",
            "config": "rram_nladc_5b",
            "mc": 4,
            "mc_block": 2,
            "seed": 0,
            "grid": {"adc.bits": [4, 5], "device.read_noise.sigma_rel": [0.005, 0.01, 0.02, 0.04]},
        }
    )
    counts = [int(w) for w in args.workers.split(",")]
    rows, tables = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        # warm the numba and feature caches once so that no run pays for them
        run_sweep(
            parse_spec({**spec.model_dump(), "grid": {"adc.bits": [5]}, "mc": 1}),
            Path(tmp) / "warm",
            workers=1,
            progress=False,
            log=lambda *_: None,
        )
        for n in counts:
            t0 = time.perf_counter()
            out = run_sweep(spec, Path(tmp) / f"w{n}", workers=n, progress=False, log=lambda *_: None)
            wall = time.perf_counter() - t0
            unit_s = sum(s["seconds"] for s in out.summary)
            rows.append((n, out.units, wall, unit_s))
            text = (Path(tmp) / f"w{n}" / "results.csv").read_text()
            tables[n] = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(io.StringIO(text))]
    base = rows[0][2]
    print(f"{'workers':>8s} {'units':>6s} {'wall s':>8s} {'unit s':>8s} {'speed-up':>9s} {'efficiency':>11s}")
    for n, units, wall, unit_s in rows:
        speedup = base / wall * rows[0][0]
        print(f"{n:>8d} {units:>6d} {wall:>8.1f} {unit_s:>8.1f} {speedup:>9.2f} {speedup / n:>11.2f}")
    same = all(tables[n] == tables[counts[0]] for n in counts)
    print(f"results identical across worker counts: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

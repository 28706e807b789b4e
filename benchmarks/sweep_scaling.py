"""Sweep scaling: the same 16-unit `crossbar sweep` on 1 and on 2 local Dask worker processes,
measured side by side in one run (wall time including cluster start, speed-up, parallel
efficiency = speed-up / workers), and a check that both give the same results.

    python benchmarks/sweep_scaling.py [--data ../shared/data/fsdd] [--workers 1,2]

The sweep: the shipped FSDD model, NL-ADC 4 / 5 bit x read noise 0.5 / 1 / 2 / 4 %, 8 instances per
point in blocks of 4 = 16 units.  Every worker count runs on a Dask LocalCluster of that many worker
processes with one thread each (the cluster start is included in the wall time); the in-process
run (`--workers 1` of `crossbar sweep`, torch's default threads) is printed for reference.  Run it on
an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distributed import Client, LocalCluster  # noqa: E402

from rnn_models.sweep import parse_spec, run_sweep  # noqa: E402
from rnn_models.sweep.runner import dask_settings  # noqa: E402


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
        runs = [("in-process", 0)] + [(f"{n} worker(s)", n) for n in counts]
        for label, n in runs:
            t0 = time.perf_counter()
            if n == 0:
                out = run_sweep(spec, Path(tmp) / "inproc", workers=1, progress=False, log=lambda *_: None)
            else:
                with dask_settings():
                    cluster = LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
                    client = Client(cluster)
                    try:
                        out = run_sweep(spec, Path(tmp) / f"w{n}", client=client, progress=False, log=lambda *_: None)
                    finally:
                        client.close()
                        cluster.close()
            wall = time.perf_counter() - t0
            unit_s = sum(s["seconds"] for s in out.summary)
            rows.append((label, n, out.units, wall, unit_s))
            text = out.out.joinpath("results.csv").read_text()
            tables[label] = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(io.StringIO(text))]
    base = next(r for r in rows if r[1] == counts[0])
    print(f"{'run':>14s} {'units':>6s} {'wall s':>8s} {'unit s':>8s} {'speed-up':>9s} {'efficiency':>11s}")
    for label, n, units, wall, unit_s in rows:
        speedup = base[3] / wall * max(base[1], 1)
        eff = f"{speedup / n:>11.2f}" if n else f"{'-':>11s}"
        print(f"{label:>14s} {units:>6d} {wall:>8.1f} {unit_s:>8.1f} {speedup:>9.2f} {eff}")
    same = all(t == tables[rows[0][0]] for t in tables.values())
    print(f"speed-up and efficiency relative to {base[0]}; unit s = compute time summed over units")
    print(f"results identical in every run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

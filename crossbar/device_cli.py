"""The ``crossbar fit-device`` and ``crossbar simulate-device`` commands (argument set-up and runners).

The ``crossbar`` command line (``rnn_models/cli.py``) wires them in::

    fit = sub.add_parser("fit-device", help=...); add_fit_device_arguments(fit); fit.set_defaults(func=run_fit_device)

Bad input prints one line ``error: ...`` on stderr and returns 2 (as every other command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossbar.argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from crossbar.errors import CrossbarInputError
from crossbar.measurements import UNITS

FIT_HELP = "fit the device model to measured conductance data (long CSV, one row per read)"
SIMULATE_HELP = "simulate measurement-style reads of devices with a (fitted) device model"


def _add_format_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--units",
        choices=UNITS,
        default="uS",
        help="unit of the conductance columns (g_us, target_*): uS (default), S, or ohm (resistance)",
    )
    parser.add_argument(
        "--columns",
        default=None,
        metavar="NAME=COL,...",
        help="map the format's column names to the file's headers, e.g. device_id=addr,g_us=G,t_s=time",
    )


def add_fit_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        help="measurement CSV (docs/device_fit.md: device_id, g_us, optional target_g_us, "
        "target_lo_us/target_hi_us, program_id, t_s, read_idx, verify_ok, temp_c)",
    )
    parser.add_argument(
        "--out", required=True, help="JSON to write: the device section (or a whole config with --base)"
    )
    parser.add_argument(
        "--base", help="hardware config (path or preset) whose other sections to keep; --out is then a whole config"
    )
    parser.add_argument("--plots", metavar="DIR", help="folder for PNG plots of measured vs simulated distributions")
    parser.add_argument("--report", metavar="JSON", help="also write the fit report as JSON")
    _add_format_arguments(parser)
    parser.add_argument(
        "--method",
        choices=("auto", "empirical", "parametric"),
        default="auto",
        help="empirical: resample the measured distributions (default when targets are known); "
        "parametric: Gaussian sigma(G) + stuck probabilities",
    )
    parser.add_argument(
        "--reference",
        choices=("auto", "target", "first_read"),
        default="auto",
        help="relaxation relative to the target (when known) or to the first read",
    )
    parser.add_argument("--min-per-bin", type=positive_int, default=30, help="devices per conductance bin (default 30)")
    parser.add_argument("--max-bins", type=positive_int, default=32, help="most conductance bins (default 32)")
    parser.add_argument("--g-min", type=nonneg_float, default=None, help="model g_min, uS (default: from the data)")
    parser.add_argument("--g-max", type=positive_float, default=None, help="model g_max, uS (default: from the data)")
    parser.add_argument(
        "--t-inference",
        type=positive_float,
        default=None,
        help="s after programming at which the crossbar is read (drift.t_inference; default 20 s or the base config's)",
    )
    parser.add_argument("--name", help="device name (default: fit_<data file stem>)")
    parser.add_argument("--seed", type=nonneg_int, default=0, help="seed of the goodness-of-fit simulation")


def add_simulate_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", help="device JSON (what fit-device writes) or a hardware config / preset")
    parser.add_argument(
        "--targets",
        required=True,
        help="CSV in the measurement format without g_us: device_id, "
        "target (target_g_us or the window), optional program_id, t_s",
    )
    parser.add_argument(
        "--out", required=True, help="CSV to write: the targets' rows and columns plus the simulated g_us"
    )
    parser.add_argument("--seed", type=nonneg_int, default=0, help="seed (same seed, same numbers)")
    _add_format_arguments(parser)


def _same_file(a: str | Path, b: str | Path) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return pa.samefile(pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def _check_out(out: str, inputs: list[tuple[str, str | None]]) -> None:
    for what, path in inputs:
        if path and _same_file(out, path):
            raise CrossbarInputError(f"--out {out} is the {what}; choose another file (inputs are never overwritten)")


def run_fit_device(args: argparse.Namespace) -> int:
    try:
        return _fit_device(args)
    except CrossbarInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_simulate_device(args: argparse.Namespace) -> int:
    try:
        return _simulate_device(args)
    except CrossbarInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _fit_device(args: argparse.Namespace) -> int:
    from crossbar.config import load_config
    from crossbar.device_fit import FitOptions, config_json, device_json, fit, plot_fit
    from crossbar.io import write_json, write_text
    from crossbar.measurements import parse_columns, read_measurements

    base_path = None
    base = None
    if args.base:
        base = load_config(args.base)
        base_path = args.base if Path(args.base).is_file() else None
    _check_out(args.out, [("measurement file", args.data), ("--base config", base_path)])
    if args.report:
        _check_out(
            args.report, [("measurement file", args.data), ("--base config", base_path), ("--out file", args.out)]
        )
    meas = read_measurements(args.data, units=args.units, columns=parse_columns(args.columns))
    t_inf = args.t_inference
    if t_inf is None and base is not None:
        t_inf = base.device.drift.t_inference
    opts = FitOptions(
        method=args.method,
        reference=args.reference,
        min_per_bin=args.min_per_bin,
        max_bins=args.max_bins,
        g_min=args.g_min,
        g_max=args.g_max,
        t_inference=t_inf,
        name=args.name,
        seed=args.seed,
    )
    res = fit(meas, opts)
    print(res.text)
    if base is not None:
        note = f" Device: {res.device.description}"
        cfg = base.replace(
            device=res.device.model_dump(mode="json"),
            name=args.name or f"{base.name}_{res.device.name}",
            description=(base.description + note).strip()[:20_000],
        )
        write_text(args.out, config_json(cfg))
        print(f"wrote {args.out}: {base.name} with the fitted device {res.device.name}")
    else:
        write_text(args.out, device_json(res.device))
        print(f"wrote {args.out}: device section {res.device.name} (use --base CFG for a whole hardware config)")
    if args.report:
        write_json(args.report, res.report)
        print(f"wrote {args.report}")
    if args.plots:
        paths = plot_fit(res, args.plots)
        print("plots: " + ", ".join(str(p) for p in paths))
    return 0


def _simulate_device(args: argparse.Namespace) -> int:
    from crossbar.device_fit import load_device, simulate
    from crossbar.measurements import parse_columns, read_measurements, write_csv

    device_path = args.device if Path(args.device).is_file() else None
    _check_out(args.out, [("targets file", args.targets), ("device file", device_path)])
    device = load_device(args.device)
    targets = read_measurements(
        args.targets, units=args.units, columns=parse_columns(args.columns), require_g=False, keep_raw=True
    )
    g = simulate(device, targets, seed=args.seed)
    header = list(targets.header)
    if "g_us" in header:
        renamed = "measured_g_us"
        while renamed in header:
            renamed = "_" + renamed
        header[header.index("g_us")] = renamed
    header.append("g_us")
    assert targets.rows is not None  # read with keep_raw=True
    rows = (raw + [format(float(v), ".7g")] for raw, v in zip(targets.rows, g))
    write_csv(args.out, header, rows)
    n_dev = len(set(targets.device.tolist()))
    print(f"simulated {targets.n} reads of {n_dev} devices with {device.name} (seed {args.seed}): wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m crossbar.device_cli fit-device ...``; ``crossbar`` wires them in too)."""
    parser = argparse.ArgumentParser(prog="crossbar")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_p = sub.add_parser("fit-device", help=FIT_HELP)
    add_fit_device_arguments(fit_p)
    fit_p.set_defaults(func=run_fit_device)
    sim_p = sub.add_parser("simulate-device", help=SIMULATE_HELP)
    add_simulate_device_arguments(sim_p)
    sim_p.set_defaults(func=run_simulate_device)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

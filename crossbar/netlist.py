"""SPICE netlists of one crossbar array with its wire parasitics (the network of
:mod:`crossbar.parasitics`), so a designer can check the simulator with their own SPICE.

``netlist_text(g_us, v, wires)`` writes an ngspice deck: word-line sources ``VIN<i>`` (V),
drivers, word-line and bit-line segments, cells (1 / G in series with the access resistance) and
one 0-V ammeter ``VS<j>`` per bit line at its virtual ground, whose current ``i(vs<j>)`` (A) is the
column current (positive into the virtual ground for positive inputs).  Several input vectors run
as several operating points in one deck (``alter`` + ``op``), each written by ``wrdata`` to
``<prefix>_<b>.txt``.  A zero resistance joins the two nodes it connects (no 0-ohm elements).

``add_netlist_arguments(parser)`` / ``run_netlist(args)`` are the ``crossbar netlist`` command:
conductances (uS, rows x cols) from a CSV file or one physical array of a programmed tile file
(``Tile.save``: ``--tile``, ``--instance``, ``--block``, ``--polarity``), inputs (V, batch x rows)
from a CSV file, resistances from options, a hardware config's ``array.wires`` or the tile's config.
A programmed array is written as the simulator solves it (:func:`crossbar.layout.physical_array`:
with the NL-ADC devices the tile holds on it); outputs are checked before any work and never
replace an input.
Further array sources are handed in by the caller: ``rnn_models.cli`` adds ``--checkpoint`` (a task
checkpoint programmed for ``--config``) through ``more_sources`` and ``array_source``, so this
module needs nothing of ``rnn_models``.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crossbar.errors import CrossbarInputError
from crossbar.parasitics import Wires

_FMT = "{:.17g}"


def _ohm(g_us: float) -> str:
    return _FMT.format(1e6 / g_us)


def netlist_text(g_us, v, wires=None, title: str = "crossbar array", output_prefix: str = "out", **resistances) -> str:
    """An ngspice deck of the array ``g_us`` (rows, cols; uS) driven by ``v`` (batch, rows; V) with
    ``wires`` (ohm; see :class:`crossbar.parasitics.Wires`)."""
    w = Wires.of(wires, **resistances)
    g = np.asarray(g_us, dtype=np.float64)
    vv = np.atleast_2d(np.asarray(v, dtype=np.float64))
    if g.ndim != 2 or g.size == 0:
        raise CrossbarInputError(f"g_us must be (rows, cols) uS, got shape {g.shape}")
    if not np.isfinite(g).all() or (g < 0).any():
        raise CrossbarInputError("g_us must be finite conductances >= 0 uS")
    rows, cols = g.shape
    if vv.ndim != 2 or vv.shape[1] != rows or not np.isfinite(vv).all():
        raise CrossbarInputError(f"v must be finite voltages of shape (batch, {rows}), got {vv.shape}")

    def src(i):
        return f"src{i}"

    def wl(i, j):
        if w.r_wl == 0:
            return src(i) if w.r_driver == 0 else f"w{i}"
        return src(i) if (j == 0 and w.r_driver == 0) else f"w{i}_{j}"

    def bl(i, j):
        if w.r_bl == 0:
            return f"s{j}" if w.r_sense == 0 else f"b{j}"
        return f"s{j}" if (i == rows - 1 and w.r_sense == 0) else f"b{i}_{j}"

    out = [
        f"* {title}: {rows} x {cols} array, r_wl={w.r_wl:g} r_bl={w.r_bl:g} r_driver={w.r_driver:g} "
        f"r_sense={w.r_sense:g} r_access={w.r_access:g} ohm (written by crossbar.netlist)"
    ]
    for i in range(rows):
        out.append(f"VIN{i} {src(i)} 0 DC {_FMT.format(vv[0, i])}")
        if w.r_driver > 0:
            out.append(f"RD{i} {src(i)} {wl(i, 0)} {_FMT.format(w.r_driver)}")
        if w.r_wl > 0:
            for j in range(cols - 1):
                out.append(f"RW{i}_{j} {wl(i, j)} {wl(i, j + 1)} {_FMT.format(w.r_wl)}")
    for j in range(cols):
        if w.r_bl > 0:
            for i in range(rows - 1):
                out.append(f"RB{i}_{j} {bl(i, j)} {bl(i + 1, j)} {_FMT.format(w.r_bl)}")
        if w.r_sense > 0:
            out.append(f"RS{j} {bl(rows - 1, j)} s{j} {_FMT.format(w.r_sense)}")
        out.append(f"VS{j} s{j} 0 DC 0")
    for i in range(rows):
        for j in range(cols):
            if g[i, j] <= 0:
                continue  # an open cell
            if w.r_access > 0:
                out.append(f"RC{i}_{j} {wl(i, j)} m{i}_{j} {_ohm(g[i, j])}")
                out.append(f"RA{i}_{j} m{i}_{j} {bl(i, j)} {_FMT.format(w.r_access)}")
            else:
                out.append(f"RC{i}_{j} {wl(i, j)} {bl(i, j)} {_ohm(g[i, j])}")
    probes = " ".join(f"i(vs{j})" for j in range(cols))
    out += [".control", "set wr_singlescale", "set wr_vecnames", "option numdgt=16"]
    for b in range(vv.shape[0]):
        if b > 0:
            out += [f"alter vin{i} dc = {_FMT.format(vv[b, i])}" for i in range(rows)]
        out += ["op", f"wrdata {output_prefix}_{b}.txt {probes}"]
    out += ["quit", ".endc", ".end", ""]
    return "\n".join(out)


def read_wrdata(path: str | Path, cols: int) -> np.ndarray:
    """Column currents (A, (cols,)) from an ngspice ``wrdata`` file written by :func:`netlist_text`."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    values = [float(x) for x in lines[-1]]
    if len(values) == cols + 1:  # a scale column first
        values = values[1:]
    if len(values) != cols:
        raise CrossbarInputError(f"{path}: expected {cols} currents, found {len(values)} numbers")
    return np.array(values)


def run_ngspice(
    g_us, v, wires=None, workdir: str | Path | None = None, timeout: float = 3600.0, **resistances
) -> np.ndarray:
    """Solve the array with ngspice in batch mode; returns the column currents in uA (batch, cols).

    Needs the ``ngspice`` executable on PATH (Debian package ``ngspice``).  ngspice can exit 1 on
    success, so its output files are checked instead of its exit status.
    """
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("ngspice")
    if exe is None:
        raise CrossbarInputError("ngspice is not installed (Debian package 'ngspice')")
    vv = np.atleast_2d(np.asarray(v, dtype=np.float64))
    cols = np.asarray(g_us).shape[1]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        deck = Path(tmp) / "array.cir"
        deck.write_text(netlist_text(g_us, vv, wires, output_prefix="out", **resistances))
        proc = subprocess.run([exe, "-b", deck.name], cwd=tmp, capture_output=True, text=True, timeout=timeout)
        res = []
        for b in range(vv.shape[0]):
            f = Path(tmp) / f"out_{b}.txt"
            if not f.is_file():
                raise RuntimeError(f"ngspice wrote no result (exit {proc.returncode}): {proc.stderr[-500:]}")
            res.append(read_wrdata(f, cols))
    return np.stack(res) * 1e6


# ------------------------------------------------------------------------------ the command
def _read_csv(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CrossbarInputError(f"--{what} {path!r}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data": said below
            data = np.loadtxt(p, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:  # UnicodeDecodeError too
        raise CrossbarInputError(f"--{what} {path!r}: not a numeric CSV table ({exc})") from None
    if data.size == 0:
        raise CrossbarInputError(f"--{what} {path!r}: the file holds no numbers (a rows x columns CSV table)")
    if not np.isfinite(data).all():
        raise CrossbarInputError(f"--{what} {path!r}: values must be finite numbers")
    return data


def add_netlist_arguments(
    parser: argparse.ArgumentParser,
    more_sources: Callable[[Any, argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Options of ``crossbar netlist``.  ``more_sources(group, parser)`` may add further array
    sources to the required, mutually exclusive group of ``--g`` / ``--tile`` (and their options
    to ``parser``); :func:`run_netlist` then needs an ``array_source`` for them."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--g", metavar="CSV", help="conductances of one array, uS (rows x cols)")
    src.add_argument(
        "--tile",
        metavar="H5",
        help="a programmed tile file (Tile.save); with --instance, --block, --polarity (its config gives the wires)",
    )
    if more_sources is not None:
        more_sources(src, parser)
    parser.add_argument(
        "--instance",
        type=int,
        default=0,
        help="Monte-Carlo instance (--tile: one the file holds; a programmed source: the one programmed; default 0)",
    )
    parser.add_argument("--block", default="0,0", help="ROW_BLOCK,COL_BLOCK: which physical array (default 0,0)")
    parser.add_argument(
        "--polarity",
        choices=["pos", "neg"],
        default="pos",
        help="G+ or G- array of a differential mapping (offset mapping: pos, with its reference "
        "column as the last bit line)",
    )
    parser.add_argument(
        "--v",
        metavar="CSV",
        help="word-line voltages, V (batch x rows); default: every row "
        "at the config's array.v_read (0.2 V without a config)",
    )
    parser.add_argument("--config", help="hardware config whose array.wires gives the resistances")
    for name, what in (
        ("r-wl", "word-line segment"),
        ("r-bl", "bit-line segment"),
        ("r-driver", "driver"),
        ("r-sense", "virtual-ground connection"),
        ("r-access", "access transistor"),
    ):
        parser.add_argument(
            f"--{name}", type=float, default=None, help=f"{what} resistance, ohm (overrides the config)"
        )
    parser.add_argument("--out", required=True, help="netlist file to write (.cir)")
    parser.add_argument("--expect", help="also write the simulator's column currents (uA, batch x cols) as CSV here")
    return parser


def tile_array(path: str, instance: int, block: str, polarity: str):
    """(G (rows, cols) uS, :class:`crossbar.layout.Spot`, config) of one physical array of a saved
    tile (:func:`programmed_array`).  A saved tile holds no NL-ADC devices, so its arrays have none
    of their rows."""
    from crossbar.tile import Tile

    tile = Tile.load(path)
    if not 0 <= instance < tile.instances:
        raise CrossbarInputError(f"--instance {instance}: the tile has instances 0..{tile.instances - 1}")
    g, spot = programmed_array(tile, instance, block, polarity)
    return g, spot, tile.config


def programmed_array(tile, instance: int, block: str, polarity: str):
    """One physical array (``block`` = "ROW_BLOCK,COL_BLOCK"; ``polarity`` G+ or G- of a
    differential mapping) of a programmed :class:`crossbar.tile.Tile`'s local instance
    ``instance``, as the simulator solves it (:func:`crossbar.layout.physical_array`): the block's
    weight devices (offset mapping: its reference column after them) and the NL-ADC devices the
    tile holds on that array (ramp and bias rows, shared-ramp bit lines).  Returns (G (rows, cols)
    uS float64, :class:`crossbar.layout.Spot`)."""
    from crossbar.layout import col_slices, physical_array
    from crossbar.tile import array_row_slices

    try:
        rb, cb = (int(x) for x in block.split(","))
    except ValueError:
        raise CrossbarInputError(f"--block {block!r}: expected ROW_BLOCK,COL_BLOCK, e.g. 0,1") from None
    arr = tile.config.array
    rsl, csl = array_row_slices(tile.n_rows, arr.rows), col_slices(tile.out_features, arr.cols)
    if not (0 <= rb < len(rsl) and 0 <= cb < len(csl)):
        raise CrossbarInputError(f"--block {block!r}: the tile has {len(rsl)} x {len(csl)} arrays (0-based)")
    if polarity == "neg" and arr.mapping == "offset":
        polarity = "pos"  # (one array per block: the reference column is its last bit line)
    g_pos, g_neg = tile.programmed_conductances()
    one = slice(instance, instance + 1)
    extra_rows = None if tile.extra_rows is None else tile.extra_rows[one]
    extra_cols = {k: (b, v[one]) for k, (b, v) in tile.extra_cols.items()}
    g, spot = physical_array(g_pos[one], g_neg[one], arr, rb, cb, extra_rows, extra_cols, polarity)
    return g[0].numpy(), spot


#: ``array_source(args) -> (G (rows, cols) uS, Spot or None, hardware config, name for the deck's title)``
ArraySource = Callable[[argparse.Namespace], tuple[np.ndarray, Any, Any, str]]


def run_netlist(args: argparse.Namespace, array_source: ArraySource | None = None) -> int:
    """``crossbar netlist``: write the ngspice deck (and optionally our currents); returns 0.

    ``array_source``: the array of a source that :func:`add_netlist_arguments`' ``more_sources``
    added (used when neither ``--g`` nor ``--tile`` is given); its config gives the wires and
    ``array.v_read``, so ``--config`` is not loaded a second time."""
    from crossbar.io import check_outputs, write_text
    from crossbar.parasitics import effective_matrix

    inputs = {f"--{k}": getattr(args, k, None) for k in ("g", "v", "tile", "checkpoint", "data")}
    if args.config and Path(args.config).exists():
        inputs["--config"] = args.config
    check_outputs({"--out": (args.out, "file"), "--expect": (args.expect, "file")}, inputs)
    if args.expect and Path(args.expect).resolve() == Path(args.out).resolve():
        raise CrossbarInputError(f"--expect {args.expect!r} is also --out: give two files")
    v_read = 0.2
    base = Wires()
    config_done = False
    spot = None
    if args.tile:
        g, spot, cfg = tile_array(args.tile, args.instance, args.block, args.polarity)
        base, v_read = Wires.of(cfg.array.wires), cfg.array.v_read
        name = f"{Path(args.tile).name} instance {args.instance} block {args.block} {args.polarity}"
    elif args.g:
        g = _read_csv(args.g, "g")
        name = Path(args.g).name
    else:
        if array_source is None:
            raise CrossbarInputError("give the array with --g CSV or --tile H5")
        g, spot, cfg, name = array_source(args)
        base, v_read = Wires.of(cfg.array.wires), cfg.array.v_read
        config_done = True
    if args.config and not config_done:
        from crossbar.config import load_config

        cfg = load_config(args.config)
        base, v_read = Wires.of(cfg.array.wires), cfg.array.v_read
    over = {}
    for field in ("r_wl", "r_bl", "r_driver", "r_sense", "r_access"):
        value = getattr(args, field)
        if value is not None:
            if not (math.isfinite(value) and value >= 0):
                raise CrossbarInputError(f"--{field.replace('_', '-')} {value!r}: must be a finite resistance >= 0 ohm")
            over[field] = value
    wires = Wires.of(base, **over)
    roles = spot.row_roles() if spot is not None else ["weight"] * g.shape[0]
    # the MVM: the weight rows at v_read, an NL-ADC's ramp and bias rows at 0 V (not driven)
    default_v = np.array([[v_read if role == "weight" else 0.0 for role in roles]])
    v = _read_csv(args.v, "v") if args.v else default_v
    if v.shape[1] != g.shape[0]:
        raise CrossbarInputError(
            f"--v: {v.shape[1]} columns, but the array has {g.shape[0]} rows (one voltage per row)"
        )
    deck = netlist_text(g, v, wires, title=f"crossbar netlist of {name}", output_prefix=Path(args.out).stem)
    expect = None
    if args.expect:
        cur = v @ np.asarray(effective_matrix(g, wires))
        expect = "\n".join(",".join(_FMT.format(x) for x in row) for row in cur) + "\n"
    write_text(args.out, deck)  # (both computed first: a failure writes neither)
    if expect is not None:
        write_text(args.expect, expect)
    print(
        f"wrote {args.out}: {g.shape[0]} x {g.shape[1]} array, {v.shape[0]} operating point(s); "
        f"run `ngspice -b {Path(args.out).name}` in its folder"
    )
    if spot is not None and spot.extra_count:
        a, b = spot.first_extra, spot.first_extra + spot.extra_count - 1
        print(
            f"rows {spot.first_row}..{spot.first_row + spot.rows - 1}: weights; rows {a}..{b}: the NL-ADCs' bias "
            f"and ramp devices, which load the bit lines during the MVM (default --v: 0 V there)"
        )
    if spot is not None and spot.ramp_cols:
        print(f"bit lines {', '.join(map(str, spot.ramp_cols))}: shared ramps (their own integrators)")
    return 0

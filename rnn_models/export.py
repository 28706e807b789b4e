"""The programmed design of an analog model as a chip team needs it, and a measured chip back in.

``export_design(model, out_dir, instance)`` writes the design of a calibrated analog model (from
:func:`rnn_models.convert.convert_to_analog` + ``calibrate``): one CSV per physical array -- one row
per device with its address (plane, word line, bit line), what it stands for (weight W[i, j], the
reference column, an NL-ADC's bias or ramp device), its target conductance and the value simulated
instance M programs -- and ``manifest.json`` with everything that is not a conductance: conductance
scale, word-line amplitude and DAC full scale per input block, ADC ranges and NL-ADC designs,
datapath format.  ``load_measured(model, dir)`` reads the same layout with the ``measured_g_us``
column filled in and makes that chip the model's programmed state, so a forward pass simulates
the measured chip (read noise, periphery and datapath as the model's config says).

The layout (CSV columns, manifest fields, units, addressing) is documented in docs/export.md.
Physical addresses follow :mod:`crossbar.layout` (the arrays the IR-drop model simulates).

Modelling choices for a measured chip (ours, named):

* the measured conductances are the chip at inference: no programming, drift or stuck-at model
  is applied to them, and global drift compensation has no programming-time reference (gain 1);
* the NL-ADC thresholds are recomputed from the measured ramp and bias devices (the measured bias
  devices are the calibrated ones: the bias calibration is not run again); the static periphery
  errors that are not conductances -- comparator offsets, integrator gain errors -- are those the
  config draws for instance m (the same as a programmed instance m has), so with
  ``comparator_offset_sigma = integrator_gain_sigma = 0`` the converters are exactly the measured
  devices;
* with M > 1 instances every instance is the same measured chip; read noise, comparator noise and
  the static periphery errors above differ between instances.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from crossbar import devices
from crossbar.errors import CrossbarInputError, one_line
from crossbar.io import write_json
from crossbar.periphery.nladc import NLADC
from crossbar.tile import array_row_slices

if TYPE_CHECKING:
    from rnn_models.analog import AnalogMatrix
    from rnn_models.layers import AnalogLayerBase

FORMAT = "crossbar.design"
VERSION = 1
MANIFEST = "manifest.json"
#: the CSV columns, in order (docs/export.md); the loader needs plane, row, col and measured_g_us
COLUMNS = (
    "device_id",
    "plane",
    "role",
    "row",
    "col",
    "matrix_row",
    "matrix_col",
    "readout",
    "step",
    "target_g_us",
    "programmed_g_us",
    "measured_g_us",
)
REQUIRED_COLUMNS = ("plane", "row", "col", "measured_g_us")
ROLES = ("weight", "reference", "nladc_bias", "nladc_ramp")
_REL_TOL = 1e-6
#: where a device's value goes: ("pos",) | ("neg",) | ("ref", column block) | ("ramp", k) | ("bias", k)
_Dest = tuple[str] | tuple[str, int]


# ======================================================================================= plan
@dataclass
class _Segment:
    """Devices of one role in one array: addresses, what they stand for, where a value goes."""

    dest: _Dest  # ("pos",) | ("neg",) | ("ref", cb) | ("ramp", k) | ("bias", k)
    index: np.ndarray  # flat indices into the destination tensor
    plane: str
    role: str
    row: np.ndarray  # physical word line in the array (0-based)
    col: np.ndarray  # physical bit line
    matrix_row: np.ndarray | None = None
    matrix_col: np.ndarray | None = None
    readout: str = ""
    step: np.ndarray | None = None
    target: np.ndarray | None = None  # uS (export only)
    programmed: np.ndarray | None = None  # uS (export only)
    single: bool = True  # values held in float32 (else float64)

    def __len__(self) -> int:
        return len(self.row)

    def what(self, i: int) -> str:
        """Human description of device i (for error messages)."""
        if self.role == "weight":
            assert self.matrix_row is not None and self.matrix_col is not None  # a weight has both
            return (
                f"weight {'G+' if self.plane == 'pos' else 'G-'} of matrix row {self.matrix_row[i]}, "
                f"column {self.matrix_col[i]}"
            )
        if self.role == "reference":
            assert self.matrix_row is not None  # a reference device serves one matrix row
            return f"reference device of matrix row {self.matrix_row[i]}"
        assert self.step is not None  # an NL-ADC device is one step of its bias or ramp sequence
        kind = "bias" if self.role == "nladc_bias" else "ramp"
        col = "" if self.matrix_col is None or self.matrix_col[i] < 0 else f", column {self.matrix_col[i]}"
        return f"NL-ADC {self.readout} {kind} device {self.step[i]}{col}"


@dataclass
class _Array:
    id: str
    file: str
    info: dict
    segments: list = field(default_factory=list)
    extent: dict = field(default_factory=dict)  # plane -> (rows, cols) of the used corner + extras

    @property
    def devices(self) -> int:
        return sum(len(s) for s in self.segments)


@dataclass
class _NL:
    """One NL-ADC bank: its readout name, group, converter, the tile columns its ramps serve."""

    key: str
    group: str
    nladc: NLADC
    columns: list
    shared: bool

    @property
    def ramps(self) -> int:
        return 1 if self.shared else len(self.columns)


@dataclass
class _TilePlan:
    id: str
    layer: AnalogLayerBase
    mat: AnalogMatrix | None  # None for a cell NL-ADC
    nls: list
    arrays: list
    info: dict


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("/", ".")).strip("._") or "array"


def _f(x) -> float:
    return float(x)


def _block_names(key: str, blocks) -> list[str]:
    if len(blocks) == 2:
        return ["x", "h"]
    return ["h"] if key.endswith("nh") else ["x"]


def _nl_targets(nl: _NL, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Ramp (R, L) and bias (R, nb) programming targets (uS, float64)."""
    conv = nl.nladc
    r = nl.ramps
    ramp = conv.g_ramp_target.double().expand(r, -1).clone()
    bias = conv.g_bias_target.double().expand(r, -1).clone()
    site = getattr(conv, "_site", None)
    if site is not None and cfg.array.wires.ir_drop_aware_programming:
        ramp, bias = site.aware_targets(ramp, bias, cfg.array.wires.aware_iterations, cfg.device)
    return ramp.double(), bias.double()


def _adc_info(ro, cfg) -> dict:
    if ro.nladc is not None:
        conv, d = ro.nladc, ro.design
        shared = bool(cfg.nl_adc.shared_ramp)
        return {
            "kind": "nl_ramp",
            "bits": d.bits,
            "function": d.function,
            "codes": d.codes,
            "x_lo": _f(d.x_lo),
            "x_hi": _f(d.x_hi),
            "thresholds": d.thresholds.tolist(),
            "code_values": d.values.tolist(),
            "needs_lut": bool(d.needs_lut),
            "kappa_us_per_unit": _f(conv.kappa),
            "ramp_devices": d.codes,
            "bias_devices": int(conv.g_bias_target.numel()),
            "bias_cycles": int(conv.bias_cycles),
            "bias_sign": _f(conv.bias_sign),
            "shared_ramp": shared,
            "ramps": 1 if shared else conv.columns,
            "cycles_per_conversion": int(conv.cycles_per_conversion),
            "calibration": bool(cfg.nl_adc.calibration),
            "ramp_target_us": conv.g_ramp_target.tolist(),
            "bias_target_us": conv.g_bias_target.tolist(),
        }
    if ro.linear is not None:
        blocks = None if ro.block_linears is None else [[b.in_min, b.in_max] for b in ro.block_linears]
        return {
            "kind": "linear_ramp",
            "bits": ro.linear.bits,
            "function": ro.function,
            "in_min": ro.linear.in_min,
            "in_max": ro.linear.in_max,
            "block_ranges": blocks,
        }
    return {"kind": "ideal", "function": ro.function}


def _extra_row(j, n_r: int, e: int, cfg):
    """Physical word line of extra (NL-ADC) row j in the last row block's G+ array."""
    return n_r + j if cfg.array.wires.ramp_rows == "near_sense" else j


def _plan_tile(layer, key: str, mat, blocks, values: bool, m_local: int, m_global: int) -> _TilePlan:
    tile, cfg = mat.tile, mat.tile.config
    arr = cfg.array
    tid = mat.name.rstrip("/")
    n_rows, out = tile.n_rows, tile.out_features
    offset = arr.mapping == "offset"
    rsl = array_row_slices(n_rows, arr.rows)
    csl = [slice(s, min(s + arr.cols, out)) for s in range(0, out, arr.cols)]
    nls = []
    for g, ro in zip(mat.groups, mat.readouts):
        if ro.nladc is not None and ro.nladc.thresholds is not None:
            nls.append(_NL(ro.nladc.name, g.name, ro.nladc, [int(c) for c in g.index], bool(cfg.nl_adc.shared_ramp)))
    nb = int(cfg.nl_adc.bias_devices)
    e_rows = max([nb + nl.nladc.design.codes for nl in nls], default=0)
    near_driver = arr.wires.shared_ramp_column == "near_driver"
    shared_at: dict[int, list[int]] = {}  # column block -> [k of shared NL-ADCs placed there]
    for k, nl in enumerate(nls):
        if nl.shared:
            shared_at.setdefault(min(c // arr.cols for c in nl.columns), []).append(k)

    if values:
        tp, tn = tile.programming_targets()
        tp, tn = tp.detach().cpu(), tn.detach().cpu()
        gp, gn = tile.g_pos[m_local].detach().cpu(), tile.g_neg[m_local].detach().cpu()
        nl_values = []
        for nl in nls:
            rt, bt = _nl_targets(nl, cfg)
            g_r, g_b, _ = _nladc_devices(nl.nladc, m_local, m_global)
            nl_values.append((rt, bt, g_r, g_b))
    single = tile.dtype == torch.float32

    arrays = []
    for rb, rs in enumerate(rsl):
        last = rb == len(rsl) - 1
        for cb, cs in enumerate(csl):
            n_r, n_c = rs.stop - rs.start, cs.stop - cs.start
            e = e_rows if last else 0
            ramp_ks = shared_at.get(cb, []) if e else []
            n_ref = 1 if offset else 0
            c0 = len(ramp_ks) if near_driver else 0
            r0 = e if (e and arr.wires.ramp_rows == "far_sense") else 0
            aid = f"{tid}/r{rb}c{cb}"
            a = _Array(aid, "", {})
            ii_grid, jj_grid = np.meshgrid(np.arange(n_r), np.arange(n_c), indexing="ij")
            ii, jj = ii_grid.ravel(), jj_grid.ravel()
            mr, mc = ii + rs.start, jj + cs.start
            flat = mr * out + mc
            seg = _Segment(("pos",), flat, "pos", "weight", ii + r0, jj + c0, mr, mc, single=single)
            if values:
                seg.target, seg.programmed = tp.reshape(-1)[flat].numpy(), gp.reshape(-1)[flat].numpy()
            a.segments.append(seg)
            if offset:
                rows_i = np.arange(n_r)
                seg = _Segment(
                    ("ref", cb),
                    rows_i + rs.start,
                    "pos",
                    "reference",
                    rows_i + r0,
                    np.full(n_r, c0 + n_c),
                    rows_i + rs.start,
                    None,
                    single=single,
                )
                if values:
                    seg.target = tn[rows_i + rs.start, 0].numpy()
                    seg.programmed = gn[rows_i + rs.start, 0].numpy()
                a.segments.append(seg)
            ramp_cols = {}
            if e:
                for k, nl in enumerate(nls):
                    L = nl.nladc.design.codes
                    if nl.shared:
                        if k not in ramp_ks:
                            continue
                        pos = ramp_ks.index(k)
                        pcol = pos if near_driver else n_c + n_ref + pos
                        ramp_cols[nl.group] = pcol
                        rr = np.zeros(1, dtype=np.int64)
                        cols_phys, cols_matrix = np.array([pcol]), np.array([-1])
                    else:
                        rr = np.array([r for r, c in enumerate(nl.columns) if cs.start <= c < cs.stop], dtype=np.int64)
                        if not len(rr):
                            continue
                        cm = np.array(nl.columns)[rr]
                        cols_phys, cols_matrix = cm - cs.start + c0, cm
                    for role, count, dest, first_row in (("nladc_bias", nb, "bias", 0), ("nladc_ramp", L, "ramp", nb)):
                        rg, sg = np.meshgrid(rr, np.arange(count), indexing="ij")
                        pc = np.repeat(cols_phys, count)
                        mcol = np.repeat(cols_matrix, count)
                        steps = sg.ravel()
                        seg = _Segment(
                            (dest, k),
                            rg.ravel() * count + steps,
                            "pos",
                            role,
                            _extra_row(first_row + steps, n_r, e, cfg),
                            pc,
                            None,
                            mcol,
                            nl.group,
                            steps,
                            single=False,
                        )
                        if values:
                            rt, bt, g_r, g_b = nl_values[k]
                            tgt, prog = (bt, g_b) if dest == "bias" else (rt, g_r)
                            seg.target = tgt.reshape(-1)[seg.index].numpy()
                            seg.programmed = prog.reshape(-1)[seg.index].numpy()
                        a.segments.append(seg)
            a.extent["pos"] = (n_r + e, n_c + n_ref + len(ramp_ks))
            if not offset:
                seg = _Segment(("neg",), flat, "neg", "weight", ii, jj, mr, mc, single=single)
                if values:
                    seg.target, seg.programmed = tn.reshape(-1)[flat].numpy(), gn.reshape(-1)[flat].numpy()
                a.segments.append(seg)
                a.extent["neg"] = (n_r, n_c)
            a.info = {
                "id": aid,
                "row_block": rb,
                "col_block": cb,
                "matrix_rows": [rs.start, rs.stop],
                "matrix_cols": [cs.start, cs.stop],
                "planes": {p: list(v) for p, v in a.extent.items()},
                "weight_rows_from": int(r0),
                "weight_cols_from": int(c0),
                "reference_col": int(c0 + n_c) if offset else None,
                "nladc_rows": ({"first": int(_extra_row(0, n_r, e, cfg)), "count": int(e)} if e else None),
                "shared_ramp_cols": ramp_cols or None,
            }
            arrays.append(a)

    in_scale = mat.chip_scale.detach().cpu().double()
    gains = tile.row_gain.detach().cpu().double()
    blocks_info, start = [], 0
    v_read = arr.v_read
    for name, size in zip(_block_names(key, blocks), blocks):
        sl = slice(start, start + int(size))
        s = in_scale[sl]
        uniform = bool((s == s[0]).all())
        blocks_info.append(
            {
                "name": name,
                "first_row": start,
                "rows": int(size),
                "dac_full_scale": _f(s[0]) if uniform else s.tolist(),
                "word_line_gain": _f(gains[start]),
                "word_line_amplitude_v": _f(gains[start]) * v_read,
            }
        )
        start += int(size)
    if tile.has_bias:
        blocks_info.append(
            {
                "name": "bias",
                "first_row": start,
                "rows": 1,
                "dac_full_scale": None,
                "drive": "held at the DAC full-scale input (x = +1 after scaling)",
                "word_line_gain": _f(gains[start]),
                "word_line_amplitude_v": _f(gains[start]) * v_read,
            }
        )
    info = {
        "id": tid,
        "kind": "weights",
        "layer": layer.layer_name,
        "layer_type": type(layer).__name__,
        "matrix": key,
        "array_shape": [arr.rows, arr.cols],
        "matrix_rows": n_rows,
        "matrix_cols": out,
        "in_features": tile.in_features,
        "bias_row": tile.in_features if tile.has_bias else None,
        "digital_bias": None if tile.digital_bias is None else tile.digital_bias.detach().cpu().tolist(),
        "mapping": arr.mapping,
        "weight_reference": _f(tile.w_ref),
        "conductance_scale_us_per_weight": _f(tile.scale),
        "input_blocks": blocks_info,
        "readouts": [
            {
                "name": g.name,
                "columns": [int(c) for c in g.index],
                "input_range": None if g.in_range is None else [float(v) for v in g.in_range],
                "adc": _adc_info(ro, cfg),
            }
            for g, ro in zip(mat.groups, mat.readouts)
        ],
        "nladc_extra_rows": int(e_rows),
    }
    if values:
        info["drift_gain"] = _f(tile.drift_gain[m_local])
    return _TilePlan(tid, layer, mat, nls, arrays, info)


def _plan_cell(layer, cell, values: bool, m_local: int, m_global: int) -> _TilePlan | None:
    ro = cell.readout
    if ro is None or ro.nladc is None or ro.nladc.thresholds is None:
        return None
    cfg = ro.config
    conv = ro.nladc
    nl = _NL(conv.name, "cell", conv, list(range(conv.columns)), bool(cfg.nl_adc.shared_ramp))
    nb, L = int(cfg.nl_adc.bias_devices), conv.design.codes
    a = _Array(conv.name, "", {})
    if values:
        rt, bt = _nl_targets(nl, cfg)
        g_r, g_b, _ = _nladc_devices(conv, m_local, m_global)
    rr = np.arange(nl.ramps)
    for role, count, dest, first_row in (("nladc_bias", nb, "bias", 0), ("nladc_ramp", L, "ramp", nb)):
        rg, sg = np.meshgrid(rr, np.arange(count), indexing="ij")
        steps = sg.ravel()
        mcol = np.full(len(steps), -1) if nl.shared else rg.ravel()
        seg = _Segment(
            (dest, 0),
            rg.ravel() * count + steps,
            "pos",
            role,
            first_row + steps,
            rg.ravel(),
            None,
            mcol,
            "cell",
            steps,
            single=False,
        )
        if values:
            tgt, prog = (bt, g_b) if dest == "bias" else (rt, g_r)
            seg.target, seg.programmed = tgt.reshape(-1)[seg.index].numpy(), prog.reshape(-1)[seg.index].numpy()
        a.segments.append(seg)
    a.extent["pos"] = (nb + L, nl.ramps)
    a.info = {"id": conv.name, "planes": {"pos": [nb + L, nl.ramps]}, "nladc_rows": {"first": 0, "count": nb + L}}
    info = {
        "id": conv.name,
        "kind": "cell_nladc",
        "layer": layer.layer_name,
        "layer_type": type(layer).__name__,
        "function": "tanh",
        "input": "the digital cell value through the input DAC over +-datapath.cell_max",
        "readouts": [
            {"name": "cell", "columns": list(range(conv.columns)), "input_range": None, "adc": _adc_info(ro, cfg)}
        ],
    }
    return _TilePlan(conv.name, layer, None, [nl], [a], info)


def _plan(model: nn.Module, values: bool = False, m_local: int = 0, m_global: int = 0) -> list[_TilePlan]:
    from rnn_models.convert import analog_layers

    plans = []
    for _, layer in analog_layers(model):
        if not layer.instances:
            raise CrossbarInputError(f"{layer.layer_name}: the model is not programmed")
        for key, (mat, _w, _b, _s, blocks) in layer._matrices().items():
            if mat.tile is None:
                raise CrossbarInputError(f"{layer.layer_name}/{key}: the model is not programmed")
            plans.append(_plan_tile(layer, key, mat, blocks, values, m_local, m_global))
        if layer.hw.nl_adc.functions.cell == "nl_adc":
            for cell in layer._cells():
                p = _plan_cell(layer, cell, values, m_local, m_global)
                if p is not None:
                    plans.append(p)
    if not plans:
        raise CrossbarInputError("the model has no analog layers: nothing to export")
    used = set()
    for p in plans:
        for a in p.arrays:
            name = _sanitize(a.id)
            base, k = name, 1
            while name.lower() in used:
                k += 1
                name = f"{base}_{k}"
            used.add(name.lower())
            a.file = name + ".csv"
            a.info["file"] = a.file
            a.info["devices"] = a.devices
    return plans


# ============================================================================ NL-ADC devices
def _nladc_devices(conv, m_local: int, m_global: int):
    """(ramp (R, L), bias (R, nb) conductances in uS at inference, integrator gains (R, 1)) of
    programmed instance ``m_global`` (local index ``m_local``) of an NL-ADC bank, float64.

    The NL-ADC keeps only its thresholds, so -- unless it kept its devices (IR drop) -- instance m
    is programmed again alone on a copy (its own seeded generator: the same devices) and the
    devices it realises its thresholds from are taken; checked against the thresholds held."""
    kept = getattr(conv, "_devices", None)
    if kept and len(kept) == conv.instances:
        g_r, g_b, gain = kept[m_local]
        return g_r.detach().cpu().double(), g_b.detach().cpu().double(), gain.detach().cpu().double()
    calls = []
    replay = copy.copy(conv)
    thresholds = type(conv)._thresholds

    def spy(g_ramp, g_bias, gain, offset):
        calls.append(
            (
                g_ramp.detach().cpu().double().clone(),
                g_bias.detach().cpu().double().clone(),
                gain.detach().cpu().double().clone(),
            )
        )
        return thresholds(replay, g_ramp, g_bias, gain, offset)

    replay._thresholds = spy
    replay.program(conv.seed, 1, name=conv.name, first=m_global)
    if not calls or not torch.equal(replay.ramp_thresholds[0].cpu(), conv.ramp_thresholds[m_local].cpu()):
        raise RuntimeError(
            f"NL-ADC {conv.name}: programming instance {m_global} again did not reproduce its "
            "thresholds, so its devices cannot be recovered"
        )
    return calls[-1]


def _realise(conv, g_ramp, g_bias, gains, eff):
    """Thresholds without comparator offset (C, L-1) and ramp read-noise variances (C, L-1) of one
    instance from its devices (the NL-ADC's own definition)."""
    fn = getattr(conv, "_realised", None)
    if fn is not None:
        return fn(g_ramp, g_bias, gains, eff)
    dev = conv.config.device
    e_ramp, e_bias = eff(g_ramp, g_bias)
    t = conv._thresholds(e_ramp, e_bias, gains, torch.zeros(conv.columns, 1, dtype=torch.float64))
    var = devices.noise_sigma(g_ramp, dev.read_noise) ** 2
    bvar = (devices.noise_sigma(g_bias, dev.read_noise) ** 2).sum(-1, keepdim=True) * conv.bias_cycles**2
    return t, ((torch.cumsum(var, -1)[..., :-1] + bvar) * (gains / conv.kappa) ** 2).expand(conv.columns, -1)


# ==================================================================================== export
def _fmt(value, single: bool) -> str:
    """A conductance at the precision the simulator holds it (float32: shortest exact form)."""
    return str(np.float32(value)) if single else repr(float(value))


def _flat_index(a: _Array):
    """Per device of an array (segments concatenated): segment number, index in it, plane rank,
    row, col."""
    segs = a.segments
    planes = {p: k for k, p in enumerate(a.extent)}
    seg_id = np.concatenate([np.full(len(s), k, dtype=np.int64) for k, s in enumerate(segs)])
    local = np.concatenate([np.arange(len(s), dtype=np.int64) for s in segs])
    rank = np.concatenate([np.full(len(s), planes[s.plane], dtype=np.int64) for s in segs])
    rows = np.concatenate([np.asarray(s.row, dtype=np.int64) for s in segs])
    cols = np.concatenate([np.asarray(s.col, dtype=np.int64) for s in segs])
    return seg_id, local, rank, rows, cols


def _write_csv(path: Path, a: _Array, fill: str | None) -> None:
    """One array's CSV, rows sorted by plane, row, col, written atomically (streamed)."""
    from crossbar.io import atomic_path

    seg_id, local, rank, rows, cols = _flat_index(a)
    order = np.lexsort((cols, rows, rank))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for o in order:
            s, i = a.segments[seg_id[o]], local[o]
            r, c = int(rows[o]), int(cols[o])
            tgt, prog = _fmt(s.target[i], s.single), _fmt(s.programmed[i], s.single)
            meas = tgt if fill == "target" else prog if fill == "programmed" else ""
            mr = "" if s.matrix_row is None else str(int(s.matrix_row[i]))
            mc = "" if s.matrix_col is None or s.matrix_col[i] < 0 else str(int(s.matrix_col[i]))
            st = "" if s.step is None else str(int(s.step[i]))
            w.writerow((f"{a.id}/{s.plane}/{r}/{c}", s.plane, s.role, r, c, mr, mc, s.readout, st, tgt, prog, meas))


def _digital_layers(model: nn.Module) -> list[str]:
    from rnn_models.layers import AnalogLayerBase

    kinds = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)
    return [name for name, m in model.named_modules() if isinstance(m, kinds) and not isinstance(m, AnalogLayerBase)]


def _fixed_point(bits, limit: float) -> dict | None:
    if bits is None:
        return None
    return {
        "signed_bits": int(bits),
        "range": [-limit, limit - limit / 2 ** (bits - 1)],
        "lsb": limit / 2 ** (bits - 1),
        "saturating": True,
    }


def _covering(model: nn.Module, seed: int | None, instance: int) -> int | None:
    """Local index of global instance ``instance`` when every analog layer holds it, else None."""
    from rnn_models.convert import analog_layers

    local = None
    for _, layer in analog_layers(model):
        args = getattr(layer, "_program_args", None)
        if (
            not layer.instances
            or args is None
            or layer._programmed_version != layer._weights_version()
            or (seed is not None and args[0] != seed)
            or not args[2] <= instance < args[2] + args[1]
        ):
            return None
        if local is not None and instance - args[2] != local:
            return None
        local = instance - args[2]
    return local


def export_design(
    model: nn.Module,
    out_dir: str | Path,
    instance: int = 0,
    seed: int | None = None,
    source: dict | None = None,
    fill: str | None = None,
) -> dict:
    """Write the programmed design of a calibrated analog ``model`` to ``out_dir``: one CSV per
    physical array and ``manifest.json`` (layout: docs/export.md).  Returns the manifest.

    ``instance``: the simulated device instance whose programmed conductances fill the
    ``programmed_g_us`` column (the model keeps its programming when it holds that instance,
    else instance ``instance`` alone is programmed, seeded with ``seed`` / the config's seed).
    ``source``: free-form provenance written into the manifest (checkpoint, task, calibration).
    ``fill``: ``"target"`` or ``"programmed"`` pre-fills ``measured_g_us`` with that column (a dry
    run of the measured-chip workflow); default blank, for the chip team to fill in.
    """
    from rnn_models.convert import analog_layers, program

    if fill not in (None, "target", "programmed"):
        raise CrossbarInputError(f"fill must be 'target', 'programmed' or None, got {fill!r}")
    if not isinstance(instance, int) or isinstance(instance, bool) or instance < 0:
        raise CrossbarInputError(f"instance must be an integer >= 0, got {instance!r}")
    layers = analog_layers(model)
    if not layers:
        raise CrossbarInputError("the model has no analog layers: nothing to export")
    cfg = layers[0][1].hw
    for name, layer in layers:
        if layer.hw.model_dump() != cfg.model_dump():
            raise CrossbarInputError(
                f"analog layers use different hardware configs ({layers[0][0]!r}: {cfg.name!r}, "
                f"{name!r}: {layer.hw.name!r}); one design has one config"
            )
    local = _covering(model, seed, instance)
    if local is None:
        seed = cfg.simulation.seed if seed is None else int(seed)
        program(model, seed, 1, first=instance)
        local = 0
    seed = layers[0][1]._program_args[0]
    plans = _plan(model, values=True, m_local=local, m_global=instance)
    out = Path(out_dir)
    for p in plans:
        for a in p.arrays:
            _write_csv(out / a.file, a, fill)
    cfg_json = cfg.model_dump_json()
    dp = cfg.datapath
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_by": "crossbar export (rnn_models.export)",
        "units": {
            "conductance": "uS",
            "voltage": "V",
            "time": "s",
            "adc_ranges": "pre-activation units (1 unit = v_read x conductance_scale_us_per_weight uA "
            "of column current at full-scale word-line inputs)",
        },
        "instance": instance,
        "seed": seed,
        "measured_filled_from": fill,
        "source": dict(source or {}),
        "config": {
            "name": cfg.name,
            "sha256": hashlib.sha256(cfg_json.encode()).hexdigest(),
            "settings": json.loads(cfg_json),
        },
        "device": {
            "g_min_us": cfg.device.g_min,
            "g_max_us": cfg.device.g_max,
            "t_inference_s": cfg.device.drift.t_inference,
        },
        "array": {
            "rows": cfg.array.rows,
            "cols": cfg.array.cols,
            "mapping": cfg.array.mapping,
            "v_read_v": cfg.array.v_read,
            "partial_sums": cfg.array.partial_sums,
            "bias_in_array": cfg.array.bias_in_array,
            "row_scaling": cfg.array.row_scaling,
            "ramp_rows": cfg.array.wires.ramp_rows,
            "shared_ramp_column": cfg.array.wires.shared_ramp_column,
        },
        "dac": {
            "bits": cfg.dac.bits,
            "clip": cfg.dac.clip,
            "range_mode": cfg.dac.range_mode,
            "levels": None if cfg.dac.bits is None else 2 * (2 ** (cfg.dac.bits - 1) - 1) + 1,
            "word_line_voltage": "x / dac_full_scale, quantised to the DAC levels over [-1, 1], "
            "times word_line_amplitude_v of the input block",
        },
        "datapath": {
            "bits": dp.bits,
            "cell_max": dp.cell_max,
            "c": _fixed_point(dp.bits, dp.cell_max),
            "h": _fixed_point(dp.bits, 1.0),
            "cell_nonlinearity": cfg.nl_adc.functions.cell,
            "gate_function": cfg.nl_adc.functions.gate,
            "candidate_function": cfg.nl_adc.functions.candidate,
        },
        "digital_layers": _digital_layers(model),
        "csv_columns": list(COLUMNS),
        "tiles": [{**p.info, "arrays": [a.info for a in p.arrays]} for p in plans],
        "totals": {
            "tiles": len(plans),
            "arrays": sum(len(p.arrays) for p in plans),
            "devices": sum(a.devices for p in plans for a in p.arrays),
        },
    }
    write_json(out / MANIFEST, manifest)
    return manifest


# ============================================================================ measured chips
def read_manifest(directory: str | Path) -> dict:
    """The manifest of an exported design folder (one clear error when absent or not one)."""
    d = Path(directory)
    if not d.is_dir():
        raise CrossbarInputError(
            f"measured design {str(d)!r} is not a folder (give the folder `crossbar export` wrote)"
        )
    path = d / MANIFEST
    if not path.is_file():
        raise CrossbarInputError(
            f"measured design {str(d)!r}: {MANIFEST} is missing (the folder must hold the "
            f"layout `crossbar export` writes)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CrossbarInputError(f"{path}: not a readable JSON manifest ({one_line(exc, 150)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CrossbarInputError(
            f"{path}: not a {FORMAT} manifest "
            f"(format {manifest.get('format') if isinstance(manifest, dict) else None!r})"
        )
    if manifest.get("version") != VERSION:
        raise CrossbarInputError(f"{path}: manifest version {manifest.get('version')!r}; this code reads {VERSION}")
    if not isinstance(manifest.get("tiles"), list) or not all(isinstance(t, dict) for t in manifest["tiles"]):
        raise CrossbarInputError(f"{path}: 'tiles' must be a list of objects")
    return manifest


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
        )
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-12)


def _check_tile(where: str, exported: dict, plan: _TilePlan, cfg_name: str) -> None:
    """One clear error when the exported tile is not what this model maps onto the chip."""
    now = plan.info
    hint = "export the design again with this checkpoint and config"

    def fail(what, a, b, why=hint):
        raise CrossbarInputError(
            f"{where}: tile {plan.id!r}: {what} is {a} in the measured design but {b} in this "
            f"model under config {cfg_name!r} ({why})"
        )

    if exported.get("kind") != now["kind"]:
        fail("the kind", repr(exported.get("kind")), repr(now["kind"]))
    if now["kind"] == "weights":
        ea, na = exported.get("array_shape"), now["array_shape"]
        if not isinstance(ea, list) or [int(v) for v in ea] != na:
            fail(
                "the array shape (word lines x bit lines)",
                "x".join(map(str, ea)) if isinstance(ea, list) else ea,
                "x".join(map(str, na)),
                "a measured design from another array shape cannot be loaded",
            )
        for key, what in (
            ("matrix_rows", "the number of matrix rows (inputs + bias row)"),
            ("matrix_cols", "the number of matrix columns"),
            ("bias_row", "the bias row"),
        ):
            if exported.get(key) != now[key]:
                fail(what, exported.get(key), now[key])
        if not _close(exported.get("conductance_scale_us_per_weight"), now["conductance_scale_us_per_weight"]):
            fail(
                "the conductance scale (uS per weight unit)",
                exported.get("conductance_scale_us_per_weight"),
                now["conductance_scale_us_per_weight"],
                "the weights, the calibration or the config's device / array mapping differ from the export's",
            )
        eb = exported.get("input_blocks") or []
        if [b.get("rows") for b in eb] != [b["rows"] for b in now["input_blocks"]]:
            fail("the input blocks (rows)", [b.get("rows") for b in eb], [b["rows"] for b in now["input_blocks"]])
        for b_exp, b_now in zip(eb, now["input_blocks"]):
            for key, what in (("dac_full_scale", "DAC full scale"), ("word_line_gain", "word-line gain")):
                if not _close(b_exp.get(key), b_now[key]):
                    fail(
                        f"the {what} of input block {b_now['name']!r}",
                        b_exp.get(key),
                        b_now[key],
                        "the calibration, the weights or the config's DAC / row scaling differ from the export's",
                    )
    er = exported.get("readouts") or []
    if [r.get("name") for r in er] != [r["name"] for r in now["readouts"]]:
        fail("the column readouts", [r.get("name") for r in er], [r["name"] for r in now["readouts"]])
    for r_exp, r_now in zip(er, now["readouts"]):
        a_exp, a_now = r_exp.get("adc") or {}, r_now["adc"]
        if r_exp.get("columns") != r_now["columns"]:
            fail(f"the columns of readout {r_now['name']!r}", "different", "these")
        if (a_exp.get("kind") == "nl_ramp") != (a_now["kind"] == "nl_ramp"):
            fail(
                f"the ADC of readout {r_now['name']!r}",
                repr(a_exp.get("kind")),
                repr(a_now["kind"]),
                "NL-ADC devices are part of the layout: use a config with the same adc.kind",
            )
        if a_now["kind"] == "nl_ramp":
            for key in (
                "codes",
                "bias_devices",
                "ramps",
                "bias_cycles",
                "bias_sign",
                "kappa_us_per_unit",
                "x_lo",
                "x_hi",
            ):
                if not _close(a_exp.get(key), a_now[key]):
                    fail(
                        f"NL-ADC {key} of readout {r_now['name']!r}",
                        a_exp.get(key),
                        a_now[key],
                        "the config's NL-ADC or device section differs from the export's",
                    )


def _parse_int(text: str, what: str, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise CrossbarInputError(f"{where}: {what} {text!r} is not an integer") from None


#: A measured conductance above this many times the config's g_max is refused as a unit mix-up
#: (a resistance in ohm, or a value in nS): real over-programming stays well inside it.
IMPLAUSIBLE_G_MAX_FACTOR = 10.0


def _measured_value(text: str, where: str, what: str, g_max: float) -> float:
    if not text:
        raise CrossbarInputError(
            f"{where} ({what}): measured_g_us is blank (every device needs its measured conductance, uS)"
        )
    try:
        v = float(text)
    except ValueError:
        raise CrossbarInputError(f"{where} ({what}): measured_g_us {text!r} is not a number (uS)") from None
    if not math.isfinite(v):
        raise CrossbarInputError(f"{where} ({what}): measured_g_us {text!r} is not finite")
    if v < 0:
        raise CrossbarInputError(
            f"{where} ({what}): measured_g_us {text} is a negative conductance (uS; conductances are >= 0)"
        )
    if v > IMPLAUSIBLE_G_MAX_FACTOR * g_max:
        raise CrossbarInputError(
            f"{where} ({what}): measured_g_us {text} is over {IMPLAUSIBLE_G_MAX_FACTOR:g} x the config's g_max "
            f"({g_max:g} uS): conductances in uS, not a resistance in ohm or a value in nS?"
        )
    return v


def _shape_error(where: str, plane: str, extent, span) -> CrossbarInputError:
    return CrossbarInputError(
        f"{where}: plane {plane} of this array is {extent[0]} x {extent[1]} (word lines x bit lines) in the model, but "
        f"the file's devices span {span[0]} x {span[1]}: a measured file from another array shape or design cannot "
        f"be loaded"
    )


def _identity_mismatch(rec, iid, irole, imr, imc, a, plane, r, c, s, i, here) -> str | None:
    """Why the CSV row at (plane, r, c) describes another device than the model's there (its
    device_id, role or matrix indices), or None."""
    did = rec[iid].strip() if iid is not None else ""
    expected = f"{a.id}/{plane}/{r}/{c}"
    if did and did != expected:
        array_id = did.rsplit("/", 3)[0]
        if array_id != a.id:
            return (
                f"{here}: device_id {did!r} holds the devices of array {array_id!r}, not of {a.id!r} "
                f"(a file of another array?)"
            )
        return f"{here}: device_id {did!r} is not the device at plane {plane} row {r} col {c} ({expected!r})"
    role = rec[irole].strip() if irole is not None else ""
    if role and role != s.role:
        return (
            f"{here}: the device at plane {plane} row {r} col {c} is a {s.role!r} device ({s.what(i)}) in the "
            f"model, the file says {role!r}"
        )
    for idx, want, name in ((imr, s.matrix_row, "matrix_row"), (imc, s.matrix_col, "matrix_col")):
        text = rec[idx].strip() if idx is not None else ""
        expect = "" if want is None or want[i] < 0 else str(int(want[i]))
        if text and text != expect:
            return f"{here}: {name} {text} where this array has {s.what(i)} (a file of another array or design?)"
    return None


def _read_array(directory: Path, a: _Array, file_name: str, dest: dict, g_max: float) -> int:
    """Fill ``dest`` tensors from one array's CSV (streamed); returns the number of devices read;
    ``g_max`` (uS): the config's, for the plausibility check of the values."""
    path = directory / file_name
    where = f"measured file {path} (array {a.id})"
    if not path.is_file():
        raise CrossbarInputError(f"{where}: the file is missing (every array of the manifest needs its CSV)")
    seg_id, local, rank, rows, cols = _flat_index(a)
    planes = list(a.extent)
    height = max(e[0] for e in a.extent.values())
    width = max(e[1] for e in a.extent.values())
    slot = np.full(len(planes) * height * width, -1, dtype=np.int64)
    slot[(rank * height + rows) * width + cols] = np.arange(len(rows))
    line_of = np.zeros(len(rows), dtype=np.int64)
    values = np.zeros(len(rows), dtype=np.float64)
    span = {p: [0, 0] for p in planes}
    outside, mismatch = None, None
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CrossbarInputError(f"{where}: cannot be read ({one_line(exc, 120)})") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise CrossbarInputError(f"{where}: the file is empty (expected the header {','.join(COLUMNS)})")
            header = [h.strip() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CrossbarInputError(
                    f"{where}: column(s) {', '.join(missing)} missing from the header "
                    f"(found {', '.join(header) or 'none'})"
                )
            dup = sorted({h for h in header if header.count(h) > 1 and h})
            if dup:
                raise CrossbarInputError(f"{where}: column(s) {', '.join(dup)} appear twice in the header")
            col = {h: i for i, h in enumerate(header)}
            ip, ir, ic, ig = col["plane"], col["row"], col["col"], col["measured_g_us"]
            irole, iid, imr, imc = col.get("role"), col.get("device_id"), col.get("matrix_row"), col.get("matrix_col")
            for rec in reader:
                line = reader.line_num
                if not rec or all(not c.strip() for c in rec):
                    continue
                here = f"{where} line {line}"
                if len(rec) != len(header):
                    raise CrossbarInputError(f"{here}: {len(rec)} fields, the header has {len(header)}")
                plane = rec[ip].strip()
                r, c = _parse_int(rec[ir], "row", here), _parse_int(rec[ic], "col", here)
                if plane not in a.extent:
                    raise CrossbarInputError(
                        f"{here}: plane {plane!r} is not one of this array's ({', '.join(planes)})"
                    )
                if r < 0 or c < 0:
                    raise CrossbarInputError(f"{here}: row {r} col {c}: addresses are 0-based and >= 0")
                ext = a.extent[plane]
                sp = span[plane]
                sp[0], sp[1] = max(sp[0], r + 1), max(sp[1], c + 1)
                if r >= ext[0] or c >= ext[1]:  # reported after the whole file (its span) is known
                    outside = outside or plane
                    continue
                pos = int(slot[(planes.index(plane) * height + r) * width + c])
                if pos < 0:
                    raise CrossbarInputError(
                        f"{here}: plane {plane} row {r} col {c} holds no device in this model's array (open cell)"
                    )
                if line_of[pos]:
                    raise CrossbarInputError(
                        f"{here}: device plane {plane} row {r} col {c} appears twice (also line {line_of[pos]})"
                    )
                s, i = a.segments[seg_id[pos]], int(local[pos])
                line_of[pos] = line
                if mismatch is None:  # a file of another array: reported once its shape is known to fit
                    mismatch = _identity_mismatch(rec, iid, irole, imr, imc, a, plane, r, c, s, i, here)
                if mismatch is None:
                    values[pos] = _measured_value(rec[ig].strip(), here, s.what(i), g_max)
        except csv.Error as exc:
            raise CrossbarInputError(f"{where} line {reader.line_num}: not valid CSV ({one_line(exc, 120)})") from None
        except UnicodeDecodeError as exc:
            raise CrossbarInputError(f"{where}: not UTF-8 text ({one_line(exc, 120)})") from None
    if outside is not None:
        raise _shape_error(where, outside, a.extent[outside], span[outside])
    if mismatch is not None:
        raise CrossbarInputError(mismatch)
    absent = np.nonzero(line_of == 0)[0]
    if len(absent):
        for plane in planes:
            if span[plane] != [0, 0] and tuple(span[plane]) != tuple(a.extent[plane]):
                raise _shape_error(where, plane, a.extent[plane], span[plane])
        pos = int(absent[0])
        s, i = a.segments[seg_id[pos]], int(local[pos])
        raise CrossbarInputError(
            f"{where}: no device at plane {s.plane} row {int(rows[pos])} col {int(cols[pos])} "
            f"({s.what(i)}){f' and {len(absent) - 1} more' if len(absent) > 1 else ''}; every "
            f"device of the array needs a row"
        )
    start = 0
    for s in a.segments:
        dest[s.dest].view(-1)[torch.as_tensor(s.index, dtype=torch.long)] = torch.from_numpy(
            values[start : start + len(s)]
        )
        start += len(s)
    return len(rows)


def load_measured(
    model: nn.Module, directory: str | Path, seed: int | None = None, instances: int = 1, first: int = 0
) -> dict:
    """Make a measured chip the programmed state of a calibrated analog ``model``.

    ``directory``: a folder in the ``crossbar export`` layout (manifest.json + one CSV per array)
    with ``measured_g_us`` filled in.  The model is first programmed as usual (seeded: instances
    ``first .. first+instances-1``; this draws the periphery of each instance and its read-noise
    streams), then every weight, reference, ramp and bias conductance is replaced by the measured
    one and the NL-ADC thresholds are recomputed from the measured devices.  Refused with one clear
    error: a missing manifest or CSV, a design of another model / array shape / mapping, a missing,
    duplicate, non-numeric, negative or non-finite value.  Returns a summary (for result JSON).
    """
    from rnn_models.convert import analog_layers, program

    d = Path(directory)
    manifest = read_manifest(d)
    layers = analog_layers(model)
    if not layers:
        raise CrossbarInputError("load_measured: the model has no analog layers")
    cfg = layers[0][1].hw
    where = f"measured design {str(d)!r}"
    shape = manifest.get("array")
    if not isinstance(shape, dict) or not {"rows", "cols"} <= set(shape):
        raise CrossbarInputError(
            f"{where}: manifest.json has no 'array' entry with 'rows' and 'cols' (the physical arrays' size)"
        )
    if [shape.get("rows"), shape.get("cols")] != [cfg.array.rows, cfg.array.cols]:  # before any work
        raise CrossbarInputError(
            f"{where}: its arrays are {shape.get('rows')}x{shape.get('cols')} (word lines x bit "
            f"lines), config {cfg.name!r} has {cfg.array.rows}x{cfg.array.cols}: a measured design "
            f"from another array shape cannot be loaded"
        )
    program(model, seed, instances, first)
    plans = _plan(model, values=False)
    exported = {t.get("id"): t for t in manifest["tiles"]}
    now = {p.id: p for p in plans}
    if set(exported) != set(now):
        miss, extra = sorted(set(now) - set(exported)), sorted(set(exported) - set(now))
        raise CrossbarInputError(
            f"{where}: its tiles do not match this model's under config {cfg.name!r}"
            + (f"; missing {', '.join(miss[:4])}" if miss else "")
            + (f"; not in the model {', '.join(extra[:4])}" if extra else "")
            + " (a design of another model or digital/analog split)"
        )
    # every file is read and checked before the programmed state is replaced
    for p in plans:
        _check_tile(where, exported[p.id], p, cfg.name)
        arrays = exported[p.id].get("arrays")
        if not isinstance(arrays, list):
            raise CrossbarInputError(f"{where}: tile {p.id!r} lists no arrays")
        ids = {a.get("id"): a for a in arrays if isinstance(a, dict)}
        if set(ids) != {a.id for a in p.arrays}:
            raise CrossbarInputError(
                f"{where}: tile {p.id!r} has arrays {sorted(ids, key=str)[:6]} in the measured design, "
                f"the model {[a.id for a in p.arrays][:6]} (another array shape?)"
            )
        for a in p.arrays:
            f = ids[a.id].get("file")
            if not isinstance(f, str) or not f or Path(f).name != f:
                raise CrossbarInputError(f"{where}: array {a.id!r} names no plain file name ({f!r})")
            a.file = f

    total, dev_sum, dev_max = 0, 0.0, 0.0
    staged = []
    for p in plans:
        dest: dict[_Dest, torch.Tensor] = {}
        if p.mat is not None:
            tile = p.mat.tile
            assert tile is not None  # _plan refuses a matrix that is not programmed
            dest[("pos",)] = torch.full((tile.n_rows, tile.out_features), math.nan, dtype=torch.float64)
            if tile.config.array.mapping == "offset":
                for a in p.arrays:
                    dest.setdefault(
                        ("ref", a.info["col_block"]), torch.full((tile.n_rows,), math.nan, dtype=torch.float64)
                    )
            else:
                dest[("neg",)] = torch.full((tile.n_rows, tile.out_features), math.nan, dtype=torch.float64)
        for k, nl in enumerate(p.nls):
            nb, L = nl.nladc.g_bias_target.numel(), nl.nladc.design.codes
            dest[("ramp", k)] = torch.full((nl.ramps, L), math.nan, dtype=torch.float64)
            dest[("bias", k)] = torch.full((nl.ramps, nb), math.nan, dtype=torch.float64)
        for a in p.arrays:
            total += _read_array(d, a, a.file, dest, cfg.device.g_max)
        for key, t in dest.items():
            if bool(torch.isnan(t).any()):
                raise CrossbarInputError(f"{where}: tile {p.id!r}: devices of {key[0]} were not all given")
        staged.append((p, dest))

    m_count = instances
    for p, dest in staged:
        # the periphery of each programmed instance (integrator gains) before anything is replaced
        gains = [[_nladc_devices(nl.nladc, m, first + m)[2] for m in range(m_count)] for nl in p.nls]
        if p.mat is not None:
            tile = p.mat.tile
            assert tile is not None  # _plan refuses a matrix that is not programmed
            dev, dt = tile.device, tile.dtype
            pos = dest[("pos",)]
            if ("neg",) in dest:
                neg = dest[("neg",)]
            else:
                refs = [dest[("ref", cb)] for cb in sorted(k[1] for k in dest if len(k) == 2 and k[0] == "ref")]
                if all(torch.equal(r, refs[0]) for r in refs):
                    neg = refs[0][:, None]
                else:  # each column subtracts the reference column of its own array
                    cols = tile.config.array.cols
                    neg = torch.stack([refs[j // cols] for j in range(tile.out_features)], 1)
            tgt_p, tgt_n = tile.programming_targets()
            diffs = [(pos - tgt_p.detach().cpu().double()).abs()]
            if neg.shape == tgt_n.shape:
                diffs.append((neg - tgt_n.detach().cpu().double()).abs())
            tile.g_pos = pos.to(dev, dt)[None].expand(m_count, -1, -1).clone()
            tile.g_neg = neg.to(dev, dt)[None].expand(m_count, -1, -1).clone()
            tile.drift_gain = torch.ones(m_count, dtype=dt, device=dev)
            for dtns in diffs:
                dev_sum += float(dtns.sum())
                dev_max = max(dev_max, float(dtns.max()))
        sites = [getattr(nl.nladc, "_site", None) for nl in p.nls]
        for k, site in enumerate(sites):
            if site is not None:
                site.attach(None, dest[("ramp", k)][None], dest[("bias", k)][None])
        for k, (nl, site) in enumerate(zip(p.nls, sites)):
            conv = nl.nladc
            g_r, g_b = dest[("ramp", k)], dest[("bias", k)]
            rt, bt = _nl_targets(nl, conv.config)
            for dtns in ((g_r - rt).abs(), (g_b - bt).abs()):
                dev_sum += float(dtns.sum())
                dev_max = max(dev_max, float(dtns.max()))
            ts, vs = [], []
            for m in range(m_count):
                eff = (lambda a, b: (a, b)) if site is None else (lambda a, b, m=m, site=site: site.effective(m, a, b))
                t_m, v_m = _realise(conv, g_r, g_b, gains[k][m], eff)
                ts.append(t_m)
                vs.append(v_m)
            conv.restore(
                torch.stack(ts).to(conv.device, conv.dtype), conv.offsets, torch.stack(vs).to(conv.device, conv.dtype)
            )
            if site is not None:
                conv._devices = [(g_r, g_b, gains[k][m]) for m in range(m_count)]
    return {
        "dir": str(d),
        "exported_config": (manifest.get("config") or {}).get("name"),
        "exported_instance": manifest.get("instance"),
        "tiles": len(plans),
        "arrays": sum(len(p.arrays) for p, _ in staged),
        "devices": total,
        "instances": m_count,
        "deviation_from_target_us": {"mean_abs": dev_sum / max(total, 1), "max_abs": dev_max},
    }


# ======================================================================================= CLI
EXPORT_HELP = "write the programmed design of a model for a chip (CSV per array + manifest.json)"


def add_export_arguments(parser) -> None:
    """The options of ``crossbar export`` (the command itself: ``rnn_models.cli``)."""
    import argparse

    from crossbar.argtypes import bounded_int

    nonneg = bounded_int(0, 10**9)

    parser.add_argument("--checkpoint", required=True, help="task checkpoint (kws or lm)")
    parser.add_argument("--config", required=True, help="hardware config (path or preset name)")
    parser.add_argument("--out", required=True, help="folder for manifest.json and one CSV per array")
    parser.add_argument(
        "--instance",
        type=nonneg,
        default=0,
        help="simulated device instance whose programmed values fill programmed_g_us (default 0)",
    )
    parser.add_argument("--seed", type=nonneg, default=None, help="programming seed (default: the config's)")
    parser.add_argument(
        "--data",
        help="lm: the PTB folder whose training split calibrates the DAC / ADC ranges "
        "(as `crossbar evaluate lm` does); kws: not needed (the checkpoint holds its calibration data)",
    )
    parser.add_argument(
        "--digital-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the output layer digital (off-chip) or put it on the crossbar; default: the checkpoint's deployment",
    )
    parser.add_argument(
        "--fill-measured",
        choices=["target", "programmed"],
        default=None,
        help="pre-fill measured_g_us with the target or programmed values (a dry run of "
        "`crossbar evaluate --measured`); default blank",
    )
    parser.add_argument("--threads", type=lambda t: max(1, nonneg(t)), default=2)

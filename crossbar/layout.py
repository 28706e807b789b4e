"""Where a tile's devices sit in its physical arrays, and their effective conductances with IR drop.

A tile's matrix (rows = word lines: inputs, then the bias row; columns = outputs) is cut into
row blocks of ``array.rows`` and column blocks of ``array.cols``; each (row block, column block)
is one physical array per polarity (our layout, named):

* **differential**: G+ and G- sit in two arrays of identical layout (the same word-line voltages,
  each with its own drivers and integrator inputs); the signal is T+ - T-.
* **offset**: the reference column of an array (one device per row at g_mid) is one more bit line
  after the array's weight columns (the end far from the drivers); each output column subtracts
  its own array's reference column.
* **used corner**: a block smaller than the array uses the rows next to the integrators and the
  columns next to the drivers; unused cells are unformed (open), so unused lines carry no current
  and the block behaves as a rows-used x cols-used array.
* **NL-ADC ramp and bias devices** (``extra_rows``): E extra word lines of the G+ arrays of the
  *last* row block of every column block -- per column, its bias devices (rows 0..nb-1, driven
  together for the bias cycles) and its ramp devices (one row per ramp step, driven one per
  counter cycle), all other word lines at 0 V while they are read.  ``array.wires.ramp_rows``
  puts them after the weight rows, next to the integrators (``near_sense``), or before them
  (``far_sense``).  A cell of an extra row in a column without such a device is open.
* **shared ramps** (``extra_cols``): a ramp shared by the columns of an NL-ADC is one extra bit line
  (its own integrator) in the array of the NL-ADC's first column block, its devices on the extra
  rows; ``array.wires.shared_ramp_column`` puts it before the weight columns (next to the
  drivers) or after them.

Every device loads the lines it sits on: the weight cells load the ramp's bit line while the ramp
is read, the ramp cells load the weights' bit lines during the MVM.  Each physical array's
effective matrix comes from :func:`crossbar.parasitics.effective_matrix` (one definition of the
physics); row i of an array's T is what driving word line i alone delivers to each bit line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crossbar.parasitics import effective_matrices


def col_slices(n_cols: int, cols_per_array: int) -> list[slice]:
    """The column blocks (physical arrays) of ``n_cols`` output columns."""
    return [slice(s, min(s + cols_per_array, n_cols)) for s in range(0, n_cols, cols_per_array)]


def block_of_column(col: int, cols_per_array: int) -> int:
    return col // cols_per_array


def reference_column(g_neg: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """The offset mapping's reference devices of the array of rows ``rows`` and columns ``cols``,
    (..., n, 1) uS, from ``g_neg`` (..., rows, 1) -- one reference for every array -- or (...,
    rows, out) -- each column holding its own array's reference (a measured chip,
    :mod:`rnn_models.export`)."""
    return g_neg[..., rows, :1] if g_neg.shape[-1] == 1 else g_neg[..., rows, cols.start : cols.start + 1]


def effective_arrays(
    g_pos: torch.Tensor,
    g_neg: torch.Tensor,
    arr,
    extra_rows: torch.Tensor | None = None,
    extra_cols: dict | None = None,
    col_blocks=None,
    weights: bool = True,
):
    """Effective conductances (uS) of a tile's devices through its arrays' wires (``arr``: the
    config's ``array`` section).

    ``g_pos`` (M, n, out); ``g_neg`` (M, n, out), or (M, n, 1) reference devices (offset mapping);
    ``extra_rows`` (M, E, out) devices on the extra rows (0 = open); ``extra_cols`` {key: (column
    block, (M, E) devices)} shared-ramp columns.  ``col_blocks``: only these column blocks
    (default all); ``weights=False`` computes only the extra rows' T (what the ramps need; the
    weights' entries stay NaN and the G- arrays are skipped).  Returns ``(t_pos, t_neg, t_extra,
    t_cols)``: ``t_pos``/``t_neg`` (M, n, out)
    (NaN outside the blocks computed; ``t_neg`` None when skipped), ``t_extra`` (M, E, out) or
    None, ``t_cols`` {key: (M, E)}.
    """
    w = arr.wires
    m_count, n_rows, out = g_pos.shape
    dt = torch.float64
    offset = arr.mapping == "offset"
    rsl = [slice(s, min(s + arr.rows, n_rows)) for s in range(0, n_rows, arr.rows)]
    csl = col_slices(out, arr.cols)
    blocks = range(len(csl)) if col_blocks is None else sorted(set(col_blocks))
    e_rows = 0 if extra_rows is None else extra_rows.shape[1]
    t_pos = torch.full((m_count, n_rows, out), math.nan, dtype=dt)
    t_neg = torch.full((m_count, n_rows, out), math.nan, dtype=dt) if weights else None
    t_extra = torch.full((m_count, e_rows, out), math.nan, dtype=dt) if e_rows else None
    t_cols = {}
    gp, gn = g_pos.detach().to("cpu", dt), g_neg.detach().to("cpu", dt)
    # every physical array to solve, then one batch (all arrays of all blocks and instances on one
    # thread pool), then each result into place
    stacks: list[torch.Tensor] = []
    selections: list = []
    splits: list = []  # per stack: the weight rows above an NL-ADC's rows (parasitics: split), or None
    places: list = []  # per stack: a function of its T that writes the result into place

    def solve(g: torch.Tensor, sel, place, split=None) -> None:
        stacks.append(g)
        selections.append(sel)
        splits.append(split)
        places.append(place)

    for cb in blocks:
        cs = csl[cb]
        n_c = cs.stop - cs.start
        for rb, rs in enumerate(rsl):
            last = rb == len(rsl) - 1
            if not weights and not last:
                continue
            n_r = rs.stop - rs.start
            g, spot = physical_array(gp, gn, arr, rb, cb, extra_rows, extra_cols)
            e, c0, ramp_keys, ramp_pos = spot.extra_count, spot.first_col, spot.ramp_keys, spot.ramp_cols
            first_extra = spot.first_extra
            # the weight rows above the extra rows: solved again while the NL-ADC is trimmed
            split = n_r if (e and w.ramp_rows == "near_sense") else None

            def place_extra(te, cs=cs, c0=c0, n_c=n_c, ramp_keys=ramp_keys, ramp_pos=ramp_pos) -> None:
                if t_extra is not None:
                    t_extra[:, :, cs] = te[:, :, c0 : c0 + n_c]
                for k, p in zip(ramp_keys, ramp_pos):
                    t_cols[k] = te[:, :, p]

            if weights:

                def place(t, rs=rs, cs=cs, spot=spot, px=place_extra) -> None:
                    r0, c0, n_r, n_c, e, fe = (
                        spot.first_row,
                        spot.first_col,
                        spot.rows,
                        spot.cols,
                        spot.extra_count,
                        spot.first_extra,
                    )
                    tw = t[:, r0 : r0 + n_r]
                    t_pos[:, rs, cs] = tw[:, :, c0 : c0 + n_c]
                    if offset:
                        assert t_neg is not None  # allocated whenever weights are computed
                        t_neg[:, rs, cs] = tw[:, :, c0 + n_c : c0 + n_c + 1].expand(-1, -1, n_c)
                    if e:
                        px(t[:, fe : fe + e])

                solve(g, None, place, split)
            elif e:  # only the extra rows of T (one solve each)
                solve(g, range(first_extra, first_extra + e), place_extra, split)
            if weights and not offset:

                def place_neg(t, rs=rs, cs=cs) -> None:
                    assert t_neg is not None  # allocated whenever weights are computed
                    t_neg[:, rs, cs] = t

                solve(physical_array(gp, gn, arr, rb, cb, polarity="neg")[0], None, place_neg)
    for t, place in zip(effective_matrices(stacks, w, rows=selections, splits=splits), places):
        place(t)
    return t_pos, t_neg, t_extra, t_cols


@dataclass(frozen=True)
class Spot:
    """Where a tile's devices sit in one physical array (0-based array rows and bit lines): its
    weight rows ``first_row .. first_row + rows - 1`` and columns ``first_col .. first_col + cols -
    1`` (offset mapping: the reference column right after them), the NL-ADC's extra rows
    ``first_extra .. first_extra + extra_count - 1`` (0 rows: none), and the shared-ramp bit lines
    ``ramp_cols`` of the NL-ADCs ``ramp_keys``."""

    first_row: int
    rows: int
    first_col: int
    cols: int
    first_extra: int
    extra_count: int
    ramp_keys: tuple[str, ...]
    ramp_cols: tuple[int, ...]

    def row_roles(self) -> list[str]:
        """Per array row: ``"weight"`` or ``"nl_adc"`` (a ramp or bias row)."""
        roles = ["nl_adc"] * (self.rows + self.extra_count)
        roles[self.first_row : self.first_row + self.rows] = ["weight"] * self.rows
        return roles


def physical_array(
    g_pos: torch.Tensor,
    g_neg: torch.Tensor,
    arr,
    row_block: int,
    col_block: int,
    extra_rows: torch.Tensor | None = None,
    extra_cols: dict | None = None,
    polarity: str = "pos",
) -> tuple[torch.Tensor, Spot]:
    """The devices (uS, float64, CPU; 0 = open) of one physical array, (M, rows, bit lines), as
    this module's layout places them, and their :class:`Spot`: the weight rows and columns of
    block (``row_block``, ``col_block``); with the offset mapping its reference column after them;
    on the last row block of a column block the NL-ADC's ``extra_rows`` (M, E, out) and on its
    first the shared ramps ``extra_cols`` {key: (column block, (M, E))}.  ``polarity="neg"``: the
    G- array of a differential mapping (weights only).  Arguments as :func:`effective_arrays`."""
    w = arr.wires
    dt = torch.float64
    n_rows, out = g_pos.shape[-2:]
    m_count = g_pos.shape[0]
    rsl = [slice(s, min(s + arr.rows, n_rows)) for s in range(0, n_rows, arr.rows)]
    csl = col_slices(out, arr.cols)
    rs, cs = rsl[row_block], csl[col_block]
    n_r, n_c = rs.stop - rs.start, cs.stop - cs.start
    gp, gn = g_pos.detach().to("cpu", dt), g_neg.detach().to("cpu", dt)
    if polarity == "neg":
        return gn[:, rs, cs], Spot(0, n_r, 0, n_c, 0, 0, (), ())
    extra_cols = extra_cols or {}
    e = 0 if (extra_rows is None or row_block != len(rsl) - 1) else extra_rows.shape[1]
    ramp_keys = [k for k, (b, _) in extra_cols.items() if b == col_block] if e else []
    parts = [gp[:, rs, cs]]
    if arr.mapping == "offset":
        parts.append(reference_column(gn, rs, cs))
    n_ref = len(parts) - 1
    ramp = [torch.zeros(m_count, n_r, 1, dtype=dt) for _ in ramp_keys]
    near = w.shared_ramp_column == "near_driver"
    g = torch.cat((ramp + parts) if near else (parts + ramp), -1)  # (M, n_r, bit lines)
    c0 = len(ramp) if near else 0  # first weight column
    ramp_pos = list(range(len(ramp))) if near else list(range(n_c + n_ref, n_c + n_ref + len(ramp)))
    if e:
        assert extra_rows is not None  # (e > 0 only with extra rows)
        ex = torch.zeros(m_count, e, g.shape[-1], dtype=dt)
        ex[:, :, c0 : c0 + n_c] = extra_rows.detach().to("cpu", dt)[:, :, cs]
        for k, p in zip(ramp_keys, ramp_pos):
            ex[:, :, p] = extra_cols[k][1].detach().to("cpu", dt)
        g = torch.cat([g, ex], 1) if w.ramp_rows == "near_sense" else torch.cat([ex, g], 1)
    first_row = e if (e and w.ramp_rows == "far_sense") else 0
    first_extra = n_r if w.ramp_rows == "near_sense" else 0
    return g, Spot(first_row, n_r, c0, n_c, first_extra, e, tuple(ramp_keys), tuple(ramp_pos))

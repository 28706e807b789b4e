"""IR drop by nested dissection: the effective matrix T of one array from the Schur complements of
boxes of cells, merged two by two -- the same network as :mod:`crossbar.parasitics` describes,
solved by another elimination order.

The array is cut in halves, each half in halves, down to boxes of at most :data:`LEAF` x
:data:`LEAF` cells.  A box owns its cells, the word-line segments to the left of its cells and the
bit-line segments above them, and it is represented by the admittance matrix (its Schur
complement, a Laplacian: rows sum to zero, no node is grounded inside) between its *boundary*
nodes, the nodes it shares with its neighbours, in a fixed order:

* left: the word-line node before its first column, one per row: the neighbour's last word-line
  node, or at the array's left edge the source (the driver's far side; with ``r_driver = 0`` the
  first cell's word-line node, which is then the source itself);
* right: its last column's word-line nodes (absent at the array's right edge, the open ends);
* top: the bit-line node above its first row, one per column: the neighbour's last bit-line node
  (absent at row 0, the open ends);
* bottom: its last row's bit-line nodes, or at the array's last row the virtual grounds (behind
  ``r_sense``; with ``r_sense = 0`` the last row's nodes, which are then the grounds themselves).

Two neighbours merge by adding their matrices on the nodes they share (those become interior) and
eliminating those: a Cholesky factorisation, a triangular solve and a symmetric rank-k update
(LAPACK / BLAS through :mod:`crossbar.lapack`, in one compiled kernel without the GIL).  The
diagonal of every result is reset to minus the sum of its row's off-diagonal entries (a floating
network's rows sum to zero exactly): an off-diagonal entry is a non-positive conductance minus a
non-negative correction (no cancellation between the two), the diagonal is where the elimination
subtracts nearly equal numbers.  The whole array's matrix is
between the sources and the virtual grounds, and ``T[i, j] = -S[ground j, source i]``.

An array may first be cut above a given row (:func:`plan`'s ``split``): the matrix of the rows
above it (:func:`prefix_state`) depends on their cells only, so an NL-ADC's rows below the weights
can be re-solved from it while they are trimmed (:data:`crossbar.parasitics.PREFIX_CACHE`).

Cost: ~ (rows + cols)^3 flops, against rows * cols^3 for the line-by-line ladder; it needs
resistive word and bit lines (``r_wl, r_bl > 0``: a zero-resistance line joins its nodes, which the
ladder handles) and more than :data:`LEAF` rows and columns (:func:`applies`).  The same cases run
through every solver in ``tests/crossbar/test_parasitics.py``.
"""

from __future__ import annotations

import functools

import numpy as np

from crossbar.lapack import CHARS, SCALARS, routine
from crossbar.pointwise import kernel

#: Boxes of at most LEAF x LEAF cells are built directly (their interior eliminated); larger ones
#: are cut in two.  Chosen among 2-8 on one thread of the project's 2-core machine (4 and 6 the
#: fastest at 169-512 rows and columns).
LEAF = 4

#: Largest buffers (bytes) a solve may take: its stack of boundary matrices and its work matrix
#: grow as (rows + cols)^2 -- up to ~9 (rows + cols)^2 float64 for an array cut above a row
#: (:func:`plan`'s ``split``), the cached first rows' matrix not counted; 2 GiB is rows + cols
#: ~5,000 -- where the ladder needs ~cols x (cols + rows); larger arrays take the ladder.
MAX_BUFFER_BYTES = 2**31

#: uS per siemens (as :data:`crossbar.parasitics.US_PER_S`; this module does not import that one,
#: which imports this one)
US_PER_S = 1e6

_ROUTINES = (
    ("scipy.linalg.cython_lapack", "dpotrf", 5),
    ("scipy.linalg.cython_blas", "dtrsm", 11),
    ("scipy.linalg.cython_blas", "dsyrk", 10),
)


def _boundary(r0: int, r1: int, c0: int, c1: int, rows: int, cols: int) -> int:
    """Number of boundary nodes of a box: left + right + top + bottom."""
    h, w = r1 - r0, c1 - c0
    return h + (h if c1 < cols else 0) + (w if r0 > 0 else 0) + w


_boundary_kernel = kernel(inline=True)(_boundary)  # the same count, inside the compiled kernels


def _cut(rows: int, cols: int, leaf: int, box: tuple[int, int, int, int], out: list) -> None:
    """Append the boxes of ``box`` (r0, r1, c0, c1) to ``out``, children before their parent."""
    r0, r1, c0, c1 = box
    h, w = r1 - r0, c1 - c0
    # columns are cut only into halves at least 2 wide: at column 0 with r_driver = 0 a box's left
    # side is its first column's word-line nodes, so its right side needs another column
    if w > leaf and w >= 4 and (w >= h or h <= leaf):
        m = c0 + w // 2
        _cut(rows, cols, leaf, (r0, r1, c0, m), out)
        _cut(rows, cols, leaf, (r0, r1, m, c1), out)
        out.append((r0, r1, c0, c1, 1, m))
    elif h > leaf:
        m = r0 + h // 2
        _cut(rows, cols, leaf, (r0, m, c0, c1), out)
        _cut(rows, cols, leaf, (m, r1, c0, c1), out)
        out.append((r0, r1, c0, c1, 2, m))
    else:
        out.append((r0, r1, c0, c1, 0, 0))


@functools.lru_cache(maxsize=64)
def plan(rows: int, cols: int, leaf: int = LEAF, split: int = 0, part: str = "all") -> tuple[np.ndarray, int, int]:
    """The boxes of a ``rows x cols`` array in the order they are computed (children before their
    parent): int64 (n, 6) rows ``r0, r1, c0, c1, kind, cut`` with kind 0 a leaf, 1 two boxes side
    by side (columns cut at ``cut``), 2 one above the other (rows cut at ``cut``); and the lengths
    (float64 elements) of the stack of boundary matrices and of the work matrix.

    ``split`` (0 < split < rows): the array is first cut above row ``split``, so that the boxes of
    its first rows (``part="top"``, ending with the box of rows 0..split-1) can be computed once and
    kept (:func:`prefix_state`) while ``part="bottom"`` (the boxes of the other rows, then the
    whole array's merge) starts from that box's matrix on the stack.  ``part="all"``: every box."""
    boxes: list[tuple[int, int, int, int, int, int]] = []
    seed_len = 0  # elements of the stack's one matrix before the first box (part "bottom": the top box's)
    if split == 0:
        _cut(rows, cols, leaf, (0, rows, 0, cols), boxes)
    else:
        if part in ("all", "top"):
            _cut(rows, cols, leaf, (0, split, 0, cols), boxes)
        else:
            seed_len = _boundary(0, split, 0, cols, rows, cols) ** 2
        if part in ("all", "bottom"):
            _cut(rows, cols, leaf, (split, rows, 0, cols), boxes)
            boxes.append((0, rows, 0, cols, 2, split))
    stack: list[int] = [seed_len] if seed_len else []
    peak, work = seed_len, 0
    for r0, r1, c0, c1, kind, _cut_at in boxes:
        n_o = _boundary(r0, r1, c0, c1, rows, cols)
        if kind == 0:  # every node of the leaf (a bound: a separate left node, top and ground nodes)
            n = 2 * (r1 - r0) * (c1 - c0) + (r1 - r0) + 2 * (c1 - c0)
        else:
            n = n_o + ((r1 - r0) if kind == 1 else (c1 - c0))
            stack.pop()
            stack.pop()
        work = max(work, n * n)
        stack.append(n_o * n_o)
        peak = max(peak, sum(stack))
    table = np.array(boxes, dtype=np.int64).reshape(-1, 6)
    table.setflags(write=False)  # cached and shared by the solver's threads
    return table, peak, work


@kernel(inline=True)
def _edge(k, n, p, q, g):  # pragma: no cover - compiled
    """Add a conductance ``g`` between local nodes p and q of the n x n Fortran-ordered ``k``."""
    k[p + p * n] += g
    k[q + q * n] += g
    k[p + q * n] -= g
    k[q + p * n] -= g


@kernel
def _leaf_matrix(gc, gw, gb, gd, gs, r0, r1, c0, c1, k):  # pragma: no cover - compiled
    """The nodal matrix of a leaf box (every node of it, interior first, then its boundary in
    order) into ``k`` (Fortran-ordered n x n from its start); returns (n, interior count)."""
    rows, cols = gc.shape
    h, w = r1 - r0, c1 - c0
    sep_left = not (gd == 0.0 and c0 == 0)  # else the first column's word-line nodes are the sources
    has_right, has_top, has_ground = c1 < cols, r0 > 0, (r1 == rows and gs > 0.0)
    n = 2 * h * w + (h if sep_left else 0) + (w if has_top else 0) + (w if has_ground else 0)
    n_o = _boundary_kernel(r0, r1, c0, c1, rows, cols)
    n_i = n - n_o
    idw = np.full((h, w), -1, np.int64)
    idb = np.full((h, w), -1, np.int64)
    idl = np.full(h, -1, np.int64)
    idt = np.full(w, -1, np.int64)
    idg = np.full(w, -1, np.int64)
    for a in range(h):
        if sep_left:
            idl[a] = n_i + a
        else:
            idw[a, 0] = n_i + a
        if has_right:
            idw[a, w - 1] = n_i + h + a
    off = n_i + h + (h if has_right else 0)
    if has_top:
        for j in range(w):
            idt[j] = off + j
        off += w
    for j in range(w):
        if has_ground:
            idg[j] = off + j
        else:
            idb[h - 1, j] = off + j
    nxt = 0
    for a in range(h):
        for j in range(w):
            if idw[a, j] < 0:
                idw[a, j] = nxt
                nxt += 1
            if idb[a, j] < 0:
                idb[a, j] = nxt
                nxt += 1
    for p in range(n * n):
        k[p] = 0.0
    for a in range(h):
        if sep_left:
            _edge(k, n, idl[a], idw[a, 0], gd if c0 == 0 else gw)
        for j in range(w - 1):
            _edge(k, n, idw[a, j], idw[a, j + 1], gw)
        for j in range(w):
            g = gc[r0 + a, c0 + j]
            if g > 0.0:
                _edge(k, n, idw[a, j], idb[a, j], g)
            if a + 1 < h:
                _edge(k, n, idb[a, j], idb[a + 1, j], gb)
    for j in range(w):
        if has_top:
            _edge(k, n, idt[j], idb[0, j], gb)
        if has_ground:
            _edge(k, n, idb[h - 1, j], idg[j], gs)
    return n, n_i


@kernel
def _merge_matrix(kind, r0, r1, c0, c1, m, cols, stack, oa, na, ob, nb, k):  # pragma: no cover - compiled
    """Two neighbouring boxes' boundary matrices (``stack[oa:]`` na x na, ``stack[ob:]`` nb x nb,
    Fortran-ordered) added into one matrix ``k`` over the shared nodes (first) and the merged
    box's boundary; returns (n, shared count)."""
    top, right = r0 > 0, c1 < cols
    ma = np.empty(na, np.int64)
    mb = np.empty(nb, np.int64)
    if kind == 1:  # A left of B; A's right side is B's left side
        h, wa, wb = r1 - r0, m - c0, c1 - m
        n_i = h
        hr = h if right else 0
        tw = (wa + wb) if top else 0
        n = n_i + h + hr + tw + wa + wb
        for a in range(h):
            ma[a] = n_i + a
            ma[h + a] = a
            mb[a] = a
            if right:
                mb[h + a] = n_i + h + a
        oa_, ob_ = 2 * h, h + hr
        if top:
            for j in range(wa):
                ma[oa_ + j] = n_i + h + hr + j
            for j in range(wb):
                mb[ob_ + j] = n_i + h + hr + wa + j
            oa_ += wa
            ob_ += wb
        for j in range(wa):
            ma[oa_ + j] = n_i + h + hr + tw + j
        for j in range(wb):
            mb[ob_ + j] = n_i + h + hr + tw + wa + j
    else:  # A above B; A's bottom side is B's top side
        w, ha, hb = c1 - c0, m - r0, r1 - m
        hh = ha + hb
        n_i = w
        hr = hh if right else 0
        ht = w if top else 0
        n = n_i + hh + hr + ht + w
        for a in range(ha):
            ma[a] = n_i + a
        for a in range(hb):
            mb[a] = n_i + ha + a
        oa_, ob_ = ha, hb
        if right:
            for a in range(ha):
                ma[oa_ + a] = n_i + hh + a
            for a in range(hb):
                mb[ob_ + a] = n_i + hh + ha + a
            oa_ += ha
            ob_ += hb
        if top:
            for j in range(w):
                ma[oa_ + j] = n_i + hh + hr + j
            oa_ += w
        for j in range(w):
            ma[oa_ + j] = j
            mb[ob_ + j] = j
            mb[ob_ + w + j] = n_i + hh + hr + ht + j
    for p in range(n * n):
        k[p] = 0.0
    for q in range(na):
        col = ma[q] * n
        for p in range(na):
            k[ma[p] + col] += stack[oa + p + q * na]
    for q in range(nb):
        col = mb[q] * n
        for p in range(nb):
            k[mb[p] + col] += stack[ob + p + q * nb]
    return n, n_i


@kernel
def _eliminate(k, n, n_i, out, potrf, trsm, syrk, chars, ints, scal):  # pragma: no cover - compiled
    """The Schur complement of ``k`` (Fortran n x n, interior nodes first) onto its last n - n_i
    nodes into ``out`` (full, Fortran-ordered), the diagonal reset to minus its row's off-diagonal
    sum; returns LAPACK's info (0: done)."""
    n_o = n - n_i
    if n_i > 0:
        ints[0], ints[1], ints[2], ints[3] = n_i, n, 0, n_o
        c_l, c_n, c_t = chars[0:].ctypes, chars[2:].ctypes, chars[3:].ctypes
        i_ni, i_n, i_info, i_no = ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes, ints[3:].ctypes
        potrf(c_l, i_ni, k.ctypes, i_n, i_info)  # K_II = L L^T
        if ints[2] != 0:
            return ints[2]
        if n_o > 0:
            kio = k[n_i * n :]
            koo = k[n_i + n_i * n :]
            one, minus = scal[0:].ctypes, scal[2:].ctypes
            trsm(c_l, c_l, c_n, c_n, i_ni, i_no, one, k.ctypes, i_n, kio.ctypes, i_n)  # X = L^-1 K_IO
            syrk(c_l, c_t, i_no, i_ni, minus, kio.ctypes, i_n, one, koo.ctypes, i_n)  # K_OO - X^T X
    rowsum = np.zeros(n_o)
    for q in range(n_o):
        for p in range(q + 1, n_o):
            v = k[n_i + p + (n_i + q) * n]
            out[p + q * n_o] = v
            out[q + p * n_o] = v
            rowsum[p] += v
            rowsum[q] += v
    for p in range(n_o):
        out[p + p * n_o] = -rowsum[p]
    return 0


@kernel
def _dissect(gc, gw, gb, gd, gs, boxes, stack, work, potrf, trsm, syrk, chars, ints, scal, seed_n):  # pragma: no cover
    """Every box of ``boxes`` (:func:`plan`) in turn, the boundary matrices on a stack (``stack``
    holds a ``seed_n`` x ``seed_n`` matrix at its start already where seed_n > 0); the last box's matrix
    ends at the stack's start.  Returns LAPACK's info (0: done)."""
    cols = gc.shape[1]
    nb_ = boxes.shape[0]
    st_off = np.empty(nb_ + 1, np.int64)
    st_n = np.empty(nb_ + 1, np.int64)
    sp = 0
    top = 0
    if seed_n > 0:
        st_off[0], st_n[0] = 0, seed_n
        sp, top = 1, seed_n * seed_n
    for b in range(nb_):
        r0, r1, c0, c1, kind, m = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3], boxes[b, 4], boxes[b, 5]
        if kind == 0:
            n, n_i = _leaf_matrix(gc, gw, gb, gd, gs, r0, r1, c0, c1, work)
        else:
            oa, na, ob, nb = st_off[sp - 2], st_n[sp - 2], st_off[sp - 1], st_n[sp - 1]
            n, n_i = _merge_matrix(kind, r0, r1, c0, c1, m, cols, stack, oa, na, ob, nb, work)
            sp -= 2
            top = oa
        info = _eliminate(work, n, n_i, stack[top:], potrf, trsm, syrk, chars, ints, scal)
        if info != 0:
            return info
        st_off[sp] = top
        st_n[sp] = n - n_i
        sp += 1
        top += (n - n_i) * (n - n_i)
    return 0


def applies(w, rows: int, cols: int) -> bool:
    """True where this solver takes a ``rows x cols`` array with the wires ``w``: resistive word and
    bit lines (a zero-resistance line joins its nodes; the ladder handles that), and more than
    :data:`LEAF` rows and columns.  Then no leaf spans a whole word or bit line, so no line is
    eliminated within one box, where a line floating behind a large driver or sense resistance
    (tiny segments, weakly tied to its source) makes the Cholesky pivots differences of nearly
    equal numbers: measured against the sparse LU, 1e-6 of T for a 5 x 4 array with 1e-6 ohm
    segments behind 1e4 ohm, ~1e-13 for 16 x 16 and 64 x 64 arrays with the same wires (after a
    leaf, every box's lines end on its boundary, and each merge eliminates one node per line).
    And its buffers fit :data:`MAX_BUFFER_BYTES`."""
    return _resistive(w) and rows > LEAF and cols > LEAF and buffer_bytes(rows, cols) <= MAX_BUFFER_BYTES


def buffer_bytes(rows: int, cols: int) -> int:
    """A bound on the bytes of one solve's buffers for a ``rows x cols`` array (:func:`plan`)."""
    return 8 * 10 * (rows + cols) ** 2


def _resistive(w) -> bool:
    return w.r_wl > 0 and w.r_bl > 0


def cut_pays(rows: int, cols: int) -> bool:
    """Whether cutting an array above a row (to keep its first rows' matrix) pays: the cut's merge
    eliminates one node per bit line, so it pays where the array is not much wider than tall
    (measured from a kept matrix against a whole solve: 206 x 256 6.6 against 65 ms; 16 x 512 23
    against 8.4 ms, 40 x 1024 119 against 55 ms)."""
    return 2 * rows >= cols


def _run(gc: np.ndarray, w, leaf: int, split: int, part: str, prefix: np.ndarray | None = None) -> np.ndarray:
    """The matrix (n x n, Fortran-ordered float64) of the last box of :func:`plan`'s ``part``;
    ``prefix``: the first rows' matrix where ``part`` is "bottom"."""
    if not _resistive(w):
        raise ValueError("the nested-dissection solver needs r_wl > 0 and r_bl > 0")
    if not (isinstance(leaf, int) and leaf >= 1):
        raise ValueError(f"leaf = {leaf!r}: must be an integer >= 1")
    rows, cols = gc.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"an array of {rows} x {cols} cells: nothing to solve")
    boxes, stack_len, work_len = plan(rows, cols, leaf, split, part)
    stack = np.empty(stack_len)
    n_seed = 0
    if part == "bottom":
        n_seed = _boundary(0, split, 0, cols, rows, cols)
        if prefix is None or prefix.shape != (n_seed, n_seed):
            raise ValueError(
                f"prefix: the matrix of rows 0..{split - 1} of a {rows} x {cols} array is {n_seed} x {n_seed} "
                f"(prefix_state with the same split), got {None if prefix is None else prefix.shape}"
            )
        stack[: n_seed * n_seed] = prefix.ravel(order="F")
    info = _dissect(
        gc,
        US_PER_S / w.r_wl,
        US_PER_S / w.r_bl,
        US_PER_S / w.r_driver if w.r_driver > 0 else 0.0,
        US_PER_S / w.r_sense if w.r_sense > 0 else 0.0,
        boxes,
        stack,
        np.empty(work_len),
        *[routine(*r) for r in _ROUTINES],
        CHARS,
        np.zeros(4, np.int32),
        SCALARS,
        n_seed,
    )
    if info != 0:  # cannot happen for a passive network; say so rather than return garbage
        raise ArithmeticError(f"IR drop: a box's interior admittance is not positive definite (LAPACK info {info})")
    r0, r1, c0, c1 = (int(x) for x in boxes[-1, :4])
    n = _boundary(r0, r1, c0, c1, rows, cols)
    return stack[: n * n].reshape(n, n, order="F")


def prefix_state(gc: np.ndarray, w, split: int, leaf: int = LEAF) -> np.ndarray:
    """The admittance matrix (uS) of the array's rows 0..split-1 between their sources and the
    bit-line nodes of row split - 1: what :func:`effective` with the same ``split`` starts from.  It
    depends on those rows' cells only, so it serves every array that shares them (an NL-ADC's
    rows below the weights, re-solved while they are trimmed)."""
    gc = np.ascontiguousarray(gc, dtype=np.float64)
    _check_split(split, gc.shape[0])
    return _run(gc, w, leaf, split, "top")


def _check_split(split, rows: int) -> None:
    if not (isinstance(split, int) and 0 < split < rows):
        raise ValueError(f"split = {split!r}: must be an integer in 1..{rows - 1} (a row of a {rows}-row array)")


def effective(gc: np.ndarray, w, leaf: int = LEAF, split: int = 0, prefix: np.ndarray | None = None) -> np.ndarray:
    """T (uS, rows x cols) of one array of cell conductances ``gc`` (uS, access resistance already
    in series) with the wires ``w`` (:class:`crossbar.parasitics.Wires`, ohm; r_wl, r_bl > 0; the
    accuracy stated where :func:`applies`).  ``split`` > 0: the array is first cut above that row
    (:func:`plan`), and ``prefix`` is :func:`prefix_state` of its first rows (computed here when
    None; one of another shape is an error); the result does not depend on whether it was given.
    ``leaf``: the largest leaf box (tests)."""
    gc = np.ascontiguousarray(gc, dtype=np.float64)
    rows = gc.shape[0]
    if split:
        _check_split(split, rows)
        if prefix is None:
            prefix = prefix_state(gc, w, split, leaf)
    elif prefix is not None:
        raise ValueError("prefix: given without a split")
    s = _run(gc, w, leaf, split, "bottom" if split else "all", prefix if split else None)
    return -s[rows:, :rows].T.copy()  # T[i, j] = -S[ground j, source i]: left (sources), then bottom

"""IR drop: wire and access resistance of a crossbar array, exactly, as an effective matrix.

The network (one physical array of ``rows x cols`` cells; conductances in uS, resistances in ohm,
voltages in V, currents in uA):

* word line i is driven by a source at V_i through ``r_driver`` at its column-0 end; neighbouring
  cells of a word line are ``r_wl`` apart;
* bit line j is held at 0 V (the virtual ground of its integrator) at its row-(rows-1) end through
  ``r_sense``; neighbouring cells of a bit line are ``r_bl`` apart;
* cell (i, j) is 1 / G_ij in series with ``r_access`` (a linear 1T1R access transistor, gate fully
  on); a cell with G = 0 is open;
* a row the DAC drives at 0 V sits at 0 V (its source is a 0-V source, not an open line).

Every element is linear, so the currents into the virtual grounds are exactly ``I = V @ T(G, r)``:
the effective matrix ``T`` (rows x cols, uS) is computed once per programmed state by a nodal
solve and every MVM stays one matrix product.  A resistance of 0 joins the nodes it
connects (no 1 / 0); with every resistance 0, ``T`` is ``G`` itself (bit for bit, no solve).

Three exact solvers of these nodal equations (the tests run every case through each):

* **nested dissection** (the default where word and bit lines are both resistive,
  :mod:`crossbar.dissection`): the array cut into boxes of a few cells, each reduced to the
  admittance matrix between the nodes it shares with its neighbours, merged two by two up to the
  matrix between the sources and the virtual grounds.  Cost ~ (rows + cols)^3 flops; rounding
  ~1e-13 relative, also with tiny segments next to large driver and sense resistances;
* **line by line** (where a line has zero resistance): each word line's tridiagonal system is
  eliminated exactly, which
  leaves per row a dense admittance matrix between that row's bit-line nodes; the bit lines are
  then a ladder of Norton equivalents from the far end (row 0) to the virtual grounds, one dense
  cols x cols SPD inverse per row (blocked on BLAS, :func:`_spd_inverse_lower`), with rounding
  ~1e-12 relative for any wire resistance >= 0 (a tiny segment takes a product form).  Cost ~
  rows * cols^2 * (cols + rows) flops; run on the *dual* array (word and bit lines, drivers and
  virtual grounds exchanged; reciprocity gives T) when rows < cols.  A floating word line (behind
  a driver resistance) whose segments are tiny next to it is ill-conditioned for it
  (:data:`MAX_LINE_CONDITION`); then
* **sparse LU** of the whole network (SuperLU), written for the *deviation* from the ideal node
  voltages (word-line nodes at V_i, bit-line nodes at 0 V): ``K du = r0`` with ``K`` the nodal
  (Laplacian) matrix of the unknown nodes, so ``T = G_c + dT`` with ``G_c = G / (1 + G r_access)``
  and only the correction ``dT`` carrying rounding; one factorisation serves all right-hand sides.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import threading
import time
from dataclasses import dataclass, fields

import numpy as np

from crossbar import dissection
from crossbar.errors import CrossbarInputError
from crossbar.lapack import CHARS, SCALARS
from crossbar.lapack import ref as _ref
from crossbar.lapack import routine as _lapack
from crossbar.pointwise import kernel

#: uS per siemens: a wire of r ohm has conductance 1e6 / r uS.
US_PER_S = 1e6


@dataclass(frozen=True)
class Wires:
    """Parasitic resistances of one array, ohm (0 = ideal)."""

    r_wl: float = 0.0  # word-line segment between neighbouring cells
    r_bl: float = 0.0  # bit-line segment between neighbouring cells
    r_driver: float = 0.0  # word-line driver output resistance (column-0 end)
    r_sense: float = 0.0  # bit-line connection to the integrator's virtual ground (row-(rows-1) end)
    r_access: float = 0.0  # access transistor in series with every cell

    def __post_init__(self):
        for f in fields(self):  # any real number (numpy's too), not a bool nor a string; kept as float
            v = getattr(self, f.name)
            if not (
                isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v) and v >= 0
            ):
                raise CrossbarInputError(f"{f.name} = {v!r}: a wire resistance must be a finite number >= 0 ohm")
            object.__setattr__(self, f.name, float(v))

    @property
    def ideal(self) -> bool:
        """True when every resistance is 0 (T = G)."""
        return all(getattr(self, f.name) == 0 for f in fields(self))

    @property
    def coupled(self) -> bool:
        """True when the cells interact (a wire, driver or sense resistance is non-zero)."""
        return any(v > 0 for v in (self.r_wl, self.r_bl, self.r_driver, self.r_sense))

    @classmethod
    def of(cls, wires=None, **kw) -> Wires:
        """``Wires`` from another object with these attributes (e.g. the config's ``array.wires``),
        keyword arguments, or None (ideal)."""
        if isinstance(wires, Wires) and not kw:
            return wires
        values = {f.name: getattr(wires, f.name, 0.0) for f in fields(cls)} if wires is not None else {}
        values.update(kw)
        return cls(**values)


# ------------------------------------------------------------------------------ array helpers
def _as_numpy(g) -> np.ndarray:
    try:
        import torch

        if isinstance(g, torch.Tensor):
            return g.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.asarray(g, dtype=np.float64)


def _like(out: np.ndarray, ref):
    """``out`` as the type of ``ref`` (a torch tensor keeps its dtype and device)."""
    try:
        import torch

        if isinstance(ref, torch.Tensor):
            return torch.from_numpy(out).to(ref.device, ref.dtype if ref.dtype.is_floating_point else torch.float64)
    except ImportError:  # pragma: no cover
        pass
    return out


def _check_g(g: np.ndarray) -> None:
    if g.ndim < 2 or g.shape[-1] == 0 or g.shape[-2] == 0:
        raise CrossbarInputError(
            f"g_us must be (rows, cols) or (..., rows, cols) with rows, cols >= 1, got shape {g.shape}"
        )
    if not np.isfinite(g).all() or (g < 0).any():
        raise CrossbarInputError("g_us must be finite conductances >= 0 uS")


def cell_conductance(g_us, r_access: float):
    """Conductance (uS) of a cell G in series with the access resistance: G / (1 + G r_access)."""
    if r_access == 0:
        return g_us
    return g_us / (1.0 + g_us * (r_access / US_PER_S))


# ------------------------------------------------------------------------------ the network
class _Network:
    """Node numbering and nodal matrix of one array (the part that does not depend on G).

    ``wl[i, j]`` / ``bl[i, j]``: the unknown node of the word-line / bit-line end of cell (i, j), or
    -1 where that node is held at a source (a driver with r_driver = 0 -- then its deviation is 0)
    or at the virtual ground.  Zero-resistance wires join nodes.
    """

    def __init__(self, rows: int, cols: int, w: Wires):
        self.rows, self.cols, self.w = rows, cols, w
        n = 0
        i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        edges_a, edges_b, edges_g = [], [], []
        # word lines
        if w.r_wl > 0:
            wl = i * cols + j
            n = rows * cols
            if w.r_driver == 0:
                wl = np.where(j == 0, -1, wl)
            edges_a.append(wl[:, :-1].ravel())
            edges_b.append(wl[:, 1:].ravel())
            edges_g.append(np.full(rows * (cols - 1), US_PER_S / w.r_wl))
        elif w.r_driver > 0:
            wl = i.copy()
            n = rows
        else:
            wl = np.full((rows, cols), -1)
        if w.r_driver > 0:
            edges_a.append(wl[:, 0].ravel())
            edges_b.append(np.full(rows, -1))
            edges_g.append(np.full(rows, US_PER_S / w.r_driver))
        # bit lines
        if w.r_bl > 0:
            bl = n + i * cols + j
            n += rows * cols
            if w.r_sense == 0:
                bl = np.where(i == rows - 1, -1, bl)
            edges_a.append(bl[:-1, :].ravel())
            edges_b.append(bl[1:, :].ravel())
            edges_g.append(np.full((rows - 1) * cols, US_PER_S / w.r_bl))
        elif w.r_sense > 0:
            bl = n + j
            n += cols
        else:
            bl = np.full((rows, cols), -1)
        if w.r_sense > 0:
            edges_a.append(bl[-1, :].ravel())
            edges_b.append(np.full(cols, -1))
            edges_g.append(np.full(cols, US_PER_S / w.r_sense))
        # renumber the unknown nodes densely (fixed nodes dropped)
        used = np.zeros(n, bool)
        for m in (wl, bl):
            used[m[m >= 0]] = True
        for a, b in zip(edges_a, edges_b):
            used[a[a >= 0]] = True
            used[b[b >= 0]] = True
        new = np.full(n + 1, -1)
        new[:n][used] = np.arange(int(used.sum()))
        self.wl, self.bl = new[wl], new[bl]
        self.n = int(used.sum())
        self.wire = (
            np.concatenate([new[a] for a in edges_a]) if edges_a else np.zeros(0, int),
            np.concatenate([new[b] for b in edges_b]) if edges_b else np.zeros(0, int),
            np.concatenate(edges_g) if edges_g else np.zeros(0),
        )

    def edges(self, gc: np.ndarray):
        """Every conducting element ``(a, b, g)``: its two nodes (-1: a fixed node) and its
        conductance (uS), wires first, then the cells ``gc`` (rows, cols)."""
        a = np.concatenate([self.wire[0], self.wl.ravel()])
        b = np.concatenate([self.wire[1], self.bl.ravel()])
        g = np.concatenate([self.wire[2], gc.ravel()])
        keep = g > 0
        return a[keep], b[keep], g[keep]

    def matrix(self, gc: np.ndarray):
        """The nodal matrix K (n x n, uS, CSC) for cell conductances ``gc`` (rows, cols)."""
        import scipy.sparse as sp

        a, b, g = self.edges(gc)
        ia, ib = a >= 0, b >= 0
        both = ia & ib
        r = np.concatenate([a[ia], b[ib], a[both], b[both]])
        c = np.concatenate([a[ia], b[ib], b[both], a[both]])
        v = np.concatenate([g[ia], g[ib], -g[both], -g[both]])
        return sp.csc_matrix((v, (r, c)), shape=(self.n, self.n))

    def kcl(self, gc: np.ndarray):
        """``x -> K x`` computed as Kirchhoff's current law does it: each element's current
        g (x_a - x_b) (a fixed node's deviation is 0), then summed at its nodes in extended
        precision (np.longdouble).  Where a tiny segment joins two nodes the voltage difference
        is taken first, so no 1e12 uS x volts product cancels (as in K x) -- the residual of
        :class:`_SparseSolver`'s corrections."""
        import scipy.sparse as sp

        a, b, g = self.edges(gc)
        ia, ib = a >= 0, b >= 0
        e = np.arange(len(g))
        incidence = sp.csr_matrix(
            (
                np.concatenate([np.ones(int(ia.sum())), -np.ones(int(ib.sum()))]).astype(np.longdouble),
                (np.concatenate([a[ia], b[ib]]), np.concatenate([e[ia], e[ib]])),
            ),
            shape=(self.n, len(g)),
        )
        a0, b0 = np.where(ia, a, self.n), np.where(ib, b, self.n)  # row n: the fixed nodes' 0

        def apply(x: np.ndarray) -> np.ndarray:
            xz = np.concatenate([x, np.zeros((1,) + x.shape[1:])])
            current = (xz[a0] - xz[b0]) * g.reshape((-1,) + (1,) * (x.ndim - 1))
            return incidence @ current.astype(np.longdouble)

        return apply

    def rhs(self, gc: np.ndarray):
        """Right-hand sides (n x rows, sparse CSC): unit voltage on row k, deviation form."""
        import scipy.sparse as sp

        k = np.repeat(np.arange(self.rows), self.cols)
        wl, bl, g = self.wl.ravel(), self.bl.ravel(), gc.ravel()
        mw, mb = wl >= 0, bl >= 0
        r = np.concatenate([wl[mw], bl[mb]])
        c = np.concatenate([k[mw], k[mb]])
        v = np.concatenate([-g[mw], g[mb]])
        return sp.csc_matrix((v, (r, c)), shape=(self.n, self.rows))

    def output(self, gc: np.ndarray):
        """Output functional S (cols x n, sparse CSR): column current = sum_i gc (du_wl - du_bl)."""
        import scipy.sparse as sp

        j = np.tile(np.arange(self.cols), self.rows)
        wl, bl, g = self.wl.ravel(), self.bl.ravel(), gc.ravel()
        mw, mb = wl >= 0, bl >= 0
        r = np.concatenate([j[mw], j[mb]])
        c = np.concatenate([wl[mw], bl[mb]])
        v = np.concatenate([g[mw], -g[mb]])
        return sp.csr_matrix((v, (r, c)), shape=(self.cols, self.n))


def _factorize(k):
    """Sparse LU of the symmetric nodal matrix (SuperLU, symmetric-pattern ordering)."""
    from scipy.sparse.linalg import splu

    return splu(k, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})


class _Progress:
    """Prints progress to stderr once a computation has taken longer than ``after`` seconds."""

    def __init__(self, label: str, total: int, enabled, after: float = 2.0):
        self.label, self.total, self.after = label, total, after
        self.enabled = enabled is not False
        self.always = enabled is True
        self.t0 = time.perf_counter()
        self.shown = False

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        if self.always or dt > self.after:
            end = "\n" if done >= self.total else ""
            print(f"\r{self.label}: {done}/{self.total} ({dt:.1f} s)", end=end, file=sys.stderr, flush=True)
            self.shown = True


#: Most corrections after each sparse solve (:class:`_SparseSolver`); they stop once one changes
#: the solution by less than ~4 ulp.
REFINEMENT_STEPS = 3
#: The sparse solves are corrected where a floating line's condition estimate (either orientation,
#: :func:`_line_condition`) exceeds this (rounding ~1e-16 x it without corrections).
REFINE_ABOVE_CONDITION = 1e4


class _SparseSolver:
    """``K x = b`` for the nodal matrix of one array: SuperLU in float64, then
    corrections by the same factors (at most :data:`REFINEMENT_STEPS`) with residuals from the
    elements' currents (:meth:`_Network.kcl`).  Where tiny segments meet large driver and sense
    resistances (1e-6 ohm next to 1e4 ohm: where the solver "auto" takes this one) K is so
    ill-conditioned that one solve kept ~6 digits of T against a 50-digit reference
    (``tests/crossbar/test_parasitics.py``); corrected, ~1e-15, as the line solvers."""

    def __init__(self, net: _Network, g: np.ndarray, w: Wires):
        gc = cell_conductance(g, w.r_access)
        self.lu = _factorize(net.matrix(gc))
        self.kcl = net.kcl(gc)
        conditions = (_line_condition(w, g), _line_condition(_dual(w), _dual_g(g)))
        self.steps = REFINEMENT_STEPS if max(conditions) > REFINE_ABOVE_CONDITION else 0

    def solve(self, b: np.ndarray) -> np.ndarray:
        x = self.lu.solve(b)
        b_ext = np.asarray(b, dtype=np.longdouble)
        for _ in range(self.steps):
            residual = b_ext - self.kcl(x)
            dx = self.lu.solve(np.asarray(residual, dtype=np.float64))
            x = x + dx
            if np.abs(dx).max(initial=0.0) <= 4 * np.finfo(np.float64).eps * np.abs(x).max(initial=0.0):
                break
        return x


def _effective_sparse(g: np.ndarray, w: Wires, chunk: int, tick, sel=None) -> np.ndarray:
    """T of one array by sparse LU of the full nodal matrix (the general solver)."""
    rows, cols = g.shape
    gc = cell_conductance(g, w.r_access)
    if sel is None:
        sel = np.arange(rows)
    if not w.coupled:
        return gc[sel].copy()
    net = _Network(rows, cols, w)
    if net.n == 0:
        return gc[sel].copy()
    lu = _SparseSolver(net, g, w)
    rhs, out = net.rhs(gc), net.output(gc)
    dt = np.empty((len(sel), cols))
    if len(sel) <= cols:  # solve for each (selected) row's unit input: dT^T = S K^-1 R
        for s in range(0, len(sel), chunk):
            e = min(s + chunk, len(sel))
            x = lu.solve(rhs[:, sel[s:e]].toarray())
            dt[s:e] = (out @ x).T
            tick(e - s)
        return gc[sel] + dt
    else:  # adjoint (K symmetric): dT = R^T K^-1 S^T
        st, rt = out.T.tocsc(), rhs.T.tocsr()
        rt = rt[sel]
        for s in range(0, cols, chunk):
            e = min(s + chunk, cols)
            y = lu.solve(st[:, s:e].toarray())
            dt[:, s:e] = rt @ y
            tick(e - s)
    return gc[sel] + dt


# ------------------------------------------------------------------------------ line-by-line solver
#: Largest condition number (estimate) of a floating word line's tridiagonal system that the
#: line-by-line solver takes (rounding ~ 1e-16 x it); above it -- a word line whose segments are
#: tiny next to its driver resistance and cell load -- the sparse LU of the whole network is used.
MAX_LINE_CONDITION = 1e6


def _word_line_solve(diag: np.ndarray, a_g: np.ndarray, s: float, first: int, p: np.ndarray, q: np.ndarray) -> None:
    """The word-line systems of B rows solved for their cell and source right-hand sides (Thomas
    algorithm: the systems are symmetric and diagonally dominant, where it is stable).

    Row b's word-line nodes ``first``.. (n = C - first of them) obey ``(L + a D) U = a D W + s V``:
    ``diag`` (B, n) the diagonal, -1 off the diagonal (neighbouring nodes), ``a_g`` (B, n) the cells'
    a G (cell k's bit-line node drives node k), ``s`` the source's weight on node 0.  Writes the
    solution for unit W_k into ``p[b, first:, k]`` (the rows before ``first``, the source node, are
    0) and for unit V into ``q[b, first:]``.  A cell column's right-hand side is zero above its node,
    where the forward sweep gives exactly +0 (0 / positive pivots), so it starts at the node.
    Plain loops: compiled by numba (no GIL, so the arrays of a batch run in parallel threads),
    the same function interpreted when numba is missing."""
    nb, n = diag.shape
    c_dim = p.shape[2]
    piv = np.empty(n)  # the sweep's c_j
    for b in range(nb):
        pb, qb = p[b], q[b]
        for k in range(first):
            for r in range(c_dim):
                pb[k, r] = 0.0
        piv[0] = -1.0 / diag[b, 0] if n > 1 else 0.0
        for r in range(c_dim):
            pb[first, r] = 0.0
        pb[first, first] = a_g[b, 0] / diag[b, 0]
        qb[first] = s / diag[b, 0]
        for j in range(1, n):
            den = diag[b, j] - -1.0 * piv[j - 1]
            if j < n - 1:
                piv[j] = -1.0 / den
            row, above = pb[first + j], pb[first + j - 1]
            for r in range(first, first + j):  # the columns of the cells before node j
                row[r] = (0.0 - -1.0 * above[r]) / den
            row[first + j] = (a_g[b, j] - -1.0 * 0.0) / den
            # (the cells after node j: exactly 0 here; the backward sweep writes them)
            for r in range(0, first):
                row[r] = 0.0
            qb[first + j] = (0.0 - -1.0 * qb[first + j - 1]) / den
        for j in range(n - 2, -1, -1):
            row, below = pb[first + j], pb[first + j + 1]
            for r in range(first + j + 1):
                row[r] -= piv[j] * below[r]
            for r in range(first + j + 1, c_dim):  # 0 before this sweep: 0 - x, what -= gives
                row[r] = 0.0 - piv[j] * below[r]
            qb[first + j] -= piv[j] * qb[first + j + 1]


_word_line_kernel = kernel(_word_line_solve)


# The ladder's element-wise steps on the lower triangles of its C x C matrices (only the lower
# triangles are read: LAPACK potrf / potri and BLAS dsymm with uplo "L").  Each element takes the
# operations of the whole-matrix numpy form in the same order and type, so the results are those
# bit for bit; one pass instead of several, half the elements, no GIL (numba; interpreted when
# numba is missing).
def _segment_system(y: np.ndarray, rb: float, z: np.ndarray) -> float:
    """``z = 1 + rb Y`` (lower triangle) for the bit-line segment's inverse; returns max |Y_kk|."""
    n = y.shape[0]
    dmax = 0.0
    for col in range(n):
        d = abs(y[col, col])
        if d > dmax:
            dmax = d
        z[col, col] = y[col, col] * rb + 1.0
        for row in range(col + 1, n):
            z[row, col] = y[row, col] * rb + 0.0
    return dmax


def _through_segment(z: np.ndarray, rb: float, p: np.ndarray, g: np.ndarray, y: np.ndarray) -> None:
    """``Y = (1 - Z) / rb + M`` (lower triangle) with Z = (1 + rb Y)^-1 and the next row's cell
    admittance M = diag(g) - diag(g) P (``p`` (C, C) its word-line response, ``g`` (C,) uS)."""
    n = y.shape[0]
    for col in range(n):
        y[col, col] = (1.0 - z[col, col]) / rb + (-(p[col, col] * g[col]) + g[col])
        for row in range(col + 1, n):
            y[row, col] = (0.0 - z[row, col]) / rb + -(p[row, col] * g[row])


def _add_cells(y: np.ndarray, p: np.ndarray, g: np.ndarray) -> None:
    """``Y += M`` (lower triangle), M as in :func:`_through_segment` (no segment before the row)."""
    n = y.shape[0]
    for col in range(n):
        y[col, col] += -(p[col, col] * g[col]) + g[col]
        for row in range(col + 1, n):
            y[row, col] += -(p[row, col] * g[row])


_segment_kernel, _through_kernel, _add_cells_kernel = (
    kernel(_segment_system),
    kernel(_through_segment),
    kernel(_add_cells),
)


def _word_line_response(gc: np.ndarray, w: Wires, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The word lines of a block of rows eliminated: ``(P, q)`` with the word-line node voltages
    ``U_i = P_i W_i + q_i V_i`` for bit-line node voltages ``W_i`` of the row's cells and source
    voltage ``V_i``.  ``gc`` (B, C) cell conductances (uS) of B rows; P (B, C, C), q (B, C).
    ``out``: a C-contiguous float64 (>= B, C, C) buffer for P, reused from block to block (a fresh
    array per block -- 33 MB for 64 rows x 256 columns -- pays its page faults every time)."""
    b, c = gc.shape
    if w.r_wl == 0:  # one node per row
        if w.r_driver == 0:
            return np.zeros((b, c, c)), np.ones((b, c))
        rd = w.r_driver / US_PER_S
        den = 1.0 + rd * gc.sum(1)
        q = np.repeat((1.0 / den)[:, None], c, 1)
        return q[:, :, None] * (rd * gc)[:, None, :], q
    # a chain of nodes r_wl apart; in units of the segment conductance: (L + a D) U = a D W + s V
    a = w.r_wl / US_PER_S
    first = 0 if w.r_driver > 0 else 1  # with r_driver = 0 node 0 is the source itself
    n = c - first
    q = np.ones((b, c))
    if n == 0:  # a single cell at the source: no word-line node to solve
        return np.zeros((b, c, c)), q
    p = np.empty((b, c, c)) if out is None else out[:b]  # every entry written by the kernel
    diag = 2.0 + a * gc[:, first:]
    diag[:, -1] -= 1.0  # the far end has one neighbour
    if first == 0:
        diag[:, 0] += w.r_wl / w.r_driver - 1.0  # the driver instead of a left neighbour
    _word_line_kernel(diag, a * gc[:, first:], w.r_wl / w.r_driver if first == 0 else 1.0, first, p, q)
    return p, q


#: blocks of at most this many rows are inverted by LAPACK (potrf + potri); larger ones split
#: in two (:func:`_spd_inverse_block`).  Chosen among 16-96 on one thread of the project's 2-core
#: machine (16-32 the fastest); ``benchmarks/parasitics_speed.py`` prints the result against
#: potrf + potri of the whole matrix
SPD_INVERSE_LEAF = 32


@kernel
def _spd_inverse_block(potrf, potri, symm, gemm, a, r0, n, w, chars, ints, scal):  # pragma: no cover - compiled
    """The inverse of the SPD block ``a[r0:r0+n, r0:r0+n]`` of a Fortran-ordered float64 ``a``, in
    place, from its lower triangle; returns LAPACK's info (0: done).  A block of more than
    :data:`SPD_INVERSE_LEAF` rows is split as A = [[A11, .], [A21, A22]]: X11 = A11^-1 (recursion),
    W = A21 X11 (symm), S = A22 - W A21^T (gemm), X22 = S^-1 (recursion), X21 = -X22 W (symm),
    X11 = X11 - W^T X21 (gemm) -- the Schur-complement inverse, nearly all of its flops in BLAS-3
    products (LAPACK's potri inverts a 256 x 256 matrix at ~13 GFLOP/s here, a dgemm of that size
    runs at ~45).  Leaves: potrf + potri.  Only lower triangles are read and the result is its
    lower triangle; the upper triangle is overwritten with intermediate values.  ``potrf``,
    ``potri``, ``symm``, ``gemm``: SciPy's LAPACK / BLAS routines (``ctypes`` function pointers,
    arguments by reference); ``w``: float64 workspace of at least n^2 / 2 + n; ``chars`` the
    characters L, R, N, T; ``ints`` 6 int32 of scratch; ``scal`` 1, 0, -1."""
    lda = a.shape[0]
    ints[0] = lda
    blk = a[r0:, r0:]
    if n <= SPD_INVERSE_LEAF:
        ints[1] = n
        ints[2] = 0
        potrf(chars[0:].ctypes, ints[1:].ctypes, blk.ctypes, ints[0:].ctypes, ints[2:].ctypes)
        if ints[2] == 0:
            potri(chars[0:].ctypes, ints[1:].ctypes, blk.ctypes, ints[0:].ctypes, ints[2:].ctypes)
        return ints[2]
    n1 = n // 2
    n2 = n - n1
    info = _spd_inverse_block(potrf, potri, symm, gemm, a, r0, n1, w, chars, ints, scal)
    if info != 0:
        return info
    a21, a22 = a[r0 + n1 :, r0:], a[r0 + n1 :, r0 + n1 :]
    # ints: 0 lda, 3 n1, 4 n2, 5 the leading dimension of W (n2 x n1, w's first n2 * n1 entries)
    ints[0], ints[3], ints[4], ints[5] = lda, n1, n2, n2
    c_l, c_r, c_n, c_t = chars[0:].ctypes, chars[1:].ctypes, chars[2:].ctypes, chars[3:].ctypes
    one, zero, minus = scal[0:].ctypes, scal[1:].ctypes, scal[2:].ctypes
    i_lda, i_n1, i_n2, i_w = ints[0:].ctypes, ints[3:].ctypes, ints[4:].ctypes, ints[5:].ctypes
    symm(c_r, c_l, i_n2, i_n1, one, blk.ctypes, i_lda, a21.ctypes, i_lda, zero, w.ctypes, i_w)  # W = A21 X11
    gemm(c_n, c_t, i_n2, i_n2, i_n1, minus, w.ctypes, i_w, a21.ctypes, i_lda, one, a22.ctypes, i_lda)  # S
    info = _spd_inverse_block(potrf, potri, symm, gemm, a, r0 + n1, n2, w[n2 * n1 :], chars, ints, scal)
    if info != 0:
        return info if info < 0 else info + n1  # (a leading minor's order counts from row r0)
    ints[0], ints[3], ints[4], ints[5] = lda, n1, n2, n2  # (the recursion used them)
    symm(c_l, c_l, i_n2, i_n1, minus, a22.ctypes, i_lda, w.ctypes, i_w, zero, a21.ctypes, i_lda)  # X21 = -X22 W
    gemm(c_t, c_n, i_n1, i_n1, i_n2, minus, w.ctypes, i_w, a21.ctypes, i_lda, one, blk.ctypes, i_lda)  # X11
    return 0


#: (module, routine, arguments) of :func:`_spd_inverse_block`'s potrf, potri, symm and gemm
_INVERSE_ROUTINES = (
    ("scipy.linalg.cython_lapack", "dpotrf", 5),
    ("scipy.linalg.cython_lapack", "dpotri", 5),
    ("scipy.linalg.cython_blas", "dsymm", 12),
    ("scipy.linalg.cython_blas", "dgemm", 13),
)


def _spd_inverse_lower(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix from its lower triangle, in place, on a
    Fortran-ordered (n, n) float64 array (:func:`_spd_inverse_block`): only the lower triangle of
    the result holds the inverse (the upper is overwritten).  Runs without the GIL, so that the
    arrays of a batch are solved in parallel threads.  (For a matrix of at most
    :data:`SPD_INVERSE_LEAF` rows, entering the kernel costs a few microseconds more than the two
    LAPACK calls it makes; kept, for one path.)"""
    if not (a.flags.f_contiguous and a.dtype == np.float64 and a.ndim == 2 and a.shape[0] == a.shape[1]):
        raise ValueError("_spd_inverse_lower needs a square Fortran-ordered float64 array")
    n = a.shape[0]
    if n == 0:
        return a
    routines = [_lapack(*routine) for routine in _INVERSE_ROUTINES]
    work, ints = np.empty(n * n // 2 + n), np.zeros(6, np.int32)
    info = _spd_inverse_block(*routines, a, 0, n, work, CHARS, ints, SCALARS)
    if info != 0:  # cannot happen for a passive network; say so rather than return garbage
        raise ArithmeticError(f"IR drop: a line admittance matrix is not positive definite (LAPACK info {info})")
    return a


def _symm_lower(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = Z @ B`` for a symmetric Z given by its lower triangle (BLAS dsymm); ``z`` (n, n) and
    ``b``, ``out`` (n, k) Fortran-ordered float64 (column slices of wider ones are fine)."""
    n, k = b.shape
    if k == 0:
        return out

    def ld(x: np.ndarray) -> int:  # the leading dimension (the stride of a length-1 axis is arbitrary)
        if x.dtype != np.float64 or x.shape[0] != n or (n > 1 and x.strides[0] != 8):
            raise ValueError("_symm_lower needs Fortran-ordered float64 arrays")
        lead = x.strides[1] // 8 if x.shape[1] > 1 else n
        if lead < n:
            raise ValueError("_symm_lower needs Fortran-ordered float64 arrays")
        return lead

    _lapack("scipy.linalg.cython_blas", "dsymm", 12)(
        _ref(b"L", "c"),
        _ref(b"L", "c"),
        _ref(n, "i"),
        _ref(k, "i"),
        _ref(1.0, "d"),
        z.ctypes.data,
        _ref(ld(z), "i"),
        b.ctypes.data,
        _ref(ld(b), "i"),
        _ref(0.0, "d"),
        out.ctypes.data,
        _ref(ld(out), "i"),
    )
    return out


def _symmetric(lower: np.ndarray) -> np.ndarray:
    lower = np.tril(lower)
    return lower + np.tril(lower, -1).T


class _PrefixCache:
    """A solver's state after an array's first rows, kept for the arrays solved last (bounded): an
    NL-ADC's ramp and bias devices sit on rows after the weight rows (``near_sense``) and are
    re-solved while they are trimmed, and that state does not depend on them.  The ladder keeps
    its Norton state (Y, J of every row); nested dissection the admittance matrix of the first rows
    (:func:`crossbar.dissection.prefix_state`).  Keyed by the solver, the exact bytes of those rows
    and the wires."""

    def __init__(self, size: int = 64):
        self.size = size
        self.entries: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _key(gc: np.ndarray, n: int, w: Wires, solver: str) -> tuple:
        import hashlib

        digest = hashlib.blake2b(np.ascontiguousarray(gc[:n]).tobytes(), digest_size=16).hexdigest()
        return (solver, w, gc.shape[1], n, digest)

    def lookup(self, gc: np.ndarray, w: Wires, solver: str, most: int | None = None):
        """``(n, *state)`` of ``solver``'s longest cached prefix of ``gc``'s rows (at most ``most``
        rows; default all), or None."""
        most = gc.shape[0] if most is None else most
        with self.lock:
            lengths = sorted(
                {k[3] for k in self.entries if k[:3] == (solver, w, gc.shape[1])},
                reverse=True,
            )
        for n in lengths:
            if n <= most:
                with self.lock:
                    hit = self.entries.get(self._key(gc, n, w, solver))
                if hit is not None:
                    return (n, *hit)
        return None

    def get(self, gc: np.ndarray, n: int, w: Wires, solver: str):
        """``solver``'s state after exactly the first ``n`` rows of ``gc``, or None."""
        with self.lock:
            return self.entries.get(self._key(gc, n, w, solver))

    def store(self, gc: np.ndarray, n: int, w: Wires, solver: str, *state: np.ndarray) -> None:
        with self.lock:
            self.entries[self._key(gc, n, w, solver)] = tuple(x.copy() for x in state)
            while len(self.entries) > self.size:
                self.entries.pop(next(iter(self.entries)))

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


PREFIX_CACHE = _PrefixCache()


def _effective_lines(g: np.ndarray, w: Wires, tick, sel=None, row_block: int = 64) -> np.ndarray:
    """T of one array line by line: the word lines of each row eliminated exactly (tridiagonal),
    then the bit lines from the far end (row 0) to the virtual grounds as a ladder of Norton
    equivalents: ``Y`` (C x C, uS) the admittance matrix of rows 0..i seen at row i's bit-line
    nodes, ``J`` (C x s, uA per V) their short-circuit currents for each tracked input row.  One
    bit-line segment r in series turns (Y, J) into ((1 + r Y)^-1 Y, (1 + r Y)^-1 J) and row i + 1
    adds its own cells.  The currents into the virtual grounds are (1 + r_sense Y)^-1 J after the
    last row.  Cost ~ rows * cols^3.  A request for rows after the first ``n`` only (an NL-ADC's
    rows) stores the state after row n - 1 in :data:`PREFIX_CACHE`; any later request on an array
    with the same first rows starts from it.  J tracks every row whatever the request (``sel``
    picks T's rows at the end), so that each BLAS product runs over the same columns whether the
    state was kept or not: T is the same bit for bit, whatever ran before (a product over fewer
    columns can round its columns differently)."""
    rows, cols = g.shape
    gc = cell_conductance(g, w.r_access)
    sel = np.arange(rows) if sel is None else np.asarray(sel)
    # Y (lower triangle kept) and J, Fortran-ordered for LAPACK / BLAS; J's active columns first
    start, y, j_start = 0, np.zeros((cols, cols), order="F"), np.zeros((cols, 0))
    hit = PREFIX_CACHE.lookup(gc, w, "lines")
    if hit is not None:
        start, y, j_start = hit
        y = np.array(y, order="F")  # a copy: the cached state stays as it is
        tick(start)
    first_sel = int(sel.min()) if sel.size else rows
    save_at = first_sel if (first_sel > start and first_sel < rows) else None
    j_cur = np.zeros((cols, rows), order="F")  # J's columns: every row (see above)
    j_next = np.zeros_like(j_cur)  # dsymm writes here (its output may not alias its input)
    j_cur[:, :start] = j_start
    active = start  # J's columns of the rows added so far
    eye = np.eye(cols)
    diag = np.arange(cols)
    rb = w.r_bl / US_PER_S
    z = np.empty((cols, cols), order="F")
    r1 = start
    p_buf = np.empty((min(row_block, rows - start), cols, cols)) if (w.r_wl > 0 and rows > start) else None
    while r1 < rows:
        r0, r1 = r1, min(r1 + row_block, rows)
        if save_at is not None and r0 < save_at < r1:
            r1 = save_at  # end the block where the state is cached
        p, q = _word_line_response(gc[r0:r1], w, p_buf)
        for i in range(r0, r1):
            gi, p_i = gc[i], p[i - r0]  # the row's cells: currents into the bit lines gi V - M W
            if i > 0 and rb > 0:
                dmax = _segment_kernel(y, rb, z)
                _spd_inverse_lower(z)  # (1 + r Y)^-1, lower triangle
                if rb * dmax > 1e-4:
                    # = M + (1 + r Y)^-1 Y; rounding ~ eps (1 + r|Y|)^2 / (r|Y|)
                    _through_kernel(z, rb, p_i, gi, y)
                else:  # a tiny segment: the product form, no difference of nearly equal numbers
                    m_i = -(p_i * gi[:, None])
                    m_i[diag, diag] += gi
                    y = np.asfortranarray(m_i + _symmetric(z) @ _symmetric(y))
                if active:
                    _symm_lower(z, j_cur[:, :active], j_next[:, :active])
                    j_cur, j_next = j_next, j_cur
            else:
                _add_cells_kernel(y, p_i, gi)
            j_cur[:, i] = gi * q[i - r0]
            active = i + 1
        if save_at is not None and r1 == save_at:
            PREFIX_CACHE.store(gc, save_at, w, "lines", y, j_cur[:, :save_at])
        tick(r1 - r0)
    if w.r_sense > 0:
        np.multiply(y, w.r_sense / US_PER_S, out=z)
        z += eye
        j_cur = _symm_lower(_spd_inverse_lower(z), j_cur, j_next)
    return np.ascontiguousarray(j_cur[:, sel].T)


def _effective_dissection(g: np.ndarray, w: Wires, tick, sel=None, split: int | None = None) -> np.ndarray:
    """T of one array by nested dissection (:mod:`crossbar.dissection`).  ``split`` (the first
    rows the caller will solve again with other rows below them, e.g. the weight rows above an
    NL-ADC's), or else the first selected row of a request for the last rows only: the array is cut
    above that row and the first rows' matrix kept in :data:`PREFIX_CACHE` for every later request
    with the same first rows and split -- where the cut pays (:func:`crossbar.dissection.cut_pays`).
    The same request gives the same T bit for bit whether that matrix was kept before or not (so
    it does not depend on what ran before, nor on threads)."""
    gc = cell_conductance(g, w.r_access)
    rows, cols = gc.shape
    if split is None and sel is not None and sel.size and int(sel.min()) > 0:
        split = int(sel.min())
    prefix = None
    if split is not None and dissection.cut_pays(rows, cols):
        kept = PREFIX_CACHE.get(gc, split, w, "dissection")
        if kept is not None:
            prefix = kept[0]
        else:
            prefix = dissection.prefix_state(gc, w, split)
            PREFIX_CACHE.store(gc, split, w, "dissection", prefix)
    else:
        split = None
    t = dissection.effective(gc, w, split=split or 0, prefix=prefix)
    tick(rows)
    return t if sel is None else np.ascontiguousarray(t[sel])


def _dual(w: Wires) -> Wires:
    """The array seen from its bit lines (word and bit lines, drivers and virtual grounds swapped)."""
    return Wires(r_wl=w.r_bl, r_bl=w.r_wl, r_driver=w.r_sense, r_sense=w.r_driver, r_access=w.r_access)


def _line_condition(w: Wires, g: np.ndarray) -> float:
    """Condition-number estimate of the word lines' systems (L + a D): 1 without a floating line
    (r_driver = 0 ties node 0 to its source; r_wl = 0 solves nothing), else ~ 4 cols / lambda_min
    with lambda_min ~ (r_wl / r_driver + r_wl min_i sum_j G_ij) / cols (the uniform mode)."""
    if w.r_driver == 0 or w.r_wl == 0:
        return 1.0
    cols = g.shape[-1]
    load = float(cell_conductance(g, w.r_access).sum(-1).min()) if g.size else 0.0
    lam = (w.r_wl / w.r_driver + w.r_wl * load / US_PER_S) / cols
    return 4.0 * cols / lam


def _dual_g(g: np.ndarray) -> np.ndarray:
    """The conductances of the dual array (rotated by 180 degrees and transposed)."""
    return np.ascontiguousarray(g[::-1, ::-1].T)


def solver_for(g: np.ndarray, w: Wires, sel: np.ndarray | None = None, split: int | None = None) -> str:
    """Which solver :func:`effective_matrix` uses for the array ``g`` (rows, cols) and the selected
    rows ``sel`` of T (None: all): ``"dissection"`` (:mod:`crossbar.dissection`, nested dissection
    of the whole array) wherever it applies (:func:`crossbar.dissection.applies`: word and bit
    lines both resistive, more than a leaf's rows and columns) -- it was the fastest on
    every shape measured, 8 x 8 to 512 x 512 and 130 x 12 (``benchmarks/parasitics_speed.py``
    prints it against the ladder) -- else ``"lines"`` (the line-by-line ladder, blocks of a row's
    bit-line nodes), ``"dual_lines"`` (the same on the dual array, blocks of a column's word-line
    nodes: cheaper when rows < cols; reciprocity gives T) or ``"sparse"`` (sparse LU of the whole
    network, when both orientations have a floating line whose condition exceeds
    :data:`MAX_LINE_CONDITION`).  Of the ladders, ``"lines"`` wherever it can store, or start
    from, its kept state after the first rows (:data:`PREFIX_CACHE`): a request for the last rows
    only, or one with a ``split`` (the caller's first rows, solved again with other rows below).
    The choice depends on the request only, never on what was kept before, so T does not either."""
    rows, cols = g.shape[-2:]
    if dissection.applies(w, rows, cols):
        return "dissection"
    s = rows if sel is None else len(sel)
    costs = {}
    if _line_condition(w, g) <= MAX_LINE_CONDITION:
        suffix = sel is not None and len(sel) > 0 and int(np.min(sel)) > 0
        if suffix or split is not None:
            return "lines"
        costs["lines"] = rows * cols**2 * (2.4 * cols + s)
    if _line_condition(_dual(w), _dual_g(g)) <= MAX_LINE_CONDITION:
        costs["dual_lines"] = cols * rows**2 * (2.4 * rows + cols)
    return min(costs, key=lambda k: costs[k]) if costs else "sparse"


def _effective_one(
    g: np.ndarray, w: Wires, chunk: int, tick, sel=None, method: str = "auto", split: int | None = None
) -> np.ndarray:
    if not w.coupled:
        gc = cell_conductance(g, w.r_access)
        return (gc if sel is None else gc[sel]).copy()
    if method == "auto":
        method = solver_for(g, w, sel, split)
    if method == "dissection":
        return _effective_dissection(g, w, tick, sel, split)
    if method == "lines":
        return _effective_lines(g, w, tick, sel)
    if method == "dual_lines":
        # reciprocity: T(G)[i, j] = T_dual(G_dual)[cols-1-j, rows-1-i]
        t = _effective_lines(_dual_g(g), _dual(w), tick)[::-1, ::-1].T
        return np.ascontiguousarray(t if sel is None else t[sel])
    return _effective_sparse(g, w, chunk, tick, sel)


SOLVERS = ("auto", "dissection", "lines", "dual_lines", "sparse")


def solve_workers() -> int:
    """Threads the solves of several arrays spread over: ``torch.get_num_threads()`` (what the
    CLI's ``--threads`` and the rest of the simulation use), at least 1."""
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return max(1, os.cpu_count() or 1)


def _solve_all(jobs: list, solve_one) -> list[np.ndarray]:
    """``solve_one(job)`` of every job, each on one BLAS thread (the line solver's cols x cols
    operations are too small to gain from more: a 256 x 256 array took 0.83 s with one, 0.94 s with
    two, in two idle runs of benchmarks/parasitics_speed.py), the jobs spread over
    :func:`solve_workers` threads, largest first, so that a batch of arrays of different sizes
    keeps every thread busy (the line solver runs its LAPACK, BLAS and tridiagonal kernels without
    the GIL).  The results, in the order of ``jobs``, do not depend on the number of threads."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    workers = min(len(jobs), solve_workers())
    # load SciPy's BLAS before limiting it: threadpoolctl limits only the libraries already loaded
    # (a first solve in a process used to run its LAPACK calls on every core from every thread)
    import scipy.linalg.cython_blas  # noqa: F401
    import scipy.linalg.cython_lapack  # noqa: F401

    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            return [solve_one(j) for j in jobs]
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0].size)
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(lambda i: solve_one(jobs[i]), order))
    out: list[np.ndarray] = [np.empty(0)] * len(jobs)
    for i, t in zip(order, done):
        out[i] = t
    return out


def effective_matrix(
    g_us,
    wires=None,
    *,
    rows=None,
    split=None,
    progress=None,
    chunk: int = 4,
    solver: str = "auto",
    **resistances,
):
    """The effective matrix T (uS) of arrays with conductances ``g_us`` (rows, cols) or (..., rows,
    cols), so that the column currents are ``I = V @ T`` (uA for V in V).

    ``wires``: a :class:`Wires` or any object with ``r_wl, r_bl, r_driver, r_sense, r_access``
    (ohm; e.g. ``config.array.wires``), or the resistances as keywords.  Leading dimensions are
    independent arrays (e.g. Monte-Carlo instances), each factorised once.  With every resistance
    0 the input is returned itself (bit for bit); with only ``r_access`` it is G / (1 + G r_access)
    (no solve).  A torch tensor in gives a tensor of its dtype and device out (the solve runs in
    float64 on the CPU).  ``rows``: only these rows of T (an index sequence) -- e.g. an NL-ADC's
    ramp rows.  ``split``: None, or the first rows that later requests will share (e.g. the weight
    rows above an NL-ADC's rows): nested dissection then cuts the arrays above that row and keeps
    the first rows' matrix (:data:`PREFIX_CACHE`; T changes by rounding, and only with ``split``).
    ``progress``: None prints progress to stderr only when slow (> 2 s), True always,
    False never.  ``solver``: ``"auto"`` (see :func:`solver_for`), or one of them by name (the
    tests run every case through each; ``chunk``: right-hand sides per sparse solve).
    """
    return effective_matrices(
        [g_us], wires, rows=[rows], splits=[split], progress=progress, chunk=chunk, solver=solver, **resistances
    )[0]


def effective_matrices(
    arrays: list,
    wires=None,
    *,
    rows=None,
    splits=None,
    progress=None,
    chunk: int = 4,
    solver: str = "auto",
    **resistances,
) -> list:
    """:func:`effective_matrix` of several stacks of arrays (shapes may differ) in one batch: every
    array of every stack is solved on one thread pool (:func:`solve_workers` threads, largest
    first), so that e.g. a tile's G+ and G- arrays of all column blocks and instances keep all
    threads busy.  ``rows``, ``splits``: None, or one selection / split (or None) per stack; the
    other arguments as :func:`effective_matrix`.  Returns one result per stack."""
    if solver not in SOLVERS:
        raise CrossbarInputError(f"solver = {solver!r}: must be one of {', '.join(SOLVERS)}")
    w = Wires.of(wires, **resistances)
    rows = [None] * len(arrays) if rows is None else list(rows)
    if len(rows) != len(arrays):
        raise CrossbarInputError(f"rows: one selection per array stack ({len(arrays)}), got {len(rows)}")
    splits = [None] * len(arrays) if splits is None else list(splits)
    if len(splits) != len(arrays):
        raise CrossbarInputError(f"splits: one split (or None) per array stack ({len(arrays)}), got {len(splits)}")
    for g_us, split in zip(arrays, splits):
        n_rows = np.shape(g_us)[-2] if np.ndim(g_us) >= 2 else 0
        if split is not None and not (isinstance(split, (int, np.integer)) and 0 < split < n_rows):
            raise CrossbarInputError(f"split = {split!r}: must be None or a row in 1..{n_rows - 1}")
    results: list = [None] * len(arrays)
    pending = []  # (stack index, flat arrays, sel, method)
    for k, (g_us, sel_in) in enumerate(zip(arrays, rows)):
        prepared = _prepare(g_us, w, sel_in, solver)
        if prepared[0] == "done":
            results[k] = prepared[1]
        else:
            pending.append((k, *prepared[1:]))
    split_of = {k: (None if splits[k] is None else int(splits[k])) for k, _, _, _ in pending}
    if not pending:
        return results
    per_array = {
        k: {"lines": flat.shape[-2], "dual_lines": flat.shape[-1], "dissection": flat.shape[-2]}.get(
            method,
            min(flat.shape[-2], flat.shape[-1]) if sel is None else min(len(sel), flat.shape[-1]),
        )
        for k, flat, sel, method in pending
    }
    shapes = sorted({f"{flat.shape[-2]}x{flat.shape[-1]}" for _, flat, _, _ in pending})
    total = sum(per_array[k] * flat.shape[0] for k, flat, _, _ in pending)
    bar = _Progress(f"IR drop: effective matrix {', '.join(shapes)}", total, progress)
    state = {"done": 0}
    lock = threading.Lock()

    def tick(n):
        with lock:
            state["done"] += n
            bar(state["done"])

    jobs = [(a, sel, split_of[k]) for k, flat, sel, _ in pending for a in flat]
    solved = _solve_all(jobs, lambda job: _effective_one(job[0], w, max(1, int(chunk)), tick, job[1], solver, job[2]))
    at = 0
    for k, flat, _, _ in pending:
        n = flat.shape[0]
        out = np.stack(solved[at : at + n])
        at += n
        g_us = arrays[k]
        results[k] = _like(out.reshape(np.shape(g_us)[:-2] + out.shape[-2:]), g_us)
    return results


def _prepare(g_us, w: Wires, rows, solver: str):
    """Validate one stack of arrays: ``("done", result)`` when no solve is needed, else
    ``("solve", flat (N, rows, cols) float64, sel or None, method)``."""
    if w.ideal and rows is None:
        return ("done", g_us)
    g = _as_numpy(g_us)
    sel = None
    if rows is not None:
        sel = np.asarray(rows, dtype=np.int64).reshape(-1)
        n_rows = np.shape(g_us)[-2]
        if sel.size and (sel.min() < -n_rows or sel.max() >= n_rows):
            raise CrossbarInputError(f"rows: indices must be in 0..{n_rows - 1}")
        sel = sel % n_rows
    if w.ideal:  # only selected rows (sel is set): a copy of them
        return ("done", _like(np.ascontiguousarray(g[..., sel, :]), g_us))
    _check_g(g)
    if not w.coupled:
        gc = cell_conductance(g, w.r_access)
        return ("done", _like(gc if sel is None else np.ascontiguousarray(gc[..., sel, :]), g_us))
    flat = g.reshape((-1,) + g.shape[-2:])
    if flat.shape[0] == 0:  # no arrays (an empty leading dimension): nothing to solve
        rows_out = g.shape[-2] if sel is None else len(sel)
        return ("done", _like(np.zeros(g.shape[:-2] + (rows_out, g.shape[-1])), g_us))
    method = solver
    if solver == "dissection" and not dissection.applies(w, *flat.shape[-2:]):
        raise CrossbarInputError(
            f"solver = 'dissection' needs resistive word and bit lines (r_wl > 0 and r_bl > 0, got {w.r_wl} "
            f"and {w.r_bl} ohm) and more than {dissection.LEAF} rows and columns (got {flat.shape[-2]} x "
            f"{flat.shape[-1]}); use 'auto', 'lines' or 'sparse'"
        )
    if solver in ("lines", "dual_lines"):
        cond = max(_line_condition(w, a) if solver == "lines" else _line_condition(_dual(w), _dual_g(a)) for a in flat)
        if cond > MAX_LINE_CONDITION:
            raise CrossbarInputError(
                f"solver = {solver!r}: a floating line is ill-conditioned here (condition ~{cond:.1e} > "
                f"{MAX_LINE_CONDITION:.0e}: segments tiny next to the driver or sense resistance); use 'sparse'"
            )
    elif solver == "auto":
        method = solver_for(flat[0], w, sel)
    return ("solve", flat, sel, method)


def column_currents(
    g_us, v, r_wl: float, r_bl: float, r_driver: float = 0.0, r_sense: float = 0.0, r_access: float = 0.0
):
    """Currents (uA) into the bit lines' virtual grounds, (batch, cols), for word-line voltages
    ``v`` (batch, rows) in V on an array of conductances ``g_us`` (rows, cols) in uS; positive for
    positive v.  Resistances in ohm (see the module docstring for the network)."""
    g = _as_numpy(g_us)
    _check_g(g)
    if g.ndim != 2:
        raise CrossbarInputError(f"g_us must be (rows, cols), got shape {g.shape}")
    vv = _as_numpy(v)
    if vv.ndim == 1:
        vv = vv[None, :]
    if vv.ndim != 2 or vv.shape[1] != g.shape[0]:
        raise CrossbarInputError(f"v must be (batch, {g.shape[0]}) volts, got shape {vv.shape}")
    if not np.isfinite(vv).all():
        raise CrossbarInputError("v must be finite voltages")
    w = Wires(r_wl, r_bl, r_driver, r_sense, r_access)
    rows, cols = g.shape
    if w.coupled and vv.shape[0] < min(rows, cols):
        # fewer inputs than T would need solves for: solve the network for these inputs directly
        gc = cell_conductance(g, w.r_access)
        net = _Network(rows, cols, w)
        if net.n:
            du = _SparseSolver(net, g, w).solve(np.asfortranarray(net.rhs(gc) @ vv.T))
            return _like(vv @ gc + (net.output(gc) @ du).T, v)
    t = effective_matrix(g, w)
    return _like(vv @ t, v)


def attenuation(g_us, t_us):
    """The attenuation map A = T / G (1 where G = 0): how much of each device's conductance reaches
    the output (used to pass per-device read noise through the wires: sigma_eff = A sigma)."""
    g, t = _as_numpy(g_us), _as_numpy(t_us)
    a = np.divide(t, g, out=np.ones_like(t), where=g > 0)
    return _like(a, t_us)


def ir_drop_aware_targets(
    g_target, wires=None, g_min: float = 0.0, g_max: float = math.inf, iterations: int = 3, **resistances
):
    """Pre-distorted conductances (uS) whose effective matrix approaches ``g_target``.

    Fixed point G_{n+1} = clip(G_n * G_target / T(G_n), g_min, g_max) elementwise, from
    G_0 = G_target, ``iterations`` times (each one effective-matrix solve).  Devices whose target is
    0 stay 0; a device that would need more than ``g_max`` stays at ``g_max`` (its column then keeps
    part of its IR drop).  Shapes as :func:`effective_matrix`.
    """
    if not (isinstance(iterations, int) and 0 <= iterations <= 100):
        raise CrossbarInputError(f"iterations = {iterations!r}: must be an integer in 0..100")
    w = Wires.of(wires, **resistances)
    if w.ideal or iterations == 0:
        return g_target
    tgt = _as_numpy(g_target)
    _check_g(tgt)
    g = tgt.copy()
    for _ in range(iterations):
        t = _as_numpy(effective_matrix(g, w))
        ratio = np.divide(tgt, t, out=np.ones_like(t), where=t > 0)
        g = np.where(tgt > 0, np.clip(g * ratio, g_min, g_max), tgt)
    return _like(g, g_target)

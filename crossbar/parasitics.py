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
the effective matrix ``T`` (rows x cols, uS) is computed once per programmed state by a sparse
nodal solve and every MVM stays one matrix product.  A resistance of 0 joins the nodes it
connects (no 1 / 0); with every resistance 0, ``T`` is ``G`` itself (bit for bit, no solve).

The solve is written for the *deviation* from the ideal node voltages (word-line nodes at V_i,
bit-line nodes at 0 V): ``K du = r0`` with ``K`` the nodal (Laplacian) matrix of the unknown nodes,
so ``T = G_c + dT`` with ``G_c = G / (1 + G r_access)`` exact and only the (small) correction
``dT`` carrying the solver's rounding.  One sparse LU factorisation of ``K`` (SuperLU) serves all
right-hand sides: ``rows`` unit-voltage inputs, or -- when there are fewer columns -- the ``cols``
adjoint problems (``K`` is symmetric).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, fields

import numpy as np

from crossbar.errors import CrossbarInputError

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
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise CrossbarInputError(f"{f.name} = {v!r}: a wire resistance must be a finite number >= 0 ohm")

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
        values = {f.name: float(getattr(wires, f.name, 0.0)) for f in fields(cls)} if wires is not None else {}
        values.update({k: float(v) for k, v in kw.items()})
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

    def matrix(self, gc: np.ndarray):
        """The nodal matrix K (n x n, uS, CSC) for cell conductances ``gc`` (rows, cols)."""
        import scipy.sparse as sp

        a = np.concatenate([self.wire[0], self.wl.ravel()])
        b = np.concatenate([self.wire[1], self.bl.ravel()])
        g = np.concatenate([self.wire[2], gc.ravel()])
        keep = g > 0
        a, b, g = a[keep], b[keep], g[keep]
        ia, ib = a >= 0, b >= 0
        both = ia & ib
        r = np.concatenate([a[ia], b[ib], a[both], b[both]])
        c = np.concatenate([a[ia], b[ib], b[both], a[both]])
        v = np.concatenate([g[ia], g[ib], -g[both], -g[both]])
        return sp.csc_matrix((v, (r, c)), shape=(self.n, self.n))

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


def _effective_one(g: np.ndarray, w: Wires, chunk: int, tick, sel=None) -> np.ndarray:
    rows, cols = g.shape
    gc = cell_conductance(g, w.r_access)
    if sel is None:
        sel = np.arange(rows)
    if not w.coupled:
        return gc[sel].copy()
    net = _Network(rows, cols, w)
    if net.n == 0:
        return gc[sel].copy()
    lu = _factorize(net.matrix(gc))
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


def effective_matrix(g_us, wires=None, *, rows=None, progress=None, chunk: int = 4, **resistances):
    """The effective matrix T (uS) of arrays with conductances ``g_us`` (rows, cols) or (..., rows,
    cols), so that the column currents are ``I = V @ T`` (uA for V in V).

    ``wires``: a :class:`Wires` or any object with ``r_wl, r_bl, r_driver, r_sense, r_access``
    (ohm; e.g. ``config.array.wires``), or the resistances as keywords.  Leading dimensions are
    independent arrays (e.g. Monte-Carlo instances), each factorised once.  With every resistance
    0 the input is returned itself (bit for bit); with only ``r_access`` it is G / (1 + G r_access)
    (no solve).  A torch tensor in gives a tensor of its dtype and device out (the solve runs in
    float64 on the CPU).  ``rows``: only these rows of T (an index sequence; one solve per row
    instead of min(rows, cols)) -- e.g. an NL-ADC's ramp rows.  ``progress``: None prints progress
    to stderr only when slow (> 2 s), True always, False never.
    """
    w = Wires.of(wires, **resistances)
    if w.ideal and rows is None:
        return g_us
    g = _as_numpy(g_us)
    sel = None
    if rows is not None:
        sel = np.asarray(rows, dtype=np.int64).reshape(-1)
        n_rows = np.shape(g_us)[-2]
        if sel.size and (sel.min() < -n_rows or sel.max() >= n_rows):
            raise CrossbarInputError(f"rows: indices must be in 0..{n_rows - 1}")
        sel = sel % n_rows
    if w.ideal:  # only selected rows (sel is set): a copy of them
        return _like(np.ascontiguousarray(g[..., sel, :]), g_us)
    _check_g(g)
    if not w.coupled:
        gc = cell_conductance(g, w.r_access)
        return _like(gc if sel is None else np.ascontiguousarray(gc[..., sel, :]), g_us)
    lead = g.shape[:-2]
    flat = g.reshape((-1,) + g.shape[-2:])
    n_rows, cols = g.shape[-2:]
    per = min(n_rows, cols) if sel is None else min(len(sel), cols)
    state = {"done": 0}
    bar = _Progress(f"IR drop: effective matrix {n_rows}x{cols}", per * flat.shape[0], progress)

    def tick(k):
        state["done"] += k
        bar(state["done"])

    out = np.stack([_effective_one(flat[m], w, max(1, int(chunk)), tick, sel) for m in range(flat.shape[0])])
    return _like(out.reshape(lead + out.shape[-2:]), g_us)


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
            lu = _factorize(net.matrix(gc))
            du = lu.solve(np.asfortranarray(net.rhs(gc) @ vv.T))
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

"""IR drop (crossbar/parasitics.py, crossbar/layout.py, the tile's effective matrices, netlists):
against ngspice fixtures, invariants, and the r = 0 limit."""

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import crossbar.parasitics as P
from crossbar import dissection
from crossbar.config import default_config, validate_config
from crossbar.errors import CrossbarInputError
from crossbar.lapack import CHARS, SCALARS
from crossbar.netlist import add_netlist_arguments, netlist_text, run_netlist
from crossbar.parasitics import (
    MAX_LINE_CONDITION,
    PREFIX_CACHE,
    SPD_INVERSE_LEAF,
    Wires,
    _add_cells,
    _add_cells_kernel,
    _dual,
    _dual_g,
    _line_condition,
    _segment_kernel,
    _segment_system,
    _spd_inverse_block,
    _spd_inverse_lower,
    _through_kernel,
    _through_segment,
    _word_line_kernel,
    _word_line_solve,
    column_currents,
    effective_matrices,
    effective_matrix,
    ir_drop_aware_targets,
    solver_for,
)
from crossbar.rng import generator
from crossbar.tile import Tile

SPICE = Path(__file__).resolve().parent.parent / "data" / "spice"
FIXTURES = sorted(SPICE.glob("*.npz"))
#: the effective-matrix solvers; the invariants and the ngspice fixtures run through each
SOLVERS = ["dissection", "lines", "dual_lines", "sparse"]


def _g(rows, cols, name="g", lo=1.0, hi=100.0):
    gen = generator(7, f"test_parasitics/{name}")
    return (lo + (hi - lo) * torch.rand((rows, cols), generator=gen, dtype=torch.float64)).numpy()


def _v(batch, rows, name="v"):
    gen = generator(7, f"test_parasitics/{name}")
    return (0.4 * torch.rand((batch, rows), generator=gen, dtype=torch.float64) - 0.2).numpy()


# ----------------------------------------------------------------------------- vs ngspice
def test_fixtures_are_committed():
    names = {p.stem for p in FIXTURES}
    assert {"a16_wires", "a32_all", "ns24x40", "ns40x24"} <= names


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_column_currents_match_ngspice(path, solver):
    d = np.load(path, allow_pickle=False)
    i = column_currents(
        d["g_us"],
        d["v"],
        float(d["r_wl"]),
        float(d["r_bl"]),
        float(d["r_driver"]),
        float(d["r_sense"]),
        float(d["r_access"]),
    )
    ref = d["i_ua"]
    assert i.shape == ref.shape
    assert np.max(np.abs(i - ref) / np.abs(ref)) <= 1e-6
    # the effective matrix (what every MVM uses) gives the same currents
    w = Wires(*(float(d[k]) for k in ("r_wl", "r_bl", "r_driver", "r_sense", "r_access")))
    i_t = d["v"] @ effective_matrix(d["g_us"], w, solver=solver)
    assert np.max(np.abs(i_t - ref) / np.abs(ref)) <= 1e-6
    # the IR drop is far above that tolerance, so the comparison is not trivially passed by G
    ideal = d["v"] @ d["g_us"]
    assert np.max(np.abs(ideal - ref) / np.abs(ref)) > 1e-3


@pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
def test_ngspice_64x64():
    from crossbar.netlist import run_ngspice

    g = _g(64, 64, "spice64")
    g[::7, ::5] = 0.0
    v = _v(2, 64, "spice64")
    w = Wires(r_wl=1.5, r_bl=0.8, r_driver=4.0, r_sense=2.0, r_access=400.0)
    ref = run_ngspice(g, v, w)
    ours = column_currents(g, v, w.r_wl, w.r_bl, w.r_driver, w.r_sense, w.r_access)
    assert np.max(np.abs(ours - ref) / np.abs(ref)) <= 1e-6
    for solver in SOLVERS:  # the effective matrix every MVM uses, by each solver
        i_t = v @ effective_matrix(g, w, solver=solver)
        assert np.max(np.abs(i_t - ref) / np.abs(ref)) <= 1e-6, solver


# ----------------------------------------------------------------------------- invariants
def test_zero_resistance_is_ideal_bit_for_bit():
    g = _g(12, 9)
    assert effective_matrix(g, Wires()) is g
    gt = torch.from_numpy(g).float()
    assert effective_matrix(gt, r_wl=0, r_bl=0) is gt
    v = _v(4, 12)
    assert np.array_equal(column_currents(g, v, 0, 0), v @ g)


def test_access_resistance_alone_is_series_conductance():
    g = _g(5, 6)
    t = effective_matrix(g, r_access=1000.0)
    assert np.array_equal(t, g / (1.0 + g * (1000.0 / 1e6)))


def test_superposition_and_scaling():
    g = _g(20, 14)
    w = dict(r_wl=2.0, r_bl=1.0, r_driver=3.0, r_sense=1.0, r_access=200.0)
    v1, v2 = _v(3, 20, "a"), _v(3, 20, "b")
    i1, i2 = column_currents(g, v1, **w), column_currents(g, v2, **w)
    i12 = column_currents(g, v1 + v2, **w)
    assert np.max(np.abs(i12 - (i1 + i2))) <= 1e-12 * np.max(np.abs(i12))
    assert np.allclose(column_currents(g, -2.5 * v1, **w), -2.5 * i1, rtol=1e-13, atol=0)


def test_positive_inputs_give_positive_attenuated_currents():
    g = _g(32, 32)
    v = np.full((1, 32), 0.2)
    i = column_currents(g, v, 1.0, 1.0)
    ideal = v @ g
    assert (i > 0).all() and (i < ideal).all()
    # the column farthest from the drivers loses more than the nearest one (same G everywhere)
    gu = np.full((32, 32), 50.0)
    iu = column_currents(gu, v, 1.0, 1.0)[0]
    assert iu[-1] < iu[0]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", [(9, 13), (13, 9)])
def test_reciprocity_symmetry(shape, solver):
    """Swapping drivers and virtual grounds (the dual array: G flipped and transposed, word and bit
    lines exchanged) transposes T -- exercises the direct (rows <= cols) and adjoint solves."""
    rows, cols = shape
    g = _g(rows, cols, "recip")
    g[2, 3] = 0.0
    w = Wires(r_wl=2.0, r_bl=0.5, r_driver=3.0, r_sense=7.0, r_access=150.0)
    dual = Wires(r_wl=w.r_bl, r_bl=w.r_wl, r_driver=w.r_sense, r_sense=w.r_driver, r_access=w.r_access)
    t = effective_matrix(g, w, solver=solver)
    t_dual = effective_matrix(g[::-1, ::-1].T.copy(), dual, solver=solver)
    assert np.max(np.abs(t - t_dual[::-1, ::-1].T)) <= 1e-12 * np.max(np.abs(t))


def test_uniform_symmetric_array_is_symmetric():
    g = np.full((10, 10), 40.0)
    t = effective_matrix(g, Wires(r_wl=1.0, r_bl=1.0, r_driver=2.0, r_sense=2.0))
    assert np.max(np.abs(t - t[::-1, ::-1].T)) <= 1e-12 * t.max()


def _solve(g, w, solver):
    """effective_matrix with ``solver``; where the line solver refuses an ill-conditioned floating
    line (checked against its condition estimate), or nested dissection a zero-resistance line,
    the sparse solver."""
    if solver == "dissection" and not dissection.applies(w, *g.shape):
        with pytest.raises(CrossbarInputError, match="'dissection' needs resistive word and bit lines"):
            effective_matrix(g, w, solver=solver)
        solver = "sparse"
    if solver in ("lines", "dual_lines"):
        cond = _line_condition(w, g) if solver == "lines" else _line_condition(_dual(w), _dual_g(g))
        if cond > MAX_LINE_CONDITION:
            with pytest.raises(CrossbarInputError, match="ill-conditioned"):
                effective_matrix(g, w, solver=solver)
            solver = "sparse"
    return effective_matrix(g, w, solver=solver)


@pytest.mark.parametrize("solver", ["auto"] + SOLVERS)
@pytest.mark.parametrize("zero", ["r_wl", "r_bl", "r_driver", "r_sense"])
def test_a_zero_resistance_is_the_limit_of_small_ones(zero, solver):
    g = _g(8, 11)
    w = dict(r_wl=2.0, r_bl=1.0, r_driver=3.0, r_sense=2.0, r_access=100.0)
    t_tiny = _solve(g, Wires(**{**w, zero: 1e-7}), solver)
    t_zero = _solve(g, Wires(**{**w, zero: 0.0}), solver)
    assert np.max(np.abs(t_tiny - t_zero)) <= 1e-7 * np.max(np.abs(t_zero))


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 3), (31, 17)])
@pytest.mark.parametrize(
    "w",
    [
        Wires(r_wl=1.0, r_bl=2.0),
        Wires(r_wl=0.0, r_bl=2.0, r_driver=5.0),
        Wires(r_wl=3.0, r_bl=0.0, r_sense=4.0),
        Wires(r_wl=0.0, r_bl=1.0),
        Wires(r_wl=2.0, r_bl=0.0),
        Wires(r_wl=0.0, r_bl=0.0, r_driver=5.0, r_sense=3.0),
        Wires(r_wl=1e-3, r_bl=1e-3, r_driver=100.0, r_sense=100.0, r_access=50.0),
    ],
    ids=str,
)
def test_the_solvers_agree(shape, w):
    """Nested dissection, the line-by-line ladder (both orientations) and the sparse LU of the
    whole network: the same T, also for selected rows, open cells and every zero / non-zero wire combination."""
    g = _g(*shape, "agree")
    g[0, -1] = 0.0
    ref = effective_matrix(g, w, solver="sparse")
    scale = np.max(np.abs(ref)) or 1.0
    sel = [shape[0] - 1, 0]
    for solver in ("auto", "dissection", "lines", "dual_lines"):
        assert np.max(np.abs(_solve(g, w, solver) - ref)) <= 1e-10 * scale, solver
        if solver_for(g, w) != "sparse":
            assert np.max(np.abs(effective_matrix(g, w, rows=sel) - ref[sel])) <= 1e-10 * scale
    with pytest.raises(CrossbarInputError, match="solver = 'fast'"):
        effective_matrix(g, w, solver="fast")


def _exact_effective_matrix(g: np.ndarray, w: Wires) -> np.ndarray:
    """T by a dense nodal solve in 50-digit arithmetic (mpmath), written from the network's
    definition alone (crossbar.parasitics' docstring): an independent reference."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    rows, cols = g.shape
    to_g = lambda r: mp.mpf(10) ** 6 / mp.mpf(r)  # noqa: E731  (ohm -> uS)
    parent: dict = {}

    def find(a):
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    edges = []

    def connect(a, b, r):
        if r == 0:  # one node; a source or ground stays the representative
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra if rb[0] in ("src", "gnd") else rb] = rb if rb[0] in ("src", "gnd") else ra
        else:
            edges.append((a, b, to_g(r)))

    for i in range(rows):
        connect(("src", i), ("wl", i, 0), w.r_driver)
        for j in range(cols - 1):
            connect(("wl", i, j), ("wl", i, j + 1), w.r_wl)
    for j in range(cols):
        for i in range(rows - 1):
            connect(("bl", i, j), ("bl", i + 1, j), w.r_bl)
        connect(("bl", rows - 1, j), ("gnd", j), w.r_sense)
    for i in range(rows):
        for j in range(cols):
            if g[i, j] > 0:
                gij = mp.mpf(float(g[i, j]))
                edges.append((("wl", i, j), ("bl", i, j), gij / (1 + gij * mp.mpf(w.r_access) / mp.mpf(10) ** 6)))
    edges = [(find(a), find(b), c) for a, b, c in edges if find(a) != find(b)]
    t = np.zeros((rows, cols))
    for k in range(rows):
        fixed = {find(("src", i)): mp.mpf(int(i == k)) for i in range(rows)}
        fixed.update({find(("gnd", j)): mp.mpf(0) for j in range(cols)})
        free = sorted({x for e in edges for x in e[:2]} - set(fixed), key=str)
        at = {x: n for n, x in enumerate(free)}
        kk, rhs = mp.zeros(len(free), len(free)), mp.zeros(len(free), 1)
        for a, b, c in edges:
            for x, y in ((a, b), (b, a)):
                if x in at:
                    kk[at[x], at[x]] += c
                    if y in at:
                        kk[at[x], at[y]] -= c
                    else:
                        rhs[at[x]] += c * fixed[y]
        u = mp.lu_solve(kk, rhs) if free else []
        volt = {**fixed, **{x: u[n] for x, n in at.items()}}
        for j in range(cols):
            gnd = find(("gnd", j))
            current = sum((c * (volt[a] - volt[b]) for a, b, c in edges if b == gnd), mp.mpf(0))
            current -= sum((c * (volt[a] - volt[b]) for a, b, c in edges if a == gnd), mp.mpf(0))
            t[k, j] = float(current)
    return t


@pytest.mark.parametrize(
    "w",
    [
        # floating lines both ways with tiny segments: "auto" takes the sparse LU, whose single solve
        # kept ~6 digits here before its corrections
        Wires(r_wl=1e-6, r_bl=1e-6, r_driver=1e4, r_sense=1e4),
        Wires(r_wl=1e-3, r_bl=1e-3, r_driver=1e3, r_sense=1e3, r_access=2500.0),
        Wires(r_wl=0.0, r_bl=1e-6, r_driver=0.01, r_sense=1e4, r_access=2500.0),
        Wires(r_wl=1.0, r_bl=2.0, r_driver=3.0, r_sense=4.0, r_access=10.0),
    ],
    ids=str,
)
@pytest.mark.parametrize("shape", [(5, 4), (6, 5)])  # nested dissection takes the second only
def test_every_solver_meets_a_50_digit_reference(w, shape):
    """Against an independent dense solve in 50-digit arithmetic: every solver that takes the
    case, and column_currents' direct solve, to 1e-13 of the largest entry."""
    g = _g(*shape, "exact")
    g[1, 2] = 0.0
    exact = _exact_effective_matrix(g, w)
    scale = np.max(np.abs(exact))
    for solver in ("auto", "dissection", "lines", "dual_lines", "sparse"):
        try:
            t = _solve(g, w, solver)
        except CrossbarInputError:  # an orientation whose floating line is ill-conditioned
            assert solver in ("lines", "dual_lines")
            continue
        assert np.max(np.abs(t - exact)) <= 1e-13 * scale, solver
    v = np.array([[0.2, -0.1, 0.05, 0.0, 0.15, -0.05][: shape[0]]])
    i = column_currents(g, v, w.r_wl, w.r_bl, w.r_driver, w.r_sense, w.r_access)
    assert np.max(np.abs(i - v @ exact)) <= 1e-13 * np.max(np.abs(v @ exact))


@pytest.mark.parametrize("solver", ["lines", "dissection"])
def test_the_state_after_the_weight_rows_is_reused_exactly(solver):
    """Solving only the last rows (an NL-ADC's) caches the solver's state after the rows before
    them; later requests on an array with the same first rows start there -- and give the uncached
    T (nested dissection: bit for bit, the same operations)."""
    w = Wires(r_wl=1.0, r_bl=2.0, r_sense=1.0)
    g = _g(20, 12, "ladder")
    ref = effective_matrix(g, w, solver="sparse")
    PREFIX_CACHE.clear()
    tail = effective_matrix(g, w, rows=range(15, 20), solver=solver)
    assert [k[0] for k in PREFIX_CACHE.entries] == [solver]
    assert np.max(np.abs(tail - ref[15:])) <= 1e-12 * ref.max()
    g2 = g.copy()
    g2[17:, :] *= 0.5  # other devices on the last rows: the cached state still applies
    ref2 = effective_matrix(g2, w, solver="sparse")
    tail2 = effective_matrix(g2, w, rows=range(15, 20), solver=solver)
    assert np.max(np.abs(tail2 - ref2[15:])) <= 1e-12 * ref.max()
    assert np.max(np.abs(effective_matrix(g2, w, solver=solver) - ref2)) <= 1e-12 * ref.max()
    if solver == "dissection":  # the same request, the same bits, whatever was kept before
        assert np.array_equal(tail2, dissection.effective(g2, w, split=15)[15:])
        whole = effective_matrix(g2, w)  # no split: cut nowhere, kept matrix or not
        assert np.array_equal(whole, dissection.effective(g2, w))
        kept = effective_matrix(g2, w, split=15)  # from the kept matrix
        PREFIX_CACHE.clear()
        assert np.array_equal(effective_matrix(g2, w), whole)
        assert np.array_equal(effective_matrix(g2, w, split=15), kept)  # computed, then kept
        assert np.array_equal(effective_matrix(g2, w, rows=range(15, 20)), kept[15:])
        assert np.max(np.abs(kept - ref2)) <= 1e-12 * ref.max()
    g3 = g.copy()
    g3[3, 4] += 1.0  # a weight row changed: no stale state
    ref3 = effective_matrix(g3, w, solver="sparse")
    assert np.max(np.abs(effective_matrix(g3, w, rows=[16, 19], solver=solver) - ref3[[16, 19]])) <= 1e-12 * ref.max()
    assert np.max(np.abs(effective_matrix(g3, w, solver=solver) - ref3)) <= 1e-12 * ref.max()
    assert len(PREFIX_CACHE.entries) == 2
    PREFIX_CACHE.clear()


@pytest.mark.parametrize("seed", range(3))
def test_the_ladders_kept_state_gives_the_fresh_t_bit_for_bit(seed):
    """The ladder's T does not depend on what ran before: a request for the last rows keeps the
    state after the rows above them, and a later request from that state gives the bits of the
    one computed afresh (its current products span every row either way: before, a product over
    fewer columns rounded some columns differently at 200+ bit lines, ~6e-16 relative)."""
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(20, 60)), int(rng.integers(200, 260))
    g = rng.uniform(1.0, 100.0, (rows, cols))
    w = Wires(r_wl=float(rng.choice([0.0, 1.0])), r_bl=2.0, r_driver=0.5, r_sense=5.0)
    split = int(rng.integers(1, rows))
    PREFIX_CACHE.clear()
    fresh = effective_matrix(g, w, solver="lines")
    tail = effective_matrix(g, w, rows=range(split, rows), solver="lines")  # keeps the state
    assert PREFIX_CACHE.get(g, split, w, "lines") is not None
    assert np.array_equal(tail, fresh[split:])
    assert np.array_equal(effective_matrix(g, w, rows=range(split, rows), solver="lines"), tail)
    assert np.array_equal(effective_matrix(g, w, solver="lines"), fresh)  # from the kept state
    assert np.array_equal(effective_matrix(g, w, rows=[rows - 1, 0], solver="lines"), fresh[[rows - 1, 0]])
    PREFIX_CACHE.clear()


def test_each_solver_keeps_its_own_state_after_the_first_rows():
    """The automatic choice stores its own solver's state: nested dissection where the lines are
    resistive, the ladder where a word line has zero resistance."""
    g = _g(20, 12, "ladder")
    PREFIX_CACHE.clear()
    for w, solver in ((Wires(r_wl=1.0, r_bl=2.0), "dissection"), (Wires(r_wl=0.0, r_bl=2.0, r_sense=1.0), "lines")):
        assert solver_for(g, w) == solver
        tail = effective_matrix(g, w, rows=range(15, 20))
        assert np.max(np.abs(tail - effective_matrix(g, w, solver="sparse")[15:])) <= 1e-12 * g.max()
    assert sorted(k[0] for k in PREFIX_CACHE.entries) == ["dissection", "lines"]
    PREFIX_CACHE.clear()


def test_batched_instances_and_torch_types():
    g = torch.from_numpy(np.stack([_g(6, 5, "a"), _g(6, 5, "b")])).float()
    t = effective_matrix(g, r_wl=1.0, r_bl=2.0)
    assert t.dtype == torch.float32 and t.shape == (2, 6, 5)
    for m in range(2):
        one = effective_matrix(g[m].double().numpy(), r_wl=1.0, r_bl=2.0)
        assert np.allclose(t[m].double().numpy(), one, rtol=1e-6)


@pytest.mark.parametrize("solver", ["lines", "dissection"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_batch_of_arrays_equals_one_call_each_bit_for_bit_on_any_thread_count(threads, solver):
    w = Wires(r_wl=1.0, r_bl=0.5, r_driver=20.0, r_sense=10.0)
    stacks = [
        np.stack([_g(9, 7, "p0"), _g(9, 7, "p1")]),
        _g(5, 11, "q"),
        np.stack([_g(12, 5, f"r{m}") for m in range(3)]),
    ]
    rows = [None, [3, 4], range(10, 12)]
    # (each from an empty ladder cache: a suffix solve started from the cached state agrees to
    # rounding, BLAS rounding a few tracked columns differently from many)
    PREFIX_CACHE.clear()
    want = [effective_matrix(g, w, rows=r, solver=solver) for g, r in zip(stacks, rows)]
    before = torch.get_num_threads()
    try:
        PREFIX_CACHE.clear()
        torch.set_num_threads(threads)
        got = effective_matrices(stacks, w, rows=rows, solver=solver)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(want, got):
        assert a.shape == b.shape and np.array_equal(a, b)
    with pytest.raises(CrossbarInputError, match="one selection per array stack"):
        effective_matrices(stacks, w, rows=[None])


def test_an_empty_stack_of_arrays_gives_an_empty_result():
    assert effective_matrix(np.ones((0, 4, 3)), r_wl=1.0, r_bl=1.0).shape == (0, 4, 3)
    assert effective_matrix(torch.ones(0, 4, 3), r_wl=1.0, rows=[1]).shape == (0, 1, 3)


@pytest.mark.parametrize("first", [0, 1])
def test_the_compiled_word_line_kernel_is_the_interpreted_one_and_solves_the_lines(first):
    gen = np.random.default_rng(3)
    b, c = 3, 17
    n = c - first
    diag = 2.0 + gen.random((b, n))
    a_g = gen.random((b, n))
    # buffers full of NaN: the solver reuses one P buffer from block to block, so every entry must
    # be written (q keeps its 1s before ``first``: the source node)
    p, q = np.full((b, c, c), np.nan), np.ones((b, c))
    _word_line_solve(diag, a_g, 0.7, first, p, q)  # interpreted
    p2, q2 = np.full((b, c, c), np.nan), np.ones((b, c))
    _word_line_kernel(diag, a_g, 0.7, first, p2, q2)  # numba: the same operations
    assert np.array_equal(p, p2) and np.array_equal(q, q2)
    assert not np.isnan(p).any()
    for i in range(b):  # (L + a D) U = a D W + s V on nodes first.. (node 0 is the source when first = 1)
        k = np.diag(diag[i]) - np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)
        rhs = np.zeros((n, c + 1))
        rhs[np.arange(n), first + np.arange(n)] = a_g[i]
        rhs[0, c] = 0.7
        x = np.linalg.solve(k, rhs)
        assert np.allclose(p[i, first:], x[:, :c], rtol=0, atol=1e-12)
        assert np.allclose(q[i, first:], x[:, c], rtol=0, atol=1e-12)
        assert not p[i, :first].any() and (q[i, :first] == 1).all()


def test_open_cells_and_a_single_row_or_column():
    g = _g(1, 7)
    g[0, 3] = 0.0
    t = effective_matrix(g, r_wl=1.0, r_bl=1.0)
    assert t.shape == (1, 7) and t[0, 3] == 0.0
    t = effective_matrix(_g(7, 1), r_wl=1.0, r_bl=1.0, r_sense=1.0)
    assert t.shape == (7, 1) and (t > 0).all()


def test_ir_drop_aware_targets_bring_t_closer():
    target = _g(32, 32, lo=5.0, hi=60.0)
    w = Wires(r_wl=2.0, r_bl=2.0)
    err0 = np.max(np.abs(effective_matrix(target, w) / target - 1))
    pre = ir_drop_aware_targets(target, w, g_min=1.0, g_max=100.0, iterations=4)
    err = np.max(np.abs(effective_matrix(pre, w) / target - 1))
    assert err < 0.2 * err0 and (pre >= target).all() and pre.max() <= 100.0
    assert ir_drop_aware_targets(target, Wires()) is target


def test_bad_input_is_one_clear_error():
    with pytest.raises(CrossbarInputError, match="r_wl"):
        effective_matrix(_g(3, 3), r_wl=-1.0)
    with pytest.raises(CrossbarInputError, match="v must be"):
        column_currents(_g(3, 3), np.zeros((2, 4)), 1.0, 1.0)
    with pytest.raises(CrossbarInputError, match="g_us"):
        effective_matrix(-_g(3, 3), r_wl=1.0)


# ----------------------------------------------------------------------------- config
def test_config_wires_section_and_legacy_key():
    cfg = default_config(**{"array.wires.r_wl": 1.5})
    assert cfg.array.wires.r_wl == 1.5 and not cfg.array.wires.ideal
    assert default_config().array.wires.ideal
    data = default_config().model_dump()
    data["array"]["wire_resistance"] = 1.0
    with pytest.raises(CrossbarInputError, match=r"array: wire_resistance = 1.0 is replaced by the array.wires"):
        validate_config(data, "old.json")
    data = default_config().model_dump()
    data["array"]["wires"]["r_bl"] = -1.0
    with pytest.raises(CrossbarInputError, match=r"array.wires.r_bl = -1.0"):
        validate_config(data, "bad.json")


# ----------------------------------------------------------------------------- the tile
def _tile(mapping="differential", **wires):
    changes = {
        "array.rows": 16,
        "array.cols": 8,
        "array.mapping": mapping,
        "simulation.dtype": "float64",
        "device.g_min": 1.0,
    }
    changes.update({f"array.wires.{k}": v for k, v in wires.items()})
    cfg = default_config(**changes)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(20, 30, generator=gen, dtype=torch.float64)
    b = torch.randn(20, generator=gen, dtype=torch.float64)
    return Tile(w, b, cfg).program(0, 2)


@pytest.mark.parametrize("mapping", ["differential", "offset"])
def test_tile_mvm_uses_each_physical_arrays_effective_matrix(mapping):
    wires = dict(r_wl=2.0, r_bl=1.0, r_driver=3.0)
    t = _tile(mapping, **wires)
    x = torch.rand(5, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    y = t.mvm(x)
    xq = t.word_line_inputs(x)
    w = Wires(**wires)
    ref = torch.zeros_like(y)
    for m in range(2):
        for rb, rs in enumerate([slice(0, 16), slice(16, 31)]):
            for cs in [slice(0, 8), slice(8, 16), slice(16, 20)]:
                if mapping == "differential":
                    tt = effective_matrix(t.g_pos[m, rs, cs], w) - effective_matrix(t.g_neg[m, rs, cs], w)
                    i = xq[m, :, rs] @ tt
                else:  # the reference column is the array's last bit line
                    tt = effective_matrix(torch.cat([t.g_pos[m, rs, cs], t.g_neg[m, rs, :1]], 1), w)
                    i = xq[m, :, rs] @ (tt[:, :-1] - tt[:, -1:])
                ref[m, :, rb, cs] = i / t.scale
    assert torch.allclose(y, ref, rtol=1e-12, atol=1e-12)
    ideal = _tile(mapping)
    assert not torch.allclose(ideal.mvm(x), y, atol=1e-3)


def test_offset_tile_with_a_reference_per_array_uses_each_arrays_own():
    """A measured chip (rnn_models.export) gives the offset mapping's references per column, each
    column its own array's reference device: every column block is solved with its own."""
    wires = dict(r_wl=2.0, r_bl=1.0)
    t = _tile("offset", **wires)
    ref = t.g_neg[..., :1].clone()  # (M, rows, 1)
    blocks = [slice(0, 8), slice(8, 16), slice(16, 20)]
    per_block = [ref * (1.0 + 0.05 * k) for k in range(len(blocks))]
    t.g_neg = torch.cat([per_block[k].expand(-1, -1, cs.stop - cs.start) for k, cs in enumerate(blocks)], -1)
    x = torch.rand(5, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    y, xq = t.mvm(x), t.word_line_inputs(x)
    w = Wires(**wires)
    expect = torch.zeros_like(y)
    for m in range(2):
        for rb, rs in enumerate([slice(0, 16), slice(16, 31)]):
            for k, cs in enumerate(blocks):
                tt = effective_matrix(torch.cat([t.g_pos[m, rs, cs], per_block[k][m, rs]], 1), w)
                expect[m, :, rb, cs] = xq[m, :, rs] @ (tt[:, :-1] - tt[:, -1:]) / t.scale
    assert torch.allclose(y, expect, rtol=1e-12, atol=1e-12)
    # the netlist of an array writes the same array (its own reference column last)
    from crossbar.netlist import programmed_array

    g, spot = programmed_array(t, 1, "1,2", "pos")
    assert np.array_equal(g, torch.cat([t.g_pos[1, 16:31, 16:20], per_block[2][1, 16:31]], 1).numpy())
    assert spot.extra_count == 0 and spot.row_roles() == ["weight"] * 15


def test_tile_read_noise_is_attenuated():
    t = _tile(r_wl=2.0, r_bl=2.0)
    cfg = t.config.replace(**{"device.read_noise.sigma_rel": 0.05, "simulation.variance_precision": "full"})
    tn = Tile(t.target_weights[:-1].t(), t.target_weights[-1] * t.x_max, cfg).program(0, 2)
    x = torch.ones(1, 30, dtype=torch.float64)
    _, var = tn.moments(x)
    a_pos, a_neg = tn._attenuation()
    gp, gn = tn.g_pos, tn.g_neg
    expect = x.new_ones(1, 31) @ ((0.05 * gp[0] * a_pos[0]) ** 2 + (0.05 * gn[0] * a_neg[0]) ** 2)[:, :]
    # row-block sums of the variance (digital partial sums: one per block)
    got = var[0, 0].sum(0) / tn.variance_gain()[0]
    assert torch.allclose(got, expect[0], rtol=1e-10)


def test_tile_with_zero_wires_is_the_ideal_tile():
    t0 = _tile()
    tz = _tile(r_wl=0.0, r_bl=0.0, r_driver=0.0, r_sense=0.0, r_access=0.0)
    assert not tz.ir_drop
    x = torch.rand(3, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(t0.mvm(x), tz.mvm(x))


def test_ir_drop_aware_programming_recovers_the_weights():
    plain, aware = _tile(r_wl=1.0, r_bl=1.0), _tile(r_wl=1.0, r_bl=1.0, ir_drop_aware_programming=True)
    ideal = _tile()
    err_plain = (plain.effective_weights() - ideal.effective_weights()).abs().mean()
    err_aware = (aware.effective_weights() - ideal.effective_weights()).abs().mean()
    assert err_aware < 0.5 * err_plain


def _residual_after_gain(y: torch.Tensor, y0: torch.Tensor) -> float:
    k = (y * y0).sum() / (y0 * y0).sum()
    return float((y - k * y0).norm() / y0.norm())


def test_weight_distortion_separates_a_column_gain_from_the_rest():
    from crossbar.tile import weight_distortion

    gen = torch.Generator().manual_seed(4)
    w_ref = torch.randn(2, 10, 4, generator=gen, dtype=torch.float64)
    col_gain = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    gain, residual = weight_distortion(w_ref * col_gain, w_ref)
    assert torch.allclose(gain, col_gain.mean().expand(2)) and residual.abs().max() < 1e-14
    bent = w_ref * col_gain + 0.1 * torch.randn(2, 10, 4, generator=gen, dtype=torch.float64)
    assert (weight_distortion(bent, w_ref)[1] > 0.01).all()
    w_ref[1, :, 2] = 0.0  # an all-zero reference column: gain 1, and no division by zero
    gain, residual = weight_distortion(w_ref, w_ref)
    assert torch.allclose(gain, torch.ones(2, dtype=torch.float64)) and torch.isfinite(residual).all()


def test_offset_mapping_error_under_ir_drop_is_not_a_gain():
    """Every cell of an offset array carries about g_mid, and the one reference column per array
    (its last bit line) cannot match every column's attenuation, so the error depends on the input
    (no gain removes it), while G+ and G- of the differential mapping sag alike (docs/parasitics.md,
    the offset mapping under IR drop).  IR-drop-aware programming pre-distorts the reference devices
    with the weights and removes most of it.  The tile's own measure (the health report's) agrees."""
    gen = torch.Generator().manual_seed(3)
    w = (0.25 * torch.randn(32, 31, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    b = torch.zeros(32, dtype=torch.float64)
    x = torch.rand(16, 31, generator=gen, dtype=torch.float64) * 2 - 1

    def tile(mapping, r, aware=False):
        changes = {"array.rows": 32, "array.cols": 33, "array.mapping": mapping, "device.g_min": 1.0}
        changes.update({"simulation.dtype": "float64", "array.wires.r_wl": r, "array.wires.r_bl": r})
        cfg = default_config(**changes, **{"array.wires.ir_drop_aware_programming": aware})
        return Tile(w, b, cfg).program(0, 1)

    def out(mapping, r, aware=False):
        return tile(mapping, r, aware).mvm(x)[0].sum(-2)

    differential = _residual_after_gain(out("differential", 2.0), out("differential", 0.0))
    offset = _residual_after_gain(out("offset", 2.0), out("offset", 0.0))
    aware = _residual_after_gain(out("offset", 2.0, aware=True), out("offset", 0.0))
    assert offset > 5 * differential
    assert aware < 0.2 * offset
    # the tile's own measure of it: weights through the wires vs the same devices without
    assert tile("offset", 2.0).ir_drop_distortion()[1] > 5 * tile("differential", 2.0).ir_drop_distortion()[1]


# ----------------------------------------------------------------------------- netlists
def test_netlist_merges_zero_resistances():
    text = netlist_text(_g(3, 2), _v(2, 3), Wires(r_wl=1.0))
    assert "RD0" not in text and "RB0_0" not in text and "RS0" not in text and "RA" not in text
    assert "RW0_0 src0 w0_1 1" in text and "VS1 s1 0 DC 0" in text
    assert text.count("\nop\n") == 2 and " 0\n" not in text.replace("DC 0\n", "")


def test_netlist_command_writes_deck_and_expected_currents(tmp_path):
    g, v = _g(4, 3), _v(2, 4)
    np.savetxt(tmp_path / "g.csv", g, delimiter=",")
    np.savetxt(tmp_path / "v.csv", v, delimiter=",")
    parser = add_netlist_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--g",
            str(tmp_path / "g.csv"),
            "--v",
            str(tmp_path / "v.csv"),
            "--r-wl",
            "1",
            "--r-bl",
            "2",
            "--out",
            str(tmp_path / "a.cir"),
            "--expect",
            str(tmp_path / "i.csv"),
        ]
    )
    assert run_netlist(args) == 0
    assert (tmp_path / "a.cir").read_text().startswith("* crossbar netlist of g.csv")
    cur = np.loadtxt(tmp_path / "i.csv", delimiter=",", ndmin=2)
    assert np.allclose(cur, column_currents(g, v, 1.0, 2.0), rtol=1e-15)
    bad = parser.parse_args(["--g", str(tmp_path / "g.csv"), "--r-wl", "-1", "--out", str(tmp_path / "b.cir")])
    with pytest.raises(CrossbarInputError, match="--r-wl"):
        run_netlist(bad)


def test_netlist_of_a_saved_tile_array(tmp_path):
    t = _tile(r_wl=1.0, r_bl=2.0)
    t.save(tmp_path / "t.h5")
    parser = add_netlist_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--tile",
            str(tmp_path / "t.h5"),
            "--instance",
            "1",
            "--block",
            "1,2",
            "--polarity",
            "neg",
            "--out",
            str(tmp_path / "a.cir"),
            "--expect",
            str(tmp_path / "i.csv"),
        ]
    )
    assert run_netlist(args) == 0
    g = t.g_neg[1, 16:31, 16:20].numpy()
    cur = np.loadtxt(tmp_path / "i.csv", delimiter=",", ndmin=2)
    assert np.allclose(cur, column_currents(g, np.full((1, 15), 0.2), 1.0, 2.0), rtol=1e-12)
    with pytest.raises(CrossbarInputError, match="--block"):
        run_netlist(
            parser.parse_args(["--tile", str(tmp_path / "t.h5"), "--block", "5,0", "--out", str(tmp_path / "b.cir")])
        )


@pytest.mark.parametrize("ramp_rows", ["near_sense", "far_sense"])
@pytest.mark.parametrize("shared_column", ["near_driver", "far_driver"])
def test_netlist_array_is_the_array_the_simulator_solves(ramp_rows, shared_column):
    """With NL-ADC devices on a tile's arrays (ramp and bias rows on the last row block, a shared
    ramp's bit line), the netlist's array is the one the simulator solves: its T gives the tile's
    effective weight and NL-ADC conductances (the deck leaves no load out)."""
    from crossbar.netlist import programmed_array

    t = _tile(r_wl=1.0, r_bl=2.0, r_sense=3.0, ramp_rows=ramp_rows, shared_ramp_column=shared_column)
    gen = torch.Generator().manual_seed(4)
    cols = torch.arange(16, 20)
    t.set_extra_devices(None, rows={cols: torch.rand(2, 3, 4, generator=gen, dtype=torch.float64) * 50 + 1})
    t.set_extra_devices(None, cols={"ramp": (2, torch.rand(2, 3, generator=gen, dtype=torch.float64) * 50 + 1)})
    t_pos, t_neg, t_extra, t_cols = t.effective_conductances()
    g, spot = programmed_array(t, 1, "1,2", "pos")
    assert g.shape == (15 + 3, 4 + 1) and spot.extra_count == 3 and len(spot.ramp_cols) == 1
    assert spot.row_roles().count("nl_adc") == 3
    tt = effective_matrix(g, Wires(r_wl=1.0, r_bl=2.0, r_sense=3.0))
    r0, c0 = spot.first_row, spot.first_col
    assert np.allclose(tt[r0 : r0 + 15, c0 : c0 + 4], t_pos[1, 16:31, 16:20].numpy(), rtol=1e-12)
    fe = spot.first_extra
    assert np.allclose(tt[fe : fe + 3, c0 : c0 + 4], t_extra[1, :, 16:20].numpy(), rtol=1e-12)
    assert np.allclose(tt[fe : fe + 3, spot.ramp_cols[0]], t_cols["ramp"][1].numpy(), rtol=1e-12)
    g_other, spot_other = programmed_array(t, 1, "0,2", "pos")  # not the last row block: weights only
    assert g_other.shape == (16, 4) and spot_other.extra_count == 0


def test_netlist_outputs_are_checked_before_any_work(tmp_path):
    g = _g(4, 3)
    np.savetxt(tmp_path / "g.csv", g, delimiter=",")
    before = (tmp_path / "g.csv").read_bytes()
    parser = add_netlist_arguments(argparse.ArgumentParser())
    (tmp_path / "folder.cir").mkdir()
    cases = [
        (["--out", str(tmp_path / "g.csv")], "is the input --g"),
        (["--out", str(tmp_path / "a.cir"), "--expect", str(tmp_path / "g.csv")], "is the input --g"),
        (["--out", str(tmp_path / "folder.cir")], "is a folder"),
        (["--out", str(tmp_path / "a.cir"), "--expect", str(tmp_path / "a.cir")], "is also --out"),
    ]
    for argv, message in cases:
        with pytest.raises(CrossbarInputError, match=message):
            run_netlist(parser.parse_args(["--g", str(tmp_path / "g.csv"), "--r-wl", "1", *argv]))
        assert not (tmp_path / "a.cir").exists()
    assert (tmp_path / "g.csv").read_bytes() == before


def test_column_currents_takes_numpy_scalar_resistances():
    g, v = _g(4, 3), _v(2, 4)
    ref = column_currents(g, v, 1.0, 2.0, 3.0)
    assert np.array_equal(column_currents(g, v, np.float32(1), np.int64(2), np.float64(3)), ref)
    for bad in (True, "1", -1.0, math.nan):
        with pytest.raises(CrossbarInputError, match="r_wl"):
            column_currents(g, v, bad, 2.0)


# ------------------------------------------------------------------ netlist of a checkpoint's array
@pytest.fixture(scope="module")
def kws_checkpoint(tmp_path_factory):
    """An untrained tiny KWS checkpoint (40 mels -> LSTM 8 -> 12 classes): programming needs no
    training, and the checkpoint carries its calibration features."""
    from rnn_models.checkpoint import save_checkpoint
    from rnn_models.data import speech
    from rnn_models.tasks.kws import KWSLSTM

    tmp = tmp_path_factory.mktemp("netlist_ckpt")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSBAR_CACHE", str(tmp / "cache"))
    torch.manual_seed(1)
    model = KWSLSTM(40, 8, 12)
    meta = {
        "task": "gsc12",
        "classes": speech.TASK_CLASSES["gsc12"],
        "settings": speech.FeatureSettings().__dict__,
        "dev_fraction": 0.34,
        "split_seed": 0,
        "calibration_features": torch.randn(3, 20, 40).half(),
    }
    save_checkpoint(tmp / "k.pt", "kws", {"n_mels": 40, "hidden_size": 8, "classes": 12}, model, meta)
    yield tmp
    mp.undo()


@pytest.mark.filterwarnings("ignore::UserWarning")  # random calibration features: DAC clipping warnings
def test_netlist_of_a_checkpoint_array_is_the_exported_chip(kws_checkpoint, capsys):
    """``crossbar netlist --checkpoint`` writes the array ``crossbar export`` lists for the same
    checkpoint, config, instance and seed (two layouts of one programmed chip)."""
    import csv
    import json

    from rnn_models.cli import main

    tmp = kws_checkpoint
    common = ["--checkpoint", str(tmp / "k.pt"), "--config", "rram_nladc_5b", "--instance", "2", "--seed", "5"]
    deck, cur = tmp / "lstm.cir", tmp / "lstm.csv"
    argv = ["netlist", *common, "--layer", "lstm/_l0", "--polarity", "neg", "--r-wl", "1", "--r-bl", "2"]
    assert main([*argv, "--out", str(deck), "--expect", str(cur)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert deck.read_text().startswith("* crossbar netlist of k.pt lstm/_l0 under rram_nladc_5b instance 2 (seed 5)")
    assert main(["export", *common, "--out", str(tmp / "design")]) == 0
    manifest = json.loads((tmp / "design" / "manifest.json").read_text())
    (tile,) = [t for t in manifest["tiles"] if t["id"] == "lstm/_l0"]
    (array,) = tile["arrays"]
    rows, cols = array["planes"]["neg"]
    g = np.zeros((rows, cols))
    with open(tmp / "design" / array["file"], newline="") as f:
        for rec in csv.DictReader(f):
            if rec["plane"] == "neg":  # float32 devices, written in their shortest exact form
                g[int(rec["row"]), int(rec["col"])] = np.float32(rec["programmed_g_us"])
    assert (g > 0).all()
    expected = column_currents(g, np.full((1, rows), 0.2), 1.0, 2.0)
    assert np.allclose(np.loadtxt(cur, delimiter=",", ndmin=2), expected, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")  # random calibration features: DAC clipping warnings
def test_netlist_of_a_checkpoint_array_with_wires_carries_the_nladc_rows(kws_checkpoint, capsys):
    """Under a config with wires the NL-ADCs' ramp and bias devices sit on the LSTM's array (the
    last row block): the deck has their rows, at 0 V by default, as the simulator solves it."""
    from rnn_models.cli import main

    tmp = kws_checkpoint
    deck, cur = tmp / "wired.cir", tmp / "wired.csv"
    argv = ["netlist", "--checkpoint", str(tmp / "k.pt"), "--config", "rram_nladc_5b_wires16nm"]
    assert main([*argv, "--layer", "lstm/_l0", "--out", str(deck), "--expect", str(cur)]) == 0
    out = capsys.readouterr().out
    rows = int(out.split("wrote ")[1].split(": ")[1].split(" x ")[0])
    assert rows > 40 + 8 + 1  # the weight rows (inputs, h, bias) and the NL-ADC rows below them
    assert f"rows 0..48: weights; rows 49..{rows - 1}: the NL-ADCs' bias and ramp devices" in out
    text = deck.read_text()
    assert "VIN48 " in text and f"VIN{rows - 1} " in text
    assert np.loadtxt(cur, delimiter=",", ndmin=2).shape == (1, 32)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_netlist_checkpoint_errors_are_one_line_and_write_nothing(kws_checkpoint, capsys):
    from rnn_models.cli import main

    tmp = kws_checkpoint
    ckpt = str(tmp / "k.pt")
    out = tmp / "bad.cir"
    cases = [
        (["--checkpoint", ckpt, "--config", "rram_nladc_5b", "--layer", "lstm"], "--layer 'lstm': no such matrix"),
        (["--checkpoint", ckpt, "--config", "rram_nladc_5b"], "--checkpoint needs --layer NAME"),
        (["--checkpoint", ckpt, "--layer", "lstm/_l0"], "--checkpoint needs --config"),
        (["--checkpoint", str(tmp / "none.pt"), "--config", "ideal", "--layer", "x"], "file not found"),
        (["--checkpoint", ckpt, "--config", "rram_nladc_5b", "--layer", "fc/fc", "--block", "1,0"], "--block '1,0'"),
        (["--tile", str(tmp / "t.h5"), "--layer", "lstm/_l0"], "--layer belongs to --checkpoint"),
    ]
    for argv, message in cases:
        assert main(["netlist", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        assert not out.exists()
    main(["netlist", *cases[0][0], "--out", str(out)])
    assert "lstm/_l0, fc/fc" in capsys.readouterr().err  # the valid names


def test_the_compiled_ladder_steps_are_the_interpreted_ones_and_the_numpy_form():
    """The ladder's fused lower-triangle steps: numba equals the interpreted function, and both equal
    the whole-matrix numpy operations they replace (bit for bit, on the lower triangle)."""
    gen = np.random.default_rng(5)
    c, rb = 9, 1e-6
    y0 = np.asfortranarray(gen.random((c, c)) * 1e3)
    p, g = gen.random((c, c)), gen.random(c) * 100
    m = -(p * g[:, None])
    m[np.arange(c), np.arange(c)] += g
    lower = np.tril_indices(c)
    for segment, through, add in (
        (_segment_system, _through_segment, _add_cells),
        (_segment_kernel, _through_kernel, _add_cells_kernel),
    ):
        y, z = y0.copy(order="F"), np.zeros((c, c), order="F")
        dmax = segment(y, rb, z)
        assert dmax == np.abs(np.diag(y0)).max()
        assert np.array_equal(z[lower], (y0 * rb + np.eye(c))[lower])
        z2 = np.asfortranarray(gen.random((c, c)))
        through(z2, rb, p, g, y)
        assert np.array_equal(y[lower], ((np.eye(c) - z2) / rb + m)[lower])
        y3 = y0.copy(order="F")
        add(y3, p, g)
        assert np.array_equal(y3[lower], (y0 + m)[lower])


@pytest.mark.parametrize("n", [1, 2, SPD_INVERSE_LEAF, SPD_INVERSE_LEAF + 1, 2 * SPD_INVERSE_LEAF + 3, 169, 256])
def test_the_ladders_blocked_inverse_is_the_inverse(n):
    """The ladder's SPD inverse (Schur-complement blocks on BLAS, LAPACK leaves) against numpy's on
    the matrices it inverts, 1 + r Y (eigenvalues >= 1), at the leaf size and across it: the lower
    triangle is the inverse to rounding; the compiled and interpreted forms agree to rounding."""
    gen = np.random.default_rng(n)
    x = gen.standard_normal((n, n))
    a = x @ x.T / n + np.eye(n)
    ref = np.linalg.inv(a)
    lower = np.tril_indices(n)
    out = _spd_inverse_lower(np.array(a, order="F"))
    np.testing.assert_allclose(out[lower], ref[lower], rtol=0, atol=1e-13 * np.abs(ref).max())
    routines = [P._lapack(m, name, k) for m, name, k in P._INVERSE_ROUTINES]
    work, chars, ints = np.empty(n * n // 2 + n), CHARS.copy(), np.zeros(6, np.int32)
    interpreted = np.array(a, order="F")
    assert _spd_inverse_block.py_func(*routines, interpreted, 0, n, work, chars, ints, SCALARS) == 0
    np.testing.assert_allclose(interpreted[lower], ref[lower], rtol=0, atol=1e-13 * np.abs(ref).max())


def test_the_ladders_inverse_refuses_what_it_cannot_invert():
    """A matrix that is not positive definite (also in a trailing block: the recursion's info) is
    one clear error; anything but a square Fortran-ordered float64 array is refused."""
    for n, bad_row in ((100, 0), (100, 70), (SPD_INVERSE_LEAF, 3)):  # the kernel's blocks and a leaf
        a = np.eye(n)
        a[bad_row, bad_row] = -1.0
        with pytest.raises(ArithmeticError, match=f"not positive definite \\(LAPACK info {bad_row + 1}\\)"):
            _spd_inverse_lower(np.asfortranarray(a))
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        _spd_inverse_lower(np.eye(40) + np.tri(40) * 0.01)  # C-ordered
    assert _spd_inverse_lower(np.zeros((0, 0), order="F")).shape == (0, 0)


def test_a_first_solve_in_a_process_runs_its_blas_on_one_thread_per_solve():
    """threadpoolctl limits only libraries already loaded: SciPy's BLAS is loaded before the solver
    limits it, so even a process's first solve runs LAPACK single-threaded inside each of its
    threads (a fresh interpreter: in this one SciPy's BLAS is long loaded)."""
    import subprocess
    import sys

    script = """
import numpy as np, threadpoolctl
import crossbar.parasitics as P
from crossbar import dissection
seen = []
one = P._effective_one
def spy(*a, **k):  # after the array's solve, still inside the solver's limit
    t = one(*a, **k)
    seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info() if "scipy_openblas-" in i["filepath"])
    return t
P._effective_one = spy
P.effective_matrix(1 + np.random.default_rng(0).random((2, 6, 5)), r_wl=1.0, r_bl=1.0, progress=False)
print(sorted(set(seen)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[1]", out.stdout + out.stderr

"""The nested-dissection IR-drop solver (crossbar/dissection.py): its plan of boxes, its compiled
kernels against their interpreted source, and T against the sparse LU of the whole network on
random shapes, wires and leaf sizes (the shared cases -- ngspice fixtures, invariants, a 50-digit
reference -- run through it in test_parasitics.py)."""

import numpy as np
import pytest

from crossbar import dissection as D
from crossbar.errors import CrossbarInputError
from crossbar.lapack import CHARS, SCALARS, routine
from crossbar.parasitics import Wires, cell_conductance, effective_matrix, solver_for


def _random_case(seed):
    gen = np.random.default_rng(seed)
    rows, cols = (int(x) for x in gen.integers(1, 41, 2))
    g = gen.uniform(1.0, 100.0, (rows, cols))
    g[gen.random((rows, cols)) < 0.1] = 0.0  # open cells
    pick = lambda: float(gen.choice([0.0, 10 ** gen.uniform(-3, 1)]))  # noqa: E731
    w = Wires(
        r_wl=10 ** gen.uniform(-3, 1),
        r_bl=10 ** gen.uniform(-3, 1),
        r_driver=pick(),
        r_sense=pick(),
        r_access=float(gen.choice([0.0, 500.0])),
    )
    return g, w


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (4, 4), (5, 5), (17, 3), (3, 17), (40, 33), (64, 64)])
@pytest.mark.parametrize("leaf", [1, 2, 3, D.LEAF, 6])
def test_the_plan_covers_every_cell_once_and_merges_neighbours(shape, leaf):
    rows, cols = shape
    boxes, stack_len, work_len = D.plan(rows, cols, leaf)
    covered = np.zeros(shape, int)
    stack = []
    for r0, r1, c0, c1, kind, m in boxes:
        assert 0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols
        if kind == 0:
            covered[r0:r1, c0:c1] += 1
            # a leaf: at most leaf x leaf cells, or narrower than 4 columns (columns are cut only
            # into halves at least 2 wide)
            assert r1 - r0 <= leaf and (c1 - c0 <= leaf or c1 - c0 < 4)
        else:
            b, a = stack.pop(), stack.pop()
            if kind == 1:  # side by side, each at least 2 columns wide
                assert a == (r0, r1, c0, m) and b == (r0, r1, m, c1) and min(m - c0, c1 - m) >= 2
            else:  # one above the other
                assert kind == 2 and a == (r0, m, c0, c1) and b == (m, r1, c0, c1)
        stack.append((r0, r1, c0, c1))
    assert stack == [(0, rows, 0, cols)] and (covered == 1).all()
    assert stack_len >= (rows + cols) ** 2 and work_len > 0


@pytest.mark.parametrize("shape, split", [((9, 7), 1), ((9, 7), 8), ((20, 12), 15), ((40, 33), 29)])
def test_a_plan_cut_after_the_first_rows_covers_every_cell_once(shape, split):
    """The first rows' boxes (kept as the prefix state) and the other rows' boxes with the whole
    array's merge: together every cell once, the top part ending with the box of the first rows."""
    rows, cols = shape
    top, _, _ = D.plan(rows, cols, D.LEAF, split, "top")
    bottom, stack_len, _ = D.plan(rows, cols, D.LEAF, split, "bottom")
    both, _, _ = D.plan(rows, cols, D.LEAF, split, "all")
    assert np.array_equal(both, np.concatenate([top, bottom]))
    assert tuple(top[-1, :4]) == (0, split, 0, cols) and tuple(bottom[-1]) == (0, rows, 0, cols, 2, split)
    covered = np.zeros(shape, int)
    for r0, r1, c0, c1, kind, _m in both:
        if kind == 0:
            covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all() and stack_len >= (split + cols) ** 2  # the top box's matrix seeds the stack
    g, w = np.random.default_rng(split).uniform(1.0, 100.0, shape), Wires(r_wl=0.5, r_bl=2.0, r_driver=3.0)
    ref = effective_matrix(g, w, solver="sparse")
    prefix = D.prefix_state(g, w, split)
    assert prefix.shape == (split + cols,) * 2 and np.allclose(prefix.sum(1), 0, atol=1e-9 * np.abs(prefix).max())
    t = D.effective(g, w, split=split, prefix=prefix)
    assert np.array_equal(t, D.effective(g, w, split=split))  # given or computed: the same operations
    assert np.max(np.abs(t - ref)) <= 1e-12 * ref.max()
    with pytest.raises(ValueError, match="split = 0"):
        D.prefix_state(g, w, 0)


@pytest.mark.parametrize("seed", range(40))
def test_random_shapes_and_wires_match_the_sparse_solve(seed):
    g, w = _random_case(seed)
    ref = effective_matrix(g, w, solver="sparse")
    scale = np.max(np.abs(ref)) or 1.0
    for leaf in (1, 2, D.LEAF, 7):
        t = D.effective(cell_conductance(g, w.r_access), w, leaf)
        assert np.max(np.abs(t - ref)) <= 1e-11 * scale, (leaf, g.shape, w)
    if min(g.shape) > D.LEAF:  # the automatic choice, bit for bit
        assert solver_for(g, w) == "dissection"
        assert np.array_equal(effective_matrix(g, w), D.effective(cell_conductance(g, w.r_access), w))


def test_the_compiled_kernels_are_the_interpreted_source():
    """The kernel and each step (a leaf's matrix, a merge, an elimination) run interpreted give the
    compiled results bit for bit (the same operations and LAPACK / BLAS calls)."""
    g, w = _random_case(3)
    g = np.ascontiguousarray(g[:13, :11]) if g.shape[0] >= 13 and g.shape[1] >= 11 else np.full((13, 11), 37.0)
    rows, cols = g.shape
    boxes, stack_len, work_len = D.plan(rows, cols)
    args = (1e6 / 0.7, 1e6 / 1.3, 1e6 / 5.0, 0.0, boxes)
    lapack = ([routine(*r) for r in D._ROUTINES], CHARS, np.zeros(4, np.int32), SCALARS)
    results = []
    for fn in (D._dissect, D._dissect.py_func):
        stack = np.full(stack_len, np.nan)
        assert fn(g, *args, stack, np.empty(work_len), *lapack[0], *lapack[1:], 0) == 0
        results.append(stack[: (rows + cols) ** 2])  # the whole array's matrix: sources, then grounds
    assert np.array_equal(results[0], results[1]) and not np.isnan(results[0]).any()
    # the steps one by one
    k1, k2 = np.full(work_len, np.nan), np.full(work_len, np.nan)
    assert D._leaf_matrix(g, *args[:4], 0, 3, 0, 4, k1) == D._leaf_matrix.py_func(g, *args[:4], 0, 3, 0, 4, k2)
    n, n_i = D._leaf_matrix(g, *args[:4], 0, 3, 0, 4, k1)
    assert np.array_equal(k1[: n * n], k2[: n * n])
    s1, s2 = np.full(n * n, np.nan), np.full(n * n, np.nan)
    assert D._eliminate(k1.copy(), n, n_i, s1, *lapack[0], *lapack[1:]) == 0
    assert D._eliminate.py_func(k2.copy(), n, n_i, s2, *lapack[0], *lapack[1:]) == 0
    n_o = n - n_i
    assert np.array_equal(s1[: n_o * n_o], s2[: n_o * n_o])
    s = s1[: n_o * n_o].reshape(n_o, n_o, order="F")
    assert np.array_equal(s, s.T) and np.allclose(s.sum(1), 0.0, atol=1e-9 * np.abs(s).max())  # a Laplacian
    # the same Schur complement from numpy
    k = k1[: n * n].reshape(n, n, order="F")
    want = k[n_i:, n_i:] - k[n_i:, :n_i] @ np.linalg.solve(k[:n_i, :n_i], k[:n_i, n_i:])
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-9 * np.abs(want).max())
    stack = np.concatenate([s1[: n_o * n_o], s1[: n_o * n_o]])
    m1, m2 = np.full(work_len, np.nan), np.full(work_len, np.nan)
    # two copies of the box side by side (only the layout of the indices matters here)
    got1 = D._merge_matrix(1, 0, 3, 0, 8, 4, cols, stack, 0, n_o, n_o * n_o, n_o, m1)
    got2 = D._merge_matrix.py_func(1, 0, 3, 0, 8, 4, cols, stack, 0, n_o, n_o * n_o, n_o, m2)
    assert got1 == got2
    assert np.array_equal(m1[: got1[0] ** 2], m2[: got1[0] ** 2])


def test_a_matrix_that_is_not_positive_definite_is_one_clear_error(monkeypatch):
    k = np.eye(4).ravel(order="F").copy()
    k[5] = -1.0  # the second pivot
    routines = [routine(*r) for r in D._ROUTINES]
    assert D._eliminate(k, 4, 2, np.empty(4), *routines, CHARS, np.zeros(4, np.int32), SCALARS) == 2
    monkeypatch.setattr(D, "_dissect", lambda *a: 2)
    with pytest.raises(ArithmeticError, match="not positive definite"):
        D.effective(np.ones((3, 3)), Wires(r_wl=1.0, r_bl=1.0))


def test_it_takes_only_resistive_word_and_bit_lines():
    from crossbar.parasitics import US_PER_S

    assert D.US_PER_S == US_PER_S  # the same unit in both modules
    g = np.full((4, 5), 10.0)
    assert not D.applies(Wires(r_wl=0.0, r_bl=1.0), 9, 9) and not D.applies(Wires(r_wl=1.0, r_bl=0.0), 9, 9)
    # a leaf would span a whole line: the ladder or the sparse LU
    assert D.applies(Wires(r_wl=1.0, r_bl=1.0), 9, 9) and not D.applies(Wires(r_wl=1.0, r_bl=1.0), 9, D.LEAF)
    assert solver_for(g, Wires(r_wl=1.0, r_bl=1.0)) != "dissection"  # 4 x 5
    # an array whose buffers would not fit takes the ladder (its memory grows more slowly)
    assert D.applies(Wires(r_wl=1.0, r_bl=1.0), 2048, 2048) and not D.applies(Wires(r_wl=1.0, r_bl=1.0), 8192, 8192)
    assert solver_for(np.ones((4096, 8)), Wires(r_wl=1.0, r_bl=1.0)) == "dissection"
    with pytest.raises(ValueError, match="r_wl > 0 and r_bl > 0"):
        D.effective(g, Wires(r_wl=0.0, r_bl=1.0))
    with pytest.raises(ValueError, match="leaf = 0"):
        D.effective(g, Wires(r_wl=1.0, r_bl=1.0), leaf=0)
    for shape, r_bl in (((9, 9), 0.0), ((4, 9), 1.0), ((9, 4), 1.0)):
        with pytest.raises(CrossbarInputError, match="'dissection' needs resistive word and bit lines"):
            effective_matrix(np.full(shape, 10.0), r_wl=1.0, r_bl=r_bl, solver="dissection")


def test_a_split_request_is_the_same_whatever_ran_before_and_on_any_thread_count():
    """A request with a split (the layout's for arrays with an NL-ADC's rows) and a request for the
    rows below it give the same bits whether the first rows' matrix was kept before or is
    computed by a thread running beside them."""
    import torch

    from crossbar.parasitics import PREFIX_CACHE, effective_matrices

    g = np.random.default_rng(4).uniform(1.0, 100.0, (40, 36))
    w = Wires(r_wl=1.0, r_bl=0.5, r_sense=2.0)
    want = D.effective(g, w, split=30)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for _ in range(3):
                PREFIX_CACHE.clear()
                tail, whole = effective_matrices([g, g], w, rows=[range(30, 40), None], splits=[30, 30])
                assert np.array_equal(whole, want) and np.array_equal(tail, want[30:])
    finally:
        torch.set_num_threads(before)
        PREFIX_CACHE.clear()


def test_a_wide_array_is_not_cut_and_keeps_nothing():
    from crossbar.parasitics import PREFIX_CACHE

    g = np.random.default_rng(5).uniform(1.0, 100.0, (8, 40))
    w = Wires(r_wl=1.0, r_bl=1.0)
    assert not D.cut_pays(8, 40) and D.cut_pays(20, 40)
    PREFIX_CACHE.clear()
    t = effective_matrix(g, w, rows=[6, 7], split=6)
    assert not PREFIX_CACHE.entries and np.array_equal(t, D.effective(g, w)[[6, 7]])


def test_bad_splits_and_prefixes_are_one_clear_error():
    from crossbar.parasitics import effective_matrices

    g = np.full((9, 8), 20.0)
    w = Wires(r_wl=1.0, r_bl=1.0)
    for split in (0, 9, -1, 2.5):
        with pytest.raises(CrossbarInputError, match=f"split = {split!r}: must be None or a row in 1..8"):
            effective_matrix(g, w, split=split)
    with pytest.raises(CrossbarInputError, match="splits: one split"):
        effective_matrices([g], w, splits=[3, 4])
    with pytest.raises(ValueError, match=r"prefix: the matrix of rows 0..2 of a 9 x 8 array is 11 x 11"):
        D.effective(g, w, split=3, prefix=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="prefix: given without a split"):
        D.effective(g, w, prefix=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="split = 9: must be an integer in 1..8"):
        D.prefix_state(g, w, 9)
    with pytest.raises(ValueError, match="an array of 0 x 8 cells"):
        D.effective(np.zeros((0, 8)), w)

"""Speed of the two pieces that bound a simulated time step, side by side in one run.

1. Gaussian draws: torch's CPU generator (what the simulator uses) vs numpy's PCG64 / SFC64, in
   ns per standard normal, for a draw of one KWS step's conversions (64 x 512).
2. The tile's matrix products: ``crossbar.matmul.PreparedMatmul`` (oneDNN, weights packed once)
   vs ``torch.bmm`` on the benchmark's KWS (64 x 169 @ 169 x 512) and LM (32 x 435 @ 435 x 1536)
   shapes, in us per product, with their ratio;
3. next to it, one time step of ``nn.LSTM`` of the same shape (a 100-step sequence / 100): the
   bound of ``analog_ideal`` in ``lstm_speed.py``, whose step is one such product plus the
   element-wise work (nn.LSTM projects the inputs of all steps at once and multiplies only h per
   step), and what that projection of all 100 steps' x rows costs per step;
4. the fast path's fused step kernel (``rnn_models.fastpath._lstm_rows``) on one thread for the KWS
   shape's 64 rows, with ideal readouts (``ideal``) and with noisy NL-ADCs (``rram_nladc_5b``): the
   call a step makes, recorded from a forward pass and repeated;
5. what a step's product costs beyond its arithmetic: a 64 x 1 @ 1 x 8 product through
   ``PreparedMatmul`` (oneDNN's ``_linear_pointwise``, the fast path's call) vs ``torch.mm``;
6. the product a compiled loop over the whole sequence could make itself (issue 15's "one compiled
   loop"): SciPy's OpenBLAS ``sgemm`` called from numba, the KWS and LM products on one numba
   thread and split over two, next to oneDNN's, with the largest difference of their results.

    python benchmarks/component_speed.py [--repeats 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import median_seconds  # benchmarks/timing.py

from crossbar.matmul import PreparedMatmul


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    n = 64 * 512
    gen = torch.Generator().manual_seed(0)
    rngs = {"torch.randn (float32)": lambda: torch.randn(n, generator=gen)}
    for name, bitgen in (("numpy PCG64", np.random.PCG64), ("numpy SFC64", np.random.SFC64)):
        g = np.random.Generator(bitgen(0))
        rngs[f"{name} (float32)"] = lambda g=g: g.standard_normal(n, dtype=np.float32)
    print(f"\nGaussian draws of {n:,} numbers")
    base = None
    for name, fn in rngs.items():
        ns = median_seconds(fn, args.repeats) * 1e9 / n
        base = base or ns
        print(f"  {name:28s}{ns:8.2f} ns/number  {ns / base:6.2f}x torch")
    print("\nmatrix products (1 instance)")
    for shape, (b, k, c) in {"kws": (64, 169, 512), "lm": (32, 435, 1536)}.items():
        g = torch.Generator().manual_seed(1)
        w, x = torch.randn(1, k, c, generator=g), torch.randn(1, b, k, generator=g)
        prepared = PreparedMatmul(w)
        t_bmm = median_seconds(lambda x=x, w=w: torch.bmm(x, w), args.repeats) * 1e6
        t_prep = median_seconds(lambda x=x, prepared=prepared: prepared(x), args.repeats) * 1e6
        print(
            f"  {shape}: {b}x{k} @ {k}x{c}  torch.bmm {t_bmm:8.1f} us   PreparedMatmul ({prepared.backend}) "
            f"{t_prep:8.1f} us   {t_bmm / t_prep:5.2f}x faster"
        )
        mkl_packed(prepared, w, x, t_prep, args.repeats)
        inp, hidden = {"kws": (40, 128), "lm": (50, 384)}[shape]
        lstm = torch.nn.LSTM(inp, hidden).eval()
        seq = torch.randn(100, b, inp, generator=g)
        with torch.no_grad():
            t_lstm = median_seconds(lambda lstm=lstm, seq=seq: lstm(seq), max(5, args.repeats // 30)) * 1e6 / 100
        print(
            f"        nn.LSTM({inp}, {hidden}), batch {b}: {t_lstm:8.1f} us per time step   "
            f"the product alone {t_prep / t_lstm:5.2f}x of it"
        )
        x_all, w_x = torch.randn(100 * b, inp, generator=g), torch.randn(inp, c, generator=g)
        t_proj = (
            median_seconds(lambda x_all=x_all, w_x=w_x: torch.mm(x_all, w_x), max(5, args.repeats // 10)) * 1e6 / 100
        )
        print(
            f"        the x rows' product of all 100 steps at once ({100 * b}x{inp} @ {inp}x{c}): "
            f"{t_proj:8.1f} us per step; the x rows are {inp / k:.0%} of the per-step product"
        )
    print("\nthe fast path's fused step kernel, KWS shape, 64 rows, one thread")
    for preset in ("ideal", "rram_nladc_5b"):
        us = fused_kernel_us(preset, args.repeats)
        print(f"  {preset:16s}{us:8.1f} us per step" if us else f"  {preset}: numba missing, no fast path")
    print("\nfixed cost of one product call (64 x 1 @ 1 x 8)")
    g = torch.Generator().manual_seed(3)
    w1, x1 = torch.randn(1, 1, 8, generator=g), torch.randn(64, 1, generator=g)
    tiny = PreparedMatmul(w1)
    with torch.inference_mode():
        t_tiny = median_seconds(lambda: tiny.instance(0, x1), args.repeats * 10) * 1e6
        t_mm = median_seconds(lambda: torch.mm(x1, w1[0]), args.repeats * 10) * 1e6
    print(f"  PreparedMatmul ({tiny.backend}) {t_tiny:6.1f} us   torch.mm {t_mm:6.1f} us")
    openblas_in_numba(args.repeats)
    return 0


def openblas_in_numba(repeats: int) -> None:
    """Item 6 of the module docstring: the KWS and LM products (float32) through SciPy's OpenBLAS
    ``sgemm`` from a numba kernel, on one numba thread and on two (half the rows each), against
    ``PreparedMatmul`` on torch's threads; us per product."""
    try:
        import ctypes

        import numba
        from numba.extending import get_cython_function_address
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - numba is a dependency
        print("\nOpenBLAS from numba: numba missing")
        return
    sgemm = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(
        get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
    )

    @numba.njit(parallel=True, nogil=True)
    def products(parts, calls, w, x, y):  # y[r0:r1] = x[r0:r1] @ w per part, ``calls`` times
        k, n = w.shape
        for i in numba.prange(parts):
            r0, r1 = x.shape[0] * i // parts, x.shape[0] * (i + 1) // parts
            # Fortran sgemm on row-major arrays: y^T (n x rows) = w^T (n x k) @ x^T (k x rows)
            dims = np.array([n, r1 - r0, k, n, k, n], np.int32)
            scal = np.array([1.0, 0.0], np.float32)
            no_t = np.array([78], np.uint8)  # "N"
            for _ in range(calls):
                sgemm(no_t.ctypes, no_t.ctypes, dims[0:].ctypes, dims[1:].ctypes, dims[2:].ctypes, scal.ctypes,
                      w.ctypes, dims[3:].ctypes, x[r0:r1].ctypes, dims[4:].ctypes, scal[1:].ctypes,
                      y[r0:r1].ctypes, dims[5:].ctypes)  # fmt: skip
        return 0

    calls = max(10, repeats)
    print("\nthe step's product from a compiled loop: SciPy's OpenBLAS sgemm called from numba")
    for shape, (b, k, c) in {"kws": (64, 169, 512), "lm": (32, 435, 1536)}.items():
        g = torch.Generator().manual_seed(4)
        w, x = torch.randn(k, c, generator=g), torch.randn(b, k, generator=g)
        wn, xn, y = w.numpy(), x.numpy(), np.empty((b, c), np.float32)
        prepared = PreparedMatmul(w[None])
        with threadpool_limits(1, user_api="blas"):  # each call on its numba thread alone
            products(1, 1, wn, xn, y)
            took = [
                median_seconds(lambda p=p, wn=wn, xn=xn, y=y: products(p, calls, wn, xn, y), 5) * 1e6 / calls
                for p in (1, 2)
            ]
        with torch.inference_mode():
            t_prep = median_seconds(lambda prepared=prepared, x=x: prepared.instance(0, x), repeats) * 1e6
            diff = float((torch.from_numpy(y) - prepared.instance(0, x)).abs().max())
        print(
            f"  {shape}: {b}x{k} @ {k}x{c}  sgemm on 1 / 2 numba threads {took[0]:7.1f} / {took[1]:7.1f} us   "
            f"PreparedMatmul ({prepared.backend}) {t_prep:7.1f} us   largest difference {diff:.1e}"
        )


def mkl_packed(prepared: PreparedMatmul, w: torch.Tensor, x: torch.Tensor, t_prep: float, repeats: int) -> None:
    """MKL's packed product (``torch.ops.mkl._mkl_linear``, a candidate backend; not used by the
    simulator): its time, and whether it equals the prepared product bit for bit, and itself on
    each half of the rows, row by row (the layers multiply row parts of any size) and on one
    thread."""
    ops = getattr(torch.ops, "mkl", None)
    if ops is None or not hasattr(ops, "_mkl_linear") or not torch.backends.mkl.is_available():
        print("        MKL packed product: not in this torch build")
        return
    b = x.shape[1]
    wt = w[0].t().contiguous()
    packed = {n: ops._mkl_reorder_linear_weight(wt, n) for n in {b, b // 2, b - b // 2}}

    def mkl(rows: torch.Tensor) -> torch.Tensor:
        return ops._mkl_linear(rows, packed[rows.shape[0]], wt, None, rows.shape[0])

    t_mkl = median_seconds(lambda: mkl(x[0]), repeats) * 1e6
    ref, own = prepared(x)[0], mkl(x[0])
    halves = torch.cat([mkl(x[0, : b // 2]), mkl(x[0, b // 2 :])])
    packed[1] = ops._mkl_reorder_linear_weight(wt, 1)
    rows = torch.cat([mkl(x[0, i : i + 1]) for i in range(b)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_thread = mkl(x[0])
    finally:
        torch.set_num_threads(threads)
    print(
        f"        MKL packed product {t_mkl:8.1f} us ({t_prep / t_mkl:4.2f}x the prepared product's speed); "
        f"bit for bit: the prepared product's {torch.equal(own, ref)} (largest difference "
        f"{(own - ref).abs().max().item():.1e}), its own by halves {torch.equal(halves, own)}, "
        f"row by row {torch.equal(rows, own)}, on one thread {torch.equal(one_thread, own)}"
    )


def fused_kernel_us(preset: str, repeats: int) -> float | None:
    """us per call of ``fastpath._lstm_rows`` for one KWS-shape step of ``preset``, one thread (the
    arguments of the last step's call of a forward pass, recorded and replayed)."""
    from rnn_models import AnalogLSTM, fastpath

    if fastpath.numba is None:
        return None
    model = AnalogLSTM(40, 128, config=preset).eval()
    model.program(0, 1)
    x = torch.randn(100, 64, 40, generator=torch.Generator().manual_seed(2)) * 0.5
    calls: list[tuple] = []
    original, threads = fastpath._lstm_rows, torch.get_num_threads()
    fastpath._lstm_rows = lambda *a: calls.append(a) or original(*a)
    try:
        torch.set_num_threads(1)  # (one thread: the step's kernel is this one call)
        with torch.no_grad():
            model(x)
    finally:
        fastpath._lstm_rows = original
        torch.set_num_threads(threads)
    args = calls[-1]
    return median_seconds(lambda: original(*args), repeats) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())

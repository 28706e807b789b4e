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
   call a step makes, recorded from a forward pass and repeated.

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
    return 0


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

"""How one instance's steps use the threads: ``rnn_models.fastpath.STEP_PARALLEL`` on vs off.

On: every step's two products on torch's threads, then the step's kernel over row parts on numba's
OpenMP threads. Off: the batch rows split into parts, each running its whole sequence on a pool
thread of its own (single-threaded products). One programmed ``rram_nladc_5b`` model per cell and
shape (those of ``lstm_speed.py``), timed with the flag on and off alternately in the same process
(``--calls`` of each, the order swapped every round), so that the machine's drift hits both alike.
Prints the medians and the ratio off / on (> 1: STEP_PARALLEL is faster).

    python benchmarks/step_parallel.py [--calls 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lstm_speed import SHAPES  # benchmarks/lstm_speed.py

from rnn_models import AnalogGRU, AnalogLSTM, fastpath


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=12, help="timed calls per setting and model (>= 1)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls {args.calls}: must be >= 1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    original = fastpath.STEP_PARALLEL
    try:
        for cell, cls in (("lstm", AnalogLSTM), ("gru", AnalogGRU)):
            for shape, s in SHAPES.items():
                g = torch.Generator().manual_seed(0)
                x = torch.randn(s["steps"], s["batch"], s["inp"], generator=g) * 0.5
                model = cls(s["inp"], s["hidden"], config="rram_nladc_5b").eval()
                model.program(0, 1)
                times: dict[bool, list[float]] = {True: [], False: []}
                with torch.no_grad():
                    for flag in (True, False):  # warm-up: numba's caches, the thread pool
                        fastpath.STEP_PARALLEL = flag
                        model(x)
                    for i in range(args.calls):
                        for flag in (True, False) if i % 2 else (False, True):
                            fastpath.STEP_PARALLEL = flag
                            t0 = time.perf_counter()
                            model(x)
                            times[flag].append(time.perf_counter() - t0)
                on, off = (statistics.median(times[f]) * 1e3 for f in (True, False))
                print(
                    f"{cell} {shape}: step-parallel {on:.1f} ms, row parts on pool threads {off:.1f} ms, "
                    f"ratio {off / on:.2f}"
                )
    finally:
        fastpath.STEP_PARALLEL = original
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

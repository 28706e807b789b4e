"""The one timing rule of the benchmark scripts (imported by them as ``from timing import ...``;
run the scripts as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (s), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median wall time (s) of each of ``fns`` ({name: callable}) over ``repeats`` rounds in which
    every one is called once, in turn (after one warm-up round): a machine whose speed drifts
    during the run slows all of them alike, so their ratios stay fair."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}

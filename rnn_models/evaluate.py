"""Monte-Carlo evaluation on simulated hardware, shared by the tasks, and its result files.

A result (one config) is a dict with exactly the keys of the evaluate JSON::

    {"task", "metric", "n_samples", "software", "hardware": {"mean", "std", "per_instance"},
     "config", "checkpoint"}

Sweeps over configs (``crossbar sweep``, ``crossbar evaluate --sweep``) live in
:mod:`rnn_models.sweep`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from crossbar.config import HardwareConfig, bit_widths
from crossbar.errors import CrossbarInputError

RESULT_KEYS = ("task", "metric", "n_samples", "software", "hardware", "config", "checkpoint")


def result(
    task: str,
    metric: str,
    n_samples: int,
    software: float,
    per_instance: list[float],
    config: HardwareConfig,
    checkpoint: str | Path,
) -> dict:
    per = [float(v) for v in per_instance]
    return {
        "task": task,
        "metric": metric,
        "n_samples": int(n_samples),
        "software": float(software),
        "hardware": {
            "mean": statistics.fmean(per),
            "std": statistics.pstdev(per) if len(per) > 1 else 0.0,
            "per_instance": per,
        },
        "config": config.name,
        "checkpoint": str(checkpoint),
    }


def parse_sweep(text: str) -> list[int]:
    """``bits=3,4,5,8`` -> [3, 4, 5, 8]."""
    key, _, values = text.partition("=")
    if key.strip() != "bits" or not values:
        raise CrossbarInputError(f"--sweep {text!r}: expected bits=B1,B2,... (e.g. bits=3,4,5,8)")
    return bit_widths(values, f"--sweep {text!r}")

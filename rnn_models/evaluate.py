"""Monte-Carlo evaluation on simulated hardware, shared by the tasks, and its result files.

A result (one config) is a dict with exactly the keys of the evaluate JSON::

    {"task", "metric", "n_samples", "software", "hardware": {"mean", "std", "per_instance"},
     "config", "checkpoint"}

A sweep runs the same evaluation over several configs (e.g. NL-ADC bits 3/4/5/8 plus the
conventional-ADC baseline) and plots software vs hardware (Fig. 4d / 5c style).
"""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Callable

from crossbar.config import HardwareConfig, bit_widths, load_config
from crossbar.errors import CrossbarInputError
from crossbar.io import atomic_path, save_figure

RESULT_KEYS = ("task", "metric", "n_samples", "software", "hardware", "config", "checkpoint")


def result(task: str, metric: str, n_samples: int, software: float, per_instance: list[float],
           config: HardwareConfig, checkpoint: str) -> dict:
    per = [float(v) for v in per_instance]
    return {"task": task, "metric": metric, "n_samples": int(n_samples), "software": float(software),
            "hardware": {"mean": statistics.fmean(per), "std": statistics.pstdev(per) if len(per) > 1 else 0.0,
                         "per_instance": per},
            "config": config.name, "checkpoint": str(checkpoint)}


def parse_sweep(text: str) -> list[int]:
    """``bits=3,4,5,8`` -> [3, 4, 5, 8]."""
    key, _, values = text.partition("=")
    if key.strip() != "bits" or not values:
        raise CrossbarInputError(f"--sweep {text!r}: expected bits=B1,B2,... (e.g. bits=3,4,5,8)")
    return bit_widths(values, f"--sweep {text!r}")


def sweep_configs(base: HardwareConfig | str, bits: list[int], baseline: str | None) -> list[HardwareConfig]:
    """The base config at each bit width (ADC bits and ramp devices follow), then the baseline."""
    base = load_config(base)
    configs = []
    for b in bits:
        cfg = base.replace(**{"adc.bits": b, "nl_adc.ramp_devices": None})
        configs.append(cfg.replace(name=f"{base.name} ({b} bit)"))
    if baseline:
        configs.append(load_config(baseline))
    return configs


class ResultStore:
    """Finished evaluation units in an HDF5 file, rewritten atomically after every unit.

    A unit is one config's complete Monte-Carlo evaluation, keyed by the config's content (so a
    changed config is a new unit).  The file is always a complete, readable HDF5 file: an
    interrupted sweep (Ctrl-C, kill) leaves every unit that had finished, and ``--resume``
    continues without recomputing them.  Nothing in the file is executed: units are JSON text.
    """

    def __init__(self, path: str | Path, resume: bool = False, context: dict | None = None):
        """``context``: what else defines the evaluation (task, checkpoint, data, split, instances...);
        resuming a store written for another context is refused."""
        import h5py

        self.path = Path(path)
        self.units: dict[str, dict] = {}
        self.context = json.dumps(context or {}, sort_keys=True, default=str)
        if resume and self.path.is_file():
            try:
                with h5py.File(self.path, "r") as f:
                    stored = f.attrs.get("context", "{}")
                    for key in f.get("units", {}):
                        self.units[key] = json.loads(f["units"][key].attrs["json"])
            except (OSError, KeyError, ValueError) as exc:
                raise CrossbarInputError(f"{self.path}: cannot resume from this file ({exc})") from None
            if context is not None and stored != self.context:
                raise CrossbarInputError(f"{self.path}: this sweep store was written for another evaluation "
                                         f"({stored}); remove it or choose another --out to start afresh")

    @staticmethod
    def key(config: HardwareConfig) -> str:
        return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]

    def get(self, config: HardwareConfig) -> dict | None:
        return self.units.get(self.key(config))

    def add(self, config: HardwareConfig, res: dict) -> None:
        import h5py

        self.units[self.key(config)] = res
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["context"] = self.context
                group = f.create_group("units")
                for key, unit in self.units.items():
                    group.create_group(key).attrs["json"] = json.dumps(unit)


def run_sweep(configs: list[HardwareConfig], evaluate_one: Callable[[HardwareConfig], dict], progress=None,
              store: ResultStore | None = None) -> list[dict]:
    """Evaluate each config (reusing units already in ``store``) and return the results in order."""
    out = []
    for cfg in configs:
        res = store.get(cfg) if store is not None else None
        if res is None:
            res = evaluate_one(cfg)
            if store is not None:
                store.add(cfg, res)
        out.append(res)
        if progress:
            progress(res)
    return out


def sweep_table(results: list[dict]) -> str:
    """A Markdown table: config, software, hardware mean +- std."""
    metric = results[0]["metric"]
    lines = [f"| config | software {metric} | hardware {metric} (mean +- std) | instances |", "|---|---|---|---|"]
    for r in results:
        h = r["hardware"]
        lines.append(f"| {r['config']} | {r['software']:.4f} | {h['mean']:.4f} +- {h['std']:.4f} | {len(h['per_instance'])} |")
    return "\n".join(lines)


def plot_sweep(results: list[dict], path: str | Path, title: str) -> Path:
    """Software vs hardware per config (error bars: std over instances)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["config"] for r in results]
    means = [r["hardware"]["mean"] for r in results]
    stds = [r["hardware"]["std"] for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results)), 4))
    ax.bar(range(len(results)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8, label="hardware (MC mean +- std)")
    ax.axhline(results[0]["software"], color="k", ls="--", label="software (float)")
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(results[0]["metric"])
    lo = min(min(means) - max(stds), results[0]["software"])
    hi = max(max(means) + max(stds), results[0]["software"])
    pad = 0.1 * (hi - lo + 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)

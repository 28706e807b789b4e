"""Units of work of a sweep: one grid point x one model x one block of Monte-Carlo instances.

A unit is described by a plain, JSON-able dict (the *payload*: resolved config, paths, integer
seed, first instance and count) so it can travel to any Dask worker; :func:`run_unit` evaluates
it there.  Its key is a content hash of what determines its numbers (resolved config, checkpoint
sha256, data fingerprint, split, seed, instances, task options), so a finished unit is found
again in the journal after a restart, and a changed input makes a new unit.

Instance m is the same chip in whatever block, on whatever worker, it is evaluated: programming
and noise streams are seeded from (seed, purpose, instance) (``crossbar.rng``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossbar.config import HardwareConfig, validate_config
from crossbar.errors import CrossbarInputError
from crossbar.io import file_sha256
from rnn_models.sweep.spec import COST_METRICS, PAPER_MODELS, SweepSpec, point_label, resolve_points

#: bump when a change of this code changes the numbers of a unit (invalidates journals' units)
UNIT_VERSION = 1
MAX_FINGERPRINT_FILES = 1_000_000


def data_fingerprint(path: str | Path) -> str:
    """A fingerprint of a dataset: sha256 of a file's content, or of a folder's listing (relative
    path, size and modification time of every file, sorted) -- cheap for thousands of clips and
    changed by any added, removed, resized or rewritten file."""
    p = Path(path)
    if p.is_file():
        return "sha256:" + file_sha256(p)
    if not p.is_dir():
        raise CrossbarInputError(f"data {str(path)!r}: no such file or folder")
    h = hashlib.sha256()
    n = 0
    for root, dirs, files in os.walk(p, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            try:
                st = f.stat()
            except OSError:
                continue
            h.update(f"{f.relative_to(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            n += 1
            if n > MAX_FINGERPRINT_FILES:
                raise CrossbarInputError(f"data {str(path)!r}: more than {MAX_FINGERPRINT_FILES} files")
    return f"listing:{n}:" + h.hexdigest()


def default_models(task: str) -> list[str]:
    from rnn_models.checkpoint import SHIPPED

    if task in SHIPPED:
        return [str(SHIPPED[task])]
    return ["paper-lm"]


@dataclass
class Row:
    """One row of results.csv: a (point, model) pair and its units."""

    index: int
    base: str  # base config name (config or a baseline)
    changes: dict[str, Any]
    config: HardwareConfig
    model: str
    base_arg: str = ""  # the spec's string for the base config (resolves cost libraries)
    units: list[dict] = field(default_factory=list)  # payloads, in instance order

    @property
    def label(self) -> str:
        return point_label(self.changes)


def model_identity(model: str) -> str:
    if model in PAPER_MODELS:
        return model
    p = Path(model)
    if not p.is_file():
        raise CrossbarInputError(f"checkpoint {model!r} not found")
    return "sha256:" + file_sha256(p)


def plan(spec: SweepSpec, source: str = "<spec>") -> list[Row]:
    """Every (point, model) row and its unit payloads, everything validated before any work."""
    points = resolve_points(spec, source)
    models = spec.models or default_models(spec.task)
    for m in models:
        if spec.task in ("kws", "lm") and m in PAPER_MODELS:
            raise CrossbarInputError(
                f"{source}: checkpoint {m!r} is a cost shape; task {spec.task!r} needs a trained checkpoint"
            )
    identities = {}
    for m in models:
        try:
            identities[m] = model_identity(m)
        except CrossbarInputError as exc:
            raise CrossbarInputError(f"{source}: {exc}") from None
    if spec.task in ("kws", "lm"):
        _check_task(spec, models, source)
    data = str(Path(spec.data).resolve()) if spec.data is not None else None
    fingerprint = data_fingerprint(spec.data) if spec.data is not None else None
    if spec.task == "adc" or spec.task == "cost":
        blocks = [(0, spec.mc if spec.task == "adc" else 0)]  # characterisation: one unit per point
    else:
        blocks = [(s, min(spec.mc_block, spec.mc - s)) for s in range(0, spec.mc, spec.mc_block)]
    from crossbar.config import load_config

    base_args = {load_config(a).name: a for a in [spec.config] + spec.baselines}
    rows: list[Row] = []
    for base, changes, cfg in points:
        for m in models:
            row = Row(len(rows), base, changes, cfg, m, base_args[base])
            for first, count in blocks:
                payload = {
                    "task": spec.task,
                    "config": cfg.model_dump(mode="json"),
                    "model": m,
                    "model_identity": identities[m],
                    "data": data,
                    "data_fingerprint": fingerprint,
                    "split": spec.split,
                    "seed": int(spec.seed),
                    "first": int(first),
                    "count": int(count),
                    "digital_output": spec.digital_output,
                    "limit": spec.limit,
                    "function": spec.function,
                    "columns": spec.columns,
                    "version": UNIT_VERSION,
                }
                payload["key"] = unit_key(payload)
                row.units.append(payload)
            rows.append(row)
    n_units = sum(len(r.units) for r in rows)
    from rnn_models.sweep.spec import MAX_UNITS

    if n_units > MAX_UNITS:
        raise CrossbarInputError(f"{source}: {n_units} units of work; at most {MAX_UNITS} (raise mc_block)")
    return rows


def _check_task(spec: SweepSpec, models: list[str], source: str) -> None:
    from rnn_models.checkpoint import load_checkpoint

    for m in models:
        try:
            ckpt = load_checkpoint(m)
        except CrossbarInputError as exc:
            raise CrossbarInputError(f"{source}: {exc}") from None
        if ckpt["task"] != spec.task:
            raise CrossbarInputError(f"{source}: checkpoint {m!r} is a {ckpt['task']!r} model, not {spec.task!r}")


def unit_key(payload: dict) -> str:
    """Content hash of what determines a unit's numbers (paths themselves are not part of it)."""
    ident = {k: v for k, v in payload.items() if k not in ("key", "model", "data")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------ evaluation
def run_unit(payload: dict) -> dict:
    """Evaluate one unit (in a worker or in-process): per-instance metrics and the software metric.

    Returns ``{"key", "software", "per_instance": [{"instance": m, metric: value, ...}], "seconds",
    "worker"}``.  (Workers run one torch thread each: the runner sets their environment.)"""
    t0 = time.perf_counter()
    cfg = validate_config(payload["config"], source=f"unit {payload['key']}")
    task, first, count = payload["task"], payload["first"], payload["count"]
    software = None
    rows: list[dict] = []
    if task == "kws":
        from rnn_models.tasks.kws import evaluate_kws

        res = evaluate_kws(
            payload["model"],
            payload["data"],
            cfg,
            count,
            split=payload["split"],
            seed=payload["seed"],
            digital_output=payload["digital_output"],
            first=first,
            limit=payload["limit"],
        )
        software = res["software"]
        rows = [{"instance": first + i, "accuracy": v} for i, v in enumerate(res["hardware"]["per_instance"])]
    elif task == "lm":
        from rnn_models.tasks.lm import evaluate_lm

        res = evaluate_lm(
            payload["model"],
            payload["data"],
            cfg,
            count,
            split=payload["split"] or "valid",
            seed=payload["seed"],
            limit=payload["limit"],
            digital_output=payload["digital_output"],
            first=first,
        )
        software = res["software"]
        rows = [{"instance": first + i, "bpc": v} for i, v in enumerate(res["hardware"]["per_instance"])]
    elif task == "adc":
        from crossbar.characterize import characterize

        fn = payload["function"] or cfg.nl_adc.functions.gate
        ch = characterize(cfg, fn, mc=count, columns=payload["columns"], seed=payload["seed"])
        rows = [{"instance": i, **{k: float(v[i]) for k, v in ch.metrics.items()}} for i in range(count)]
    elif task == "cost":
        rows = []
    else:  # the spec's Literal makes this unreachable from a file
        raise CrossbarInputError(f"unknown task {task!r}")
    return {
        "key": payload["key"],
        "software": software,
        "per_instance": rows,
        "seconds": time.perf_counter() - t0,
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }


def cost_metrics(row: Row) -> dict:
    """The point's cost metrics (same config and model as ``crossbar report``)."""
    from crossbar.cost.accounting import estimate
    from crossbar.cost.report import config_architecture, resolve_library
    from rnn_models.workload import workload_for

    cfg = row.config
    library = resolve_library(cfg, row.base_arg)
    workload = workload_for(row.model, cfg)
    est = estimate(workload, cfg, library, cfg.adc.bits, config_architecture(cfg))
    out = {}
    for key in COST_METRICS:
        value = est.get(key)
        out[key] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return out

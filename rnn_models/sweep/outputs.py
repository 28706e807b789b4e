"""Sweep outputs, rebuilt from the plan and the journal (so they are the same after a resume):

* ``results.csv`` -- one row per grid point x model: ``point``, ``config`` (the base config),
  each swept path as a column named exactly as in the spec, ``checkpoint``, ``software``,
  ``hardware_mean``, ``hardware_std`` (population std over instances), ``n_instances``, the
  point's cost metrics ``tops_per_w``, ``tops_per_mm2``, ``energy_per_inference_j``, ``seconds``
  (compute time of its units) and ``status`` (done / partial / failed: message);
* ``instances.csv`` -- one row per unit x instance with every metric of the instance;
* ``configs/point_NNNN.json`` -- the resolved config of every point (``crossbar evaluate --config``
  takes it and gives the same numbers);
* ``report.md`` and plots: the metric vs each swept field (error bars = std over instances, one
  line per base config and model), a heatmap for two-field grids, and the metric vs energy
  efficiency (TOPS/W) with the Pareto front marked.

Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from crossbar.io import pyplot, save_figure, write_text
from rnn_models.sweep.spec import SweepSpec
from rnn_models.sweep.units import Row

COST_COLUMNS = ("tops_per_w", "tops_per_mm2", "energy_per_inference_j")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def aggregate(
    spec: SweepSpec, rows: list[Row], done: dict[str, dict], failed: dict[str, str], costs: dict[int, dict]
) -> list[dict]:
    """One summary dict per row (point x model), in plan order."""
    metric = spec.metric_name
    out = []
    for row in rows:
        results = [done.get(u["key"]) for u in row.units]
        errors = [failed.get(u["key"]) for u in row.units if u["key"] not in done and u["key"] in failed]
        per = [inst for r in results if r is not None for inst in r["per_instance"]]
        per.sort(key=lambda inst: inst["instance"])
        values = [float(inst[metric]) for inst in per if inst.get(metric) is not None]
        cost = costs.get(row.index, {})
        if spec.task == "cost":
            values = [cost[metric]] if cost.get(metric) is not None else []
        software = next((r["software"] for r in results if r is not None and r.get("software") is not None), None)
        complete = all(r is not None for r in results)
        status = "done" if complete else (f"failed: {errors[0]}" if errors else "partial" if per else "pending")
        entry = {
            "point": row.index,
            "config": row.base,
            **{p: row.changes.get(p) for p in spec.swept},
            "checkpoint": row.model,
            "software": software,
            "hardware_mean": statistics.fmean(values) if values else None,
            "hardware_std": statistics.pstdev(values) if len(values) > 1 else (0.0 if values else None),
            "n_instances": len(per) if spec.task != "cost" else 0,
            **{k: cost.get(k) for k in COST_COLUMNS},
            "seconds": sum(r["seconds"] for r in results if r is not None),
            "status": status,
            "config_name": row.config.name,
        }
        out.append(entry)
    return out


def results_csv(spec: SweepSpec, summary: list[dict]) -> str:
    cols = (
        ["point", "config"]
        + spec.swept
        + ["checkpoint", "software", "hardware_mean", "hardware_std", "n_instances", *COST_COLUMNS, "seconds", "status"]
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for s in summary:
        w.writerow([_fmt(s[c]) for c in cols])
    return buf.getvalue()


def instances_csv(spec: SweepSpec, rows: list[Row], done: dict[str, dict]) -> str:
    metrics: list[str] = []
    records = []
    for row in rows:
        for u in row.units:
            r = done.get(u["key"])
            if r is None:
                continue
            for inst in r["per_instance"]:
                for k in inst:
                    if k != "instance" and k not in metrics:
                        metrics.append(k)
                records.append((row, u, r, inst))
    cols = ["point", "config", *spec.swept, "checkpoint", "unit", "instance", "software", *metrics, "worker"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row, u, r, inst in records:
        w.writerow(
            [
                row.index,
                row.base,
                *[_fmt(row.changes.get(p)) for p in spec.swept],
                row.model,
                u["key"],
                inst["instance"],
                _fmt(r.get("software")),
                *[_fmt(inst.get(m)) for m in metrics],
                r.get("worker", ""),
            ]
        )
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the non-dominated points of (metric, TOPS/W): TOPS/W higher is better; the metric
    higher or lower is better as given."""
    front = []
    for i, (m, e) in enumerate(points):
        better = (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)
        dominated = any(better(m2, m) and e2 >= e and (m2, e2) != (m, e) for j, (m2, e2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def report_md(spec: SweepSpec, summary: list[dict], plots: list[Path], n_units: int, n_done: int, n_failed: int) -> str:
    metric = spec.metric_name
    lines = [
        f"# Sweep: task {spec.task}, metric {metric}",
        "",
        f"{len(summary)} rows (points x models), {n_units} units: {n_done} done, {n_failed} failed; "
        f"{spec.mc} instance(s) per point, seed {spec.seed}.",
        "",
        "| "
        + " | ".join(
            [
                "config",
                *spec.swept,
                "checkpoint",
                "software",
                f"hardware {metric} (mean +- std)",
                "n",
                "TOPS/W",
                "status",
            ]
        )
        + " |",
        "|" + "---|" * (len(spec.swept) + 7),
    ]
    for s in summary:
        hw = "" if s["hardware_mean"] is None else f"{s['hardware_mean']:.4f} +- {s['hardware_std']:.4f}"
        sw = "" if s["software"] is None else f"{s['software']:.4f}"
        tw = "" if s["tops_per_w"] is None else f"{s['tops_per_w']:.3g}"
        lines.append(
            "| "
            + " | ".join(
                [
                    s["config"],
                    *[_fmt(s[p]) for p in spec.swept],
                    Path(s["checkpoint"]).name,
                    sw,
                    hw,
                    str(s["n_instances"]),
                    tw,
                    s["status"],
                ]
            )
            + " |"
        )
    if plots:
        lines += ["", "Plots:", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _series(summary: list[dict], spec: SweepSpec, field: str):
    """{(config, checkpoint, other fields...): [(x, mean, std)]} for plotting vs ``field``."""
    groups: dict[tuple, list] = {}
    others = [p for p in spec.swept if p != field]
    for s in summary:
        if s["hardware_mean"] is None or not isinstance(s[field], (int, float)) or isinstance(s[field], bool):
            continue
        key = (s["config"], Path(s["checkpoint"]).name, *[f"{p}={s[p]}" for p in others])
        groups.setdefault(key, []).append((float(s[field]), s["hardware_mean"], s["hardware_std"] or 0.0))
    return {k: sorted(v) for k, v in groups.items()}


def write_plots(spec: SweepSpec, summary: list[dict], out: Path) -> list[Path]:
    plt = pyplot()

    metric = spec.metric_name
    paths = []
    for field in spec.swept:
        series = _series(summary, spec, field)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for key, line in series.items():
            xs, ms, ss = zip(*line)
            ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=", ".join(key), alpha=0.85)
        soft = [s["software"] for s in summary if s["software"] is not None]
        if soft:
            ax.axhline(soft[0], color="k", ls="--", lw=1, label="software (float)")
        if (
            all(x > 0 for pts in series.values() for x, *_ in pts)
            and max(x for pts in series.values() for x, *_ in pts) / min(x for pts in series.values() for x, *_ in pts)
            > 20
        ):
            ax.set_xscale("log")
        distinct = sorted({x for pts in series.values() for x, *_ in pts})
        if len(distinct) <= 12 and all(float(x).is_integer() for x in distinct):
            ax.set_xticks(distinct)
        ax.set_xlabel(field)
        ax.set_ylabel(f"{metric} (mean +- std over instances)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.set_title(f"{spec.task}: {metric} vs {field}")
        paths.append(save_figure(fig, out / f"metric_vs_{field.replace('.', '_')}.png"))
        plt.close(fig)
    if len(spec.grid) == 2 and not spec.zip:
        fx, fy = list(spec.grid)
        for base, model in dict.fromkeys((s["config"], s["checkpoint"]) for s in summary):
            chosen = [s for s in summary if s["config"] == base and s["checkpoint"] == model]
            xv, yv = list(dict.fromkeys(spec.grid[fx])), list(dict.fromkeys(spec.grid[fy]))
            import numpy as np

            z = np.full((len(yv), len(xv)), np.nan)
            for s in chosen:
                if s["hardware_mean"] is not None:
                    z[yv.index(s[fy]), xv.index(s[fx])] = s["hardware_mean"]
            fig, ax = plt.subplots(figsize=(5.5, 4.2))
            im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis" if spec.higher_is_better else "viridis_r")
            ax.set_xticks(range(len(xv)), [str(v) for v in xv])
            ax.set_yticks(range(len(yv)), [str(v) for v in yv])
            for (i, j), v in np.ndenumerate(z):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w")
            ax.set_xlabel(fx)
            ax.set_ylabel(fy)
            fig.colorbar(im, ax=ax, label=metric)
            ax.set_title(f"{base}, {Path(model).name}", fontsize=8)
            safe = f"{base}_{Path(model).stem}".replace(" ", "_").replace("/", "_")
            paths.append(save_figure(fig, out / f"heatmap_{safe}.png"))
            plt.close(fig)
    pts = [
        (s["hardware_mean"], s["tops_per_w"], s)
        for s in summary
        if s["hardware_mean"] is not None and s["tops_per_w"] is not None
    ]
    if pts and spec.task != "cost":
        front = set(pareto_front([(m, e) for m, e, _ in pts], spec.higher_is_better))
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        bases = list(dict.fromkeys(s["config"] for *_, s in pts))
        for b, marker in zip(bases, "osD^v<>p*h" * 10):
            pairs = [(m, e) for m, e, s in pts if s["config"] == b]
            ax.scatter([e for _, e in pairs], [m for m, _ in pairs], marker=marker, alpha=0.7, label=b)
        fr = sorted((pts[i][1], pts[i][0]) for i in front)
        ax.plot([e for e, _ in fr], [m for _, m in fr], "r-", lw=1.5, label="Pareto front")
        ax.scatter([e for e, _ in fr], [m for _, m in fr], s=90, facecolors="none", edgecolors="r")
        ax.set_xlabel("energy efficiency, TOPS/W")
        ax.set_ylabel(f"hardware {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{spec.task}: accuracy vs energy efficiency")
        paths.append(save_figure(fig, out / "pareto.png"))
        plt.close(fig)
    return paths


def write_tables(out: Path, spec: SweepSpec, rows: list[Row], summary: list[dict], done: dict[str, dict]) -> None:
    write_text(out / "results.csv", results_csv(spec, summary))
    write_text(out / "instances.csv", instances_csv(spec, rows, done))

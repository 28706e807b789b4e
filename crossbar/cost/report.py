"""`crossbar report`: cost of a model on a hardware config, per bit width and architecture.

Writes ``report.json`` (top-level ``tops_per_w``, ``tops_per_mm2``, ``power_mw``, ``area_mm2``,
``peak_tops``, ``energy_breakdown`` of the config's own architecture -- a number for one bit width,
``{"5": ..., "8": ...}`` for several), ``report.md`` (tables) and three PNGs: the energy breakdown
(MAC array / NL processing / rest, as the paper's Fig. 4f), energy vs area efficiency with the
published chips of the paper's Table 1, and the cycles of one time step.
"""

from __future__ import annotations

from pathlib import Path

from crossbar.config import PRESET_DIR, HardwareConfig, check_bit_widths, load_config
from crossbar.cost.accounting import ARCHITECTURES, CATEGORIES, cost_assumptions, estimate, nl_time_ratio
from crossbar.cost.library import Library, load_library
from crossbar.cost.workload import PAPER_SHAPES, Workload, paper_shape
from crossbar.errors import CrossbarInputError
from crossbar.io import pyplot, save_figure, write_json, write_text

#: the NL-ADC paper's Table 1 (Yang et al., Nat. Commun. 16, 2025): this work's two models
PAPER_TABLE1 = {
    "paper-kws": {
        "5": {"tops_per_w": 31.0, "tops_per_mm2": 39.48, "power_mw": 3.7, "peak_tops": 0.11, "area_mm2": 0.003},
        "8": {"tops_per_w": 4.0, "tops_per_mm2": 6.1, "power_mw": 4.6, "peak_tops": 0.02, "area_mm2": 0.003},
    },
    "paper-lm": {
        "5": {"tops_per_w": 47.9, "tops_per_mm2": 27.6, "power_mw": 406.5, "peak_tops": 19.5, "area_mm2": 0.71},
        "8": {"tops_per_w": 7.2, "tops_per_mm2": 7.8, "power_mw": 766.8, "peak_tops": 5.5, "area_mm2": 0.71},
    },
}
#: published chips of the same table: (TOPS/W, TOPS/mm^2 or None)
PUBLISHED_CHIPS = {
    "IBM PCM, Nature'23 (14 nm)": (6.94, 0.17),
    "IBM PCM, Nat. Electron.'23 (14 nm)": (1.96, 0.32),
    "VLSI'17 LSTM (65 nm SRAM)": (1.28, None),
    "JSSC'20 LSTM (65 nm SRAM)": (8.93, None),
    "ISSCC'17 LSTM (65 nm SRAM)": (1.1, None),
    "CICC'18 LSTM (65 nm SRAM)": (1.11, None),
}
HEADLINE = (
    "tops_per_w",
    "tops_per_mm2",
    "power_mw",
    "area_mm2",
    "peak_tops",
    "energy_breakdown",
    "latency_per_step_s",
    "energy_per_inference_j",
)
ASSUMPTIONS = [
    "ops = 2 per multiply-accumulate on the crossbars (bias rows included); "
    "element-wise and activation work is not counted as ops",
    "peak figures: every word line at full scale during the whole conversion (cost.input_activity)",
    "the array conducts for the whole conversion (2^N ramp steps + reset cycles)",
    "one conversion per column per time step; recurrent layers of a stack pipelined; "
    "a decoder overlaps with the next step",
    "element-wise LSTM/GRU work on min(cost.digital_nl_units, hidden) lanes with one multiplier and one adder each",
    "figures scaled to cost.node_nm by the library's scaling model",
]


def config_architecture(config: HardwareConfig) -> str:
    """The architecture a config describes: NL-ADC for ``adc.kind = nl_ramp``, else conventional."""
    return "nl_adc" if config.adc.kind == "nl_ramp" else "conventional"


def resolve_library(config: HardwareConfig, config_arg: str) -> Library:
    """Load ``cost.library``: 'default', or a path relative to the config file's folder."""
    name = config.cost.library
    if name == "default":
        return load_library()
    p = Path(config_arg)
    folder = p.parent if p.is_file() else PRESET_DIR
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise CrossbarInputError(f"cost.library {name!r} resolves outside the config's folder")
    return load_library(path)


def build_report(config_arg: str, model: str | Workload, bits: list[int], steps: int | None = None) -> dict:
    """Everything ``report.json`` holds (no files written).

    ``model``: a paper shape name (``paper-kws``, ``paper-lm``) or a :class:`Workload` built by the
    caller (e.g. ``rnn_models.workload.workload_for`` from a checkpoint)."""
    base = load_config(config_arg)
    library = resolve_library(base, config_arg)
    bits = check_bit_widths(list(bits), "--bits") if bits else [base.adc.bits]
    own = config_architecture(base)
    if isinstance(model, Workload):
        workload = model
    else:
        if model not in PAPER_SHAPES:
            raise CrossbarInputError(f"model {model!r}: use {', '.join(PAPER_SHAPES)} or a Workload")
        workload = paper_shape(model, base)
    if steps is not None:
        workload.steps_per_inference = int(steps)
    model = workload.name
    per_arch: dict[str, dict[str, dict]] = {a: {} for a in ARCHITECTURES}
    for b in bits:
        cfg = base.replace(**{"adc.bits": b, "nl_adc.ramp_devices": None})
        for arch in ARCHITECTURES:
            per_arch[arch][str(b)] = estimate(workload, cfg, library, b, arch)
    several = len(bits) > 1
    report = {
        "format": "crossbar.cost_report",
        "version": 1,
        "config": base.name,
        "architecture": own,
        "model": model,
        "workload": {
            "description": workload.description,
            "weights": workload.weights,
            "steps_per_inference": workload.steps_per_inference,
            "matrices": [
                {
                    "name": m.name,
                    "rows": m.rows,
                    "cols": m.cols,
                    "readout": m.readout,
                    "per_step": m.per_step,
                    "recurrent": m.recurrent,
                    "conductance_load_us": m.g_load_us,
                    "ramp_charge_factor": m.ramp_charge_factor,
                }
                for m in workload.matrices
            ],
        },
        "node_nm": base.cost.node_nm,
        "clock_ghz": base.cost.clock_ghz,
        "bits": bits,
        "assumptions": ASSUMPTIONS + cost_assumptions(base),
    }
    for key in HEADLINE:
        vals = {str(b): per_arch[own][str(b)][key] for b in bits}
        report[key] = vals if several else vals[str(bits[0])]
    report["architectures"] = per_arch
    report["nl_processing_time"] = nl_time_ratio(512, base.cost.digital_nl_units, 5, base, library)
    if model in PAPER_TABLE1:
        report["paper_table1"] = {
            str(b): {
                k: {
                    "ours": per_arch["nl_adc"][str(b)][k],
                    "paper": v,
                    "deviation": per_arch["nl_adc"][str(b)][k] / v - 1,
                }
                for k, v in PAPER_TABLE1[model][str(b)].items()
            }
            for b in bits
            if str(b) in PAPER_TABLE1[model]
        }
    report["library"] = {"scaling": library.scaling.model_dump(), "components": library.sources()}
    return report


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """report.json, report.md and the PNGs into ``out_dir`` (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "report.json", report), write_text(out / "report.md", markdown(report))]
    paths += plot(report, out)
    return paths


# ---------------------------------------------------------------------- markdown
def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.3e}"


def markdown(r: dict) -> str:
    lines = [
        f"# Cost report: {r['model']} on {r['config']}",
        "",
        f"{r['workload']['description']}; {r['workload']['weights']:,} weights on crossbars, "
        f"{r['workload']['steps_per_inference']} time step(s) per inference; {r['node_nm']:g} nm, "
        f"{r['clock_ghz']:g} GHz. The config's architecture: **{r['architecture']}**.",
        "",
        "## Summary",
        "",
        "| architecture | bits | TOPS/W | TOPS/mm^2 | peak TOPS | power (mW) | area (mm^2) | cycles/step | "
        "energy/inference (J) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, per_bits in r["architectures"].items():
        for b, e in per_bits.items():
            lines.append(
                f"| {arch} | {b} | {_fmt(e['tops_per_w'])} | {_fmt(e['tops_per_mm2'])} | {_fmt(e['peak_tops'])} | "
                f"{_fmt(e['power_mw'])} | {_fmt(e['area_mm2'])} | {e['cycles_per_step']['total']:g} | "
                f"{_fmt(e['energy_per_inference_j'])} |"
            )
    if "paper_table1" in r:
        lines += [
            "",
            "## Against the paper's Table 1 (NL-ADC architecture)",
            "",
            "| bits | metric | ours | Table 1 | deviation |",
            "|---|---|---|---|---|",
        ]
        for b, metrics in r["paper_table1"].items():
            for k, v in metrics.items():
                lines.append(f"| {b} | {k} | {_fmt(v['ours'])} | {_fmt(v['paper'])} | {v['deviation']:+.0%} |")
    lines += [
        "",
        "## Energy per time step by category (J)",
        "",
        "| architecture | bits | " + " | ".join(CATEGORIES) + " |",
        "|---|---|" + "---|" * len(CATEGORIES),
    ]
    for arch, per_bits in r["architectures"].items():
        for b, e in per_bits.items():
            lines.append(f"| {arch} | {b} | " + " | ".join(_fmt(e["energy_breakdown"][c]) for c in CATEGORIES) + " |")
    first = r["architectures"][r["architecture"]]
    b0 = next(iter(first))
    lines += [
        "",
        f"## Components ({r['architecture']}, {b0} bit)",
        "",
        "| component | energy/step (J) | area (mm^2) |",
        "|---|---|---|",
    ]
    e0 = first[b0]
    for comp in sorted(set(e0["energy_by_component"]) | set(e0["area_by_component_mm2"])):
        lines.append(
            f"| {comp} | {_fmt(e0['energy_by_component'].get(comp, 0.0))} | "
            f"{_fmt(e0['area_by_component_mm2'].get(comp, 0.0))} |"
        )
    lines += ["", f"## Per layer ({r['architecture']}, {b0} bit)", ""]
    for row in e0["layers"]:
        lines.append("- " + ", ".join(f"{k} {_fmt(v) if isinstance(v, float) else v}" for k, v in row.items()))
    nl = r["nl_processing_time"]
    lines += [
        "",
        f"## Digital NL processing vs MVM time (Fig. 1c: {nl['hidden']}-unit LSTM, {nl['units']} digital "
        f"units, {nl['bits']}-bit {nl['adc']} ADC of {nl['mvm_cycles']} cycles)",
        "",
        "| digital unit | NL time / MVM time |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.2f}x |" for k, v in nl["ratio"].items()]
    lines += [
        "",
        "With the NL-ADC the gate activations take no cycles beyond the conversion.",
        "",
        "## Assumptions",
        "",
    ] + [f"- {a}" for a in r["assumptions"]]
    lines += ["", "## Component sources", "", "| component | node (nm) | source | calibrated |", "|---|---|---|---|"]
    for name, src in r["library"]["components"].items():
        lines.append(f"| {name} | {src['node_nm']:g} | {src['source']} | {src['calibrated'] or ''} |")
    lines += ["", f"Scaling: {r['library']['scaling']['model']} ({r['library']['scaling']['source']})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- plots
def plot(r: dict, out: Path) -> list[Path]:
    plt = pyplot()

    paths = []
    labels, rows = [], []
    for arch, per_bits in r["architectures"].items():
        for b, e in per_bits.items():
            labels.append(f"{arch}\n{b} bit")
            rows.append(e)
    # 1. energy breakdown per step
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.2))
    bottom = [0.0] * len(rows)
    for cat, color in zip(CATEGORIES, ("#4477aa", "#ee6677", "#bbbbbb")):
        vals = [e["energy_breakdown"][cat] * 1e12 for e in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=cat.replace("_", " "), color=color)
        bottom = [b_ + v for b_, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("energy per time step (pJ)")
    ax.set_yscale("log")
    ax.set_title(f"{r['model']}: energy per time step")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "energy_breakdown.png"))
    # 2. energy vs area efficiency with published chips
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    markers = {"nl_adc": "o", "conventional": "s", "digital": "^"}
    for arch, per_bits in r["architectures"].items():
        for b, e in per_bits.items():
            ax.scatter(e["tops_per_mm2"], e["tops_per_w"], marker=markers[arch], s=50, label=f"ours: {arch} {b} bit")
    for model, per_bits in PAPER_TABLE1.items():
        for b, v in per_bits.items():
            ax.scatter(v["tops_per_mm2"], v["tops_per_w"], marker="*", s=90, color="k", alpha=0.6)
            ax.annotate(
                f"Table 1 {model[6:]} {b}b",
                (v["tops_per_mm2"], v["tops_per_w"]),
                fontsize=7,
                xytext=(4, 2),
                textcoords="offset points",
            )
    for name, (tw, tm) in PUBLISHED_CHIPS.items():
        if tm is not None:
            ax.scatter(tm, tw, marker="D", color="gray", s=30)
            ax.annotate(name, (tm, tw), fontsize=7, xytext=(4, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for name, (tw, tm) in PUBLISHED_CHIPS.items():
        if tm is None:  # TOPS/W only (no area efficiency published): a dotted line
            ax.axhline(tw, color="gray", lw=0.6, ls=":")
            ax.annotate(
                name + " (TOPS/W only)",
                (0.01, tw),
                xycoords=("axes fraction", "data"),
                fontsize=6,
                color="gray",
                xytext=(0, 1),
                textcoords="offset points",
            )
    ax.set_xlabel("area efficiency (TOPS/mm^2)")
    ax.set_ylabel("energy efficiency (TOPS/W)")
    ax.set_title(f"{r['model']}: efficiency vs published chips (Table 1)")
    ax.legend(fontsize=6, loc="lower right")
    paths.append(save_figure(fig, out / "efficiency.png"))
    # 3. latency per time step by phase
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.2))
    phases = sorted({p for e in rows for p in e["cycles_per_step"] if p != "total"})
    bottom = [0.0] * len(rows)
    for phase in phases:
        vals = [e["cycles_per_step"].get(phase, 0.0) for e in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=phase.replace("_", " "))
        bottom = [b_ + v for b_, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel(f"cycles per time step (1 cycle = {1 / r['clock_ghz']:g} ns)")
    ax.set_title(f"{r['model']}: latency per time step")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "latency.png"))
    return paths

"""KWS accuracy of the shipped GSC model vs wire resistance (r_wl = r_bl), for the conventional ADC,
the NL-ADC and the NL-ADC with IR-drop-aware programming (presets rram_conventional_adc_5b and
rram_nladc_5b, 256 x 256 arrays unless --size says otherwise, every other non-ideality of the
presets on).

    .venv/bin/python scripts/ir_drop_kws.py [--r 0,0.3,1,2] [--mc 3] [--limit N] [--size 256] [--mapping offset]

An entry ``WL/BL`` of ``--r`` sets r_wl = WL and r_bl = BL (e.g. ``7.57/2.52``, the 16 nm figure of
docs/parasitics.md); a plain number sets both.  ``--r-driver``, ``--r-sense`` and ``--r-access``
(ohm, default 0) set the word-line drivers' output resistance, the integrators' input resistance
and the 1T1R access transistors' on-resistance for every row of the run.  ``--mapping offset``: one
array per block with a reference column (its last bit line, far from the drivers) instead of the
presets' differential G+ / G- arrays.  ``--shared-ramp near_driver|far_driver``: each NL-ADC's one
shared ramp column (the paper's extra column of memristors) before or after the weight columns,
instead of the presets' ramp per column.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from crossbar.config import load_config

REPO = Path(__file__).resolve().parent.parent
GSC = REPO.parent / "shared" / "data" / "speech_commands_v0.02_test"


def _resistances(text: str) -> list[tuple[str, float, float]]:
    """'0,0.3,7.57/2.52' -> [(label, r_wl, r_bl), ...] (ohm per segment; one clear error otherwise)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split("/")
        try:
            values = [float(x) for x in parts]
        except ValueError:
            raise SystemExit(f"error: --r {item!r}: expected R or R_WL/R_BL in ohm") from None
        if len(values) not in (1, 2) or not all(math.isfinite(v) and v >= 0 for v in values):
            raise SystemExit(f"error: --r {item!r}: expected R or R_WL/R_BL, finite and >= 0 ohm")
        r_wl, r_bl = values[0], values[-1]
        label = f"{r_wl:g}" if len(values) == 1 else f"{r_wl:g}/{r_bl:g}"
        out.append((label, r_wl, r_bl))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--r", default="0,0.3,1,2")
    ap.add_argument("--mc", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N dev clips")
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "kws_gsc12.pt"))
    ap.add_argument("--size", type=int, default=256, help="rows = cols of a physical array (64..1024)")
    ap.add_argument("--mapping", choices=("differential", "offset"), default="differential", help="array.mapping")
    ap.add_argument(
        "--shared-ramp",
        choices=("near_driver", "far_driver"),
        default=None,
        help="one ramp column per NL-ADC (nl_adc.shared_ramp) on this side of the weight columns "
        "(array.wires.shared_ramp_column); default: a ramp per column, as the presets",
    )
    for name in ("driver", "sense", "access"):
        ap.add_argument(f"--r-{name}", type=float, default=0.0, help=f"r_{name} in ohm (default 0)")
    args = ap.parse_args()
    periphery = {"driver": args.r_driver, "sense": args.r_sense, "access": args.r_access}
    for name, value in periphery.items():
        if not (math.isfinite(value) and value >= 0):
            raise SystemExit(f"error: --r-{name} {value!r}: expected a finite resistance >= 0 ohm")
    if not 64 <= args.size <= 1024:
        raise SystemExit(f"error: --size {args.size}: expected 64..1024 (the NL-ADC needs 37 of the rows)")
    rs = _resistances(args.r)
    from rnn_models.tasks.kws import evaluate_kws

    variants = {
        "conventional": ("rram_conventional_adc_5b", {}),
        "nladc": ("rram_nladc_5b", {}),
        "nladc+aware": ("rram_nladc_5b", {"array.wires.ir_drop_aware_programming": True}),
    }
    clips = "all" if args.limit is None else args.limit
    print(
        f"KWS {Path(args.checkpoint).name} on the GSC dev split ({clips} clips), {args.mc} instances, "
        f"{args.size} x {args.size} arrays ({args.mapping} mapping"
        + (f", shared ramp column {args.shared_ramp}" if args.shared_ramp else "")
        + "), "
        + ", ".join(f"r_{k} {v:g} ohm" for k, v in periphery.items())
        + ": hardware accuracy mean +- std"
    )
    print("r_ohm  " + "  ".join(f"{v:<18}" for v in variants))
    for label, r_wl, r_bl in rs:
        cells, residuals = [], []
        t0 = time.perf_counter()
        for name, (preset, extra) in variants.items():
            if r_wl == r_bl == 0 and not any(periphery.values()) and extra:
                cells.append("(= nladc)")
                continue
            changes = {"array.rows": args.size, "array.cols": args.size, "array.mapping": args.mapping}
            if args.shared_ramp is not None:
                changes.update({"nl_adc.shared_ramp": True, "array.wires.shared_ramp_column": args.shared_ramp})
            changes.update({f"array.wires.r_{k}": v for k, v in periphery.items()})
            changes.update({"array.wires.r_wl": r_wl, "array.wires.r_bl": r_bl})
            cfg = load_config(preset).replace(**changes, **extra)
            res = evaluate_kws(args.checkpoint, GSC, cfg, args.mc, split="dev", limit=args.limit)
            hw = res["hardware"]
            cells.append(f"{hw['mean']:.4f} +- {hw['std']:.4f}")
            worst = {k: v["ir_drop_residual"] for k, v in res.get("health", {}).items() if "ir_drop_residual" in v}
            if worst:  # rnn_models.health: the weights' change beyond a per-column gain, worst instance
                residuals.append(f"{name} " + " ".join(f"{k} {v:.3f}" for k, v in worst.items()))
        print(
            f"{label:<6} " + "  ".join(f"{c:<18}" for c in cells) + f"  [{time.perf_counter() - t0:.0f} s]", flush=True
        )
        if residuals:
            print("       IR-drop residual of the weights (health report): " + "; ".join(residuals), flush=True)
    print(f"(software accuracy {res['software']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedded demo (`make demo`): no dataset needed, everything is generated from seeds.

1. Characterises the sigmoid and tanh NL-ADCs of the paper-like ``rram_nladc_5b`` preset
   (INL/DNL before and after bias calibration, RMSE, V_read sweep vs a fixed-reference ramp ADC).
2. Keyword spotting on a speech dataset our own code synthesises with eSpeak NG (10 GSC keywords,
   other words, silence; 70 voice variants; speaker-disjoint split by voice): loads the shipped
   checkpoint ``checkpoints/kws_synthetic.pt`` (or trains it when missing), then simulates it on
   crossbars with 3/4/5/8-bit NL-ADCs and the conventional ADC at the same bit widths (10
   Monte-Carlo device instances each, a ``crossbar sweep`` run in-process into ``<out>/kws_sweep``)
   and prints software vs hardware accuracy and TOPS/W of each point.
3. Estimates area, energy and latency of that model on the 5- and 8-bit NL-ADC hardware against
   the conventional-ADC and FP16 digital architectures (``crossbar report``; report in
   ``<out>/cost``).

    python examples/demo.py --out demo_out
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from crossbar.characterize import parse_sweep as parse_vread
from crossbar.characterize import run_characterisation
from crossbar.config import load_config
from crossbar.cost.report import build_report, write_report
from rnn_models.data.synthetic_kws import generate
from rnn_models.sweep import parse_spec, run_sweep
from rnn_models.tasks.kws import train_kws
from rnn_models.workload import workload_for

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "checkpoints" / "kws_synthetic.pt"
# the commands that produced the shipped checkpoint (run from the repo root):
#   crossbar data synthetic-kws --out demo_out/synthetic_kws
TRAIN_COMMAND = (
    "crossbar train kws --data demo_out/synthetic_kws --config rram_nladc_5b "
    "--out checkpoints/kws_synthetic.pt --hidden 64 --epochs 30 --hwa-epochs 3 --batch 64 --lr 3e-3 "
    "--threads 1"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="folder for data, plots and JSON")
    parser.add_argument("--mc", type=int, default=10, help="Monte-Carlo device instances")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()

    cfg = load_config("rram_nladc_5b")
    print(f"== 1. NL-ADC characterisation: {cfg.name} ({args.mc} instances x 16 columns)")
    summary = run_characterisation(cfg, ["sigmoid", "tanh"], args.mc, parse_vread("0.15:0.25:0.01"), out / "adc", None)
    keys = [
        "inl_max_lsb_uncalibrated",
        "inl_max_lsb",
        "dnl_max_lsb",
        "rmse",
        "vread_max_code_shift_nladc",
        "vread_max_code_shift_conventional",
    ]
    print(f"{'metric':36s}" + "".join(f"{fn:>20s}" for fn in summary))
    for k in keys:
        print(f"{k:36s}" + "".join(f"{s[k]['mean']:>12.3f} +- {s[k]['std']:.3f}" for s in summary.values()))

    print("\n== 2. Keyword spotting on synthetic speech (eSpeak NG, generated here)")
    data = out / "synthetic_kws"
    generate(data, clips_per_voice=2, seed=0)
    checkpoint = SHIPPED
    if not checkpoint.is_file():
        checkpoint = out / "kws_synthetic.pt"
        print(f"no shipped checkpoint at {SHIPPED}; training one ({TRAIN_COMMAND})")
        train_kws(
            data,
            checkpoint,
            config="rram_nladc_5b",
            hidden_size=64,
            epochs=30,
            hwa_epochs=3,
            batch=64,
            lr=3e-3,
            command=TRAIN_COMMAND,
        )
    print(f"checkpoint: {checkpoint}")
    spec = parse_spec(
        {
            "task": "kws",
            "checkpoint": str(checkpoint),
            "data": str(data),
            "split": "dev",
            "config": "rram_nladc_5b",
            "mc": args.mc,
            "grid": {"adc.bits": [3, 4, 5, 8]},
            "baseline": ["rram_conventional_adc_5b"],
        }
    )
    sweep = run_sweep(spec, out / "kws_sweep", workers=1, progress=False)  # the `crossbar sweep` machinery
    for s in sweep.summary:
        print(
            f"  {s['config']:26s} {s['adc.bits']} bit  software {s['software']:.4f}  "
            f"hardware {s['hardware_mean']:.4f} +- {s['hardware_std']:.4f}  {s['tops_per_w']:.3g} TOPS/W"
        )
    plot = out / "kws_sweep" / "pareto.png"
    print(
        f"\n== 3. Area / energy / latency of the same model ({cfg.name}, {cfg.cost.node_nm:g} nm, "
        f"{cfg.cost.clock_ghz:g} GHz)"
    )
    report = build_report(cfg.name, workload_for(str(checkpoint), cfg), [5, 8])
    write_report(report, out / "cost")
    print(f"  {'architecture':14s}{'bits':>5s}{'TOPS/W':>10s}{'TOPS/mm^2':>11s}{'uJ/clip':>10s}{'cycles/step':>13s}")
    for arch, per_bits in report["architectures"].items():
        for b, e in per_bits.items():
            print(
                f"  {arch:14s}{b:>5s}{e['tops_per_w']:>10.3g}{e['tops_per_mm2']:>11.3g}"
                f"{e['energy_per_inference_j'] * 1e6:>10.3g}{e['cycles_per_step']['total']:>13g}"
            )
    print(
        f"\nplots: {out / 'adc' / 'transfer_sigmoid.png'}, {out / 'adc' / 'vread_sweep.png'}, {plot}, "
        f"{out / 'cost' / 'efficiency.png'}"
    )
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

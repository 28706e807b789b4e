"""The embedded demo: a programmed crossbar layer and its NL-ADCs under the paper's 5-bit preset.

Runs on any machine with no dataset (everything is generated from seeds):

1. characterises the sigmoid and tanh NL-ADCs of ``rram_nladc_5b`` (INL/DNL, RMSE, V_read sweep);
2. programs a random 128 x 64 LSTM-gate-like weight matrix onto RRAM crossbars for 10 Monte-Carlo
   device instances and reports the MVM error and the gate-activation error of the NL-ADC at
   3/4/5/8 bits against the exact float computation, next to the conventional 5-bit ADC.

    python examples/demo.py --out demo_out
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from crossbar.characterize import parse_sweep, run_characterisation
from crossbar.config import load_config
from crossbar.periphery.adc import LinearRampADC
from crossbar.periphery.nladc import NLADC, compile_design
from crossbar.rng import generator
from crossbar.tile import Tile


def gate_error(preset: str, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, mc: int) -> tuple[float, float]:
    """(relative MVM error, RMS sigmoid-gate error) of one preset, over ``mc`` device instances."""
    cfg = load_config(preset)
    x_max = float(x.abs().max())
    tile = Tile(w, b, cfg, x_max=x_max).program(cfg.simulation.seed, mc, name="demo")
    y = tile.mvm(x, read_gen=generator(cfg.simulation.seed, "read/demo")).sum(2)
    exact = x @ w.t() + b
    mvm_err = float((y - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())
    if cfg.adc.kind == "nl_ramp":
        adc = NLADC(compile_design("sigmoid", cfg.adc.bits, cfg.nl_adc.level_spacing), cfg, w.shape[0])
        gate = adc.program(cfg.simulation.seed, mc, name="demo").convert(y, generator(cfg.simulation.seed, "adc/demo"))
    else:
        lim = float(exact.abs().quantile(0.999))
        gate = torch.sigmoid(LinearRampADC(cfg.adc.bits, -lim, lim).convert(y))
    return mvm_err, float((gate - torch.sigmoid(exact)).pow(2).mean().sqrt())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="folder for plots and JSON")
    parser.add_argument("--mc", type=int, default=10, help="Monte-Carlo device instances")
    args = parser.parse_args(argv)
    out = Path(args.out)
    t0 = time.time()

    cfg = load_config("rram_nladc_5b")
    print(f"== 1. NL-ADC characterisation: {cfg.name} ({args.mc} instances x 16 columns)")
    summary = run_characterisation(cfg, ["sigmoid", "tanh"], args.mc, parse_sweep("0.15:0.25:0.01"),
                                   out / "adc", None)
    keys = ["inl_max_lsb_uncalibrated", "inl_max_lsb", "dnl_max_lsb", "rmse",
            "vread_max_code_shift_nladc", "vread_max_code_shift_conventional"]
    print(f"{'metric':36s}" + "".join(f"{fn:>20s}" for fn in summary))
    for k in keys:
        print(f"{k:36s}" + "".join(f"{s[k]['mean']:>12.3f} +- {s[k]['std']:.3f}" for s in summary.values()))

    print(f"\n== 2. LSTM-gate-like layer (64 gates x 128 inputs) on RRAM crossbars, {args.mc} instances")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 128, generator=g) / 128 ** 0.5 * 1.5
    b = torch.randn(64, generator=g) * 0.3
    x = torch.tanh(torch.randn(256, 128, generator=g))
    print(f"{'config':28s}{'MVM rel. error':>16s}{'gate RMS error':>16s}")
    for preset in ["rram_nladc_3b", "rram_nladc_4b", "rram_nladc_5b", "rram_nladc_8b", "rram_conventional_adc_5b"]:
        mvm_err, g_err = gate_error(preset, w, b, x, args.mc)
        print(f"{preset:28s}{mvm_err:>16.4f}{g_err:>16.4f}")
    print(f"\nplots: {out / 'adc' / 'transfer_sigmoid.png'}, {out / 'adc' / 'vread_sweep.png'}")
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading a programmed chip (issue 15 item 2), as ratios from one run on this machine.

The shipped GSC KWS checkpoint converted under ``rram_nladc_5b`` (optionally with IR drop) and
calibrated as ``evaluate_kws`` does, ``--mc`` instances programmed; then the state
dict is loaded into a freshly converted model two ways: as saved (the chip rebuilt from its state,
no programming) and with the chip entry's ``format`` removed (a chip saved before the full state
was kept: programmed again and overwritten).  Both must give the programmed model's outputs bit
for bit; the script says so and prints the times.

    .venv/bin/python benchmarks/restore_speed.py [--mc 3] [--r 1.0]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from crossbar.config import load_config
from crossbar.parasitics import PREFIX_CACHE
from rnn_models.convert import program
from rnn_models.tasks.kws import analog_kws, load_kws

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mc", type=int, default=3, help="instances programmed (>= 1)")
    ap.add_argument("--r", type=float, default=1.0, help="r_wl = r_bl, ohm (0: ideal wires)")
    args = ap.parse_args()
    if args.mc < 1 or args.r < 0:
        ap.error("--mc must be >= 1 and --r >= 0")
    model, ckpt = load_kws(REPO / "checkpoints" / "kws_gsc12.pt")
    cfg = load_config("rram_nladc_5b").replace(**{"array.wires.r_wl": args.r, "array.wires.r_bl": args.r})
    ana, _, _ = analog_kws(model, ckpt, cfg, None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 20, model.lstm.input_size, generator=gen)  # log-mel-like features
    t0 = time.perf_counter()
    program(ana, 0, args.mc)
    t_program = time.perf_counter() - t0
    ana.eval()
    xm = x.expand(args.mc, -1, -1, -1)
    with torch.no_grad():
        ref = ana(xm)
    sd = ana.state_dict()
    old = copy.copy(sd)
    for key, value in sd.items():
        if key.endswith("_extra_state") and isinstance(value, dict) and "chip" in value:
            chip = {k: v for k, v in value["chip"].items() if k != "format"}
            old[key] = {**value, "chip": chip}
    took, same = {}, {}
    for name, state in (("rebuilt from its state", sd), ("programmed again (earlier layout)", old)):
        fresh, _, _ = analog_kws(model, ckpt, cfg, None)
        fresh.eval()
        PREFIX_CACHE.clear()  # as in a new process: no solver state left from the programming above
        t0 = time.perf_counter()
        fresh.load_state_dict(state)
        with torch.no_grad():
            out = fresh(xm)  # the first MVM: with IR drop it builds the effective matrices
        took[name] = time.perf_counter() - t0
        same[name] = bool(torch.equal(out, ref))
    print(f"KWS chip, {args.mc} instances, r = {args.r} ohm: program {t_program:.2f} s")
    for name in took:
        print(f"  load_state_dict + first forward, {name}: {took[name]:.2f} s, outputs bit for bit: {same[name]}")
    names = list(took)
    print(f"  ratio {took[names[1]] / took[names[0]]:.1f}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

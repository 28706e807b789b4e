"""LSTM inference speed, in one process and one run: torch nn.LSTM vs our analog LSTM (ideal and
fully non-ideal) vs aihwkit-lightning's AnalogRNN and aihwkit's torch-tile AnalogRNN when installed
(`make aihwkit`: aihwkit-lightning from PyPI, aihwkit 1.2 built from source -- no Python 3.11 wheel).

Shapes: ``kws`` = batch 64, input 40, hidden 128, 100 steps; ``lm`` = batch 32, input 50, hidden 384,
100 steps.  ``analog_full`` is the ``rram_nladc_5b`` preset: programming error, read noise, stuck
devices, 8-bit DAC, per-column noisy 5-bit NL-ADC ramps, 12-bit fixed-point datapath.  The
implementations of a shape are timed in turn, round after round (``--repeats`` rounds after a
warm-up round), so that a machine whose speed drifts during the run slows them alike.  Prints
median times, ratios to nn.LSTM and peak memory (ru_maxrss, whole process); ``--json OUT`` writes
rows {shape, impl, median_ms, ratio_vs_nn_lstm}.

    python benchmarks/lstm_speed.py [--repeats 5] [--json OUT] [--cell lstm|gru] [--profile]
"""

from __future__ import annotations

import argparse
import resource

import torch
from timing import interleaved_medians  # benchmarks/timing.py
from torch import nn

from crossbar.io import write_json
from rnn_models import AnalogGRU, AnalogLSTM

SHAPES = {"kws": dict(batch=64, inp=40, hidden=128, steps=100), "lm": dict(batch=32, inp=50, hidden=384, steps=100)}


def peers(inp: int, hidden: int, cell: str):
    """aihwkit peers that are installed: {name: module} (``cell``: "LSTM" or "GRU")."""
    found = {}
    try:
        import aihwkit_lightning.nn as lnn
        from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig as LightningConfig

        found["aihwkit_lightning"] = lnn.AnalogRNN(
            getattr(lnn, f"Analog{cell}Cell"), inp, hidden, rpu_config=LightningConfig()
        ).eval()
    except Exception:
        pass
    try:  # aihwkit >= 0.8: AnalogRNN(Analog<cell>Cell); its torch tile (TorchInferenceRPUConfig)
        import aihwkit.nn as ann
        from aihwkit.simulator.configs import TorchInferenceRPUConfig

        found["aihwkit"] = ann.AnalogRNN(
            getattr(ann, f"Analog{cell}Cell"), inp, hidden, rpu_config=TorchInferenceRPUConfig()
        ).eval()
    except Exception:
        pass
    return found


def profile_step(mod, x, steps: int, runs: int = 3) -> None:
    """cProfile of ``runs`` forward passes: the costliest calls, in us per time step."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    with torch.no_grad():
        prof.enable()
        for _ in range(runs):
            mod(x)
        prof.disable()
    stats = pstats.Stats(prof).stats
    rows = sorted(
        ((tt, f"{fn[2]} ({fn[0].rsplit('/', 1)[-1]}:{fn[1]})") for fn, (_, _, tt, _, _) in stats.items()), reverse=True
    )
    total = sum(tt for tt, _ in rows)
    print(f"        profile (us per step): total {total / runs / steps * 1e6:.0f}")
    for tt, label in rows[:6]:
        print(f"        {tt / runs / steps * 1e6:8.0f}  {label}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="rounds (each implementation once per round)")
    parser.add_argument("--json", help="write the rows as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="also print where the analog rows' time goes (cProfile, per time step)"
    )
    parser.add_argument(
        "--cell",
        choices=["lstm", "gru"],
        default="lstm",
        help="gru: the same comparison for nn.GRU / AnalogGRU (rows: ratio_vs_nn_gru)",
    )
    args = parser.parse_args(argv)
    cell = args.cell.upper()
    torch_rnn, analog_rnn = (nn.LSTM, AnalogLSTM) if cell == "LSTM" else (nn.GRU, AnalogGRU)
    base_name, ratio_key = f"nn.{cell}", f"ratio_vs_nn_{args.cell}"
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'shape':6s}{'impl':20s}{'median ms':>12s}{'ratio vs ' + base_name:>18s}")
    for shape, s in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(s["steps"], s["batch"], s["inp"], generator=g) * 0.5
        ref = torch_rnn(s["inp"], s["hidden"]).eval()
        impls = {base_name: ref}
        for name, preset in (("analog_ideal", "ideal"), ("analog_full", "rram_nladc_5b")):
            a = analog_rnn(s["inp"], s["hidden"], config=preset).eval()
            a.load_state_dict(ref.state_dict())
            a.program(0, 1)
            impls[name] = a
        impls.update(peers(s["inp"], s["hidden"], cell))
        with torch.no_grad():
            medians = interleaved_medians(
                {name: (lambda mod=mod, x=x: mod(x)) for name, mod in impls.items()}, args.repeats
            )
        base = medians[base_name] * 1e3
        for name, mod in impls.items():
            ms = medians[name] * 1e3
            rows.append({"shape": shape, "impl": name, "median_ms": ms, ratio_key: ms / base})
            print(f"{shape:6s}{name:20s}{ms:>12.1f}{ms / base:>18.1f}")
            if args.profile and name.startswith("analog"):
                profile_step(mod, x, s["steps"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (process): {peak:.0f} MiB")
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

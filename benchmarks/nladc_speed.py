"""NL-ADC conversion throughput vs a plain ``torch.sigmoid`` on the same tensor, in one run.

Converts a (M=16, B=256, C=512) tensor of column outputs with 5-bit sigmoid NL-ADCs that have
per-column noisy ramps (the rram_nladc_5b preset: programming error, comparator offset and noise,
ramp read noise), and prints conversions per second next to ``torch.sigmoid`` on the same tensor.

    python benchmarks/nladc_speed.py [--repeats 10] [--json OUT]
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds  # benchmarks/timing.py

from crossbar.config import load_config
from crossbar.io import write_json
from crossbar.normals import NormalStream
from crossbar.periphery.nladc import NLADC, compile_design


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--json", help="write the results as JSON")
    args = parser.parse_args(argv)
    m, b, c = 16, 256, 512
    cfg = load_config("rram_nladc_5b").replace(**{"adc.bits": args.bits, "nl_adc.ramp_devices": None})
    adc = NLADC(compile_design("sigmoid", args.bits), cfg, c).program(0, m)
    y = torch.randn(m, b, c, generator=torch.Generator().manual_seed(0)) * 2
    stream = NormalStream(0, "bench", 0, m)
    t_nl = median_seconds(lambda: adc.convert(y, stream.at()), args.repeats)
    t_sig = median_seconds(lambda: torch.sigmoid(y), args.repeats)
    n = y.numel()
    print(
        f"tensor {tuple(y.shape)} = {n:,} conversions, {args.bits}-bit sigmoid NL-ADC, per-column noisy ramps, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"{'implementation':34s}{'median ms':>12s}{'conversions/s':>16s}{'ratio':>8s}")
    print(f"{'torch.sigmoid (float reference)':34s}{t_sig * 1e3:>12.2f}{n / t_sig:>16.3e}{1.0:>8.1f}")
    print(f"{'NLADC.convert (noisy)':34s}{t_nl * 1e3:>12.2f}{n / t_nl:>16.3e}{t_nl / t_sig:>8.1f}")
    if args.json:
        write_json(
            args.json,
            {
                "shape": [m, b, c],
                "bits": args.bits,
                "sigmoid_ms": t_sig * 1e3,
                "nladc_ms": t_nl * 1e3,
                "ratio": t_nl / t_sig,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Monte-Carlo throughput: M device instances of the shipped KWS model over N clips, in one batched run.

Programs ``--instances`` (default 32) instances of ``checkpoints/kws_gsc12.pt`` on a preset and
times the forward passes over ``--clips`` (default 1,000) one-second clips, next to the float model
on the same clips.  Features come from ``--data`` (a GSC folder) when given, else from random
log-mel-like inputs of the right shape (timing does not depend on the values).

    python benchmarks/mc_throughput.py [--instances 32] [--clips 1000] [--config rram_nladc_5b] [--data DIR]
"""

from __future__ import annotations

import argparse
import time

import torch

from rnn_models.cli import SHIPPED
from rnn_models.convert import calibrate, convert_to_analog, program
from rnn_models.tasks.kws import accuracy, load_kws


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=32)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--config", default="rram_nladc_5b")
    parser.add_argument("--data", help="GSC folder (default: random inputs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, ckpt = load_kws(SHIPPED["kws"])
    meta = ckpt["meta"]
    calib = meta["calibration_features"].float()
    if args.data:
        from rnn_models.data import speech

        settings = speech.FeatureSettings(**meta["settings"])
        clips = speech.scan(args.data, meta["task"])[: args.clips]
        data = speech.load_set(clips, meta["task"], settings)
        feats, labels = data.features, data.labels
    else:
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(args.clips, *calib.shape[1:], generator=g) * calib.std() + calib.mean()
        labels = torch.zeros(args.clips, dtype=torch.long)
    with torch.no_grad():
        t0 = time.perf_counter()
        accuracy(model, feats, labels)
        t_float = time.perf_counter() - t0
        ana = convert_to_analog(model, args.config).eval()
        calibrate(ana, [calib])
        t0 = time.perf_counter()
        program(ana, 0, args.instances)
        t_prog = time.perf_counter() - t0
        t0 = time.perf_counter()
        accuracy(ana, feats, labels, batch=256, instances=args.instances)
        t_hw = time.perf_counter() - t0
    n = len(labels)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {n} clips x {feats.shape[1]} steps")
    print(f"float model:                      {t_float:8.2f} s")
    print(f"programming {args.instances} instances:        {t_prog:8.2f} s")
    print(
        f"{args.config}, {args.instances} instances batched: {t_hw:8.2f} s  "
        f"({n * args.instances / t_hw:.0f} clip-instances/s, {t_hw / t_float / args.instances:.1f}x float per instance)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``crossbar`` command line: thin wrappers that parse arguments, call library code, print.

Bad input (config, data, checkpoint, argument) prints one line ``error: ...`` and exits with 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys

import torch

from crossbar.errors import CrossbarInputError


def _cmd_train_lm(args: argparse.Namespace) -> int:
    from rnn_models.tasks.lm import train_lm

    torch.set_num_threads(args.threads)
    command = "crossbar " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = train_lm(args.data, args.out, hidden_size=args.hidden, num_layers=args.layers,
                      dropout=args.dropout, epochs=args.epochs, batch=args.batch, bptt=args.bptt,
                      lr=args.lr, seed=args.seed, bf16=args.bf16, device=args.device,
                      max_minutes=args.max_minutes, command=command)
    print(f"best valid bpc {result['best_valid_bpc']:.4f}; checkpoint {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossbar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a task model").add_subparsers(dest="task", required=True)
    lm = train.add_parser("lm", help="character-level PTB language model (float training)")
    lm.add_argument("--data", required=True, help="folder with ptb.train.txt and ptb.valid.txt")
    lm.add_argument("--out", required=True, help="checkpoint file to write")
    lm.add_argument("--hidden", type=int, default=364)
    lm.add_argument("--layers", type=int, default=1)
    lm.add_argument("--dropout", type=float, default=0.1)
    lm.add_argument("--epochs", type=int, default=45)
    lm.add_argument("--batch", type=int, default=128)
    lm.add_argument("--bptt", type=int, default=100)
    lm.add_argument("--lr", type=float, default=3e-3)
    lm.add_argument("--seed", type=int, default=0)
    lm.add_argument("--bf16", action="store_true", help="bf16 autocast (about 2x faster on AMX CPUs)")
    lm.add_argument("--device", default="cpu")
    lm.add_argument("--threads", type=int, default=1)
    lm.add_argument("--max-minutes", type=float, default=None)
    lm.set_defaults(func=_cmd_train_lm)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CrossbarInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

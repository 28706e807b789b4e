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


def _cmd_validate(args: argparse.Namespace) -> int:
    from crossbar.config import check_schema_file, is_json_schema_file, load_config

    failed = 0
    for path in args.files:
        try:
            if is_json_schema_file(path):
                check_schema_file(path)
                print(f"ok {path} (JSON Schema, matches the code)")
                continue
            load_config(path)
            print(f"ok {path}")
        except CrossbarInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from crossbar.config import json_schema
    from crossbar.io import write_text

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _cmd_adc(args: argparse.Namespace) -> int:
    from crossbar.characterize import parse_sweep, run_characterisation
    from crossbar.config import load_config

    config = load_config(args.config)
    if args.function:
        functions = [f.strip() for f in args.function.split(",") if f.strip()]
    else:
        roles = config.nl_adc.functions
        functions = list(dict.fromkeys([roles.gate, roles.candidate]))
    from crossbar.periphery.functions import get_activation

    for fn in functions:
        get_activation(fn)  # one clear error for an unknown name
    summary = run_characterisation(config, functions, args.mc, parse_sweep(args.vread_sweep), args.out,
                                   args.json, columns=args.columns)
    print(f"NL-ADC characterisation of {config.name} ({config.adc.bits} bit), mean +- std over instances")
    for fn, metrics in summary.items():
        print(f"  {fn}:")
        for key, stat in metrics.items():
            print(f"    {key:36s} {stat['mean']:9.4f} +- {stat['std']:.4f}")
    if args.out:
        print(f"plots and adc_summary.json in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossbar", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    val = sub.add_parser("validate", help="check hardware-config JSON files")
    val.add_argument("files", nargs="+")
    val.set_defaults(func=_cmd_validate)

    sch = sub.add_parser("schema", help="print or write the hardware-config JSON Schema")
    sch.add_argument("--out", help="file to write (default: print)")
    sch.set_defaults(func=_cmd_schema)

    adc = sub.add_parser("adc", help="characterise the NL-ADC of a config (INL/DNL, transfer, V_read sweep)")
    adc.add_argument("--config", required=True, help="hardware-config JSON (or preset name)")
    adc.add_argument("--function", help="comma-separated activations (default: the config's gate and candidate)")
    adc.add_argument("--mc", type=_positive_int, default=None, help="Monte-Carlo instances (default: config)")
    adc.add_argument("--columns", type=_positive_int, default=16, help="NL-ADC columns per instance")
    adc.add_argument("--vread-sweep", default="0.15:0.25:0.01", help="START:STOP:STEP in V")
    adc.add_argument("--out", help="folder for PNGs and adc_summary.json")
    adc.add_argument("--json", help="JSON summary file")
    adc.set_defaults(func=_cmd_adc)

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

"""The ``crossbar`` command line: thin wrappers that parse arguments, call library code, print.

Bad input (config, data, checkpoint, argument) prints one line ``error: ...`` and exits with 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from pathlib import Path

import torch

from crossbar.argtypes import bounded_int, fraction, nonneg_float, nonneg_int, positive_float, positive_int
from crossbar.errors import CrossbarInputError


def _cmd_train_lm(args: argparse.Namespace) -> int:
    from crossbar.io import check_outputs
    from rnn_models.tasks.lm import train_lm

    check_outputs(
        {"--out": (args.out, "file")},
        {"--data": args.data, "--init": args.init, "--config": _config_input(args.config)},
    )
    _check_device(args.device)
    torch.set_num_threads(args.threads)
    command = _command_line()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    result = train_lm(
        args.data,
        args.out,
        hidden_size=args.hidden,
        num_layers=args.layers,
        dropout=args.dropout,
        epochs=args.epochs,
        batch=args.batch,
        bptt=args.bptt,
        lr=args.lr,
        seed=args.seed,
        bf16=args.bf16,
        device=args.device,
        max_minutes=args.max_minutes,
        config=args.config,
        hwa_epochs=args.hwa_epochs,
        hwa_lr=args.hwa_lr,
        hwa_max_minutes=args.hwa_max_minutes,
        hwa_max_steps=args.hwa_max_steps,
        init=args.init,
        finetune_epochs=args.finetune_epochs,
        digital_output=args.digital_output,
        weight_drop=args.weight_drop,
        locked_dropout=args.locked_dropout,
        weight_decay=args.weight_decay,
        ema_decay=args.ema,
        warmup=args.warmup,
        save_every_minutes=args.save_every,
        command=command,
    )
    if not result["finished"]:
        print(
            f"training paused (best valid bpc so far {result['best_valid_bpc']:.4f}); the state is in "
            f"{args.out}: run the same command again to continue"
        )
        return 0
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
    from crossbar.io import check_outputs, write_text

    check_outputs({"--out": (args.out, "file")})
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _cmd_pcm_like(args: argparse.Namespace) -> int:
    from crossbar.config import load_config
    from crossbar.interop import pcm_like_device
    from crossbar.io import check_outputs, write_text

    check_outputs({"--out": (args.out, "file")}, {"--base": _config_input(args.base)})
    base = load_config(args.base)
    device = pcm_like_device(
        g_max=args.g_max,
        t_0=args.t0,
        t_read=args.t_read,
        t_inference=args.t_inference,
        prog_noise_scale=args.prog_noise_scale,
        read_noise_scale=args.read_noise_scale,
        drift_scale=args.drift_scale,
    )
    note = (
        f" Device: aihwkit's PCMLikeNoiseModel (g_max {args.g_max:g} uS, scales prog/read/drift "
        f"{args.prog_noise_scale:g}/{args.read_noise_scale:g}/{args.drift_scale:g}) read "
        f"{args.t_inference:g} s after programming, translated by crossbar.interop (made by `crossbar pcm-like`)."
    )
    if args.compensation:
        device["drift"]["compensation"] = True
        note += " Global drift compensation on."
    cfg = base.replace(
        device=device, name=args.name or f"{base.name}_pcm_like", description=(base.description + note).strip()[:20_000]
    )
    write_text(args.out, cfg.model_dump_json(indent=2) + "\n")
    print(f"wrote {args.out}: {base.name} with the PCM-like device at t = {args.t_inference:g} s")
    return 0


def _config_input(value: str | None) -> str | None:
    """A --config / --base value as an input path (a preset name reads nothing of the user's)."""
    return value if value is not None and os.path.exists(value) else None


def _check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise CrossbarInputError("--device cuda: no CUDA device is available here (use cpu or auto)")


def _cmd_adc(args: argparse.Namespace) -> int:
    from crossbar.characterize import parse_sweep, run_characterisation
    from crossbar.config import load_config
    from crossbar.io import check_outputs

    check_outputs({"--out": (args.out, "dir"), "--json": (args.json, "file")}, {"--config": _config_input(args.config)})
    config = load_config(args.config)
    if args.function:
        functions = [f.strip() for f in args.function.split(",") if f.strip()]
    else:
        roles = config.nl_adc.functions
        functions = list(dict.fromkeys([roles.gate, roles.candidate]))
    from crossbar.periphery.functions import get_activation

    for fn in functions:
        get_activation(fn)  # one clear error for an unknown name
    summary = run_characterisation(
        config, functions, args.mc, parse_sweep(args.vread_sweep), args.out, args.json, columns=args.columns
    )
    print(f"NL-ADC characterisation of {config.name} ({config.adc.bits} bit), mean +- std over instances")
    for fn, metrics in summary.items():
        print(f"  {fn}:")
        for key, stat in metrics.items():
            print(f"    {key:36s} {stat['mean']:9.4f} +- {stat['std']:.4f}")
    if args.out:
        print(f"plots and adc_summary.json in {args.out}")
    return 0


from rnn_models.checkpoint import SHIPPED  # noqa: E402
from rnn_models.sweep.spec import MAX_MC  # noqa: E402


def _command_line() -> str:
    return "crossbar " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _cmd_train_kws(args: argparse.Namespace) -> int:
    from crossbar.config import load_config
    from crossbar.io import check_outputs
    from rnn_models.tasks.kws import train_kws

    check_outputs({"--out": (args.out, "file")}, {"--data": args.data, "--config": _config_input(args.config)})
    if args.config is not None:
        load_config(args.config)  # checked before any training
    torch.set_num_threads(args.threads)
    train_kws(
        args.data,
        args.out,
        task=args.task,
        config=args.config,
        hidden_size=args.hidden,
        epochs=args.epochs,
        hwa_epochs=args.hwa_epochs,
        batch=args.batch,
        lr=args.lr,
        dev_fraction=args.dev_fraction,
        seed=args.seed,
        speed_perturb=args.speed_perturb,
        command=_command_line(),
    )
    return 0


def _checkpoint_for(task: str, given: str | None) -> str:
    path = given or str(SHIPPED[task])
    if not os.path.isfile(path):
        raise CrossbarInputError(
            f"checkpoint {path!r} not found"
            + ("" if given else f" (the checkpoint shipped for {task}; train one with `crossbar train {task}`)")
        )
    return path


def _print_deployment(res: dict) -> None:
    dep = res.get("deployment")
    if dep:
        where = (
            "as the checkpoint's deployment says; --digital-output / --no-digital-output override it"
            if dep["from"] == "checkpoint"
            else "set by the command line"
        )
        layers = ", ".join(dep["digital_layers"]) or "none"
        print(f"deployment: digital (off-chip) layers: {layers} ({where})")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from crossbar.config import load_config
    from crossbar.io import check_outputs, write_json

    torch.set_num_threads(args.threads)
    checkpoint = _checkpoint_for(args.task, args.checkpoint)
    inputs = {
        "--checkpoint": checkpoint,
        "--data": args.data,
        "--config": _config_input(args.config),
        "--measured": args.measured,
    }
    if args.measured is not None and args.sweep is not None:
        raise CrossbarInputError("--measured simulates one measured chip; it cannot be combined with --sweep")
    check_outputs(
        {"--json": (args.json, "file"), "--out": ((args.out or f"sweep_{args.task}") if args.sweep else None, "dir")},
        inputs,
    )
    if args.sweep is None:
        cfg = load_config(args.config)
        if args.measured is not None:
            from rnn_models.export import read_manifest

            read_manifest(args.measured)  # a bad folder is refused before any data is read
        if args.task == "kws":
            from rnn_models.tasks.kws import evaluate_kws

            res = evaluate_kws(
                checkpoint,
                args.data,
                cfg,
                args.mc,
                split=args.split,
                digital_output=args.digital_output,
                measured=args.measured,
            )
        else:
            from rnn_models.tasks.lm import evaluate_lm

            res = evaluate_lm(
                checkpoint,
                args.data,
                cfg,
                args.mc,
                split=args.split or "valid",
                digital_output=args.digital_output,
                measured=args.measured,
            )
        h = res["hardware"]
        _print_deployment(res)
        chip = ""
        if "measured" in res:
            ms = res["measured"]
            chip = f", measured chip {ms['dir']} ({ms['devices']} devices)"
        print(
            f"{res['task']} {res['metric']} on {res['n_samples']} samples: software {res['software']:.4f}, "
            f"hardware ({res['config']}{chip}, {len(h['per_instance'])} instances) {h['mean']:.4f} +- {h['std']:.4f}"
        )
        if args.json:
            write_json(args.json, res)
        return 0
    # --sweep bits=...: a thin use of `crossbar sweep` (one implementation): grid adc.bits + baseline
    from rnn_models.evaluate import parse_sweep
    from rnn_models.sweep import parse_spec, run_sweep

    base = load_config(args.config)
    spec = parse_spec(
        {
            "task": args.task,
            "checkpoint": checkpoint,
            "data": args.data,
            "split": args.split,
            "config": args.config,
            "mc": args.mc,
            "seed": base.simulation.seed,
            "grid": {"adc.bits": parse_sweep(args.sweep)},
            "baseline": [args.baseline] if args.baseline else [],
            "digital_output": args.digital_output,
        },
        source="--sweep",
    )
    outcome = run_sweep(spec, args.out or f"sweep_{args.task}", workers=1, resume=args.resume, source="--sweep")
    _print_sweep(outcome)
    if args.json:
        write_json(args.json, {"task": args.task, "sweep": outcome.summary})
    return 1 if outcome.failed else 0


def _analog_model_for(checkpoint: str, config, data: str | None = None, digital_output: bool | None = None):
    """(calibrated analog model, provenance) of a task checkpoint, built as ``crossbar evaluate``
    builds it (the design ``crossbar export`` writes)."""
    import hashlib

    from crossbar.config import load_config
    from rnn_models.checkpoint import load_checkpoint

    cfg = load_config(config)
    task = load_checkpoint(checkpoint)["task"]
    if task == "kws":
        from rnn_models.tasks.kws import analog_kws, load_kws

        model, ckpt = load_kws(checkpoint)
        ana, digital, src = analog_kws(model, ckpt, cfg, digital_output)
        calibration = "the checkpoint's calibration features (meta.calibration_features)"
    elif task == "lm":
        from rnn_models.tasks.lm import analog_lm, load_lm

        if data is None:
            raise CrossbarInputError(
                "--data is needed for an lm checkpoint: its DAC and ADC ranges are calibrated on "
                "the training split of the PTB folder (as `crossbar evaluate lm` does)"
            )
        lm_model, ckpt = load_lm(checkpoint)
        ana, digital, src = analog_lm(lm_model, ckpt, cfg, data, digital_output)
        calibration = f"the first 20,000 characters of the training split of {data}"
    else:
        raise CrossbarInputError(f"checkpoint {checkpoint!r} is for task {task!r}; export reads kws and lm checkpoints")
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    source = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": digest,
        "task": task,
        "calibration": calibration,
        "digital_output": digital,
        "digital_output_from": src,
    }
    return ana, source


def _cmd_export(args: argparse.Namespace) -> int:
    from crossbar.io import check_outputs
    from rnn_models.export import MANIFEST, export_design

    torch.set_num_threads(args.threads)
    check_outputs(
        {"--out": (args.out, "dir")},
        {"--checkpoint": args.checkpoint, "--config": _config_input(args.config), "--data": args.data},
    )
    if not os.path.isfile(args.checkpoint):
        raise CrossbarInputError(f"checkpoint {args.checkpoint!r} not found")
    ana, source = _analog_model_for(args.checkpoint, args.config, args.data, args.digital_output)
    manifest = export_design(
        ana, args.out, instance=args.instance, seed=args.seed, source=source, fill=args.fill_measured
    )
    tot = manifest["totals"]
    print(
        f"wrote the design of {args.checkpoint} under {manifest['config']['name']} (instance {manifest['instance']}, "
        f"seed {manifest['seed']}): {tot['tiles']} tile(s), {tot['arrays']} array CSV(s), {tot['devices']} devices "
        f"and {MANIFEST} in {args.out}"
    )
    return 0


# ------------------------------------------------------------------ netlist of a checkpoint's array
def _netlist_checkpoint_arguments(src, parser: argparse.ArgumentParser) -> None:
    """``crossbar netlist --checkpoint``: the options crossbar.netlist cannot define itself (it
    never imports rnn_models)."""
    src.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="a task checkpoint (kws or lm) programmed for --config; with --layer, --instance, --block, "
        "--polarity, --seed (the chip `crossbar export` writes)",
    )
    parser.add_argument("--layer", metavar="NAME", help="--checkpoint: the matrix whose array to write, e.g. lstm/_l0")
    parser.add_argument(
        "--seed", type=nonneg_int, default=None, help="--checkpoint: programming seed (default: the config's)"
    )
    parser.add_argument(
        "--data", help="--checkpoint of an lm: the PTB folder whose training split calibrates the DAC / ADC ranges"
    )
    parser.add_argument(
        "--digital-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--checkpoint: output layer off-chip or on the crossbar; default: the checkpoint's deployment",
    )


def _netlist_checkpoint_array(args: argparse.Namespace):
    """(G uS, Spot, config, title) of one physical array of ``--layer`` of ``--checkpoint``, programmed for
    ``--config`` as ``crossbar export`` programs it (:func:`_analog_model_for`, then instance
    ``--instance`` alone, seeded with ``--seed`` or the config's seed)."""
    from crossbar.netlist import programmed_array
    from rnn_models.convert import analog_layers, program
    from rnn_models.export import _covering

    if args.config is None:
        raise CrossbarInputError("--checkpoint needs --config: the hardware config the chip is programmed for")
    if not os.path.isfile(args.checkpoint):
        raise CrossbarInputError(f"--checkpoint {args.checkpoint!r}: file not found")
    if args.instance < 0:
        raise CrossbarInputError(f"--instance {args.instance}: must be an integer >= 0")
    ana, _source = _analog_model_for(args.checkpoint, args.config, args.data, args.digital_output)
    mats = {}
    for _, layer in analog_layers(ana):
        for mat, *_rest in layer._matrices().values():
            mats[mat.name.rstrip("/")] = mat
    if args.layer not in mats:
        given = "--checkpoint needs --layer NAME" if args.layer is None else f"--layer {args.layer!r}: no such matrix"
        names = ", ".join(mats) or "none (no analog layers)"
        raise CrossbarInputError(f"{given}; the matrices of {args.checkpoint} on the crossbar are: {names}")
    local = _covering(ana, args.seed, args.instance)
    if local is None:
        seed = analog_layers(ana)[0][1].hw.simulation.seed if args.seed is None else args.seed
        program(ana, seed, 1, first=args.instance)
        local = 0
    tile = mats[args.layer].tile
    g, spot = programmed_array(tile, local, args.block, args.polarity)
    seed = analog_layers(ana)[0][1]._program_args[0]
    name = (
        f"{Path(args.checkpoint).name} {args.layer} under {tile.config.name} instance {args.instance} "
        f"(seed {seed}) block {args.block} {args.polarity}"
    )
    return g, spot, tile.config, name


def _cmd_netlist(args: argparse.Namespace) -> int:
    from crossbar.netlist import run_netlist

    if args.checkpoint is None:
        for opt in ("layer", "seed", "data", "digital_output"):
            if getattr(args, opt) is not None:
                raise CrossbarInputError(f"--{opt.replace('_', '-')} belongs to --checkpoint")
    return run_netlist(args, array_source=_netlist_checkpoint_array)


def _print_sweep(outcome) -> None:
    for s in outcome.summary:
        hw = "-" if s["hardware_mean"] is None else f"{s['hardware_mean']:.4f} +- {s['hardware_std']:.4f}"
        sw = "-" if s["software"] is None else f"{s['software']:.4f}"
        print(f"  {s['config_name'][:60]:60s} software {sw}  hardware {hw}  ({s['n_instances']} inst.)  {s['status']}")
    print(
        f"{outcome.done} of {outcome.units} unit(s) done ({outcome.ran} computed now), {outcome.failed} failed; "
        f"results in {outcome.out / 'results.csv'}, report {outcome.out / 'report.md'}"
    )


def _cmd_sweep(args: argparse.Namespace) -> int:
    from rnn_models.sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    outcome = run_sweep(
        spec, args.out, workers=args.workers, scheduler=args.scheduler, resume=args.resume, source=args.spec
    )
    _print_sweep(outcome)
    if outcome.failed:
        print(
            f"error: {outcome.failed} of {outcome.units} unit(s) failed (messages in {outcome.out / 'results.csv'}); "
            f"rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _bits_list(text: str) -> list[int]:
    """'3,4,5,8' -> [3, 4, 5, 8] (argparse type)."""
    from crossbar.config import bit_widths

    try:
        return bit_widths(text, repr(text))
    except CrossbarInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_report(args: argparse.Namespace) -> int:
    from crossbar.config import load_config
    from crossbar.cost.report import build_report, write_report
    from crossbar.cost.workload import PAPER_SHAPES
    from crossbar.io import check_outputs
    from rnn_models.workload import workload_for

    check_outputs(
        {"--out": (args.out, "dir")},
        {"--config": _config_input(args.config), "--model": args.model if os.path.exists(args.model) else None},
    )

    model = args.model if args.model in PAPER_SHAPES else workload_for(args.model, load_config(args.config))
    report = build_report(args.config, model, args.bits or [], steps=args.steps)
    paths = write_report(report, args.out)
    from crossbar.cost.accounting import cost_assumptions

    for note in cost_assumptions(load_config(args.config)):
        print(f"note: {note}")
    bits = report["bits"]
    for b in bits:
        e = report["architectures"][report["architecture"]][str(b)]
        print(
            f"{report['model']} {b} bit ({report['architecture']}): {e['tops_per_w']:.3g} TOPS/W, "
            f"{e['tops_per_mm2']:.3g} TOPS/mm^2, {e['peak_tops']:.3g} TOPS, {e['power_mw']:.3g} mW, "
            f"{e['area_mm2']:.3g} mm^2, {e['cycles_per_step']['total']:g} cycles/step"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_data_synthetic(args: argparse.Namespace) -> int:
    from crossbar.io import check_outputs
    from rnn_models.data.synthetic_kws import generate

    check_outputs({"--out": (args.out, "dir")})

    manifest = generate(args.out, clips_per_voice=args.clips_per_voice, seed=args.seed)
    print(f"synthetic keyword dataset: {manifest}")
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

    pcm = sub.add_parser("pcm-like", help="a config with aihwkit's PCM-like device model (see crossbar.interop)")
    pcm.add_argument("--base", default="rram_nladc_5b", help="config whose other sections to keep (path or preset)")
    pcm.add_argument(
        "--t-inference",
        type=nonneg_float,
        default=0.0,
        help="s after the end of programming (aihwkit's drift_analog_weights argument)",
    )
    pcm.add_argument("--g-max", type=nonneg_float, default=25.0, help="uS (aihwkit's default 25)")
    pcm.add_argument("--t0", type=nonneg_float, default=20.0, help="s, aihwkit's t_0")
    pcm.add_argument("--t-read", type=nonneg_float, default=250e-9, help="s, aihwkit's t_read")
    for scale in ("prog-noise-scale", "read-noise-scale", "drift-scale"):
        pcm.add_argument(f"--{scale}", type=nonneg_float, default=1.0, help=f"aihwkit's {scale.replace('-', '_')}")
    pcm.add_argument(
        "--compensation",
        action="store_true",
        help="global drift compensation (aihwkit's GlobalDriftCompensation; not in front of NL-ADCs)",
    )
    pcm.add_argument("--name", help="config name (default: <base>_pcm_like)")
    pcm.add_argument("--out", required=True, help="JSON file to write")
    pcm.set_defaults(func=_cmd_pcm_like)

    adc = sub.add_parser("adc", help="characterise the NL-ADC of a config (INL/DNL, transfer, V_read sweep)")
    adc.add_argument("--config", required=True, help="hardware-config JSON (or preset name)")
    adc.add_argument("--function", help="comma-separated activations (default: the config's gate and candidate)")
    adc.add_argument("--mc", type=bounded_int(1, MAX_MC), default=None, help="Monte-Carlo instances (default: config)")
    adc.add_argument("--columns", type=bounded_int(1, 4096), default=16, help="NL-ADC columns per instance")
    adc.add_argument("--vread-sweep", default="0.15:0.25:0.01", help="START:STOP:STEP in V")
    adc.add_argument("--out", help="folder for PNGs and adc_summary.json")
    adc.add_argument("--json", help="JSON summary file")
    adc.set_defaults(func=_cmd_adc)

    rep = sub.add_parser("report", help="area / energy / latency estimate of a model on a hardware config")
    rep.add_argument("--config", required=True, help="hardware config (path or preset name)")
    rep.add_argument("--model", required=True, help="paper-kws | paper-lm | kws | lm | a checkpoint file")
    rep.add_argument(
        "--bits", type=_bits_list, default=None, help="ADC bit widths, e.g. 3,4,5,8 (default: the config's)"
    )
    rep.add_argument(
        "--steps", type=bounded_int(1, 10**9), default=None, help="time steps per inference (default: the model's)"
    )
    rep.add_argument("--out", required=True, help="folder for report.json, report.md and the PNGs")
    rep.set_defaults(func=_cmd_report)

    train = sub.add_parser("train", help="train a task model").add_subparsers(dest="task", required=True)
    lm = train.add_parser("lm", help="character-level PTB language model (float training)")
    lm.add_argument("--data", required=True, help="folder with ptb.train.txt and ptb.valid.txt")
    lm.add_argument("--out", required=True, help="checkpoint file to write")
    lm.add_argument("--hidden", type=bounded_int(1, 65536), default=364)
    lm.add_argument("--layers", type=bounded_int(1, 64), default=1)
    lm.add_argument("--dropout", type=fraction, default=0.1)
    lm.add_argument("--epochs", type=bounded_int(1, 100_000), default=45)
    lm.add_argument("--batch", type=bounded_int(1, 65536), default=128)
    lm.add_argument("--bptt", type=bounded_int(1, 1_000_000), default=100)
    lm.add_argument("--lr", type=positive_float, default=3e-3)
    lm.add_argument("--seed", type=nonneg_int, default=0)
    lm.add_argument("--bf16", action="store_true", help="bf16 autocast (about 2x faster on AMX CPUs)")
    lm.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda when available)")
    lm.add_argument("--threads", type=bounded_int(1, 1024), default=1)
    lm.add_argument(
        "--max-minutes",
        type=positive_float,
        default=None,
        help="time budget of this run's float training; the state is saved, rerun to continue",
    )
    lm.add_argument("--weight-drop", type=fraction, default=0.0, help="DropConnect on the recurrent weights")
    lm.add_argument(
        "--locked-dropout",
        type=fraction,
        default=0.0,
        help="variational dropout on the LSTM output (one mask per sequence)",
    )
    lm.add_argument("--weight-decay", type=nonneg_float, default=0.0, help="AdamW decoupled weight decay")
    lm.add_argument(
        "--ema",
        type=fraction,
        default=0.0,
        help="decay of the exponential moving average of the weights (0: off; e.g. 0.999)",
    )
    lm.add_argument("--warmup", type=nonneg_int, default=0, help="linear learning-rate warm-up steps")
    lm.add_argument(
        "--save-every",
        type=positive_float,
        default=10.0,
        help="minutes between saves of the training state (resume point)",
    )
    lm.add_argument("--config", help="hardware config for hardware-aware fine-tuning after float training")
    lm.add_argument("--init", help="start from this checkpoint (skips float training)")
    lm.add_argument(
        "--finetune-epochs",
        type=nonneg_int,
        default=0,
        help="with --init: float fine-tuning of its weights for this many epochs (this command's --lr, "
        "--warmup and regularisation) before HWA",
    )
    lm.add_argument("--hwa-epochs", type=nonneg_int, default=1)
    lm.add_argument("--hwa-lr", type=positive_float, default=5e-4)
    lm.add_argument("--hwa-max-minutes", type=positive_float, default=None)
    lm.add_argument("--digital-output", action="store_true", help="HWA with the decoder digital (off-chip)")
    lm.add_argument(
        "--hwa-max-steps",
        type=positive_int,
        default=None,
        help="cap on HWA optimizer steps (reproducible, unlike a time budget)",
    )
    lm.set_defaults(func=_cmd_train_lm)

    kws = train.add_parser("kws", help="keyword-spotting LSTM: float training + hardware-aware fine-tuning")
    kws.add_argument("--data", required=True, help="dataset folder (GSC layout or manifest.csv)")
    kws.add_argument("--config", help="hardware config for hardware-aware fine-tuning (omit: float only)")
    kws.add_argument("--out", required=True, help="checkpoint file to write")
    kws.add_argument("--task", choices=["gsc12", "fsdd"], default="gsc12")
    kws.add_argument("--hidden", type=bounded_int(1, 65536), default=128)
    kws.add_argument("--epochs", type=bounded_int(1, 100_000), default=120)
    kws.add_argument("--hwa-epochs", type=nonneg_int, default=6)
    kws.add_argument("--batch", type=bounded_int(1, 65536), default=32)
    kws.add_argument("--lr", type=positive_float, default=5e-3)
    kws.add_argument("--dev-fraction", type=fraction, default=0.2)
    kws.add_argument("--seed", type=nonneg_int, default=0)
    kws.add_argument(
        "--speed-perturb",
        type=fraction,
        default=0.0,
        help="augmentation: random speed change +-this fraction (e.g. 0.15; 0 = off)",
    )
    kws.add_argument("--threads", type=bounded_int(1, 1024), default=2)
    kws.set_defaults(func=_cmd_train_kws)

    data = sub.add_parser("data", help="generate datasets of our own").add_subparsers(dest="what", required=True)
    syn = data.add_parser("synthetic-kws", help="keywords synthesised with eSpeak NG (GSC layout + manifest)")
    syn.add_argument("--out", required=True, help="folder to write (skipped when its manifest exists)")
    syn.add_argument("--clips-per-voice", type=bounded_int(1, 1000), default=2)
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_cmd_data_synthetic)

    evaluate = sub.add_parser("evaluate", help="simulate a trained model on hardware (Monte-Carlo)")
    ev_sub = evaluate.add_subparsers(dest="task", required=True)
    for task, helptext in (("kws", "keyword spotting accuracy"), ("lm", "char-LM bits per character")):
        e = ev_sub.add_parser(task, help=helptext)
        e.add_argument("--checkpoint", help="checkpoint (default: the one shipped in checkpoints/)")
        e.add_argument("--data", required=True, help="dataset folder")
        e.add_argument("--config", required=True, help="hardware config (path or preset name)")
        e.add_argument("--mc", type=bounded_int(1, MAX_MC), default=10, help="Monte-Carlo device instances")
        e.add_argument(
            "--split",
            default=None,
            help=(
                "kws: all | train | dev | test (default: test with GSC list files, else all)"
                if task == "kws"
                else "lm: valid | test"
            ),
        )
        e.add_argument("--json", help="result JSON file")
        e.add_argument(
            "--sweep",
            help="bits=3,4,5,8: evaluate the config and the baseline at each ADC bit width "
            "(a `crossbar sweep` in-process)",
        )
        e.add_argument(
            "--baseline", default="rram_conventional_adc_5b", help="baseline config of a sweep ('' for none)"
        )
        e.add_argument("--out", help="sweep folder (default: sweep_<task>); see `crossbar sweep`")
        e.add_argument("--resume", action="store_true", help="continue the sweep in --out from its journal")
        e.add_argument(
            "--digital-output",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="keep the output layer digital (off-chip, as the paper's LSTM chip handles its I/O) "
            "or put it on the crossbar; default: the checkpoint's deployment",
        )
        e.add_argument("--threads", type=bounded_int(1, 1024), default=2)
        e.add_argument(
            "--measured",
            help="folder in the `crossbar export` layout with a chip's measured "
            "conductances (measured_g_us): simulate that chip instead of programming instances "
            "(read noise, periphery and datapath as --config says; docs/export.md)",
        )
        e.set_defaults(func=_cmd_evaluate)

    from rnn_models import export as export_mod

    exp = sub.add_parser("export", help=export_mod.EXPORT_HELP)
    export_mod.add_export_arguments(exp)
    exp.set_defaults(func=_cmd_export)

    from crossbar import device_cli, netlist

    net = sub.add_parser("netlist", help="write an ngspice netlist of one programmed array (see docs/parasitics.md)")
    netlist.add_netlist_arguments(net, more_sources=_netlist_checkpoint_arguments)
    net.set_defaults(func=_cmd_netlist)

    fit = sub.add_parser("fit-device", help=device_cli.FIT_HELP)
    device_cli.add_fit_device_arguments(fit)
    fit.set_defaults(func=device_cli.run_fit_device)
    sim = sub.add_parser("simulate-device", help=device_cli.SIMULATE_HELP)
    device_cli.add_simulate_device_arguments(sim)
    sim.set_defaults(func=device_cli.run_simulate_device)

    swp = sub.add_parser("sweep", help="design-space sweep: config fields x models x Monte-Carlo (Dask)")
    swp.add_argument("spec", help="sweep spec (JSON, or YAML with PyYAML); see rnn_models/sweep/spec.py")
    swp.add_argument("--out", required=True, help="sweep folder: journal, results.csv, instances.csv, report, plots")
    swp.add_argument(
        "--workers",
        type=bounded_int(1, 4096),
        default=None,
        help="local Dask worker processes (default: one per core); 1 = in-process, no Dask",
    )
    swp.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    swp.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out (a rerun into the same folder continues too; this "
        "flag insists that the folder holds a journal)",
    )
    swp.set_defaults(func=_cmd_sweep)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command prints it: one line with its category and text (not the source
    line of the library code that raised it)."""
    try:
        (file or sys.stderr).write(f"warning: {category.__name__}: {message}\n")
    except OSError:  # stderr closed: nothing to tell
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rnn_models.ctrl_c import redeliver_swallowed_sigint

    with warnings.catch_warnings():  # (restores the caller's warning display after the command)
        warnings.showwarning = _show_warning
        with redeliver_swallowed_sigint():  # a Ctrl-C caught inside numba's compiler still ends the command
            return _run_command(args)


def _run_command(args) -> int:
    """Run the parsed command; the errors a user can cause end as one line and an exit status."""
    try:
        return args.func(args)
    except CrossbarInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (outputs are written atomically: nothing half-written was left)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

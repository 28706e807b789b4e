"""The cost workload of a torch model or of a checkpoint of this project, for ``crossbar.cost``.

The hardware package describes what a model asks of the chip (:class:`crossbar.cost.workload.Workload`)
and never imports the models; this module builds that description from ``nn.LSTM`` / ``nn.GRU`` /
``nn.Linear`` modules and from the KWS and LM checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from crossbar.config import HardwareConfig
from crossbar.cost.workload import (
    PAPER_SHAPES,
    CellWork,
    MatrixLoad,
    Workload,
    mapped_g_load,
    paper_shape,
    ramp_charge_factor,
)
from crossbar.errors import CrossbarInputError


def from_model(
    model: torch.nn.Module,
    config: HardwareConfig,
    name: str,
    steps: int,
    per_sequence: tuple[str, ...] = (),
    off_chip: tuple[str, ...] = (),
) -> Workload:
    """Workload of a float model (``nn.LSTM`` / ``nn.GRU`` / ``nn.Linear`` modules, in order).

    ``per_sequence``: names of modules that run once per sequence (e.g. a KWS classifier);
    ``off_chip``: names of modules kept digital off the chip (not costed)."""
    from torch import nn

    mats, cells = [], []
    skipped: set[str] = set()
    for mod_name, mod in model.named_modules():
        if any(mod_name == o or mod_name.startswith(o + ".") for o in off_chip):
            skipped.update(f"{mod_name}.{n}" if mod_name else n for n, _ in mod.named_parameters())
            continue
        if isinstance(mod, (nn.LSTM, nn.GRU)):
            kind = "lstm" if isinstance(mod, nn.LSTM) else "gru"
            h = mod.hidden_size
            dirs = 2 if mod.bidirectional else 1
            for layer in range(mod.num_layers):
                for d in range(dirs):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    w_ih, w_hh = getattr(mod, "weight_ih" + sfx), getattr(mod, "weight_hh" + sfx)
                    b_ih = getattr(mod, "bias_ih" + sfx) if mod.bias else None
                    b_hh = getattr(mod, "bias_hh" + sfx) if mod.bias else None
                    label = f"{mod_name}{sfx}"
                    n_in = w_ih.shape[1]
                    # (name, weight, bias, readout, input block sizes) of each crossbar matrix
                    parts: list[tuple[str, torch.Tensor, torch.Tensor | None, str, tuple[int, ...]]]
                    if kind == "lstm":  # one matrix [x, h] -> i, f, g, o, all through NL-ADCs
                        parts = [
                            (label, torch.cat([w_ih, w_hh], 1), None if b_ih is None else b_ih + b_hh, "nl", (n_in, h))
                        ]
                    else:  # as the analog GRU: [x, h] -> r, z (NL-ADC); x -> n_x and h -> n_h (linear)
                        parts = [
                            (
                                f"{label}/rz",
                                torch.cat([w_ih[: 2 * h], w_hh[: 2 * h]], 1),
                                None if b_ih is None or b_hh is None else b_ih[: 2 * h] + b_hh[: 2 * h],
                                "nl",
                                (n_in, h),
                            ),
                            (f"{label}/nx", w_ih[2 * h :], None if b_ih is None else b_ih[2 * h :], "linear", (n_in,)),
                            (f"{label}/nh", w_hh[2 * h :], None if b_hh is None else b_hh[2 * h :], "linear", (h,)),
                        ]
                    for name_, w, b, readout, blocks in parts:
                        mats.append(
                            MatrixLoad(
                                name_,
                                w.shape[1] + (b is not None),
                                w.shape[0],
                                readout,
                                True,
                                True,
                                mapped_g_load(w, b, config, blocks),
                                _ramp_factor(w, b, config, blocks, kind if readout == "nl" else "linear", h),
                            )
                        )
                    cells.append(CellWork(label, kind, h))
        elif isinstance(mod, nn.Linear):
            per_step = mod_name not in per_sequence
            mats.append(
                MatrixLoad(
                    mod_name,
                    mod.in_features + (mod.bias is not None),
                    mod.out_features,
                    "linear",
                    per_step,
                    False,
                    mapped_g_load(mod.weight, mod.bias, config),
                    _ramp_factor(mod.weight, mod.bias, config, None, "linear"),
                )
            )
    if not mats:
        raise CrossbarInputError(f"model {name!r} has no LSTM, GRU or Linear layer to place on crossbars")
    weights = sum(
        p.numel() for n_, p in model.named_parameters() if ("weight" in n_ or "bias" in n_) and n_ not in skipped
    )
    where = f"checkpoint {name}"
    if off_chip:
        where += f" (deployed with {', '.join(off_chip)} digital, off-chip: not costed)"
    return Workload(name, where, mats, cells, steps, weights)


def _ramp_factor(w, b, config: HardwareConfig, blocks, kind: str, hidden: int = 0) -> float:
    """``ramp_charge_factor`` of a matrix with the analog layers' column groups: an LSTM's
    (:func:`rnn_models.layers.lstm_column_groups`), a GRU's r/z (``gru_gate_groups``), or
    ``linear``: every column through the identity."""
    from rnn_models.layers import gru_gate_groups, lstm_column_groups

    if kind == "linear":
        groups = [(torch.arange(w.shape[0]), "identity")]
    else:
        make = lstm_column_groups if kind == "lstm" else gru_gate_groups
        groups = [(g.index, g.function) for g in make(hidden, config.nl_adc.functions)]
    return ramp_charge_factor(w, b, config, groups, blocks)


def from_checkpoint(path: str, config: HardwareConfig) -> Workload:
    """Workload of a KWS or LM checkpoint saved by this project, as it is deployed: layers its
    ``meta["deployment"]`` keeps digital (off-chip, e.g. an LM decoder) are not costed."""
    from rnn_models.checkpoint import deployment, load_checkpoint, load_model

    ckpt = load_checkpoint(path)
    task = ckpt["task"]
    if task == "kws":
        from rnn_models.data.speech import FeatureSettings
        from rnn_models.tasks.kws import KWSLSTM

        model, ckpt = load_model(path, "kws", KWSLSTM, "KWS model")
        settings = FeatureSettings(**ckpt["meta"].get("settings", {}))
        steps = int(round(settings.clip_seconds * 1000 / settings.hop_ms)) + 1
        off = tuple(deployment(ckpt, KWSLSTM.OUTPUT_LAYER)["digital_layers"])
        return from_model(model, config, str(path), steps, per_sequence=(KWSLSTM.OUTPUT_LAYER,), off_chip=off)
    if task == "lm":
        from rnn_models.tasks.lm import CharLSTM, load_lm

        model, _ = load_lm(path)
        off = tuple(deployment(ckpt, CharLSTM.OUTPUT_LAYER)["digital_layers"])
        return from_model(model, config, str(path), 1, off_chip=off)
    raise CrossbarInputError(f"checkpoint {path!r}: task {task!r} has no cost workload (kws or lm)")


def workload_for(model: str, config: HardwareConfig, steps: int | None = None) -> Workload:
    """The workload ``crossbar report --model`` names: a paper shape (``paper-kws``, ``paper-lm``), a
    task's shipped checkpoint (``kws``, ``lm``) or a checkpoint file."""
    from rnn_models.checkpoint import SHIPPED

    if model in PAPER_SHAPES:
        w = paper_shape(model, config)
    elif model in SHIPPED:
        if not SHIPPED[model].is_file():
            raise CrossbarInputError(
                f"--model {model!r}: the shipped checkpoint {str(SHIPPED[model])!r} is not "
                f"installed (it is in the source repository's checkpoints/); pass a "
                f"checkpoint file"
            )
        w = from_checkpoint(str(SHIPPED[model]), config)
    elif Path(model).is_file():
        w = from_checkpoint(model, config)
    else:
        raise CrossbarInputError(
            f"--model {model!r}: use {', '.join(PAPER_SHAPES)}, {', '.join(SHIPPED)} or an existing checkpoint file"
        )
    if steps is not None:
        w.steps_per_inference = int(steps)
    return w

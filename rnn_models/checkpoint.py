"""Model checkpoints: one dict of plain types + tensors, loaded with ``weights_only=True``.

Layout (``format`` = ``crossbar.rnn_checkpoint``, ``version`` = 1)::

    {"format": ..., "version": 1, "task": "lm" | "kws" | ...,
     "arch": {constructor keyword arguments of the task's model},
     "state_dict": {name: tensor}, "meta": {free-form: vocab, training command, metrics}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crossbar.errors import CrossbarInputError, one_line
from crossbar.io import torch_save

#: the checkpoints shipped in checkpoints/ that commands use by default, per task
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"kws": REPO_ROOT / "checkpoints" / "kws_gsc12.pt", "lm": REPO_ROOT / "checkpoints" / "lm_ptb_528_ft_hwa1.pt"}

FORMAT = "crossbar.rnn_checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "task", "arch", "state_dict", "meta")


def save_checkpoint(path: str | Path, task: str, arch: dict, model: torch.nn.Module, meta: dict) -> Path:
    """Write a checkpoint atomically."""
    state = _cpu_state(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "arch": dict(arch),
        "state_dict": state,
        "meta": dict(meta),
    }
    return torch_save(payload, path)


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one line.  torch's own message
    for a refused pickle is a paragraph that suggests ``weights_only=False``, which this project
    never does; only its reason is kept."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        reason = " ".join(reason.split())[:160]
        return f"not a torch file, or it holds objects a weights-only load refuses: {reason}"
    return f"{type(exc).__name__}: {one_line(exc, 200)}"


def load_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read and check a checkpoint (``weights_only=True``: nothing in it is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CrossbarInputError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holds disallowed objects
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} cannot be read as a crossbar checkpoint ({_load_failure(exc)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CrossbarInputError(f"checkpoint {str(path)!r} is not a {FORMAT} file")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CrossbarInputError(f"checkpoint {str(path)!r} lacks the key(s) {missing}")
    if payload["version"] != VERSION:
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} has version {payload['version']!r}; this code reads {VERSION}"
        )
    for key, kind in (("arch", dict), ("state_dict", dict), ("meta", dict), ("task", str)):
        if not isinstance(payload[key], kind):
            raise CrossbarInputError(
                f"checkpoint {str(path)!r}: {key!r} must be a {kind.__name__}, got {type(payload[key]).__name__}"
            )
    for name, tensor in payload["state_dict"].items():
        extra = str(name).endswith("_extra_state") and isinstance(tensor, dict)  # an analog layer's state
        if not (isinstance(tensor, torch.Tensor) or extra):
            raise CrossbarInputError(f"checkpoint {str(path)!r}: state_dict entry {name!r} is not a tensor")
        if not extra and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CrossbarInputError(f"checkpoint {str(path)!r}: tensor {name!r} holds NaN or infinite values")
    if task is not None and payload["task"] != task:
        raise CrossbarInputError(f"checkpoint {str(path)!r} is for task {payload['task']!r}, not {task!r}")
    return payload


def deployment(ckpt: dict, output_layer: str) -> dict:
    """How a checkpoint is meant to run on the chip: ``{"hwa_config": name or None,
    "digital_layers": [qualified module names kept digital / off-chip]}``.

    Written by training into ``meta["deployment"]``; older checkpoints are read from their HWA
    phase's ``hwa_config`` / ``hwa_digital_output`` entries (True = ``output_layer`` digital)."""
    meta = ckpt.get("meta", {})
    dep = meta.get("deployment")
    if isinstance(dep, dict):
        layers = dep.get("digital_layers") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise CrossbarInputError("checkpoint meta 'deployment.digital_layers' must be a list of layer names")
        return {"hwa_config": dep.get("hwa_config"), "digital_layers": list(layers)}
    return {
        "hwa_config": meta.get("hwa_config"),
        "digital_layers": [output_layer] if meta.get("hwa_digital_output") is True else [],
    }


def resolve_digital_output(ckpt: dict, output_layer: str, flag: bool | None) -> tuple[bool, str]:
    """(keep the output layer digital?, where that comes from: "checkpoint" or "flag")."""
    if flag is not None:
        return bool(flag), "flag"
    return output_layer in deployment(ckpt, output_layer)["digital_layers"], "checkpoint"


# ------------------------------------------------------------------------------ analog models
def _without_chips(state: dict) -> dict:
    """``state`` with the programmed chips left out of its analog layers' extra state."""
    return {
        k: (
            {kk: vv for kk, vv in v.items() if kk != "chip"}
            if k.endswith("_extra_state") and isinstance(v, dict)
            else v
        )
        for k, v in state.items()
    }


def _cpu_state(model: torch.nn.Module) -> dict:
    """``model.state_dict()`` on the CPU (tensors detached; analog layers' extra state as it is)."""
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in model.state_dict().items()}


def save_analog_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    task: str = "custom",
    arch: dict | None = None,
    meta: dict | None = None,
    programmed: bool = False,
) -> Path:
    """Save an analog model: its ``state_dict()`` -- weights and each analog layer's hardware
    config and calibrated ranges (``<layer>._extra_state``, :func:`rnn_models.layers.chip_state`)
    -- with (``programmed=True``) the programmed chip of every instance, without it otherwise."""
    state = _cpu_state(model) if programmed else _without_chips(_cpu_state(model))
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "arch": dict(arch or {}),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    return torch_save(payload, path)


def load_analog_checkpoint(path: str | Path, model: torch.nn.Module, programmed: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_analog_checkpoint` into an analog ``model``
    (``model.load_state_dict`` with one clear error for a config or weights that do not fit).
    Restores calibrated ranges and, when present and ``programmed``, the programmed chip.  A
    checkpoint of the earlier layout (the analog state in a separate ``analog`` entry) loads too."""
    from rnn_models.convert import analog_layers

    ckpt = load_checkpoint(path)
    state = dict(ckpt["state_dict"])
    layers = dict(analog_layers(model))  # layer name -> layer
    prefix = {id(m): q for q, m in model.named_modules()}
    key_of = {
        name: (f"{prefix[id(m)]}._extra_state" if prefix[id(m)] else "_extra_state") for name, m in layers.items()
    }
    if "analog" in ckpt:  # earlier layout: the same per-layer state, kept beside the weights
        if not isinstance(ckpt["analog"], dict):
            raise CrossbarInputError(f"checkpoint {str(path)!r}: its 'analog' entry is malformed")
        state.update({key_of.get(name, f"{name}._extra_state"): v for name, v in ckpt["analog"].items()})
    name_of = {k: n for n, k in key_of.items()}
    saved = sorted(str(name_of.get(k, k)) for k in state if k == "_extra_state" or k.endswith("._extra_state"))
    if not saved:
        raise CrossbarInputError(f"checkpoint {str(path)!r} holds no analog state (saved by save_checkpoint)")
    if set(saved) != set(layers):
        raise CrossbarInputError(f"checkpoint {str(path)!r} has analog layers {saved}, the model has {sorted(layers)}")
    from rnn_models.layers import chip_state_difference

    for name, layer in layers.items():
        diff = chip_state_difference(layer, state[key_of[name]], f"checkpoint {str(path)!r}")
        if diff:
            raise CrossbarInputError(
                f"checkpoint {str(path)!r} was saved with hardware config other than layer {name!r}'s "
                f"{layer.hw.name!r}; differing fields: {', '.join(diff[:6])}"
            )
    if not programmed:
        state = _without_chips(state)
    try:
        model.load_state_dict(state)
    except CrossbarInputError as exc:
        raise CrossbarInputError(f"checkpoint {str(path)!r}: {exc}".replace("state_dict: ", "")) from None
    except RuntimeError as exc:
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} does not fit the model: {_state_dict_problem(exc)}"
        ) from None
    return ckpt


def _state_dict_problem(exc: BaseException) -> str:
    """A ``load_state_dict`` / constructor error on one line, naming the tensors involved."""
    return one_line(exc, 400).replace("Error(s) in loading state_dict for ", "")


def check_meta(path: str | Path, meta: dict, required: dict[str, type | tuple]) -> None:
    """One clear error when a checkpoint's ``meta`` lacks an entry or holds one of the wrong type."""
    for key, kind in required.items():
        if key not in meta:
            raise CrossbarInputError(f"checkpoint {str(path)!r}: meta entry {key!r} is missing")
        if not isinstance(meta[key], kind):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise CrossbarInputError(
                f"checkpoint {str(path)!r}: meta entry {key!r} must be {want}, got {type(meta[key]).__name__}"
            )


def load_model(path: str | Path, task: str, model_cls, what: str):
    """(model in eval mode, checkpoint) for a task checkpoint; ``model_cls(**arch)`` builds the model.

    A checkpoint whose architecture or weights do not fit ``model_cls`` is one clear error."""
    ckpt = load_checkpoint(path, task=task)
    try:
        model = model_cls(**ckpt["arch"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError) as exc:
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} does not hold a {what}: {_state_dict_problem(exc)}"
        ) from None
    return model.eval(), ckpt

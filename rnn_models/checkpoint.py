"""Model checkpoints: one dict of plain types + tensors, loaded with ``weights_only=True``.

Layout (``format`` = ``crossbar.rnn_checkpoint``, ``version`` = 1)::

    {"format": ..., "version": 1, "task": "lm" | "kws" | ...,
     "arch": {constructor keyword arguments of the task's model},
     "state_dict": {name: tensor}, "meta": {free-form: vocab, training command, metrics}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from crossbar.errors import CrossbarInputError, one_line
from crossbar.io import torch_save

#: the checkpoints shipped in checkpoints/ that commands use by default, per task
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"kws": REPO_ROOT / "checkpoints" / "kws_gsc12.pt", "lm": REPO_ROOT / "checkpoints" / "lm_ptb_hwa2.pt"}

FORMAT = "crossbar.rnn_checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "task", "arch", "state_dict", "meta")


def save_checkpoint(path: str | Path, task: str, arch: dict, model: torch.nn.Module, meta: dict) -> Path:
    """Write a checkpoint atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "arch": dict(arch),
        "state_dict": state,
        "meta": dict(meta),
    }
    return torch_save(payload, path)


def load_checkpoint(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read and check a checkpoint (``weights_only=True``: nothing in it is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CrossbarInputError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holds disallowed objects
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} cannot be read as a crossbar checkpoint "
            f"({type(exc).__name__}: {one_line(exc, 200)})"
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
        if not isinstance(tensor, torch.Tensor):
            raise CrossbarInputError(f"checkpoint {str(path)!r}: state_dict entry {name!r} is not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
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
def _flat_config(cfg) -> dict:
    out = {}

    def walk(prefix, node):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(key, v)
            else:
                out[key] = v

    walk("", cfg.model_dump())
    return out


def config_difference(a, b) -> list[str]:
    """Human-readable differing fields of two hardware configs (``name``/``description`` ignored)."""
    fa, fb = _flat_config(a), _flat_config(b)
    return [
        f"{k} ({fa.get(k)!r} vs {fb.get(k)!r})"
        for k in sorted(set(fa) | set(fb))
        if k not in ("name", "description") and fa.get(k) != fb.get(k)
    ]


def _layer_state(layer, programmed: bool) -> dict:
    state = {"config": layer.hw.model_dump_json(), "input_scale": layer.input_scale, "groups": {}}
    for key, (mat, *_r) in layer._matrices().items():
        for g in mat.groups:
            state["groups"][f"{key}/{g.name}"] = {
                "in_range": list(g.in_range) if g.in_range is not None else None,
                "samples": g.samples.float() if g.samples is not None else None,
                "block_ranges": [list(r) for r in g.block_ranges] if g.block_ranges else None,
            }
    if programmed and layer.instances:
        tiles: dict[str, dict] = {}  # matrix key -> programmed conductances and NL-ADC thresholds
        chip = {"args": list(layer._program_args), "tiles": tiles}
        for key, (mat, *_r) in layer._matrices().items():
            entry = {
                "g_pos": mat.tile.g_pos.cpu(),
                "g_neg": mat.tile.g_neg.cpu(),
                "drift_gain": mat.tile.drift_gain.cpu(),
                "nladc": [],
            }
            for ro in mat.readouts:
                if ro.nladc is not None:
                    entry["nladc"].append(
                        {
                            "ramp_thresholds": ro.nladc.ramp_thresholds.cpu(),
                            "offsets": ro.nladc.offsets.cpu(),
                            "read_var": ro.nladc.read_var.cpu(),
                        }
                    )
            tiles[key] = entry
        state["chip"] = chip
    return state


def save_analog_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    task: str = "custom",
    arch: dict | None = None,
    meta: dict | None = None,
    programmed: bool = False,
) -> Path:
    """Save an analog model: weights, each layer's hardware config and calibrated ranges, and
    (``programmed=True``) the programmed conductances and NL-ADC thresholds of every instance."""
    from rnn_models.convert import analog_layers

    layers = {name: _layer_state(layer, programmed) for name, layer in analog_layers(model)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "arch": dict(arch or {}),
        "state_dict": state,
        "meta": dict(meta or {}),
        "analog": layers,
    }
    return torch_save(payload, path)


def load_analog_checkpoint(path: str | Path, model: torch.nn.Module, programmed: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_analog_checkpoint` into an analog ``model``.

    Refuses (one clear error) a checkpoint whose hardware config differs from the model's, or whose
    weights do not fit the model.  Restores calibrated ranges and, when present and ``programmed``,
    the programmed chip."""
    from crossbar.config import validate_config
    from rnn_models.convert import analog_layers

    ckpt = load_checkpoint(path)
    if "analog" not in ckpt:
        raise CrossbarInputError(f"checkpoint {str(path)!r} holds no analog state (saved by save_checkpoint)")
    layers = dict(analog_layers(model))
    if set(layers) != set(ckpt["analog"]):
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} has analog layers {sorted(ckpt['analog'])}, the model has {sorted(layers)}"
        )
    for name, state in ckpt["analog"].items():
        saved = validate_config(json.loads(state["config"]), source=f"{path}:{name}")
        diff = config_difference(saved, layers[name].hw)
        if diff:
            raise CrossbarInputError(
                f"checkpoint {str(path)!r} was saved with hardware config {saved.name!r} but layer "
                f"{name!r} uses {layers[name].hw.name!r}; differing fields: {', '.join(diff[:6])}"
            )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} does not fit the model: {_state_dict_problem(exc)}"
        ) from None
    for name, state in ckpt["analog"].items():
        layer = layers[name]
        layer.input_scale = state["input_scale"]
        for key, (mat, *_r) in layer._matrices().items():
            for g in mat.groups:
                saved = state["groups"].get(f"{key}/{g.name}", {})
                g.in_range = tuple(saved["in_range"]) if saved.get("in_range") else None
                g.samples = saved.get("samples")
                g.block_ranges = [tuple(r) for r in saved["block_ranges"]] if saved.get("block_ranges") else None
            mat.invalidate()
        layer._instances = 0
        if programmed and "chip" in state:
            layer.program(*state["chip"]["args"])
            for key, (mat, *_r) in layer._matrices().items():
                entry = state["chip"]["tiles"][key]
                if entry["g_pos"].shape != mat.tile.g_pos.shape:
                    raise CrossbarInputError(
                        f"checkpoint {str(path)!r}: programmed conductances of {name}/{key} have "
                        f"shape {tuple(entry['g_pos'].shape)}, expected {tuple(mat.tile.g_pos.shape)}"
                    )
                dev, dt = mat.tile.device, mat.tile.dtype
                mat.tile.g_pos, mat.tile.g_neg = entry["g_pos"].to(dev, dt), entry["g_neg"].to(dev, dt)
                mat.tile.drift_gain = entry["drift_gain"].to(dev, dt)
                nl = [ro.nladc for ro in mat.readouts if ro.nladc is not None]
                for adc, saved in zip(nl, entry["nladc"]):
                    adc.restore(
                        saved["ramp_thresholds"].to(dev, dt),
                        saved["offsets"].to(dev, dt),
                        saved["read_var"].to(dev, dt),
                    )
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

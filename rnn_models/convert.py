"""Model-level helpers: convert float models to analog and back, program, calibrate, switch mode.

``convert_to_analog(model, config)`` returns a copy of ``model`` in which every ``nn.Linear``,
``nn.LSTM``, ``nn.GRU``, ``nn.LSTMCell`` and ``nn.GRUCell`` is replaced by its analog twin with the
same weights; ``model.program(seed, instances)`` and ``model.calibrate(batches)`` are attached to the
returned model for convenience (the module functions work on any model).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Iterable

import torch
from torch import nn

from crossbar.config import HardwareConfig, load_config
from crossbar.errors import CrossbarInputError
from crossbar.rng import check_instance_args
from rnn_models.layers import AnalogGRU, AnalogGRUCell, AnalogLayerBase, AnalogLinear, AnalogLSTM, AnalogLSTMCell

_RNN_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL_ARGS = ("input_size", "hidden_size")


def _rnn_kwargs(m) -> dict:
    if getattr(m, "proj_size", 0):
        raise CrossbarInputError("LSTM with proj_size > 0 cannot be converted (not supported)")
    return {k: getattr(m, k) for k in _RNN_ARGS}


def _convert_one(m: nn.Module, cfg: HardwareConfig) -> nn.Module:
    new: AnalogLayerBase
    if isinstance(m, nn.Linear):
        new = AnalogLinear(m.in_features, m.out_features, m.bias is not None, config=cfg)
    elif isinstance(m, nn.LSTM):
        new = AnalogLSTM(**_rnn_kwargs(m), config=cfg)
    elif isinstance(m, nn.GRU):
        new = AnalogGRU(**_rnn_kwargs(m), config=cfg)
    elif isinstance(m, nn.LSTMCell):
        new = AnalogLSTMCell(m.input_size, m.hidden_size, m.bias, config=cfg)
    elif isinstance(m, nn.GRUCell):
        new = AnalogGRUCell(m.input_size, m.hidden_size, m.bias, config=cfg)
    else:
        return m
    new.load_state_dict(m.state_dict())
    return new.to(cfg.torch_device())


def _digital_one(m: nn.Module) -> nn.Module:
    new: nn.Module
    if isinstance(m, AnalogLinear):
        new = nn.Linear(m.in_features, m.out_features, m.bias is not None)
    elif isinstance(m, AnalogLSTMCell):
        new = nn.LSTMCell(m.input_size, m.hidden_size, m.bias)
    elif isinstance(m, AnalogGRUCell):
        new = nn.GRUCell(m.input_size, m.hidden_size, m.bias)
    elif isinstance(m, AnalogLSTM):
        new = nn.LSTM(**{k: getattr(m, k) for k in _RNN_ARGS})
    elif isinstance(m, AnalogGRU):
        new = nn.GRU(**{k: getattr(m, k) for k in _RNN_ARGS})
    else:
        return m
    p = next(m.parameters())
    new = new.to(p.device, p.dtype)  # the analog layer's device and dtype (a float64 simulation's too)
    new.load_state_dict({k: v for k, v in m.state_dict().items() if k != "_extra_state"})
    return new


def _replace(
    model: nn.Module, fn: Callable[[nn.Module], nn.Module], exclude: tuple = (), prefix: str = ""
) -> nn.Module:
    if prefix in exclude:
        return model
    top = fn(model)
    if top is not model:
        return top
    for name, child in list(model.named_children()):
        setattr(model, name, _replace(child, fn, exclude, f"{prefix}.{name}" if prefix else name))
    return model


def convert_to_analog(
    model: nn.Module, config: HardwareConfig | str, inplace: bool = False, exclude: Iterable[str] = ()
) -> nn.Module:
    """Replace Linear/LSTM/GRU(+cells) by analog layers under ``config`` (a config or a JSON path).

    ``exclude``: qualified names of sub-modules that stay digital (e.g. an output layer computed
    off-chip, as the paper's LSTM chip does with its I/O)."""
    cfg = load_config(config)
    model = model if inplace else copy.deepcopy(model)
    exclude = tuple(exclude)
    known = {name for name, _ in model.named_modules()}
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise CrossbarInputError(
            f"convert_to_analog: no sub-module named {unknown}; the model has {sorted(known - {''})}"
        )
    model = _replace(model, lambda m: _convert_one(m, cfg), exclude)
    # the whole model in simulation.dtype: the analog layers' chips output it, so the layers that
    # stay digital (an excluded output layer, feature statistics) and the analog layers' software
    # path (calibration) must take it too -- a float32 nn.Linear after a float64 simulation failed
    model = model.to(cfg.torch_dtype())
    if not isinstance(model, AnalogLayerBase):  # a bare layer has its own program()
        for attr, fn in (("program", program), ("calibrate", calibrate)):
            setattr(model, attr, types.MethodType(fn, model))
    return model


def to_digital(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The inverse of :func:`convert_to_analog`: float torch modules with the same weights."""
    model = model if inplace else copy.deepcopy(model)
    model = _replace(model, _digital_one)
    for attr in ("program", "calibrate"):
        model.__dict__.pop(attr, None)
    return model


def analog_layers(model: nn.Module) -> list[tuple[str, AnalogLayerBase]]:
    """(qualified name, layer) of every analog layer in ``model`` (names fix the random streams)."""
    layers = []
    for name, mod in model.named_modules():
        if isinstance(mod, AnalogLayerBase):
            mod.layer_name = name or type(mod).__name__
            layers.append((mod.layer_name, mod))
    return layers


def program(model: nn.Module, seed: int | None = None, instances: int | None = None, first: int = 0) -> nn.Module:
    """Draw and program device instances ``first .. first+instances-1`` for every analog layer."""
    check_instance_args(seed, instances, first)
    for _, layer in analog_layers(model):
        layer.program(seed, instances, first)
    return model


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """``"hardware"`` (chip in eval, hardware-aware training in train) or ``"float"`` (exact math)."""
    if mode not in ("hardware", "float"):
        raise CrossbarInputError(f"mode must be 'hardware' or 'float', got {mode!r}")
    for _, layer in analog_layers(model):
        layer.mode = mode
    return model


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, forward: Callable | None = None) -> dict:
    """Set DAC input scales and ADC ranges from data: run ``forward(model, batch)`` (default
    ``model(batch)``) over ``batches`` in exact float math and take percentiles of |value|
    (``dac.calibration_percentile``, ``adc.calibration_percentile``). Programmed state is dropped."""
    layers = analog_layers(model)
    if not layers:
        raise CrossbarInputError("calibrate(): the model has no analog layers")
    was_training = model.training
    model.eval()
    for _, layer in layers:
        layer.start_calibration()
    try:
        n = 0
        for batch in batches:
            forward(model, batch) if forward is not None else model(batch)
            n += 1
        if n == 0:
            raise CrossbarInputError("calibrate(): no batches were given")
    finally:
        stats = {name: layer.finish_calibration() for name, layer in layers}
    model.train(was_training)
    return stats

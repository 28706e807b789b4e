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

from crossbar.errors import CrossbarInputError
from crossbar.io import torch_save

FORMAT = "crossbar.rnn_checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "task", "arch", "state_dict", "meta")


def save_checkpoint(path: str | Path, task: str, arch: dict, model: torch.nn.Module, meta: dict) -> Path:
    """Write a checkpoint atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "task": task, "arch": dict(arch),
               "state_dict": state, "meta": dict(meta)}
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
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
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
    if task is not None and payload["task"] != task:
        raise CrossbarInputError(
            f"checkpoint {str(path)!r} is for task {payload['task']!r}, not {task!r}"
        )
    return payload

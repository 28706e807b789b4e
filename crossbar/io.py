"""Atomic file output and small HDF5 helpers.

Every file this project writes goes through :func:`atomic_write` (or one of its wrappers): the
content is written to a temporary file in the destination folder and renamed over the target only
once complete, so an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the JSON stays standard (RFC 8259)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented, standard JSON atomically; return the path."""
    text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (files only, no display needed);
    imported on first use (~0.5 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (PNG) and close it; return the path."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically; return the path."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# ------------------------------------------------------------------------------ output checks
def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def check_outputs(
    outputs: dict[str, Any], inputs: dict[str, Any] | None = None, *, existing_files: str = "replace"
) -> None:
    """Check every output location before any work (one :class:`CrossbarInputError` otherwise).

    ``outputs``: option name -> ``(path, kind)`` with kind ``"file"`` or ``"dir"`` (a ``None`` path
    is skipped); ``inputs``: option name -> path of a file or folder the command reads.  Refused: an
    output that is (or resolves to, through links) an input or lies inside an input folder; a file
    output that names a folder or a special file; a folder output that names a file; a location
    whose nearest existing parent is not a writable folder; ``existing_files="refuse"``: a file
    output that already exists.
    """
    from crossbar.errors import CrossbarInputError

    ins = {name: _real(p) for name, p in (inputs or {}).items() if p is not None}
    for name, spec in outputs.items():
        path, kind = spec
        if path is None:
            continue
        text = os.fspath(path)
        if "\x00" in text:
            raise CrossbarInputError(f"{name} {text!r}: a path cannot contain a NUL byte")
        real = _real(path)
        for in_name, in_real in ins.items():
            if real == in_real:
                raise CrossbarInputError(
                    f"{name} {text!r} is the input {in_name} ({in_real}); outputs never "
                    f"replace inputs: choose another path"
                )
            if os.path.isdir(in_real) and real.startswith(in_real.rstrip(os.sep) + os.sep):
                raise CrossbarInputError(
                    f"{name} {text!r} lies inside the input folder {in_name} ({in_real}); write outputs elsewhere"
                )
        p = Path(real)
        if kind == "file":
            if p.is_dir():
                raise CrossbarInputError(f"{name} {text!r} is a folder; give a file name")
            if p.exists() and not p.is_file():
                raise CrossbarInputError(f"{name} {text!r} exists and is not a regular file")
            if p.exists() and existing_files == "refuse":
                raise CrossbarInputError(f"{name} {text!r} exists; choose a new file (nothing is overwritten)")
        elif p.exists() and not p.is_dir():
            raise CrossbarInputError(f"{name} {text!r} exists and is not a folder")
        if p.exists():
            folder = p if kind == "dir" else p.parent  # an atomic replace writes into the parent folder
            if not _can_write_in(folder) or not os.access(p, os.W_OK):
                raise CrossbarInputError(f"{name} {text!r} is not writable")
            continue
        probe = p.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise CrossbarInputError(f"{name} {text!r}: {str(probe)!r} is not a folder")
        if not _can_write_in(probe):
            raise CrossbarInputError(f"{name} {text!r}: {str(probe)!r} is not writable")


def _can_write_in(folder: Path) -> bool:
    """True when a file can be created in ``folder`` (tried: permission bits do not bind root, and
    read-only or pseudo file systems only show themselves on a write); the probe is removed."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".crossbar-write-probe.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return True


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

"""The sweep spec: a JSON (or YAML) file naming a task, models, data, a base config and a grid.

Example (every field but ``task`` and ``config`` optional)::

    {"task": "kws", "checkpoint": "checkpoints/kws_fsdd.pt", "data": "../shared/data/fsdd",
     "split": "dev", "config": "rram_nladc_5b", "mc": 4, "seed": 0,
     "grid": {"adc.bits": [4, 5], "device.read_noise.sigma_rel": [0.005, 0.02]},
     "zip": [{"nl_adc.comparator_offset_sigma": [0.01, 0.03], "nl_adc.comparator_noise_sigma": [0.002, 0.006]}],
     "baseline": ["rram_conventional_adc_5b"]}

* ``grid``: dotted hardware-config path -> list of values; the points are the Cartesian product of
  the grid's fields and the ``zip`` groups (the fields of one group vary together, position by
  position).  Coupled fields follow their source (``crossbar.config.COUPLED_FIELDS``: sweeping
  ``adc.bits`` keeps ``nl_adc.ramp_devices = 2^bits``).
* ``baseline``: further base configs (preset names or paths) evaluated at every point alongside
  ``config`` (the same changes applied), e.g. the conventional ADC at each read noise.
* ``checkpoint``: a path or a list (a model axis); default the task's shipped model.  For the
  ``cost`` and ``adc`` tasks a model may also be ``paper-kws`` / ``paper-lm`` (the cost workload).
* ``mc`` instances per point, evaluated in blocks of ``mc_block`` (one unit of work each).
* Relative paths (checkpoint, data, config, baseline) are taken from the current directory, as the
  paths given on the command line.

Every point is resolved and validated against the config schema before anything runs: a
misspelt path or an invalid value is one error naming the point and the field.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crossbar.config import HardwareConfig, get_field, load_config
from crossbar.errors import CrossbarInputError

TASKS = ("kws", "lm", "adc", "cost")
#: the primary metric of each task (the ``hardware_*`` columns) and whether larger is better
TASK_METRICS = {"kws": ("accuracy", True), "lm": ("bpc", False)}
ADC_METRICS = (
    "inl_max_lsb",
    "inl_rms_lsb",
    "dnl_max_lsb",
    "rmse",
    "inl_max_lsb_uncalibrated",
    "missing_code_fraction",
    "vread_max_code_shift_nladc",
)
COST_METRICS = (
    "tops_per_w",
    "tops_per_mm2",
    "energy_per_inference_j",
    "power_mw",
    "area_mm2",
    "peak_tops",
    "latency_per_step_s",
)
PAPER_MODELS = ("paper-kws", "paper-lm")
MAX_POINTS = 10_000
MAX_UNITS = 100_000
MAX_MC = 10_000
MAX_SPEC_BYTES = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class ClusterSpec(_Strict):
    """An HPC batch cluster started with ``dask-jobqueue`` (optional extra ``crossbar[hpc]``)."""

    kind: Literal["slurm", "pbs"] = Field(description="batch system")
    jobs: int = Field(1, ge=1, le=10_000, description="batch jobs to start (each runs `processes` workers)")
    cores: int = Field(1, ge=1, le=1024, description="cores per job")
    processes: int | None = Field(None, ge=1, le=1024, description="worker processes per job (default: cores)")
    memory: str = Field("4GB", max_length=32, description="memory per job, e.g. '16GB'")
    walltime: str = Field("01:00:00", max_length=32, description="job wall time, HH:MM:SS")
    queue: str | None = Field(None, max_length=200, description="partition (Slurm) or queue (PBS)")
    account: str | None = Field(None, max_length=200, description="project / account to charge")
    job_extra_directives: list[str] = Field(
        default_factory=list, max_length=64, description="extra #SBATCH / #PBS lines"
    )
    job_script_prologue: list[str] = Field(
        default_factory=list, max_length=64, description="shell lines run before the worker (e.g. activate a venv)"
    )


class SweepSpec(_Strict):
    """A design-space sweep (see the module docstring)."""

    task: Literal["kws", "lm", "adc", "cost"]
    config: str = Field(min_length=1, max_length=4096, description="base hardware config: preset name or path")
    checkpoint: None | str | list[str] = Field(None, description="model(s): a path or a list")
    data: str | None = Field(None, max_length=4096, description="dataset folder (kws, lm)")
    split: str | None = Field(None, max_length=32, description="kws: all|train|dev|test; lm: valid|test")
    mc: int = Field(1, ge=1, le=MAX_MC, description="Monte-Carlo instances per point")
    mc_block: int = Field(5, ge=1, le=MAX_MC, description="instances per unit of work")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted config path -> values")
    zip: list[dict[str, list[Any]]] = Field(default_factory=list, description="groups of fields varied together")
    baseline: str | list[str] = Field(default_factory=list, description="configs evaluated alongside")
    digital_output: bool | None = Field(None, description="output layer digital (default: the checkpoint's deployment)")
    limit: int | None = Field(None, ge=1, le=10**9, description="score only the first N clips / characters")
    metric: str | None = Field(None, max_length=64, description="adc / cost: the metric of the hardware columns")
    function: str | None = Field(
        None, max_length=64, description="adc: activation to characterise (default: the config's gate function)"
    )
    columns: int = Field(16, ge=1, le=4096, description="adc: NL-ADC columns per instance")
    cluster: ClusterSpec | None = None

    @field_validator("grid", "zip")
    @classmethod
    def _sizes(cls, value):
        groups = value if isinstance(value, list) else [value]
        if len(groups) > 64:
            raise ValueError("at most 64 zip groups")
        for group in groups:
            if len(group) > 64:
                raise ValueError("at most 64 fields")
            for path, values in group.items():
                if not 1 <= len(values) <= 1000:
                    raise ValueError(f"{path!r}: give 1..1000 values")
        return value

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if self.task in ("kws", "lm") and self.data is None:
            raise ValueError(f"task {self.task!r} needs 'data' (the dataset folder)")
        paths = list(self.grid)
        for i, group in enumerate(self.zip):
            lengths = {len(v) for v in group.values()}
            if len(lengths) > 1:
                raise ValueError(
                    f"zip[{i}]: the fields of a group need lists of one length, got "
                    f"{ {k: len(v) for k, v in group.items()} }"
                )
            if not group:
                raise ValueError(f"zip[{i}]: an empty group")
            paths += list(group)
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"field(s) {dup} appear more than once in grid / zip")
        if self.task == "adc" and self.metric is not None and self.metric not in ADC_METRICS:
            raise ValueError(f"metric {self.metric!r}: the adc task has {', '.join(ADC_METRICS)}")
        if self.task == "cost" and self.metric is not None and self.metric not in COST_METRICS:
            raise ValueError(f"metric {self.metric!r}: the cost task has {', '.join(COST_METRICS)}")
        if self.task in ("kws", "lm") and self.metric is not None and self.metric != TASK_METRICS[self.task][0]:
            raise ValueError(f"metric {self.metric!r}: the {self.task} task's metric is {TASK_METRICS[self.task][0]!r}")
        return self

    # ----------------------------------------------------------------------- derived
    @property
    def swept(self) -> list[str]:
        """The swept paths in spec order (grid fields, then zip groups)."""
        return list(self.grid) + [p for group in self.zip for p in group]

    @property
    def models(self) -> list[str]:
        if self.checkpoint is None:
            return []
        return [self.checkpoint] if isinstance(self.checkpoint, str) else list(self.checkpoint)

    @property
    def baselines(self) -> list[str]:
        return [self.baseline] if isinstance(self.baseline, str) else list(self.baseline)

    @property
    def metric_name(self) -> str:
        if self.task in TASK_METRICS:
            return TASK_METRICS[self.task][0]
        return self.metric or ("inl_max_lsb" if self.task == "adc" else "tops_per_w")

    @property
    def higher_is_better(self) -> bool:
        if self.task in TASK_METRICS:
            return TASK_METRICS[self.task][1]
        return self.task == "cost" and self.metric_name not in (
            "energy_per_inference_j",
            "power_mw",
            "area_mm2",
            "latency_per_step_s",
        )


def _loc(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and "[" in p)) or "<root>"


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate parsed JSON into a :class:`SweepSpec` (one error naming the JSON path)."""
    if not isinstance(data, dict):
        raise CrossbarInputError(f"{source}: the top level must be a JSON object, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        shown = (
            ""
            if err["type"] in ("missing", "extra_forbidden") or isinstance(err.get("input"), dict)
            else f" = {str(repr(err.get('input')))[:60]}"
        )
        raise CrossbarInputError(f"{source}: {_loc(err)}{shown}: {msg}{more}") from None
    except RecursionError:
        raise CrossbarInputError(f"{source}: the document is nested too deeply") from None


def _duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec from a ``.json`` (or ``.yaml`` / ``.yml``, with PyYAML) file."""
    p = Path(path)
    if not p.is_file():
        raise CrossbarInputError(f"{path}: sweep spec not found (or not a regular file)")
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise CrossbarInputError(f"{path}: sweep spec is larger than {MAX_SPEC_BYTES} bytes")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CrossbarInputError(f"{path}: not UTF-8 text") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise CrossbarInputError(f"{path}: YAML specs need PyYAML (pip install pyyaml), or use JSON") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(
                text,
                object_pairs_hook=_duplicate_keys,
                parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not valid JSON")),
            )
    except json.JSONDecodeError as exc:
        raise CrossbarInputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise CrossbarInputError(f"{path}: the document is nested too deeply") from None
    except CrossbarInputError:
        raise
    except Exception as exc:  # yaml errors, duplicate keys
        raise CrossbarInputError(f"{path}: {str(exc).splitlines()[0][:200]}") from None
    return parse_spec(data, source=str(path))


# --------------------------------------------------------------------------- points
def grid_changes(spec: SweepSpec) -> list[dict[str, Any]]:
    """The config changes of every grid point (Cartesian product of grid fields and zip groups)."""
    axes: list[list[dict[str, Any]]] = [[{path: v} for v in values] for path, values in spec.grid.items()]
    for group in spec.zip:
        n = len(next(iter(group.values())))
        axes.append([{path: values[i] for path, values in group.items()} for i in range(n)])
    points = []
    for combo in itertools.product(*axes) if axes else [()]:
        change: dict[str, Any] = {}
        for part in combo:
            change.update(part)
        points.append(change)
    return points


def point_label(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items()) or "base"


def resolve_points(spec: SweepSpec, source: str = "<spec>") -> list[tuple[str, dict[str, Any], HardwareConfig]]:
    """(base config name, changes, resolved config) of every point, all validated first.

    Bad paths and values are one error naming the point and the field."""
    bases = []
    for where, name in [("config", spec.config)] + [(f"baseline[{i}]", b) for i, b in enumerate(spec.baselines)]:
        try:
            bases.append(load_config(name))
        except CrossbarInputError as exc:
            raise CrossbarInputError(f"{source}: {where}: {exc}") from None
    names = [b.name for b in bases]
    if len(set(names)) != len(names):
        raise CrossbarInputError(f"{source}: config and baseline need distinct config names, got {names}")
    changes_list = grid_changes(spec)
    if len(changes_list) * len(bases) > MAX_POINTS:
        raise CrossbarInputError(f"{source}: {len(changes_list) * len(bases)} points; at most {MAX_POINTS}")
    dumped = bases[0].model_dump()
    for path in spec.swept:
        try:
            get_field(dumped, path)
        except CrossbarInputError:
            raise CrossbarInputError(
                f"{source}: grid field {path!r} is not a hardware-config field "
                f"(e.g. 'adc.bits', 'device.read_noise.sigma_rel')"
            ) from None
    out = []
    for base in bases:
        for i, changes in enumerate(changes_list):
            try:
                cfg = base.replace(**changes)
            except CrossbarInputError as exc:
                msg = str(exc).removeprefix("<replace>: ")
                raise CrossbarInputError(
                    f"{source}: point {i} ({point_label(changes)}) of config {base.name!r}: {msg}"
                ) from None
            name = f"{base.name} [{point_label(changes)}]" if changes else base.name
            out.append((base.name, changes, cfg.model_copy(update={"name": name[:200]})))
    return out

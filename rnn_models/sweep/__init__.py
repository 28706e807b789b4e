"""Design-space sweeps: any hardware-config field x model x Monte-Carlo, in-process, on a local
Dask cluster (default) or on a Dask / HPC cluster, with a crash-safe journal.

Modules: ``spec`` (the JSON spec, grid expansion, validation), ``units`` (units of work, their
content keys, evaluation in a worker), ``journal`` (SQLite record of finished units), ``runner``
(execution and fault handling), ``outputs`` (results.csv, instances.csv, report.md, plots).
Extension point: a new task is a branch of ``units.run_unit`` plus its metric in ``spec``.
"""

from rnn_models.sweep.runner import SweepOutcome, run_sweep
from rnn_models.sweep.spec import SweepSpec, load_spec, parse_spec

__all__ = ["SweepOutcome", "SweepSpec", "load_spec", "parse_spec", "run_sweep"]

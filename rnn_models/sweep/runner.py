"""Running a sweep: in-process, on a Dask ``LocalCluster`` (default), on a running Dask cluster
(``--scheduler``), or on an HPC cluster started by ``dask-jobqueue`` (the spec's ``cluster``).

The driver plans every unit (validating everything first), records each finished unit in the
journal the moment it arrives, and rewrites the outputs after every unit.  Faults:

* a worker killed mid-unit: Dask re-runs the unit on another worker; the journal counts a unit
  once (by its content key);
* the driver killed: the journal holds every unit recorded so far; a rerun (or ``--resume``)
  skips them;
* a unit that raises: recorded as failed with its message, the sweep goes on; the command ends
  with a one-line summary and a non-zero exit.

Known traps handled here: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_`` in its workers (several
times the CPU per unit on numpy / torch work) -- unset for the clusters this driver starts;
thread oversubscription -- one torch / BLAS / OpenMP / numba thread per worker process; numba's
on-disk cache built by several processes at once -- the driver compiles the kernels once before
a local cluster starts (workers then load them), and workers of remote clusters get their own
cache folder; the feature cache -- built once by the driver, written atomically anyway.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from crossbar.errors import CrossbarInputError
from crossbar.io import pyplot, write_json, write_text
from rnn_models.sweep import outputs
from rnn_models.sweep.journal import Journal
from rnn_models.sweep.spec import SweepSpec
from rnn_models.sweep.units import Row, cost_metrics, plan, run_unit

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
PLOT_INTERVAL_S = 30.0


@dataclass
class SweepOutcome:
    out: Path
    rows: int
    units: int
    done: int
    failed: int
    ran: int  # units computed by this invocation
    summary: list


def check_out_dir(out: Path, resume: bool) -> None:
    """A sweep folder is new, empty, or one that holds a sweep journal (then it is continued)."""
    if out.exists() and not out.is_dir():
        raise CrossbarInputError(f"--out {str(out)!r} exists and is not a folder")
    journal = out / "journal.sqlite"
    if resume and not journal.is_file():
        raise CrossbarInputError(f"--resume: {str(out)!r} holds no sweep journal (journal.sqlite) to continue")
    if out.is_dir() and any(out.iterdir()) and not journal.is_file():
        raise CrossbarInputError(
            f"--out {str(out)!r} is a non-empty folder that is not a sweep folder; choose a new or empty folder"
        )
    probe = out if out.is_dir() else out.parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CrossbarInputError(f"--out {str(out)!r}: {str(probe)!r} is not writable")


def _warm_up(payload: dict) -> None:
    """Compile the numba kernels and build the data caches once, in the driver, with a tiny copy
    of the first unit (its numbers are not used)."""
    small = dict(payload, count=1, first=0)
    if payload["task"] == "kws":
        from rnn_models.data import speech
        from rnn_models.tasks.kws import load_kws

        _, ckpt = load_kws(payload["model"])
        meta = ckpt["meta"]
        clips = speech.scan(payload["data"], meta["task"])
        split = payload["split"] or ("test" if any(c.official_split for c in clips) else "all")
        chosen = speech.select_split(clips, split, meta["dev_fraction"], meta["split_seed"])
        if payload["limit"] is not None:
            chosen = chosen[: payload["limit"]]
        speech.load_set(chosen, meta["task"], speech.FeatureSettings(**meta["settings"]))  # the feature cache
        small["limit"] = min(payload["limit"] or 4, 4)
    elif payload["task"] == "lm":
        small["limit"] = 500
    elif payload["task"] == "adc":
        small["columns"] = 1
    try:
        run_unit(small)
    except CrossbarInputError:
        pass  # the real unit will record the problem


def _numba_cache_plugin():
    """A Dask worker plugin: each worker process of a remote cluster compiles numba kernels into
    its own cache folder and runs one thread."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class NumbaCacheDir(WorkerPlugin):
        name = "crossbar-numba-cache"

        def setup(self, worker):
            os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix=f"crossbar-numba-{os.getpid()}-"))
            for k, v in WORKER_ENV.items():
                os.environ.setdefault(k, v)
            import torch

            torch.set_num_threads(1)

    return NumbaCacheDir()


def dask_settings():
    """Dask config for the clusters the driver starts (nanny environment without the malloc trap)."""
    import dask

    environ = {"MALLOC_TRIM_THRESHOLD_": None, **WORKER_ENV}
    return dask.config.set(
        {
            "distributed.nanny.pre-spawn-environ": environ,
            "distributed.scheduler.allowed-failures": 5,
            "distributed.worker.daemon": False,
        }
    )


def _start_client(spec: SweepSpec, workers: int | None, scheduler: str | None, log):
    """(client, closer) for the requested execution."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CrossbarInputError("sweeps on several workers need dask.distributed (pip install distributed)") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise CrossbarInputError(f"--scheduler {scheduler!r}: cannot connect ({exc})") from None
        client.register_plugin(_numba_cache_plugin())
        return client, [client]
    if spec.cluster is not None:
        c = spec.cluster
        try:
            import dask_jobqueue
        except ImportError:
            raise CrossbarInputError(
                "the spec's 'cluster' section needs dask-jobqueue (pip install 'crossbar[hpc]')"
            ) from None
        cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[c.kind]
        prologue = (
            [f"export {k}={v}" for k, v in WORKER_ENV.items()]
            + ["export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=None"]
            + c.job_script_prologue
        )
        cluster = cls(
            cores=c.cores,
            processes=c.processes or c.cores,
            memory=c.memory,
            walltime=c.walltime,
            queue=c.queue,
            account=c.account,
            job_extra_directives=c.job_extra_directives,
            job_script_prologue=prologue,
        )
        cluster.scale(jobs=c.jobs)
        client = Client(cluster)
        client.register_plugin(_numba_cache_plugin())
        log(f"started {c.jobs} {c.kind} job(s); the dashboard is at {client.dashboard_link}")
        return client, [client, cluster]
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    client = Client(cluster)
    return client, [client, cluster]


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    source: str = "<spec>",
    client=None,
    progress: bool = True,
    log=print,
) -> SweepOutcome:
    """Run (or continue) a sweep into folder ``out``; see the module docstring.

    ``workers``: 1 = in-process (no Dask), N = a LocalCluster of N processes, None = one per core.
    ``client``: an existing ``distributed.Client`` to use (tests, notebooks)."""
    from crossbar.io import check_outputs

    out = Path(out)
    inputs = {
        "the spec": source if os.path.exists(source) else None,
        "data": spec.data,
        "config": spec.config if os.path.exists(spec.config) else None,
    }
    inputs.update({f"checkpoint {m!r}": m for m in spec.models if os.path.exists(m)})
    inputs.update({f"baseline {b!r}": b for b in spec.baselines if os.path.exists(b)})
    check_outputs({"--out": (out, "dir")}, inputs)
    check_out_dir(out, resume)
    rows = plan(spec, source)  # everything validated before any work
    costs = {}
    for row in rows:
        try:
            costs[row.index] = cost_metrics(row)
        except CrossbarInputError as exc:
            raise CrossbarInputError(f"{source}: point {row.index} ({row.label}), cost model: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        write_json(out / "configs" / f"point_{row.index:04d}.json", row.config.model_dump(mode="json"))
    write_json(out / "spec.json", spec.model_dump(mode="json"))
    journal = Journal(out / "journal.sqlite")
    try:
        return _drive(spec, rows, costs, journal, out, workers, scheduler, client, progress, log)
    finally:
        journal.close()


def _drive(
    spec, rows: list[Row], costs, journal: Journal, out: Path, workers, scheduler, client, progress, log
) -> SweepOutcome:
    done = journal.done()
    all_units = {u["key"]: u for row in rows for u in row.units}
    todo = [u for u in all_units.values() if u["key"] not in done]
    n_done0 = len(all_units) - len(todo)
    if n_done0:
        log(f"continuing: {n_done0} of {len(all_units)} unit(s) already in {out / 'journal.sqlite'}")
    last_plot = [0.0]
    # Imported before any unit runs: a Ctrl-C landing inside matplotlib's first import would leave
    # its submodules bound to a half-initialised package, and the final refresh would then crash.
    pyplot()

    def refresh(final: bool = False, plot: bool = True) -> list[dict]:
        d, f = journal.done(), journal.failed()
        summary = outputs.aggregate(spec, rows, d, f, costs)
        outputs.write_tables(out, spec, rows, summary, d)
        plots: list[Path] = []
        if plot and (final or time.time() - last_plot[0] > PLOT_INTERVAL_S):
            plots = outputs.write_plots(spec, summary, out)
            last_plot[0] = time.time()
        else:
            plots = sorted(out.glob("*.png"))
        n_fail = sum(1 for k in f if k in all_units)
        write_text(
            out / "report.md",
            outputs.report_md(spec, summary, plots, len(all_units), sum(1 for k in d if k in all_units), n_fail),
        )
        return summary

    ran = 0
    bar = tqdm(
        total=len(all_units), initial=n_done0, desc="sweep", unit="unit", disable=not progress, dynamic_ncols=True
    )

    def arrived(key: str, result: dict | None, error: str | None) -> None:
        nonlocal ran
        if result is not None:
            if journal.record(key, result):
                ran += 1
                bar.update(1)
        else:
            journal.record_failure(key, error or "unknown error")
            bar.update(1)
            tqdm.write(f"unit {key[:12]} failed: {error}")
        refresh()

    finished = False
    try:
        if todo and client is None and workers == 1 and scheduler is None and spec.cluster is None:
            for u in todo:
                try:
                    res = run_unit(u)
                except CrossbarInputError as exc:
                    arrived(u["key"], None, str(exc))
                    continue
                except Exception as exc:  # a unit's crash is recorded, the sweep goes on
                    arrived(
                        u["key"], None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                    )
                    continue
                arrived(u["key"], res, None)
        elif todo:
            _run_dask(todo, client, spec, workers, scheduler, arrived, log)
        finished = True
    finally:
        bar.close()
        # interrupted (Ctrl-C, a lost cluster): tables and report are brought up to date, plots
        # are left as the last periodic refresh drew them, so the exit stays quick
        summary = refresh(final=True, plot=finished)
    d, f = journal.done(), journal.failed()
    n_done = sum(1 for k in d if k in all_units)
    n_failed = sum(1 for k in f if k in all_units and k not in d)
    return SweepOutcome(out, len(rows), len(all_units), n_done, n_failed, ran, summary)


#: how often a unit may be lost with its worker (and recomputed) before it counts as failed
MAX_LOST = 3


def _run_dask(todo: list[dict], client, spec, workers, scheduler, arrived, log) -> None:
    from distributed import as_completed

    closers = []
    settings = None
    if client is None:
        if scheduler is None and spec.cluster is None:
            _warm_up(todo[0])  # numba kernels + feature cache, once, before the workers start
        settings = dask_settings()
        settings.__enter__()
        client, closers = _start_client(spec, workers, scheduler, log)
    try:
        # retries: a unit whose worker died mid-run can surface as an error instead of being rescheduled
        futures = {
            client.submit(run_unit, u, key=f"crossbar-unit-{u['key']}", pure=False, retries=2): u["key"] for u in todo
        }
        lost: dict[str, int] = {}
        pending = as_completed(list(futures))
        for fut in pending:
            key = futures[fut]
            if fut.status == "finished":
                try:
                    result = fut.result(timeout=600)
                except Exception:  # the result sat on a worker that died before it was fetched
                    result = None
                if result is not None:
                    arrived(key, result, None)
                    fut.release()
                    continue
            if fut.status == "error":
                exc = fut.exception()
                msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                if not isinstance(exc, CrossbarInputError):
                    msg = f"{type(exc).__name__}: {msg}"
                arrived(key, None, msg)
                fut.release()
                continue
            # lost with its worker (the scheduler recomputes it): wait for it again, a bounded number of times
            lost[key] = lost.get(key, 0) + 1
            if lost[key] > MAX_LOST:
                arrived(key, None, f"the unit's worker was lost {MAX_LOST} times")
                fut.release()
            else:
                pending.add(fut)
    finally:
        for c in closers:
            try:
                c.close()
            except Exception:  # closing a cluster that is already gone
                pass
        if settings is not None:
            settings.__exit__(None, None, None)

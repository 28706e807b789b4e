"""`crossbar sweep`: spec validation, coupled fields, journal, same numbers in-process / on a real
Dask LocalCluster (2 processes) / after a worker kill / after a driver kill and resume, failures."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import torch

from crossbar.config import load_config
from crossbar.errors import CrossbarInputError
from rnn_models.sweep import parse_spec, run_sweep
from rnn_models.sweep.journal import Journal
from rnn_models.sweep.spec import grid_changes, load_spec, resolve_points
from tests.conftest import tiny_kws_model

VOLATILE = ("seconds",)  # columns that are timings, not results


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny KWS model and tone dataset; the feature cache in a temporary folder."""
    tmp = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSBAR_CACHE", str(tmp / "cache"))
    root, _ = tiny_kws_model(tmp, per_word=6, hidden_size=16, epochs=3, lr=1e-2)
    spec = {
        "task": "kws",
        "checkpoint": str(tmp / "k.pt"),
        "data": str(root),
        "split": "all",
        "config": "rram_nladc_5b",
        "mc": 6,
        "mc_block": 2,
        "seed": 3,
        "grid": {"adc.bits": [4, 5]},
    }
    yield tmp, spec
    mp.undo()


def _rows(out):
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.fixture(scope="module")
def reference(env):
    tmp, spec = env
    outcome = run_sweep(parse_spec(spec), tmp / "ref", workers=1, progress=False)
    assert outcome.done == outcome.units == 6 and outcome.failed == 0
    return _rows(tmp / "ref")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    from rnn_models.sweep.runner import dask_settings

    with dask_settings():
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
        )
        c = Client(cluster)
        yield c
        c.close()
        cluster.close()


# ----------------------------------------------------------------------------- spec
def test_the_issue_example_spec_parses_and_expands(tmp_path):
    text = (
        '{"task": "kws", "checkpoint": "checkpoints/kws_fsdd.pt", "data": "../shared/data/fsdd",\n'
        ' "split": "dev", "config": "rram_nladc_5b", "mc": 4, "seed": 0,\n'
        ' "grid": {"adc.bits": [4, 5], "device.read_noise.sigma_rel": [0.005, 0.02]}}'
    )
    (tmp_path / "s.json").write_text(text)
    spec = load_spec(tmp_path / "s.json")
    assert spec.swept == ["adc.bits", "device.read_noise.sigma_rel"]
    assert grid_changes(spec) == [
        {"adc.bits": 4, "device.read_noise.sigma_rel": 0.005},
        {"adc.bits": 4, "device.read_noise.sigma_rel": 0.02},
        {"adc.bits": 5, "device.read_noise.sigma_rel": 0.005},
        {"adc.bits": 5, "device.read_noise.sigma_rel": 0.02},
    ]
    points = resolve_points(spec)
    assert [p[2].adc.bits for p in points] == [4, 4, 5, 5]
    # coupled field: the preset's ramp_devices = 32 = 2^5 follows the swept bits
    assert [p[2].nl_adc.ramp_devices for p in points] == [16, 16, 32, 32]
    assert points[1][2].device.read_noise.sigma_rel == 0.02


def test_zip_groups_and_baselines_expand():
    spec = parse_spec(
        {
            "task": "cost",
            "config": "rram_nladc_5b",
            "grid": {"adc.bits": [4, 8]},
            "zip": [{"nl_adc.comparator_offset_sigma": [0.01, 0.03], "nl_adc.comparator_noise_sigma": [0.002, 0.006]}],
            "baseline": "rram_conventional_adc_5b",
        }
    )
    points = resolve_points(spec)
    assert len(points) == 8 and [p[0] for p in points] == ["rram_nladc_5b"] * 4 + ["rram_conventional_adc_5b"] * 4
    assert [(p[1]["adc.bits"], p[1]["nl_adc.comparator_noise_sigma"]) for p in points[:4]] == [
        (4, 0.002),
        (4, 0.006),
        (8, 0.002),
        (8, 0.006),
    ]
    assert points[7][2].nl_adc.comparator_offset_sigma == 0.03 and points[7][2].adc.kind == "linear_ramp"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"grid": {"adc.bitz": [4]}}, "grid field 'adc.bitz' is not a hardware-config field"),
        ({"grid": {"adc.bits": [4, 99]}}, r"point 1 \(adc.bits=99\) of config 'rram_nladc_5b': adc.bits = 99"),
        ({"grid": {"device.read_noise.sigma_rel": [0.01, -1.0]}}, "point 1 .*sigma_rel = -1.0"),
        ({"grid": {"adc.bits": [4]}, "zip": [{"adc.bits": [5]}]}, "appear more than once"),
        ({"zip": [{"adc.bits": [4, 5], "dac.bits": [8]}]}, "lists of one length"),
        ({"grid": {"adc.bits": []}}, "give 1..1000 values"),
        ({"mc": 0}, "mc"),
        ({"mc": "4"}, "mc = '4'"),
        ({"colour": 1}, "colour: unknown key"),
        ({"task": "kws", "data": None}, "needs 'data'"),
        ({"baseline": ["nope_preset"]}, "baseline\\[0\\]: nope_preset: config file not found"),
        ({"metric": "speed"}, "metric 'speed'"),
    ],
)
def test_bad_specs_name_the_point_and_field(spec, message):
    base = {"task": "cost", "config": "rram_nladc_5b"}
    with pytest.raises(CrossbarInputError, match=message):
        resolve_points(parse_spec({**base, **spec}, source="s.json"), source="s.json")


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "cost", "task": "kws", "config": "ideal"}')
    with pytest.raises(CrossbarInputError, match="duplicate key 'task'"):
        load_spec(bad)
    bad.write_text('{"task": "cost", "config": "ideal", "mc": NaN}')
    with pytest.raises(CrossbarInputError, match="NaN is not valid JSON"):
        load_spec(bad)
    with pytest.raises(CrossbarInputError, match="not found"):
        load_spec(tmp_path / "missing.json")


def test_out_folder_checks(env, tmp_path):
    _, spec = env
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(CrossbarInputError, match="not a sweep folder"):
        run_sweep(parse_spec(spec), tmp_path / "busy", workers=1, progress=False)
    with pytest.raises(CrossbarInputError, match="holds no sweep journal"):
        run_sweep(parse_spec(spec), tmp_path / "new", workers=1, resume=True, progress=False)
    assert not (tmp_path / "new").exists()


def test_interrupted_sweep_keeps_tables_and_skips_the_final_plot(env, tmp_path, monkeypatch):
    """Ctrl-C in the second unit: the first is journalled, the tables list it, no plot is drawn on the
    way out (plotting is slow; CI once saw a Ctrl-C inside matplotlib's first import break it)."""
    import rnn_models.sweep.runner as runner

    _, spec = env
    calls = {"units": 0, "plots": 0}
    real_unit, real_plots = runner.run_unit, runner.outputs.write_plots

    def unit(u):
        calls["units"] += 1
        if calls["units"] == 2:
            raise KeyboardInterrupt
        return real_unit(u)

    def plots(*a, **k):
        calls["plots"] += 1
        return real_plots(*a, **k)

    monkeypatch.setattr(runner, "run_unit", unit)
    monkeypatch.setattr(runner.outputs, "write_plots", plots)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(parse_spec(spec), tmp_path / "o", workers=1, progress=False, log=lambda *_: None)
    assert calls == {"units": 2, "plots": 1}  # the periodic refresh after unit 1 only
    assert len(Journal(tmp_path / "o" / "journal.sqlite").done()) == 1
    assert (tmp_path / "o" / "results.csv").is_file() and (tmp_path / "o" / "report.md").is_file()


def test_journal_counts_a_unit_once(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    j.record_failure("a", "boom")
    assert j.failed() == {"a": "boom"}
    assert j.record("a", {"x": 1}) is True
    assert j.record("a", {"x": 2}) is False  # a duplicate run (re-executed unit) is not counted twice
    j.record_failure("a", "late failure")  # never over a finished unit
    assert j.done() == {"a": {"x": 1}} and j.failed() == {}


# ----------------------------------------------------------------------------- same numbers
def test_sweep_point_equals_crossbar_evaluate_bit_for_bit(env, reference):
    from rnn_models.tasks.kws import evaluate_kws

    tmp, spec = env
    row = reference[1]
    assert row["adc.bits"] == "5" and row["n_instances"] == "6" and row["status"] == "done"
    res = evaluate_kws(
        spec["checkpoint"],
        spec["data"],
        load_config(tmp / "ref" / "configs" / "point_0001.json"),
        6,
        split="all",
        seed=3,
    )
    assert repr(res["hardware"]["mean"]) == row["hardware_mean"]
    assert repr(res["hardware"]["std"]) == row["hardware_std"]
    assert repr(res["software"]) == row["software"]
    inst = list(csv.DictReader(io.StringIO((tmp / "ref" / "instances.csv").read_text())))
    assert [float(r["accuracy"]) for r in inst if r["point"] == "1"] == res["hardware"]["per_instance"]
    assert float(row["tops_per_w"]) > 0 and float(row["energy_per_inference_j"]) > 0
    for name in ("report.md", "pareto.png", "metric_vs_adc_bits.png", "spec.json"):
        assert (tmp / "ref" / name).stat().st_size > 100


def test_worker_killed_mid_sweep_loses_nothing_and_counts_nothing_twice(env, reference, client):
    tmp, spec = env
    out = tmp / "killed"
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(
            outcome=run_sweep(parse_spec(spec), out, client=client, progress=False, log=lambda *_: None)
        )
    )
    thread.start()
    killed = None
    deadline = time.time() + 60
    while time.time() < deadline and killed is None and thread.is_alive():
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy and (out / "journal.sqlite").is_file() and Journal(out / "journal.sqlite").done():
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.02)
    thread.join(timeout=120)
    assert killed is not None, "the sweep ended before a worker could be killed mid-unit"
    outcome = box["outcome"]
    assert outcome.done == outcome.units == 6 and outcome.failed == 0
    assert _rows(out) == reference
    db = sqlite3.connect(out / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM units WHERE status='done'").fetchone()[0] == 6


def test_a_running_scheduler_by_address(env, reference, client, tmp_path):
    """``--scheduler tcp://...``: the sweep connects to a scheduler that is already running (here
    the fixture's cluster, by its address) and gives the in-process sweep's numbers."""
    tmp, spec = env
    outcome = run_sweep(
        parse_spec(spec), tmp_path / "remote", scheduler=client.scheduler.address, progress=False, log=lambda *_: None
    )
    assert outcome.done == outcome.units == 6 and outcome.failed == 0
    assert _rows(tmp_path / "remote") == reference


def test_failing_point_is_recorded_and_the_others_finish(env, client, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the failing point is simulation.device = cuda on a machine without CUDA")
    _, spec = env
    bad = {**spec, "mc": 2, "grid": {"simulation.device": ["cpu", "cuda"]}}
    outcome = run_sweep(parse_spec(bad), tmp_path / "f", client=client, progress=False, log=lambda *_: None)
    assert outcome.done == 1 and outcome.failed == 1
    rows = _rows(tmp_path / "f")
    assert rows[0]["status"] == "done" and rows[0]["n_instances"] == "2"
    assert rows[1]["status"].startswith("failed: ") and "cuda" in rows[1]["status"] and rows[1]["hardware_mean"] == ""
    from rnn_models.cli import main

    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["sweep", str(tmp_path / "bad.json"), "--out", str(tmp_path / "f"), "--workers", "1"]) == 1


def test_driver_killed_then_resume_continues_to_the_same_results(env, reference, tmp_path):
    tmp, spec = env
    (tmp_path / "s.json").write_text(json.dumps(spec))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rnn_models.cli",
        "sweep",
        str(tmp_path / "s.json"),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if (out / "journal.sqlite").is_file():
            done = len(Journal(out / "journal.sqlite").done())
            if done >= 1:
                break
        time.sleep(0.02)
    was_running = proc.poll() is None
    proc.kill()
    proc.wait()
    recorded = len(Journal(out / "journal.sqlite").done())
    assert was_running and 1 <= recorded < 6, (was_running, recorded)
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"continuing: {recorded} of 6 unit(s)" in res.stdout
    assert f"({6 - recorded} computed now)" in res.stdout
    assert _rows(out) == reference

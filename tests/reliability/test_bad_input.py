"""Table-driven bad input over the commands and the API: each case exits 2 with one line
``error: ...`` naming the file, field or value, writes or changes no file, and ends (bounded)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from crossbar.errors import CrossbarInputError
from rnn_models.cli import main
from tests.conftest import tiny_kws_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny KWS model, its tone dataset, a tiny PTB folder and bad files, in one folder."""
    tmp = tmp_path_factory.mktemp("bad")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSBAR_CACHE", str(tmp / "cache"))
    data, _ = tiny_kws_model(tmp, per_word=3, hidden_size=8, epochs=1)
    ptb = tmp / "ptb"
    ptb.mkdir()
    (ptb / "ptb.train.txt").write_text(" the cat sat on the mat\n" * 40)
    (ptb / "ptb.valid.txt").write_text(" the mat sat on the cat\n" * 4)
    ckpt = torch.load(tmp / "k.pt", weights_only=True)
    bad = tmp / "files"
    bad.mkdir()
    (bad / "empty.pt").write_bytes(b"")
    torch.save({**ckpt, "meta": {**{k: v for k, v in ckpt["meta"].items() if k != "settings"}}}, bad / "nosettings.pt")
    torch.save({**ckpt, "meta": {**ckpt["meta"], "split_seed": "zero"}}, bad / "mistyped.pt")
    nan = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    first = next(iter(nan))
    nan[first][0] = float("nan")
    torch.save({**ckpt, "state_dict": nan}, bad / "nan.pt")
    torch.save({**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k != first}}, bad / "missing.pt")
    (bad / "str_bits.json").write_text('{"schema_version": 1, "name": "x", "adc": {"bits": "5"}}')
    (bad / "yes_bool.json").write_text('{"schema_version": 1, "name": "x", "array": {"bias_in_array": "yes"}}')
    (bad / "dup.json").write_text('{"schema_version": 1, "name": "x", "name": "y"}')
    (bad / "deep.json").write_text(
        '{"schema_version": 1, "name": "x", "device": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    (bad / "spec_typo.json").write_text(
        json.dumps(
            {
                "task": "kws",
                "checkpoint": str(tmp / "k.pt"),
                "data": str(data),
                "config": "rram_nladc_5b",
                "grid": {"adc.bitz": [4]},
            }
        )
    )
    nul = tmp / "nul"
    nul.mkdir()
    (nul / "manifest.csv").write_text("path,label\nyes/a\x00b.wav,yes\n")
    digits = tmp / "digits"  # spoken-digit labels: every clip 'unknown' for a GSC model
    digits.mkdir()
    rows = ["path,label,speaker"]
    for k in range(6):
        sf.write(digits / f"{k}.wav", 0.1 * np.sin(np.arange(8000) * 0.05 * (k + 1)).astype(np.float32), 16000)
        rows.append(f"{k}.wav,{k % 3},s{k % 2}")
    (digits / "manifest.csv").write_text("\n".join(rows) + "\n")
    onehz = tmp / "onehz"  # a WAV whose header claims 1 Hz: rejected (it would resample to 16,000x its size)
    onehz.mkdir()
    sf.write(onehz / "x.wav", np.zeros(40_000, np.float32), 16000)
    raw = bytearray((onehz / "x.wav").read_bytes())
    raw[24:28] = (1).to_bytes(4, "little")
    raw[28:32] = (2).to_bytes(4, "little")
    (onehz / "x.wav").write_bytes(bytes(raw))
    (onehz / "manifest.csv").write_text("path,label\nx.wav,yes\n")
    (tmp / "notadir").write_text("x")
    (bad / "empty.csv").write_text("")
    (bad / "binary.csv").write_bytes(b"\xff\xfe\x00\x01")
    yield tmp
    mp.undo()


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "cache" not in p.parts and not p.is_fifo():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


CASES = [  # id, argv (with {t} = the world folder), part of the one-line message
    (
        "json-is-checkpoint",
        "evaluate kws --checkpoint {t}/k.pt --data {t}/gsc --config ideal --mc 1 --json {t}/k.pt",
        "outputs never replace inputs",
    ),
    ("out-inside-data", "train kws --data {t}/gsc --out {t}/gsc/manifest.csv", "lies inside the input folder --data"),
    (
        "json-is-a-folder",
        "evaluate kws --checkpoint {t}/k.pt --data {t}/gsc --config ideal --mc 1 --json {t}/files",
        "is a folder",
    ),
    (
        "json-unwritable",
        "evaluate kws --checkpoint {t}/k.pt --data {t}/gsc --config ideal --mc 1 --json /proc/x.json",
        "is not writable",
    ),
    ("report-out-is-a-file", "report --config ideal --model paper-lm --out {t}/notadir", "is not a folder"),
    ("netlist-empty-csv", "netlist --g {t}/files/empty.csv --out {t}/n.cir", "holds no numbers"),
    ("netlist-binary-csv", "netlist --g {t}/files/binary.csv --out {t}/n.cir", "not a numeric CSV table"),
    ("sweep-out-is-a-file", "sweep {t}/files/spec_typo.json --out {t}/notadir", "is not a folder"),
    ("sweep-typo", "sweep {t}/files/spec_typo.json --out {t}/sweepout", "grid field 'adc.bitz'"),
    ("string-for-int", "validate {t}/files/str_bits.json", "adc.bits = '5': Input should be a valid integer"),
    ("string-for-bool", "validate {t}/files/yes_bool.json", "bias_in_array = 'yes': Input should be a valid boolean"),
    ("duplicate-key", "validate {t}/files/dup.json", "duplicate key 'name'"),
    ("deep-json", "validate {t}/files/deep.json", "nested too deeply"),
    (
        "empty-checkpoint",
        "evaluate kws --checkpoint {t}/files/empty.pt --data {t}/gsc --config ideal",
        "cannot be read as a crossbar checkpoint",
    ),
    (
        "text-as-checkpoint",  # torch's refusal paragraph (it suggests weights_only=False) is cut to its reason
        "evaluate kws --checkpoint {t}/files/binary.csv --data {t}/gsc --config ideal",
        "not a torch file, or it holds objects a weights-only load refuses: Unsupported operand",
    ),
    (
        "meta-missing",
        "evaluate kws --checkpoint {t}/files/nosettings.pt --data {t}/gsc --config ideal",
        "meta entry 'settings' is missing",
    ),
    (
        "meta-mistyped",
        "evaluate kws --checkpoint {t}/files/mistyped.pt --data {t}/gsc --config ideal",
        "meta entry 'split_seed' must be int",
    ),
    ("nan-weights", "evaluate kws --checkpoint {t}/files/nan.pt --data {t}/gsc --config ideal", "NaN or infinite"),
    (
        "state-dict-mismatch",
        "evaluate kws --checkpoint {t}/files/missing.pt --data {t}/gsc --config ideal",
        "Missing key(s)",
    ),
    ("nul-in-manifest", "evaluate kws --checkpoint {t}/k.pt --data {t}/nul --config ideal", "NUL byte"),
    (
        "other-task-data",
        "evaluate kws --checkpoint {t}/k.pt --data {t}/digits --config ideal --mc 1",
        "is this a dataset of another task",
    ),
    (
        "all-clips-bad",
        "evaluate kws --checkpoint {t}/k.pt --data {t}/onehz --config ideal --mc 1",
        "sample rate 1 Hz outside",
    ),
    (
        "bptt-too-long",
        "train lm --data {t}/ptb --out {t}/lm_new.pt --hidden 8 --epochs 1 --bptt 100000",
        "longer than the training data",
    ),
    ("config-before-training", "train kws --data {t}/gsc --out {t}/k_new.pt --config nope_preset", "nope_preset"),
    ("lm-config-before-training", "train lm --data {t}/ptb --out {t}/lm_new.pt --config nope_preset", "nope_preset"),
    ("missing-checkpoint", "evaluate lm --checkpoint {t}/nope.pt --data {t}/ptb --config ideal", "not found"),
    ("task-mismatch", "evaluate lm --checkpoint {t}/k.pt --data {t}/ptb --config ideal", "is for task 'kws'"),
]
if not torch.cuda.is_available():
    CASES.append(("cuda-without-cuda", "train lm --data {t}/ptb --out {t}/lm_new.pt --device cuda", "no CUDA device"))


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(world, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(world)
    before = _snapshot(world)
    assert main(argv.format(t=world).split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(("error: ", "crossbar ")), err
    assert message in err[-1], err[-1]
    assert "Traceback" not in "\n".join(err)
    assert _snapshot(world) == before  # nothing written, nothing changed


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "kws", "--data", ".", "--config", "ideal", "--mc", "100000000"],
            "--mc: 100000000 must be in 1..10000",
        ),
        (["adc", "--config", "ideal", "--columns", "10000000"], "--columns: 10000000 must be in 1..4096"),
        (["train", "lm", "--data", ".", "--out", "x.pt", "--hidden", "10000000"], "--hidden: 10000000 must be in"),
        (["sweep", "s.json", "--out", "o", "--workers", "0"], "--workers: 0 must be in 1..4096"),
    ],
    ids=["mc", "columns", "hidden", "workers"],
)
def test_unbounded_work_is_refused_by_the_argument_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_rejected_clips_are_listed_not_dropped_silently(world, capsys, monkeypatch):
    import shutil

    mixed = world / "mixed"
    if not mixed.exists():
        shutil.copytree(world / "gsc", mixed)
    out = world / "mixed.json"
    assert (
        main(
            [
                "evaluate",
                "kws",
                "--checkpoint",
                str(world / "k.pt"),
                "--data",
                str(mixed),
                "--config",
                "ideal",
                "--mc",
                "1",
                "--split",
                "all",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: 2 clip(s)" in err and "rejected and not scored" in err
    rejected = json.loads(out.read_text())["rejected_clips"]
    assert len(rejected) == 2 and any("unreadable" in m for m in rejected.values())


def test_fifo_config_does_not_block(world, tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    res = subprocess.run(
        [sys.executable, "-m", "rnn_models.cli", "validate", str(fifo)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and res.stderr.strip() == f"error: {fifo}: not a regular file (a config is a JSON file)"


@pytest.mark.parametrize("delay_s", [0.2, 0.5, 1.5])  # before, during and after the first unit's refresh
def test_ctrl_c_prints_one_line(world, tmp_path, delay_s):
    spec = tmp_path / "s.json"
    spec.write_text(
        json.dumps(
            {
                "task": "kws",
                "checkpoint": str(world / "k.pt"),
                "data": str(world / "gsc"),
                "config": "rram_nladc_5b",
                "mc": 40,
                "mc_block": 1,
            }
        )
    )
    env = dict(os.environ, CROSSBAR_CACHE=str(world / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnn_models.cli", "sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "o" / "journal.sqlite").is_file():
        time.sleep(0.05)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.strip() and "sweep:" not in line]
    assert "Traceback" not in err and lines[-1].startswith("interrupted"), err


_SWALLOWED_CTRL_C = """
import sys, time
from rnn_models.ctrl_c import redeliver_swallowed_sigint

class RaisesInDel:  # CPython cannot propagate from __del__: the exception goes to unraisablehook
    def __del__(self):
        raise KeyboardInterrupt

with redeliver_swallowed_sigint():
    try:
        for _ in range(int(sys.argv[1])):  # swallowed once, and again in each redelivery's way
            obj = RaisesInDel()
            del obj
            time.sleep(0.3)
        time.sleep(20)  # a blocking system call: the redelivered SIGINT must wake it
        print("lost")
    except KeyboardInterrupt:
        print("interrupted")
"""


@pytest.mark.parametrize("swallows", [1, 3])
def test_a_ctrl_c_swallowed_by_c_code_is_delivered_again(tmp_path, swallows):
    """The Ctrl-C test above failed now and then when SIGINT landed inside numba's compiler (a
    callback from C): that KeyboardInterrupt goes to sys.unraisablehook. Raised in __del__, the
    same happens every time; the command must still end interrupted, without a traceback."""
    script = tmp_path / "swallow.py"
    script.write_text(_SWALLOWED_CTRL_C)
    res = subprocess.run(
        [sys.executable, str(script), str(swallows)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job ignores SIGINT
    )
    assert res.stdout.strip() == "interrupted" and res.stderr == "", (res.stdout, res.stderr)


def test_the_cli_leaves_the_callers_unraisable_hook_as_it_was(capsys):
    """main() installs its Ctrl-C hook and handler for the command only (a Python caller keeps its own)."""
    before, handler = sys.unraisablehook, signal.getsignal(signal.SIGINT)
    assert main(["validate", "rram_nladc_5b"]) == 0
    assert sys.unraisablehook is before
    assert main(["validate", "no-such-preset"]) == 2  # an error ends the command the same way
    assert sys.unraisablehook is before
    assert signal.getsignal(signal.SIGINT) is handler
    capsys.readouterr()


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m: __import__("rnn_models.convert", fromlist=["x"]).program(m, 0, 0),
            "instances must be an integer >= 1",
        ),
        (lambda m: __import__("rnn_models.convert", fromlist=["x"]).program(m, -3, 1), "seed must be an integer >= 0"),
        (
            lambda m: m(torch.zeros(3, 2, 4), (torch.zeros(1, 3, 8), torch.zeros(1, 3, 8))),
            "initial state must have shape",
        ),
    ],
    ids=["instances-0", "negative-seed", "bad-initial-state"],
)
def test_api_misuse_is_one_clear_error(call, message):
    from rnn_models.convert import convert_to_analog

    model = convert_to_analog(torch.nn.LSTM(4, 8), "ideal").eval()
    with pytest.raises(CrossbarInputError, match=message):
        call(model)


def test_convert_to_analog_takes_a_dict_and_refuses_other_types():
    from rnn_models.convert import convert_to_analog

    ana = convert_to_analog(torch.nn.Linear(3, 2), {"schema_version": 1, "name": "from_dict"})
    assert ana.hw.name == "from_dict"
    with pytest.raises(CrossbarInputError, match="got int"):
        convert_to_analog(torch.nn.Linear(3, 2), 5)


def test_a_warning_is_one_line_and_the_display_is_restored(capsys, monkeypatch):
    """A warning during a command prints as one line (category and text, no library source line);
    after the command, warnings display as before (in-process callers keep theirs)."""
    import warnings

    from rnn_models import cli
    from rnn_models.health import HealthWarning

    def warn(args):
        warnings.warn("lstm/_l0: something to look at", HealthWarning, stacklevel=2)
        return 0

    before = warnings.showwarning
    monkeypatch.setattr(cli, "_run_command", lambda args: warn(args))
    assert main(["schema"]) == 0
    assert capsys.readouterr().err == "warning: HealthWarning: lstm/_l0: something to look at\n"
    assert warnings.showwarning is before

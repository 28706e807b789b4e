"""Keyword spotting: loaders on a generated GSC-layout folder with bad files, cache, training, evaluate JSON."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from crossbar.errors import CrossbarInputError
from rnn_models.data import speech
from tests.conftest import shared_data


def _tone(freq, rate=16000, seconds=1.0, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _gsc_folder(root, per_word=6):
    """Words as tones of different pitch, 3 speakers, GSC naming, plus bad files."""
    words = {"yes": 300, "no": 600, "up": 900, "cat": 1200}
    for w, f in words.items():
        (root / w).mkdir(parents=True)
        for k in range(per_word):
            spk = ["aaaaaaaa", "bbbbbbbb", "cccccccc"][k % 3]
            sf.write(root / w / f"{spk}_nohash_{k}.wav", _tone(f * (1 + 0.02 * k), seed=k), 16000)
    (root / "_silence_").mkdir()
    for k in range(4):
        sf.write(root / "_silence_" / f"{k}.wav", 0.01 * np.random.default_rng(k).standard_normal(16000).astype(np.float32), 16000)
    sf.write(root / "yes" / "dddddddd_nohash_0.wav", _tone(300, rate=8000), 8000)   # wrong rate: resampled
    (root / "no" / "eeeeeeee_nohash_0.wav").write_bytes(b"RIFF\x00\x00garbage")     # corrupt: rejected
    sf.write(root / "up" / "ffffffff_nohash_0.wav", np.zeros(10, np.float32), 16000)  # too short: rejected
    return root


def test_scan_labels_speakers_and_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSBAR_CACHE", str(tmp_path / "cache"))
    root = _gsc_folder(tmp_path / "gsc")
    clips = speech.scan(root, "gsc12")
    labels = {c.label for c in clips}
    assert labels == {"yes", "no", "up", speech.UNKNOWN, speech.SILENCE}
    assert {c.speaker for c in clips if c.label == "yes"} >= {"aaaaaaaa", "bbbbbbbb", "dddddddd"}
    s = speech.load_set(clips, "gsc12")
    assert s.report["resampled"] == 1
    rejected = s.report["rejected"]
    assert len(rejected) == 2
    assert any("unreadable" in m for m in rejected.values()) and any("too short" in m for m in rejected.values())
    assert s.features.shape[1:] == (101, 40) and len(s.labels) == len(clips) - 2
    again = speech.load_set(clips, "gsc12")
    assert again.cache_hit and torch.equal(again.features, s.features)


def test_speaker_disjoint_split_and_official_lists(tmp_path):
    root = _gsc_folder(tmp_path / "gsc")
    clips = speech.scan(root, "gsc12")
    train, dev, dev_speakers = speech.speaker_split(clips, 0.34, seed=1)
    assert dev_speakers and not ({c.speaker for c in train if c.speaker} & set(dev_speakers))
    assert {c.speaker for c in dev if c.speaker} == set(dev_speakers)
    (root / "testing_list.txt").write_text("yes/aaaaaaaa_nohash_0.wav\n")
    test = speech.select_split(speech.scan(root, "gsc12"), "test")
    assert [c.path.name for c in test] == ["aaaaaaaa_nohash_0.wav"]


def test_bad_folders_are_clear(tmp_path):
    with pytest.raises(CrossbarInputError, match="does not exist"):
        speech.scan(tmp_path / "nope", "gsc12")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrossbarInputError, match="no .wav clips"):
        speech.scan(tmp_path / "empty", "gsc12")
    m = tmp_path / "m"
    m.mkdir()
    (m / "manifest.csv").write_text("path,label\n../../etc/passwd,yes\n")
    with pytest.raises(CrossbarInputError, match="outside the dataset folder"):
        speech.scan(m, "gsc12")
    with pytest.raises(CrossbarInputError, match="unknown speech task"):
        speech.scan(m, "timit")


def test_mel_filterbank_properties():
    fb = speech.mel_filterbank(speech.FeatureSettings())
    assert fb.shape == (40, 257) and torch.all(fb >= 0)
    peaks = fb.argmax(1)
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres increase


@pytest.fixture(scope="module")
def tiny_kws(tmp_path_factory):
    """A tiny KWS model trained (float + 1 HWA epoch) on a generated tone dataset."""
    from rnn_models.tasks.kws import train_kws

    tmp = tmp_path_factory.mktemp("kws")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSBAR_CACHE", str(tmp / "cache"))
    root = _gsc_folder(tmp / "gsc", per_word=9)
    logs = []
    meta = train_kws(root, tmp / "k.pt", hidden_size=16, epochs=6, hwa_epochs=1, config="rram_nladc_5b",
                     batch=8, lr=1e-2, dev_fraction=0.34, log=logs.append)
    yield tmp, root, meta, logs
    mp.undo()


def test_short_training_lowers_loss(tiny_kws):
    _, _, meta, logs = tiny_kws
    losses = [float(l.split("train loss ")[1].split(",")[0]) for l in logs if "float epoch" in l]
    assert losses[-1] < losses[0]
    assert meta["hwa_config"] == "rram_nladc_5b" and meta["dev_speakers"]


def test_evaluate_json_schema(tiny_kws):
    from crossbar.cli import main

    tmp, root, _, _ = tiny_kws
    out = tmp / "r.json"
    assert main(["evaluate", "kws", "--checkpoint", str(tmp / "k.pt"), "--data", str(root), "--config",
                 "rram_nladc_5b", "--mc", "2", "--json", str(out), "--split", "dev"]) == 0
    r = json.loads(out.read_text())
    assert set(r) == {"task", "metric", "n_samples", "software", "hardware", "config", "checkpoint"}
    assert r["task"] == "kws" and r["metric"] == "accuracy" and len(r["hardware"]["per_instance"]) == 2
    assert set(r["hardware"]) == {"mean", "std", "per_instance"} and 0 <= r["hardware"]["mean"] <= 1


def test_evaluate_sweep_writes_table_plot_and_json(tiny_kws):
    from crossbar.cli import main

    tmp, root, _, _ = tiny_kws
    out = tmp / "sweep.json"
    assert main(["evaluate", "kws", "--checkpoint", str(tmp / "k.pt"), "--data", str(root), "--config",
                 "rram_nladc_5b", "--mc", "2", "--split", "dev", "--sweep", "bits=3,5", "--json", str(out),
                 "--out", str(tmp / "sw")]) == 0
    sweep = json.loads(out.read_text())["sweep"]
    assert [r["config"] for r in sweep] == ["rram_nladc_5b (3 bit)", "rram_nladc_5b (5 bit)", "rram_conventional_adc_5b"]
    assert (tmp / "sw" / "sweep_kws.png").stat().st_size > 1000 and (tmp / "sw" / "sweep_kws.md").exists()
    assert main(["evaluate", "kws", "--checkpoint", str(tmp / "k.pt"), "--data", str(root), "--config",
                 "rram_nladc_5b", "--sweep", "bits=3,99"]) == 2
    assert main(["evaluate", "kws", "--checkpoint", str(tmp / "missing.pt"), "--data", str(root), "--config",
                 "rram_nladc_5b"]) == 2


def test_shared_fsdd_manifest_reads():
    root = shared_data("fsdd")
    clips = speech.scan(root, "fsdd")
    assert len(clips) == 2000 and {c.label for c in clips} == {str(d) for d in range(10)}
    assert len({c.speaker for c in clips}) == 4


def test_interrupted_sweep_resumes_to_the_same_result(tiny_kws, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from rnn_models.evaluate import ResultStore

    tmp, root, _, _ = tiny_kws
    env = dict(os.environ, CROSSBAR_CACHE=str(tmp / "cache"))

    def cmd(out, *extra):  # 48 instances: each unit takes long enough (~1 s) to be interrupted after the first,
        # also on a busy machine
        return [sys.executable, "-m", "crossbar.cli", "evaluate", "kws", "--checkpoint", str(tmp / "k.pt"),
                "--data", str(root), "--config", "rram_nladc_5b", "--mc", "48", "--split", "dev",
                "--sweep", "bits=3,4,5,8", "--out", str(out), "--json", str(out / "r.json"), "--threads", "1", *extra]

    full = subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    part = tmp_path / "part"
    # a shell without job control starts background jobs with SIGINT ignored, and Python then never
    # raises KeyboardInterrupt: give the child the default disposition, as an interactive Ctrl-C has
    proc = subprocess.Popen(cmd(part), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store_file = part / "sweep_kws.h5"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store_file.is_file() and len(ResultStore(store_file, resume=True).units) >= 1:
            break
        time.sleep(0.01)
    interrupted = proc.poll() is None
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    done = ResultStore(store_file, resume=True).units  # a valid file after the interruption
    assert interrupted and 1 <= len(done) < 5, (interrupted, len(done))  # stopped mid-sweep
    res = subprocess.run(cmd(part, "--resume"), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(done)} finished unit(s)" in res.stdout
    assert json.loads((part / "r.json").read_text()) == json.loads((tmp_path / "full" / "r.json").read_text())


def test_resume_refuses_a_store_from_another_evaluation(tmp_path):
    from crossbar.config import load_config
    from rnn_models.evaluate import ResultStore

    cfg = load_config("rram_nladc_5b")
    store = ResultStore(tmp_path / "s.h5", context={"checkpoint": "a.pt", "mc": 2})
    store.add(cfg, {"hardware": {"mean": 0.5}})
    again = ResultStore(tmp_path / "s.h5", resume=True, context={"checkpoint": "a.pt", "mc": 2})
    assert again.get(cfg) == {"hardware": {"mean": 0.5}}
    with pytest.raises(CrossbarInputError, match="written for another evaluation"):
        ResultStore(tmp_path / "s.h5", resume=True, context={"checkpoint": "b.pt", "mc": 2})

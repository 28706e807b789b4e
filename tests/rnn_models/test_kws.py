"""Keyword spotting: loaders on a generated GSC-layout folder with bad files, cache, training, evaluate JSON."""

import json

import pytest
import torch

from crossbar.errors import CrossbarInputError
from rnn_models.data import speech
from tests.conftest import EVALUATE_RESULT_KEYS, shared_data
from tests.conftest import gsc_folder as _gsc_folder


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
    meta = train_kws(
        root,
        tmp / "k.pt",
        hidden_size=16,
        epochs=6,
        hwa_epochs=1,
        config="rram_nladc_5b",
        batch=8,
        lr=1e-2,
        dev_fraction=0.34,
        log=logs.append,
    )
    yield tmp, root, meta, logs
    mp.undo()


def test_short_training_lowers_loss(tiny_kws):
    _, _, meta, logs = tiny_kws
    losses = [float(line.split("train loss ")[1].split(",")[0]) for line in logs if "float epoch" in line]
    assert losses[-1] < losses[0]
    assert meta["hwa_config"] == "rram_nladc_5b" and meta["dev_speakers"]


def test_evaluate_json_schema(tiny_kws):
    from rnn_models.cli import main

    tmp, root, _, _ = tiny_kws
    out = tmp / "r.json"
    assert (
        main(
            [
                "evaluate",
                "kws",
                "--checkpoint",
                str(tmp / "k.pt"),
                "--data",
                str(root),
                "--config",
                "rram_nladc_5b",
                "--mc",
                "2",
                "--json",
                str(out),
                "--split",
                "dev",
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert set(r) == EVALUATE_RESULT_KEYS | {"rejected_clips"}
    assert isinstance(r["rejected_clips"], dict)  # (the dev speakers of the generated folder have no bad clip)
    assert r["deployment"] == {"digital_layers": [], "from": "checkpoint"}
    assert r["task"] == "kws" and r["metric"] == "accuracy" and len(r["hardware"]["per_instance"]) == 2
    assert set(r["hardware"]) == {"mean", "std", "per_instance"}
    per = r["hardware"]["per_instance"]
    assert r["hardware"]["mean"] == sum(per) / 2 and all(
        round(v * r["n_samples"]) == pytest.approx(v * r["n_samples"], abs=1e-4) for v in per
    )


def test_evaluate_sweep_is_a_sweep_of_adc_bits_with_the_baseline(tiny_kws):
    from rnn_models.cli import main

    tmp, root, _, _ = tiny_kws
    out = tmp / "sweep.json"
    assert (
        main(
            [
                "evaluate",
                "kws",
                "--checkpoint",
                str(tmp / "k.pt"),
                "--data",
                str(root),
                "--config",
                "rram_nladc_5b",
                "--mc",
                "2",
                "--split",
                "dev",
                "--sweep",
                "bits=3,5",
                "--json",
                str(out),
                "--out",
                str(tmp / "sw"),
            ]
        )
        == 0
    )
    sweep = json.loads(out.read_text())["sweep"]
    assert [(r["config"], r["adc.bits"]) for r in sweep] == [
        ("rram_nladc_5b", 3),
        ("rram_nladc_5b", 5),
        ("rram_conventional_adc_5b", 3),
        ("rram_conventional_adc_5b", 5),
    ]
    assert [r["n_instances"] for r in sweep] == [2, 2, 2, 2]
    assert (tmp / "sw" / "metric_vs_adc_bits.png").stat().st_size > 1000 and (tmp / "sw" / "results.csv").exists()
    assert (
        main(
            [
                "evaluate",
                "kws",
                "--checkpoint",
                str(tmp / "k.pt"),
                "--data",
                str(root),
                "--config",
                "rram_nladc_5b",
                "--sweep",
                "bits=3,99",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "evaluate",
                "kws",
                "--checkpoint",
                str(tmp / "missing.pt"),
                "--data",
                str(root),
                "--config",
                "rram_nladc_5b",
            ]
        )
        == 2
    )


def test_shared_fsdd_manifest_reads():
    root = shared_data("fsdd")
    clips = speech.scan(root, "fsdd")
    assert len(clips) == 2000 and {c.label for c in clips} == {str(d) for d in range(10)}
    assert len({c.speaker for c in clips}) == 4


def test_a_manifest_path_must_stay_inside_the_dataset_folder(tmp_path):
    """A manifest row that leaves the dataset folder -- by "..", through a symlink, or naming the
    folder itself -- is one clear error; paths inside it (also through a symlink inside) are read."""
    data, outside = tmp_path / "data", tmp_path / "outside.wav"
    (data / "yes").mkdir(parents=True)
    (data / "yes" / "a.wav").write_bytes(b"")
    outside.write_bytes(b"")
    (data / "link_out.wav").symlink_to(outside)
    (data / "link_in.wav").symlink_to(data / "yes" / "a.wav")
    manifest = data / "manifest.csv"
    manifest.write_text("path,label\nyes/a.wav,yes\nlink_in.wav,yes\n")
    assert [c.path.name for c in speech.scan(data, "gsc12")] == ["a.wav", "a.wav"]
    for bad in ("../outside.wav", "link_out.wav", ".", "yes/../.."):
        manifest.write_text(f"path,label\nyes/a.wav,yes\n{bad},yes\n")
        with pytest.raises(CrossbarInputError, match="line 3: .* points outside the dataset folder"):
            speech.scan(data, "gsc12")


def test_instances_sharing_their_clips_get_the_logits_of_copies():
    # an expanded input is normalised once; the analog model's output equals that of real copies
    from rnn_models.convert import calibrate, convert_to_analog, program
    from rnn_models.tasks.kws import KWSLSTM

    torch.manual_seed(0)
    model = KWSLSTM(n_mels=8, hidden_size=12, classes=3).eval()
    feats = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(1))
    ana = convert_to_analog(model, "rram_nladc_5b").eval()
    calibrate(ana, [feats])
    with torch.no_grad():  # (programmed afresh for each: every forward is a new read of the chip)
        program(ana, 0, 3)
        shared = ana(feats.expand(3, *feats.shape))
        program(ana, 0, 3)
        copies = ana(feats.expand(3, *feats.shape).contiguous())
    assert shared.shape == (3, 4, 3)
    assert torch.equal(shared, copies)

"""Shared test options: ``--run-slow`` enables tests marked ``slow``."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
#: the entries every task evaluation's result has (rnn_models.evaluate.result and the tasks' own)
EVALUATE_RESULT_KEYS = frozenset(
    {"task", "metric", "n_samples", "software", "hardware", "config", "checkpoint", "deployment", "health"}
)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_data(name: str) -> Path:
    """Path to a folder of ../shared/data, or skip the test with a clear message."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"dataset {path} not present (tests that need ../shared/data are skipped)")
    return path


def tone(freq, rate=16000, seconds=1.0, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def gsc_folder(root, per_word=6):
    """A generated GSC-layout folder (for KWS tests).

    Words as tones of different pitch, 3 speakers, GSC naming, plus bad files."""
    import soundfile as sf

    words = {"yes": 300, "no": 600, "up": 900, "cat": 1200}
    for w, f in words.items():
        (root / w).mkdir(parents=True)
        for k in range(per_word):
            spk = ["aaaaaaaa", "bbbbbbbb", "cccccccc"][k % 3]
            sf.write(root / w / f"{spk}_nohash_{k}.wav", tone(f * (1 + 0.02 * k), seed=k), 16000)
    (root / "_silence_").mkdir()
    for k in range(4):
        sf.write(
            root / "_silence_" / f"{k}.wav",
            0.01 * np.random.default_rng(k).standard_normal(16000).astype(np.float32),
            16000,
        )
    sf.write(root / "yes" / "dddddddd_nohash_0.wav", tone(300, rate=8000), 8000)  # wrong rate: resampled
    (root / "no" / "eeeeeeee_nohash_0.wav").write_bytes(b"RIFF\x00\x00garbage")  # corrupt: rejected
    sf.write(root / "up" / "ffffffff_nohash_0.wav", np.zeros(10, np.float32), 16000)  # too short: rejected
    return root


def tiny_kws_model(tmp: Path, per_word: int = 6, hidden_size: int = 16, epochs: int = 3, **train) -> tuple[Path, Path]:
    """A tone dataset (``tmp/gsc``, :func:`gsc_folder`) and a small KWS model trained on it
    (``tmp/k.pt``, float training only unless ``train`` says otherwise); returns (data, checkpoint).
    The caller points ``CROSSBAR_CACHE`` at a temporary folder first."""
    from rnn_models.tasks.kws import train_kws

    data = gsc_folder(tmp / "gsc", per_word=per_word)
    settings = {"hwa_epochs": 0, "batch": 8, "dev_fraction": 0.34, "log": lambda *_: None, **train}
    train_kws(data, tmp / "k.pt", hidden_size=hidden_size, epochs=epochs, **settings)
    return data, tmp / "k.pt"

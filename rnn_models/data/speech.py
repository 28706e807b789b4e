"""Speech datasets for keyword spotting: scanning, audio loading, log-mel features, cache, splits.

Layouts read (a folder the user downloaded; nothing is ever fetched):

* **manifest**: a ``manifest.csv`` with columns ``path`` (relative to the folder), a label column
  (``label``, ``word`` or ``digit``) and optionally ``speaker`` -- ``../shared/data/*``;
* **GSC**: one sub-folder per word, speaker id = the part of the file name before ``_nohash_``,
  optional ``validation_list.txt`` / ``testing_list.txt`` (official splits) and
  ``_background_noise_/`` (long noise recordings, cut into 1 s "silence" clips).

Tasks: ``gsc12`` maps words to 12 classes (the 10 keywords, ``_unknown_`` for any other word,
``_silence_``); ``fsdd`` has the 10 digits.

Audio (ours): mono (channels averaged), resampled to 16 kHz with a polyphase filter when the file
has another rate, and cut to the 1 s window of highest energy (shorter clips are zero-padded at
the end).  Unreadable or empty files are rejected and listed -- never silently dropped.
Features: log-mel, 40 bands (Slaney mel scale, 20 Hz - 8 kHz; 20 Hz - 4 kHz for FSDD, which is
recorded at 8 kHz: bands above its Nyquist frequency would hold only resampling residue), 25 ms
Hann window, 10 ms hop, log(mel power + 1e-6): (101 frames, 40) per 1 s clip, with ``torch.stft``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crossbar.errors import CrossbarInputError

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SILENCE, UNKNOWN = "_silence_", "_unknown_"
TASK_CLASSES = {"gsc12": [SILENCE, UNKNOWN] + KEYWORDS, "fsdd": [str(d) for d in range(10)]}
SAMPLE_RATE = 16000
_LABEL_COLUMNS = ("label", "word", "digit")


@dataclass(frozen=True)
class FeatureSettings:
    """Log-mel settings (they key the feature cache)."""

    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = 1.0
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    f_min: float = 20.0
    f_max: float = 8000.0

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


def task_settings(task: str) -> FeatureSettings:
    """Feature settings of a task (FSDD: mel bands up to its 4 kHz Nyquist frequency)."""
    return FeatureSettings(f_max=4000.0) if task == "fsdd" else FeatureSettings()


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str  # class name of the task
    speaker: str | None
    official_split: str | None  # "train" / "validation" / "test" from GSC list files


# ------------------------------------------------------------------------------------ scanning
def _map_label(word: str, task: str) -> str:
    if task == "gsc12":
        if word == SILENCE:
            return SILENCE
        return word if word in KEYWORDS else UNKNOWN
    if task == "fsdd":
        if word not in TASK_CLASSES["fsdd"]:
            raise CrossbarInputError(f"FSDD label {word!r} is not a digit 0-9")
        return word
    raise CrossbarInputError(f"unknown speech task {task!r}; known: {', '.join(TASK_CLASSES)}")


_SPEAKER_RE = re.compile(r"(?:^|_)([0-9a-f]{8})_nohash_")


def _speaker_from_name(name: str) -> str | None:
    m = _SPEAKER_RE.search(name)
    return m.group(1) if m else None


def scan(root: str | Path, task: str) -> list[Clip]:
    """All clips of a dataset folder (manifest or GSC layout), labels mapped to ``task``'s classes."""
    root = Path(root)
    if task not in TASK_CLASSES:
        raise CrossbarInputError(f"unknown speech task {task!r}; known: {', '.join(TASK_CLASSES)}")
    if not root.is_dir():
        raise CrossbarInputError(f"dataset folder {str(root)!r} does not exist or is not a folder")
    manifest = root / "manifest.csv"
    clips = _scan_manifest(root, manifest, task) if manifest.is_file() else _scan_folders(root, task)
    if not clips:
        raise CrossbarInputError(
            f"dataset folder {str(root)!r} holds no .wav clips (expected a manifest.csv or "
            "one sub-folder of .wav files per word)"
        )
    return clips


def _scan_manifest(root: Path, manifest: Path, task: str) -> list[Clip]:
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CrossbarInputError(f"{manifest}: cannot read as CSV ({exc})") from None
    if not rows:
        raise CrossbarInputError(f"{manifest}: no rows")
    cols = rows[0].keys()
    label_col = next((c for c in _LABEL_COLUMNS if c in cols), None)
    if "path" not in cols or label_col is None:
        raise CrossbarInputError(f"{manifest}: needs a 'path' column and one of {_LABEL_COLUMNS}; has {list(cols)}")
    clips = []
    root_real = root.resolve()  # once: each row's check below compares with it
    for i, row in enumerate(rows, start=2):
        rel = row["path"]
        if rel is None or "\x00" in rel or not rel.strip():
            raise CrossbarInputError(f"{manifest}: line {i}: path {rel!r} is empty or holds a NUL byte")
        try:
            path = (root / rel).resolve()
        except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
            raise CrossbarInputError(f"{manifest}: line {i}: path {rel!r} cannot be resolved ({exc})") from None
        if path == root_real or not path.is_relative_to(root_real):
            raise CrossbarInputError(f"{manifest}: line {i}: path {rel!r} points outside the dataset folder")
        clips.append(Clip(path, _map_label(row[label_col], task), row.get("speaker") or None, None))
    return clips


def _scan_folders(root: Path, task: str) -> list[Clip]:
    lists = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        f = root / name
        if f.is_file():
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    lists[line.strip()] = split
    has_lists = bool(lists)
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "_background_noise_"):
        for wav in sorted(f for f in folder.glob("*.wav") if not f.is_symlink() or f.is_file()):
            rel = f"{folder.name}/{wav.name}"
            clip_split = lists.get(rel, "train") if has_lists else None
            clips.append(Clip(wav, _map_label(folder.name, task), _speaker_from_name(wav.name), clip_split))
    return clips


def background_noise_files(root: str | Path) -> list[Path]:
    folder = Path(root) / "_background_noise_"
    return sorted(folder.glob("*.wav")) if folder.is_dir() else []


# ------------------------------------------------------------------------------------ splits
def speaker_split(
    clips: list[Clip], dev_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Clip], list[Clip], list[str]]:
    """Speaker-disjoint (train, dev, dev_speakers); clips without a speaker are split at random."""
    if not 0 < dev_fraction < 1:
        raise CrossbarInputError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    rng = np.random.default_rng(seed)
    speakers = sorted({c.speaker for c in clips if c.speaker})
    n_dev = max(1, int(round(len(speakers) * dev_fraction))) if len(speakers) > 1 else 0
    dev_speakers = sorted(rng.permutation(speakers)[:n_dev].tolist()) if n_dev else []
    no_speaker = [i for i, c in enumerate(clips) if not c.speaker]
    order = rng.permutation(len(no_speaker))[: int(round(len(no_speaker) * dev_fraction))]
    dev_idx = {no_speaker[k] for k in order.tolist()}
    dev_set = set(dev_speakers)
    is_dev = [(c.speaker in dev_set) if c.speaker else (i in dev_idx) for i, c in enumerate(clips)]
    train = [c for c, d in zip(clips, is_dev) if not d]
    dev = [c for c, d in zip(clips, is_dev) if d]
    return train, dev, dev_speakers


def select_split(clips: list[Clip], split: str, dev_fraction: float = 0.2, seed: int = 0) -> list[Clip]:
    """``all``; ``train`` / ``dev`` / ``test`` from GSC's list files when the folder has them,
    else ``train`` / ``dev`` speaker-disjoint (:func:`speaker_split` with ``dev_fraction``, ``seed``)."""
    if split == "all":
        return clips
    if split not in ("train", "dev", "test"):
        raise CrossbarInputError(f"unknown split {split!r}; use all, train, dev or test")
    if any(c.official_split for c in clips):
        name = {"dev": "validation", "train": "train", "test": "test"}[split]
        return [c for c in clips if c.official_split == name]
    if split == "test":
        raise CrossbarInputError("the folder has no testing_list.txt: use --split all, train or dev")
    train, dev, _ = speaker_split(clips, dev_fraction, seed)
    return dev if split == "dev" else train


# ------------------------------------------------------------------------------------ audio
def _best_window(x: np.ndarray, length: int) -> np.ndarray:
    """The ``length``-sample window of highest energy (zero-padded at the end if shorter)."""
    if x.size <= length:
        return np.pad(x, (0, length - x.size))
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(length), mode="valid")
    start = int(np.argmax(energy))
    return x[start : start + length]


#: bounds on what a clip may claim (they keep resampling and memory finite)
MIN_RATE_HZ, MAX_RATE_HZ, MAX_SECONDS = 1000, 768_000, 600


def load_audio(path: Path, settings: FeatureSettings) -> tuple[np.ndarray, str | None]:
    """(float32 waveform of ``clip_samples`` at the target rate, note) -- note says what was done."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        info = sf.info(str(path))
        if not MIN_RATE_HZ <= info.samplerate <= MAX_RATE_HZ:
            raise CrossbarInputError(
                f"{path}: sample rate {info.samplerate} Hz outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz"
            )
        if info.frames > MAX_SECONDS * info.samplerate:
            raise CrossbarInputError(
                f"{path}: {info.frames / info.samplerate:.0f} s of audio; clips are at most {MAX_SECONDS} s"
            )
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except CrossbarInputError:
        raise
    except Exception as exc:  # soundfile raises several types for corrupt / truncated / missing files
        raise CrossbarInputError(f"{path}: unreadable audio ({type(exc).__name__}: {str(exc)[:120]})") from None
    x = data.mean(1)
    if x.size == 0:
        raise CrossbarInputError(f"{path}: empty audio file")
    note = None
    if sr != settings.sample_rate:
        g = math.gcd(int(sr), settings.sample_rate)
        x = resample_poly(x, settings.sample_rate // g, int(sr) // g).astype(np.float32)
        note = f"resampled from {sr} Hz"
    if x.size < settings.clip_samples // 10:
        raise CrossbarInputError(
            f"{path}: too short ({x.size} samples after resampling; need >= {settings.clip_samples // 10})"
        )
    return _best_window(x, settings.clip_samples), note


def load_clips(clips: list[Clip], settings: FeatureSettings) -> tuple[np.ndarray, list[int], dict]:
    """Waveforms (N_ok, samples) of the readable clips, their indices, and a report of what was
    resampled or rejected (by file)."""
    waves, keep, rejected, resampled = [], [], {}, 0
    for i, clip in enumerate(clips):
        try:
            w, note = load_audio(clip.path, settings)
        except CrossbarInputError as exc:
            rejected[str(clip.path)] = str(exc)
            continue
        resampled += note is not None
        waves.append(w)
        keep.append(i)
    if not waves:
        raise CrossbarInputError(
            f"none of the {len(clips)} audio files could be read; first error: {next(iter(rejected.values()), '')}"
        )
    return np.stack(waves), keep, {"rejected": rejected, "resampled": resampled}


# ------------------------------------------------------------------------------------ features
def mel_filterbank(settings: FeatureSettings) -> torch.Tensor:
    """(n_mels, n_fft/2+1) triangular filters on the Slaney mel scale, area-normalised."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    n_freq = settings.n_fft // 2 + 1
    freqs = np.linspace(0, settings.sample_rate / 2, n_freq)
    edges = mel_to_hz(np.linspace(hz_to_mel(settings.f_min), hz_to_mel(settings.f_max), settings.n_mels + 2))
    fb = np.zeros((settings.n_mels, n_freq))
    for i in range(settings.n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[i] = np.maximum(0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return torch.tensor(fb, dtype=torch.float32)


def log_mel(waves: torch.Tensor, settings: FeatureSettings, fb: torch.Tensor | None = None) -> torch.Tensor:
    """(N, samples) float waveforms -> (N, frames, n_mels) log-mel features."""
    win = int(round(settings.sample_rate * settings.win_ms / 1000))
    hop = int(round(settings.sample_rate * settings.hop_ms / 1000))
    window = torch.hann_window(win, device=waves.device)
    spec = (
        torch.stft(
            waves, settings.n_fft, hop_length=hop, win_length=win, window=window, center=True, return_complex=True
        )
        .abs()
        .pow(2)
    )
    fb = mel_filterbank(settings).to(waves.device) if fb is None else fb
    mel = torch.einsum("mf,nft->ntm", fb, spec)
    return torch.log(mel + 1e-6)


# ------------------------------------------------------------------------------------ cache
def cache_dir() -> Path:
    base = os.environ.get("CROSSBAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "crossbar"
    )
    return Path(base) / "features"


def _cache_key(clips: list[Clip], settings: FeatureSettings, task: str) -> str:
    h = hashlib.sha256(json.dumps({"settings": settings.__dict__, "task": task}, sort_keys=True).encode())
    for c in clips:
        st = c.path.stat() if c.path.exists() else None
        h.update(f"{c.path}|{c.label}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:24]


@dataclass
class SpeechSet:
    """Loaded clips of one split: waveforms, features, integer labels and the load report."""

    clips: list[Clip]
    waves: torch.Tensor  # (N, samples) float32
    features: torch.Tensor  # (N, frames, n_mels) float32
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    report: dict
    cache_hit: bool = False


def load_set(
    clips: list[Clip], task: str, settings: FeatureSettings | None = None, use_cache: bool = True
) -> SpeechSet:
    """Load (from the HDF5 cache when its key matches) waveforms, features and labels of ``clips``
    (``settings`` default: :func:`task_settings` of ``task``)."""
    settings = task_settings(task) if settings is None else settings
    import h5py

    from crossbar.io import atomic_path

    classes = TASK_CLASSES[task]
    index = {c: i for i, c in enumerate(classes)}
    path = cache_dir() / f"{task}-{_cache_key(clips, settings, task)}.h5"
    if use_cache and path.is_file():
        try:
            with h5py.File(path, "r") as f:
                keep = f["keep"][()].tolist()
                waves = torch.from_numpy(f["waves"][()].astype(np.float32) / 32767.0)
                feats = torch.from_numpy(f["features"][()])
                report = json.loads(f.attrs["report"])
            kept = [clips[i] for i in keep]
            labels = torch.tensor([index[c.label] for c in kept])
            return SpeechSet(kept, waves, feats, labels, classes, report, cache_hit=True)
        except (OSError, KeyError, ValueError):
            pass  # a stale or broken cache entry is rebuilt below
    waves_np, keep, report = load_clips(clips, settings)
    waves = torch.from_numpy(waves_np)
    feats = torch.cat([log_mel(waves[i : i + 512], settings) for i in range(0, len(waves), 512)])
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f["keep"] = np.asarray(keep)
                f["waves"] = np.round(np.clip(waves_np, -1, 1) * 32767).astype(np.int16)
                f["features"] = feats.numpy()
                f.attrs["report"] = json.dumps(report)
    kept = [clips[i] for i in keep]
    labels = torch.tensor([index[c.label] for c in kept])
    return SpeechSet(kept, waves, feats, labels, classes, report)


# ------------------------------------------------------------------------------------ augmentation
def speed_perturb(waves: torch.Tensor, gen: torch.Generator, max_change: float) -> torch.Tensor:
    """Resample each clip by a factor U(1 - max_change, 1 + max_change) (linear interpolation), which
    shifts pitch and formants like another speaker; cropped / zero-padded back to the clip length."""
    n, length = waves.shape
    factors = 1 + (torch.rand(n, generator=gen) * 2 - 1) * max_change
    out = torch.zeros_like(waves)
    for i in range(n):
        new_len = max(2, int(round(length / float(factors[i]))))
        r = torch.nn.functional.interpolate(
            waves[i].view(1, 1, -1), size=new_len, mode="linear", align_corners=False
        ).view(-1)
        start = max(0, (new_len - length) // 2)
        piece = r[start : start + length]
        off = max(0, (length - piece.numel()) // 2)
        out[i, off : off + piece.numel()] = piece
    return out


def augment(
    waves: torch.Tensor,
    noise_bank: torch.Tensor | None,
    gen: torch.Generator,
    max_shift: float = 0.1,
    gain_db: float = 6.0,
    noise_prob: float = 0.8,
    noise_max: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
    speed: float = 0.0,
) -> torch.Tensor:
    """Random speed change (+-``speed``, off by default), time shift (+-``max_shift`` s, zero fill),
    gain (+-``gain_db`` dB) and background noise (a random 1 s piece of ``noise_bank`` or white noise,
    scaled by U(0, ``noise_max``))."""
    if speed > 0:
        waves = speed_perturb(waves, gen, speed)
    n, length = waves.shape
    shifts = torch.randint(-int(max_shift * sample_rate), int(max_shift * sample_rate) + 1, (n,), generator=gen)
    idx = torch.arange(length)[None, :] - shifts[:, None]
    valid = (idx >= 0) & (idx < length)
    out = torch.where(valid, waves.gather(1, idx.clamp(0, length - 1)), torch.zeros(()))
    gain = 10 ** ((torch.rand(n, 1, generator=gen) * 2 - 1) * gain_db / 20)
    out = out * gain
    if noise_prob > 0:
        if noise_bank is not None and len(noise_bank):
            pick = torch.randint(0, len(noise_bank), (n,), generator=gen)
            noise = noise_bank[pick]
            noise = noise / noise.std(1, keepdim=True).clamp(min=1e-4) * 0.05
        else:
            noise = torch.randn(n, length, generator=gen) * 0.05
        scale = torch.rand(n, 1, generator=gen) * noise_max * (torch.rand(n, 1, generator=gen) < noise_prob)
        out = out + scale * noise
    return out


def spec_augment(
    feats: torch.Tensor,
    gen: torch.Generator,
    freq_masks: int = 2,
    freq_width: int = 6,
    time_masks: int = 2,
    time_width: int = 12,
) -> torch.Tensor:
    """SpecAugment-style masking of (N, T, F) features: bands and frame ranges set to each clip's mean."""
    n, t, f = feats.shape
    out = feats.clone()
    fill = feats.mean((1, 2), keepdim=True).expand_as(feats)
    for count, width, size, axis in ((freq_masks, freq_width, f, 2), (time_masks, time_width, t, 1)):
        for _ in range(count):
            w = torch.randint(0, width + 1, (n,), generator=gen)
            start = (torch.rand(n, generator=gen) * (size - w + 1).float()).long()
            pos = torch.arange(size)[None, :]
            mask = (pos >= start[:, None]) & (pos < (start + w)[:, None])
            mask = mask[:, None, :] if axis == 2 else mask[:, :, None]
            out = torch.where(mask, fill, out)
    return out

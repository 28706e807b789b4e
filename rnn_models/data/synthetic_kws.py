"""A keyword dataset of our own, synthesised with eSpeak NG -- the embedded default of the demo.

Writes a folder in the layout our loader reads (one sub-folder per word + ``manifest.csv`` with
path, label, speaker), so training and evaluation run through exactly the code used on real data:

* words: the 10 GSC keywords, 10 other words (-> ``_unknown_``) and ``_silence_`` (noise only);
* "speakers": eSpeak voice variants (accent x voice), so a speaker-disjoint split holds out voices;
* per clip: random rate (120-210 wpm), pitch (20-80), pitch range, onset within the 1 s clip,
  gain, and additive noise (white, brown or hum) at a random SNR of 5-30 dB;
* 16 kHz, 16-bit mono WAV, 1 s; fully determined by the seed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from crossbar.io import atomic_path
from rnn_models.data.speech import KEYWORDS, SILENCE

UNKNOWN_WORDS = ["bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow"]
ACCENTS = ["en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "Alex", "klatt", "Andy", "linda"]
RATE = 16000


def voices() -> list[str]:
    """All voice ids (speakers): accent + variant."""
    return [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "brown":
        x = np.cumsum(rng.standard_normal(n))
        x -= np.convolve(x, np.ones(400) / 400, mode="same")
    else:  # mains hum with harmonics
        t = np.arange(n) / RATE
        f0 = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 6))
        x = x + 0.1 * rng.standard_normal(n)
    return (x / (np.std(x) + 1e-9)).astype(np.float32)


def generate(
    out_dir: str | Path, clips_per_voice: int = 1, seed: int = 0, silence_per_voice: int = 1, unknown_per_voice: int = 3
) -> Path:
    """Generate the dataset into ``out_dir``; returns the manifest path. Skips work if it exists."""
    import soundfile as sf
    from scipy.signal import resample_poly

    from rnn_models.data.tts import synthesize

    out = Path(out_dir)
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    rows = []
    for v_index, voice in enumerate(voices()):
        speaker = f"v{v_index:03d}"
        # (label, text to speak; None: a silence clip)
        words: list[tuple[str, str | None]] = [(w, w) for w in KEYWORDS for _ in range(clips_per_voice)]
        words += [(w, w) for w in rng.choice(UNKNOWN_WORDS, unknown_per_voice * clips_per_voice).tolist()]
        words += [(SILENCE, None)] * silence_per_voice
        for k, (label, text) in enumerate(words):
            clip = np.zeros(RATE, dtype=np.float32)
            if text is not None:
                speech = synthesize(
                    text,
                    voice,
                    rate=int(rng.integers(120, 211)),
                    pitch=int(rng.integers(20, 81)),
                    pitch_range=int(rng.integers(20, 81)),
                )
                speech = resample_poly(speech, 320, 441).astype(np.float32)  # 22,050 -> 16,000 Hz
                nz = np.nonzero(np.abs(speech) > 1e-3)[0]
                speech = speech[nz[0] : nz[-1] + 1] if nz.size else speech
                speech = speech[:RATE]
                start = int(rng.integers(0, RATE - len(speech) + 1))
                clip[start : start + len(speech)] = speech * rng.uniform(0.3, 1.0) / (np.abs(speech).max() + 1e-9)
                snr_db = rng.uniform(5, 30)
                level = np.sqrt(np.mean(clip[start : start + len(speech)] ** 2) + 1e-12) / 10 ** (snr_db / 20)
            else:
                level = rng.uniform(0.001, 0.1)
            clip = clip + level * _noise(rng.choice(["white", "brown", "hum"]), RATE, rng)
            clip = np.clip(clip, -1, 1)
            rel = f"{label}/{speaker}_{k:03d}.wav"
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                sf.write(str(tmp), clip, RATE, subtype="PCM_16", format="WAV")
            rows.append((rel, label, speaker))
    with atomic_path(manifest) as tmp:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "speaker"])
            w.writerows(rows)
    return manifest

"""Synthesise spoken words with eSpeak NG (bundled in the PyPI wheel ``espeakng-loader``).

Used to generate a keyword dataset of our own (no real corpus can ship in the repo).  The engine
is driven through ``ctypes``: ``espeak_Initialize`` (synchronous mode), ``espeak_SetVoiceByName``,
``espeak_SetParameter`` (rate, pitch, range), ``espeak_Synth``; samples arrive through the synth
callback at 22,050 Hz, 16-bit mono.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from crossbar.errors import CrossbarInputError

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_AUTO = 0
ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE = 1, 2, 3, 4
SAMPLE_RATE = 22050

_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()
_state: dict = {}


def _engine() -> ctypes.CDLL:
    """The eSpeak NG library, loaded and initialised once (synchronous mode, our synth callback)."""
    if "lib" in _state:
        return _state["lib"]
    try:
        import espeakng_loader
    except ImportError:
        raise CrossbarInputError(
            "speech synthesis needs the package espeakng-loader (pip install espeakng-loader)"
        ) from None
    lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
    lib.espeak_Initialize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(espeakng_loader.get_data_path()).encode(), 0)
    if rate <= 0:
        raise CrossbarInputError("eSpeak NG failed to initialise")
    chunks: list = []

    @_SYNTH_CB
    def callback(wav, n, events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    lib.espeak_SetSynthCallback(callback)
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    _state.update(lib=lib, chunks=chunks, callback=callback, rate=rate)
    return lib


def synthesize(word: str, voice: str = "en", rate: int = 160, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
    """Float32 waveform in [-1, 1] at 22,050 Hz of ``word`` spoken by ``voice`` (e.g. ``en-us+f2``)."""
    with _lock:
        lib = _engine()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise CrossbarInputError(f"eSpeak NG has no voice {voice!r}")
        lib.espeak_SetParameter(ESPEAK_RATE, int(rate), 0)
        lib.espeak_SetParameter(ESPEAK_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(ESPEAK_RANGE, int(pitch_range), 0)
        chunks = _state["chunks"]
        chunks.clear()
        text = word.encode()
        lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, ESPEAK_CHARS_AUTO, None, None)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return audio.astype(np.float32) / 32768.0

"""Audio in and out, and the thesis's pre-processing of one track (thesis 4.1).

The steps run in the thesis's order: load as mono at 8 kHz through a
high-quality resampler, normalise the peak to 0.9, drop 30 s at each end,
cut consecutive 5-second clips and drop the short remainder. Each step is its
own function so the book can show them one at a time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from .config import SILENCE, THESIS, ThesisConfig

AUDIO_EXTENSIONS = (".mp3", ".ogg", ".oga", ".flac", ".wav", ".aif", ".aiff", ".m4a", ".opus")
"""File endings that preparation treats as music; anything else is ignored."""



class AudioError(ValueError):
    """A track that cannot be used, with the file and the reason in the message."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_audio_file(path: Path) -> bool:
    """A visible file with one of :data:`AUDIO_EXTENSIONS` (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in AUDIO_EXTENSIONS


def find_audio(folder: str | Path) -> list[Path]:
    """Every audio file below ``folder`` (recursively, hidden files skipped), sorted.

    The one audio discovery: preparation lists each style folder with it and
    ``predict`` each folder it is given.
    """
    return sorted(p for p in Path(folder).rglob("*") if is_audio_file(p))


def load_audio(path: str | Path, sample_rate: int = THESIS.sample_rate,
               res_type: str = THESIS.resample_type) -> np.ndarray:
    """Decode any file librosa can read to mono float32 at ``sample_rate``.

    Raises :class:`AudioError` naming the file for an empty, unreadable or
    undecodable file, so that a caller can skip it and report why.
    """
    import librosa  # imported lazily: librosa pulls numba, slow to import

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns before its audioread fallback
            y, _ = librosa.load(path, sr=sample_rate, mono=True, res_type=res_type)
    except Exception as exc:  # noqa: BLE001 - every decoder failure means "unreadable"
        kind = type(exc).__name__
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
        raise AudioError(path, f"cannot decode audio ({kind}: {detail}); "
                               "is it a real mp3/ogg/flac/wav file?") from exc
    if y.size == 0:
        raise AudioError(path, "decoded to zero samples")
    if not np.all(np.isfinite(y)):
        raise AudioError(path, "decoded audio contains NaN or infinite values")
    return y.astype(np.float32, copy=False)


def peak_normalize(y: np.ndarray, peak: float = THESIS.peak) -> np.ndarray:
    """Scale so that the largest absolute sample equals ``peak``.

    A silent signal cannot be scaled and raises ``ValueError``.
    """
    m = float(np.max(np.abs(y))) if y.size else 0.0
    if m < SILENCE:
        raise ValueError(f"signal is silent (peak {m:.2e})")
    return (y * (peak / m)).astype(np.float32)


def trim_ends(y: np.ndarray, samples: int = THESIS.trim_samples) -> np.ndarray:
    """Drop ``samples`` at the start and at the end (silence, intro, coda)."""
    if samples == 0:
        return y
    return y[samples:-samples] if y.size > 2 * samples else y[:0]


def cut_clips(y: np.ndarray, clip_samples: int = THESIS.clip_samples) -> np.ndarray:
    """Consecutive, non-overlapping clips of ``clip_samples``; the remainder is dropped."""
    n = y.size // clip_samples
    return y[: n * clip_samples].reshape(n, clip_samples)


def prepare_track(path: str | Path, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """The thesis's whole pre-processing of one track: ``(n_clips, clip_samples)`` float32.

    Raises :class:`AudioError` for a silent track or one too short to give a clip.
    """
    y = load_audio(path, cfg.sample_rate, cfg.resample_type)
    try:
        y = peak_normalize(y, cfg.peak)
    except ValueError as exc:
        raise AudioError(path, f"silent track ({exc})") from None
    body = trim_ends(y, cfg.trim_samples)
    if body.size < cfg.clip_samples:
        raise AudioError(
            path,
            f"too short: {y.size / cfg.sample_rate:.1f} s, but dropping "
            f"{cfg.trim_seconds:g} s at each end needs at least "
            f"{cfg.min_track_samples / cfg.sample_rate:g} s for one "
            f"{cfg.clip_seconds:g}-second clip")
    return cut_clips(body, cfg.clip_samples)


def to_int16(y: np.ndarray, peak: float | None = THESIS.peak) -> np.ndarray:
    """16-bit PCM samples; with ``peak`` the signal is first normalised to it.

    Non-finite samples become zero and the result is clipped to [-1, 1], so
    whatever an optimiser produced, playback stays safe for a listener's ears.
    """
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if peak is not None and np.max(np.abs(y), initial=0.0) > 0:
        y = y * (peak / np.max(np.abs(y)))
    return np.round(np.clip(y, -1.0, 1.0) * 32767).astype(np.int16)


def write_wav(path: str | Path, y: np.ndarray, sample_rate: int = THESIS.sample_rate,
              peak: float | None = THESIS.peak) -> Path:
    """Write mono 16-bit WAV (the thesis's output format), normalised to ``peak``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, to_int16(y, peak), sample_rate, subtype="PCM_16")
    return path


def wav_bytes(y: np.ndarray, sample_rate: int = THESIS.sample_rate,
              peak: float | None = THESIS.peak) -> bytes:
    """The same 16-bit WAV as :func:`write_wav`, in memory (for embedded players)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, to_int16(y, peak), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()

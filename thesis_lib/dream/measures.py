"""Numbers that describe a generated sound, for a reader who cannot listen.

Dreaming, inversion and style transfer all end in a waveform. These
functions say how close it is to a reference (signal-to-noise ratio,
log-spectral distance, long-term spectrum, loudness envelope) and what it is
like on its own (spectral centroid, flatness -- 1 for white noise, near 0 for
a few pure tones -- and how much of the clip is active). The spectra use the
thesis's Figure 23 analysis: 512-sample window, 50 % overlap.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import spectrogram as _spectrogram
from scipy.signal import welch

from ..audio import rms_db
from ..config import SILENCE, THESIS

N_FFT = 512
"""Window of every spectrum here (thesis Figure 23)."""
OVERLAP = 0.5
"""Overlap of consecutive windows (thesis Figure 23)."""


def _f64(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.float64).ravel()


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    """``10 log10(Σ ref² / Σ (ref - est)²)``: 0 dB means an error as loud as the signal."""
    e, r = _f64(estimate), _f64(reference)
    if e.shape != r.shape:
        raise ValueError(f"signals differ in length: {e.size} and {r.size} samples")
    err = float(np.sum((r - e) ** 2))
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(r ** 2) / err))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two waveforms sample by sample (0 when either is constant).

    1: the same waveform up to loudness; near 0: nothing in common sample by sample.
    """
    x, y = _f64(a), _f64(b)
    if x.shape != y.shape:
        raise ValueError(f"signals differ in length: {x.size} and {y.size} samples")
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def power_spectrogram(y: np.ndarray, sample_rate: int = THESIS.sample_rate, n_fft: int = N_FFT,
                      overlap: float = OVERLAP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(freqs, times, power)`` as in the thesis's Figure 23."""
    return _spectrogram(_f64(y), fs=sample_rate, nperseg=n_fft, noverlap=int(n_fft * overlap),
                        scaling="spectrum")


def _db(power: np.ndarray, floor_db: float = -100.0) -> np.ndarray:
    """Power in dB, floored ``floor_db`` below the largest value so silence stays finite."""
    top = max(float(np.max(power)), 1e-30)
    return 10 * np.log10(np.maximum(power, top * 10 ** (floor_db / 10)))


def log_spectral_distance(a: np.ndarray, b: np.ndarray, sample_rate: int = THESIS.sample_rate,
                          n_fft: int = N_FFT, overlap: float = OVERLAP) -> float:
    """Root-mean-square difference of two log-power spectrograms, in dB.

    Unlike the SNR it ignores phase, so it credits a reconstruction that has
    the right sound in each window even if its samples do not line up.
    """
    _, _, pa = power_spectrogram(a, sample_rate, n_fft, overlap)
    _, _, pb = power_spectrogram(b, sample_rate, n_fft, overlap)
    if pa.shape != pb.shape:
        raise ValueError(f"spectrograms differ in shape: {pa.shape} and {pb.shape}")
    floor = max(float(pa.max()), float(pb.max())) * 1e-10
    return float(np.sqrt(np.mean((10 * np.log10(pa + floor) - 10 * np.log10(pb + floor)) ** 2)))


def average_spectrum_db(y: np.ndarray, sample_rate: int = THESIS.sample_rate,
                        n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """Long-term average power spectrum (Welch), in dB: ``(freqs, level)``."""
    f, p = welch(_f64(y), fs=sample_rate, nperseg=n_fft, noverlap=n_fft // 2)
    return f, _db(p)


def ltas_distance(a: np.ndarray, b: np.ndarray, sample_rate: int = THESIS.sample_rate,
                  floor_db: float = 60.0) -> float:
    """RMS difference (dB) of the two long-term spectra, overall level removed.

    A timbre measure: a style transfer should bring it down toward the style
    clip. Levels more than ``floor_db`` below each spectrum's peak are raised
    to that floor, so that the depth of inaudible valleys between the
    partials of clean synthetic tones does not dominate the distance.
    """
    _, la = average_spectrum_db(a, sample_rate)
    _, lb = average_spectrum_db(b, sample_rate)
    la, lb = np.maximum(la, la.max() - floor_db), np.maximum(lb, lb.max() - floor_db)
    d = (la - la.mean()) - (lb - lb.mean())
    return float(np.sqrt(np.mean(d ** 2)))


def envelope_db(y: np.ndarray, frame: int = 256) -> np.ndarray:
    """Loudness of consecutive frames of ``frame`` samples, in dB."""
    y = _f64(y)
    n = y.size // frame
    rms = np.sqrt(np.mean(y[: n * frame].reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def envelope_correlation(a: np.ndarray, b: np.ndarray, frame: int = 256) -> float:
    """Pearson correlation of the two loudness envelopes: do they swell and fall together?

    A content measure: a style transfer should keep it high with the content clip.
    """
    ea, eb = envelope_db(a, frame), envelope_db(b, frame)
    n = min(ea.size, eb.size)
    ea, eb = ea[:n], eb[:n]
    if ea.std() == 0 or eb.std() == 0:
        return 0.0
    return float(np.corrcoef(ea, eb)[0, 1])


def spectral_flatness(y: np.ndarray, sample_rate: int = THESIS.sample_rate) -> float:
    """Geometric over arithmetic mean of the power spectrum, averaged over frames.

    1 for white noise, near 0 for a few pure tones: "is it only noise?" as a number.
    """
    _, _, p = power_spectrogram(y, sample_rate)
    p = p + 1e-20
    loud = p.sum(axis=0) > 1e-6 * p.sum(axis=0).max()
    flat = np.exp(np.mean(np.log(p), axis=0)) / np.mean(p, axis=0)
    return float(np.mean(flat[loud])) if loud.any() else 0.0


def describe(y: np.ndarray, sample_rate: int = THESIS.sample_rate) -> dict[str, float]:
    """A spectral summary of one sound: level, brightness, noisiness, main frequency, activity.

    ``full_scale_fraction`` is the share of samples at the peak: near 1 for a
    waveform pushed into the corners of the [-1, 1] box (a square-wave buzz).
    """
    f, level = average_spectrum_db(y, sample_rate)
    power = 10 ** (level / 10)
    env = envelope_db(y)
    return {
        "rms_db": rms_db(y),
        "peak": float(np.max(np.abs(y))),
        "centroid_hz": float(np.sum(f * power) / np.sum(power)),
        "dominant_hz": float(f[int(np.argmax(level))]),
        "flatness": spectral_flatness(y, sample_rate),
        "active_fraction": float(np.mean(env > env.max() - 30)),
        "full_scale_fraction": float(np.mean(np.abs(_f64(y)) >= 0.999 * np.max(np.abs(_f64(y))))),
    }


def audio_problems(y: np.ndarray, n_samples: int | None = THESIS.clip_samples,
                   peak: float | None = THESIS.peak) -> list[str]:
    """Everything that makes a generated signal unfit to play; empty when it is fine.

    Checks: finite samples, the expected length, the peak, and that it is not silent.
    """
    y = np.asarray(y)
    problems = []
    if not np.all(np.isfinite(y)):
        problems.append(f"{int(np.sum(~np.isfinite(y)))} non-finite samples")
    if n_samples is not None and y.size != n_samples:
        problems.append(f"{y.size} samples, expected {n_samples}")
    finite = np.nan_to_num(_f64(y))
    top = float(np.max(np.abs(finite), initial=0.0))
    if peak is not None and abs(top - peak) > 1e-3:
        problems.append(f"peak {top:.4f}, expected {peak}")
    if top > 1.0:
        problems.append(f"peak {top:.3f} above full scale")
    if np.sqrt(np.mean(finite ** 2)) < SILENCE:
        problems.append("silent")
    return problems

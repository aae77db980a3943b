"""Shared fixtures: small generated audio that runs through the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from thesis_lib.config import THESIS

# Tests never touch the user's cache.
os.environ.setdefault("THESIS_LIB_CACHE", str(Path(os.environ.get("PYTEST_CACHE_ROOT", "/tmp")) / "thesis_lib_test_cache"))

# One clip after trimming needs 65 s at 8 kHz; these tracks give one or two clips.
TRACK_SECONDS = THESIS.min_track_samples / THESIS.sample_rate + 1


def tone_track(freq: float, seconds: float = TRACK_SECONDS, sr: int = 16_000, channels: int = 1,
               noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A sine of ``freq`` Hz, optionally stereo and noisy; shape (samples, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)
    return np.repeat(y[:, None], channels, axis=1).astype(np.float32)


def red_and_blue_noise(per_class: int, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A set any sound classifier should separate: red noise (energy in the low bands, class 0) and
    blue noise (in the high bands, class 1), ``per_class`` clips each at peak 0.5, and their labels."""
    noise = np.random.default_rng(seed).standard_normal((2 * per_class, samples))
    lo = np.cumsum(noise[:per_class], 1)
    hi = np.diff(noise[per_class:], axis=1, prepend=0)
    x = np.array([0.5 * v / np.abs(v).max() for v in np.concatenate([lo - lo.mean(1, keepdims=True), hi])],
                 np.float32)
    return x, np.array([0] * per_class + [1] * per_class)


def write_track(path: Path, y: np.ndarray, sr: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr)
    return path


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """Two easy styles (low noisy hum vs high noisy whistle), 4 tracks each, two clips per track."""
    root = tmp_path_factory.mktemp("toy")
    seconds = (2 * THESIS.trim_samples + 2 * THESIS.clip_samples) / THESIS.sample_rate + 0.5
    for i in range(4):
        write_track(root / "low" / f"low_{i}.wav", tone_track(110 * (1 + 0.1 * i), seconds, noise=0.2, seed=i))
        write_track(root / "high" / f"high_{i}.flac", tone_track(1500 * (1 + 0.1 * i), seconds, noise=0.2, seed=10 + i))
    return root


@pytest.fixture(scope="session")
def toy_prepared(toy_data, tmp_path_factory):
    from thesis_lib.data import prepare_dataset

    return prepare_dataset(toy_data, tmp_path_factory.mktemp("toy_prepared") / "prep", progress=False, jobs=1)

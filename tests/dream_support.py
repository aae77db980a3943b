"""Shared helpers of the dreaming tests: one tiny trained net per session, and toy clips."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from thesis_lib.config import THESIS

#: Few iterations keep the whole dreaming test set well under a minute on two cores.
FEW = 4


@lru_cache(maxsize=1)
def _trained(prepared_path: str):
    from thesis_lib.data import PreparedDataset, split_dataset
    from thesis_lib.train import TrainSettings, train

    from thesis_lib.dream import cpu_threads

    ds = PreparedDataset.load(prepared_path)
    sp = split_dataset(ds, 6, 2, split="clip", seed=0)
    with cpu_threads(1):   # batches of 4 clips: one thread is faster on a busy 2-core machine
        result = train(ds, sp, TrainSettings(epochs=3, learning_rate=0.001, batch_size=4, device="cpu", seed=0),
                       progress=False)
    return result.model.eval(), sp.styles, ds


def trained(toy_prepared):
    """A thesis net trained for three epochs on the toy hum-against-whistle clips (a few seconds)."""
    model, styles, ds = _trained(str(toy_prepared.path))
    return model, styles, ds


def clip_of(ds, style: str, k: int = 0) -> np.ndarray:
    """The ``k``-th prepared clip of ``style`` (already peak-normalised and 40,000 samples long)."""
    idx = np.flatnonzero(ds.style_of == ds.styles.index(style))[k]
    return np.asarray(ds.clips[idx], dtype=np.float32).copy()


def chord(seconds: float = THESIS.clip_seconds, sr: int = THESIS.sample_rate, seed: int = 0) -> np.ndarray:
    """A little chord with a swelling envelope and some noise, peak 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * t) for f in (220, 330, 440)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    y = y + 0.05 * rng.standard_normal(t.size)
    return (0.9 * y / np.max(np.abs(y))).astype(np.float32)


def random_net(seed: int = 0):
    from thesis_lib.model import StyleNet

    torch.manual_seed(seed)
    return StyleNet(2).eval()

"""The simple baseline every CNN must beat: log-mel mean/std per band + logistic regression.

Why
---
On small real collections a 1990s-style summary -- the mean and standard
deviation of each of 64 log-mel bands over a 5-second clip, standardised,
into a multinomial logistic regression -- beat the thesis net by a wide
margin (issue 10). Keeping it in the library lets ``train --model baseline``
and ``crossval --model baseline`` put every CNN number next to it.

It is an ``nn.Module`` with the thesis's input and one logit per style, so it
is saved, loaded and used by ``predict`` like the CNNs. It is not trained by
gradient steps over epochs: :meth:`LogMelBaseline.fit` computes the features
of every training clip once and solves the L2-regularised logistic
regression with L-BFGS (``C = 1`` as in scikit-learn's default: mean
cross-entropy + ``||W||^2 / (2 C N)``).

Each style weighs the same in that mean, however many clips it has
(:func:`style_weights`, scikit-learn's ``class_weight="balanced"``): real
collections are lopsided (the free one has 559 metal clips against 1,370
electronic ones; a game's soundtrack may give 30 clips or 2,500), and an
unweighted fit moves its boundary toward the small styles, so their tracks are
the ones it gets wrong. Cross-validated on four collections (README "Real
music") the weighting cost no track anywhere and saved one to five in nine of
twelve dealings.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import THESIS, ThesisConfig
from .mel import N_MELS, LogMel


def style_weights(labels: np.ndarray, n_styles: int) -> np.ndarray:
    """A weight per clip such that every style present weighs the same and the weights average 1
    (``N / (K n_style)``, scikit-learn's "balanced"): a style with few clips is not out-voted in the fit."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return np.zeros(0)
    counts = np.bincount(labels, minlength=n_styles).astype(np.float64)
    present = int((counts > 0).sum())
    return len(labels) / (present * counts[labels])


class LinearProbe(nn.Module):
    """Fixed features of a clip, standardised, into a linear layer (softmax = logistic regression).

    The features are computed without gradients and never trained; only the
    linear layer is fitted, in closed form (:meth:`fit`). Subclasses say what the
    features are (:meth:`features`, ``n_features``): the log-mel band statistics
    here, a pretrained tagger's pooled activations in :mod:`thesis_lib.musicnn`.
    """

    def __init__(self, n_styles: int, cfg: ThesisConfig, n_features: int, C: float = 1.0, balanced: bool = True):
        super().__init__()
        self.cfg, self.n_styles, self.n_features, self.C = cfg, n_styles, n_features, float(C)
        self.balanced = bool(balanced)      # each style weighs the same in the fit (:func:`style_weights`)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.out = nn.Linear(n_features, n_styles)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_features)`` for waveforms ``x`` ``(B, L)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out((self.features(x) - self.mean) / self.scale)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    #: Keep the features of a prepared collection's clips in memory for the next fit or
    #: test in this process (cross-validation folds, a chapter's several runs): worth it
    #: when they are expensive, as a pretrained tagger's are.
    cache_features = False

    def feature_key(self) -> tuple:
        """What the features depend on besides the clip (see :data:`cache_features`)."""
        return (type(self).__name__, self.cfg.sample_rate)

    def clip_features(self, clips: np.ndarray, batch_size: int = 64, rows: np.ndarray | None = None,
                      progress: bool = False) -> torch.Tensor:
        """Features of ``clips`` (or of its ``rows``), read a batch at a time: a memory-mapped
        collection is never loaded whole (2,300 clips of 5 s at 16 kHz are 0.7 GB)."""
        from tqdm.auto import tqdm

        rows = np.arange(len(clips)) if rows is None else np.asarray(rows, np.int64)
        store = _feature_store(clips, self) if self.cache_features else None
        todo = rows if store is None else np.unique(rows[~store.known[rows]])
        device = self.mean.device
        starts = range(0, len(todo), batch_size)
        out = [self.features(torch.from_numpy(np.ascontiguousarray(clips[todo[lo:lo + batch_size]], np.float32))
                             .to(device)).cpu()
               for lo in tqdm(starts, desc="features", unit="batch", disable=not progress or len(starts) < 2,
                              leave=False)]
        if store is None:
            return torch.cat(out) if out else torch.zeros(0, self.n_features)
        if out:
            store.values[todo] = torch.cat(out).numpy()
            store.known[todo] = True
            store.save()
        return torch.from_numpy(store.values[rows])

    @torch.no_grad()
    def clip_logits(self, clips: np.ndarray, rows: np.ndarray | None = None, batch_size: int = 64) -> torch.Tensor:
        """Logits of ``clips`` (or its ``rows``) through :meth:`clip_features` (so from the cache when there is one)."""
        z = (self.clip_features(clips, batch_size, rows).to(self.mean.device) - self.mean) / self.scale
        return self.out(z).cpu()

    def fit(self, clips: np.ndarray, labels: np.ndarray, max_iter: int = 500,
            rows: np.ndarray | None = None, progress: bool = False) -> "LinearProbe":
        """Fit on ``clips`` ``(N, L)`` (or on its ``rows``) with classes ``labels``; returns ``self`` in eval mode."""
        self.eval()
        return self.fit_features(self.clip_features(clips, rows=rows, progress=progress), labels, max_iter)

    def fit_features(self, feats: torch.Tensor, labels: np.ndarray, max_iter: int = 500) -> "LinearProbe":
        device = self.mean.device
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=device)
        feats = torch.as_tensor(feats, dtype=torch.float32, device=device)
        with torch.no_grad():
            self.mean.copy_(feats.mean(0))
            self.scale.copy_(feats.std(0).clamp_min(1e-6) if len(feats) > 1 else torch.ones_like(self.scale))
        z = (feats - self.mean) / self.scale
        w = (torch.as_tensor(style_weights(labels, self.n_styles), dtype=torch.float32, device=device)
             if self.balanced else torch.ones(len(y), device=device))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        opt = torch.optim.LBFGS(self.out.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-6, tolerance_change=1e-10)
        lam = 1.0 / (self.C * max(len(y), 1))

        def closure():
            opt.zero_grad()
            loss = (w * F.cross_entropy(self.out(z), y, reduction="none")).mean() + 0.5 * lam * self.out.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return self.eval()


class LogMelBaseline(LinearProbe):
    """Standardised log-mel mean/std per band -> linear layer (softmax = logistic regression)."""

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS, n_mels: int = N_MELS, C: float = 1.0,
                 balanced: bool = True):
        super().__init__(n_styles, cfg, 2 * n_mels, C, balanced)
        self.n_mels = n_mels
        self.mel = LogMel(cfg.sample_rate, n_mels=n_mels)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2 * n_mels)``: mean then standard deviation of each log-mel band over time."""
        m = self.mel(x)
        return torch.cat([m.mean(2), m.std(2)], 1)

    def architecture(self) -> dict:
        return {"name": "LogMelBaseline", "n_styles": self.n_styles, "n_mels": self.n_mels, "C": self.C,
                "balanced": self.balanced, "clip_samples": self.cfg.clip_samples}


class _FeatureStore:
    """Features of every clip of one prepared collection, filled in as they are computed.

    Kept beside the collection's clips (``features-<key>.npz`` in its prepared folder), so the
    next process -- ``crossval`` after ``train``, a chapter after another -- reads them instead of
    hearing every clip again. The file goes with its folder when the collection is prepared anew;
    one that cannot be written (a read-only cache) only costs the next process the hearing.
    """

    def __init__(self, n: int, width: int, file: Path | None = None):
        self.values = np.zeros((n, width), np.float32)
        self.known = np.zeros(n, bool)
        self.file = file
        if file is not None and file.is_file():
            try:
                with np.load(file) as f:
                    if f["values"].shape == self.values.shape and f["known"].shape == self.known.shape:
                        self.values, self.known = f["values"], f["known"].astype(bool)
            except (OSError, ValueError, KeyError, EOFError):
                pass                                    # damaged or half-written: computed again

    def save(self) -> None:
        if self.file is None:
            return
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, values=self.values, known=self.known)
            os.replace(tmp, self.file)                  # a reader sees the old file or the new one
        except OSError:
            tmp.unlink(missing_ok=True)


_STORES: dict[tuple, _FeatureStore] = {}
FEATURE_CACHE_BYTES = 1 << 30
"""At most this much memory for cached features (:attr:`LinearProbe.cache_features`); beyond it they are recomputed."""


def _feature_store(clips: np.ndarray, probe: LinearProbe) -> _FeatureStore | None:
    """The store for ``clips`` when it is a prepared collection's memory map (named by its file, which
    is replaced, not rewritten, when the collection is prepared again), else ``None``."""
    name = getattr(clips, "filename", None)
    if name is None:
        return None
    st = os.stat(name)
    key = (str(name), st.st_ino, st.st_mtime_ns, st.st_size, clips.shape, probe.feature_key())
    if key not in _STORES:
        need = len(clips) * probe.n_features * 4
        if need + sum(s.values.nbytes for s in _STORES.values()) > FEATURE_CACHE_BYTES:
            _STORES.clear()
            if need > FEATURE_CACHE_BYTES:
                return None
        digest = hashlib.sha256(repr(key[1:]).encode()).hexdigest()[:16]
        _STORES[key] = _FeatureStore(len(clips), probe.n_features, Path(name).with_name(f"features-{digest}.npz"))
    return _STORES[key]

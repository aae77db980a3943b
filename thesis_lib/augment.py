"""Random training windows and style-keeping augmentations (issue 10: training that generalises).

Why
---
The thesis trains on the same consecutive 5-second clips every epoch. On a
small real collection (a few hundred clips) the 2.5-million-weight fc layer
of the thesis net memorises them: training loss 0.001 by epoch 12, test
accuracy on unseen songs far below a log-mel baseline. Two standard,
collection-independent remedies:

* **fresh random windows**: the consecutive clips of a track concatenate to
  its trimmed audio (``prepare_dataset`` cuts them back to back), so every
  epoch can draw new 5-second windows at random offsets inside each training
  track -- many more distinct examples from the same songs
  (:class:`TrackWindows`). Styles are drawn equally often, tracks in
  proportion to their length. The *test* set keeps the thesis's consecutive
  clips, so test numbers stay comparable;
* **augmentations that keep a style** (:func:`augment_batch`): a random gain
  (-12 to 0 dB: loudness is not style), a random polarity (inaudible), a small
  time shift (covered by the random offsets; :func:`shift` for fixed clips)
  and mixing two windows *of the same style* (a metal window over a metal
  window is still metal). Nothing changes pitch or tempo, which can be part
  of a style. Peaks never exceed the larger input peak (convex mixes, gains
  <= 1), so the clips stay inside the thesis's [-0.9, 0.9] range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import PreparedDataset


@dataclass(frozen=True)
class AugmentSettings:
    """Which augmentations :func:`augment_batch` applies, and how strongly."""

    gain_db: tuple[float, float] = (-12.0, 0.0)   #: uniform gain range in dB (<= 0 keeps peaks bounded)
    polarity: bool = True                         #: flip the sign of half the windows
    mix_probability: float = 0.5                  #: chance that a window is mixed with one of its style
    mix_weight: tuple[float, float] = (0.5, 1.0)  #: weight of the window itself in a mix
    max_shift: int = 0                            #: samples of circular shift (0: random windows shift already)


class TrackWindows:
    """Random ``length``-sample windows inside the tracks of a prepared dataset.

    Track ``t``'s audio is ``ds.clips[first:last+1].reshape(-1)`` (its consecutive
    clips back to back), read here through a flat view of the memory map, so a
    window never crosses into another track.
    """

    def __init__(self, ds: PreparedDataset, length: int | None = None, per_clip: bool = False):
        self.ds = ds
        self.length = int(length or ds.clips.shape[1])
        self.flat = ds.clips.reshape(-1)
        m = ds.clips.shape[1]
        if per_clip:
            # every clip its own "track": windows are the clips themselves (for a split by clip,
            # where other clips of a training song may be test clips)
            self.track_start = np.arange(len(ds), dtype=np.int64) * m
            self.track_samples = np.full(len(ds), m, np.int64)
            return
        counts = np.bincount(ds.track_of, minlength=len(ds.tracks)).astype(np.int64)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.track_start = first * m
        self.track_samples = counts * m

    def draw(self, tracks: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` windows from ``tracks`` (with class ``labels[i]`` for ``tracks[i]``).

        Returns ``(starts, window_labels, window_tracks)``; ``starts`` index the
        flat audio. Every class is drawn equally often; within a class a track
        is chosen in proportion to its length and the offset uniformly.
        """
        tracks = np.asarray(tracks, np.int64)
        labels = np.asarray(labels, np.int64)
        usable = self.track_samples[tracks] >= self.length
        tracks, labels = tracks[usable], labels[usable]
        classes = np.unique(labels)
        if len(classes) == 0:
            raise ValueError("no track long enough for one window")
        pick = rng.choice(classes, n)
        starts = np.empty(n, np.int64)
        which = np.empty(n, np.int64)
        for c in classes:
            sel = np.flatnonzero(pick == c)
            cand = tracks[labels == c]
            w = self.track_samples[cand].astype(np.float64)
            t = rng.choice(cand, len(sel), p=w / w.sum())
            room = self.track_samples[t] - self.length + 1
            off = np.minimum((rng.random(len(sel)) * room).astype(np.int64), room - 1)
            starts[sel] = self.track_start[t] + off
            which[sel] = t
        return starts, pick, which

    def read(self, starts: np.ndarray) -> np.ndarray:
        """The windows at ``starts`` as a ``(n, length)`` float32 array."""
        return np.stack([np.asarray(self.flat[s:s + self.length], dtype=np.float32) for s in starts]) \
            if len(starts) else np.zeros((0, self.length), np.float32)


def shift(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Circularly shift each row by up to ``max_shift`` samples either way."""
    if max_shift <= 0:
        return x
    out = np.empty_like(x)
    for i, k in enumerate(rng.integers(-max_shift, max_shift + 1, len(x))):
        out[i] = np.roll(x[i], int(k))
    return out


def augment_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                  settings: AugmentSettings = AugmentSettings()) -> np.ndarray:
    """A style-keeping random variant of the batch ``x`` ``(B, L)`` with classes ``y``.

    Mixing only pairs windows of the same class; gains are at most 0 dB and
    mixes are convex, so ``max |out| <= max |x|``.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    y = np.asarray(y)
    b = len(x)
    if b == 0:
        return x
    src = x.copy()
    if settings.mix_probability > 0:
        for i in np.flatnonzero(rng.random(b) < settings.mix_probability):
            same = np.flatnonzero(y == y[i])
            same = same[same != i]
            if len(same):
                a = rng.uniform(*settings.mix_weight)
                x[i] = a * src[i] + (1.0 - a) * src[rng.choice(same)]
    x = shift(x, settings.max_shift, rng)
    g = 10.0 ** (rng.uniform(*settings.gain_db, size=(b, 1)) / 20.0)
    if settings.polarity:
        g = g * rng.choice(np.array([-1.0, 1.0]), size=(b, 1))
    return (x * g).astype(np.float32)

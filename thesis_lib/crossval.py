"""K-fold cross-validation grouped by track and stratified by style (``python -m thesis_lib crossval``).

Why
---
One train/test split of a small collection holds out two or three tracks per
style, so its accuracy is mostly noise: three splits of the same 21 tracks
gave track accuracy 0.67, 1.00 and 1.00 (issue 10). Cross-validation tests
every track exactly once, on a model that never heard it, and reports the
mean and the spread over folds.

* :func:`track_folds` deals each style's tracks, shuffled, round-robin to the
  K folds (continuing the count across styles), so every fold holds about
  ``1/K`` of each style's tracks and no track is in two folds;
* fold ``k`` trains on the tracks of the other folds (all their audio) and is
  scored on every consecutive clip of its own tracks (clip accuracy) and by a
  vote per track (mean probability over its clips: track accuracy);
* ``crossval.json`` holds every fold's accuracies and test tracks, the means
  and (population) standard deviations, the confusion matrices summed over
  folds, the settings and the seconds each fold took; each fold lists its
  test tracks' votes (:func:`track_predictions`), so the tracks it gets wrong
  can be named;
* ``repeats`` (``--repeats R``) deals the folds R times with seeds ``seed``,
  ``seed + 1``, ... -- repeated cross-validation: the means and spreads are
  then over all R × K folds, ``repeats`` gives each dealing's means and how
  many tracks it voted wrong, and the confusion matrices count every clip
  and track R times.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .data import DatasetError, PreparedDataset, Split

MIN_TEST_TRACKS = 3


def check_folds(folds: int, repeats: int = 1) -> None:
    """``ValueError`` unless there are at least 2 folds dealt at least once (the CLI asks before preparing)."""
    if folds < 2 or repeats < 1:
        raise ValueError(f"cross-validation needs at least 2 folds and at least 1 dealing (repeats), "
                         f"not {folds} folds and {repeats}")


def track_folds(track_style: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Test tracks of each of ``k`` folds (sorted track indices); every track in exactly one fold."""
    track_style = np.asarray(track_style)
    check_folds(k)
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for s in np.unique(track_style[track_style >= 0]):
        for t in rng.permutation(np.flatnonzero(track_style == s)):
            folds[dealt % k].append(int(t))
            dealt += 1
    return [np.sort(np.asarray(f, np.int64)) for f in folds]


def few_test_tracks(styles: list[str], test_track_styles: np.ndarray, minimum: int = MIN_TEST_TRACKS,
                    hint: str = "add tracks") -> list[str]:
    """Warnings for styles with fewer than ``minimum`` test tracks (such an accuracy is noise)."""
    counts = np.bincount(np.asarray(test_track_styles, np.int64), minlength=len(styles))
    return [f"style '{s}' has only {int(n)} test track(s); its accuracy is noise (at least "
            f"{minimum} wanted: {hint})" for s, n in zip(styles, counts) if n < minimum]


def _track_votes(probs: np.ndarray, labels: np.ndarray, tracks: np.ndarray, k: int):
    conf = np.zeros((k, k), np.int64)
    hits = []
    for t in np.unique(tracks):
        sel = tracks == t
        p = int(probs[sel].mean(0).argmax())
        conf[labels[sel][0], p] += 1
        hits.append(p == labels[sel][0])
    return conf, float(np.mean(hits)) if hits else float("nan")


def track_predictions(probs: np.ndarray, labels: np.ndarray, tracks: np.ndarray, styles: list[str],
                      names: list[str]) -> list[dict]:
    """One row per test track: its true and voted style, the vote's mean probability, its clips' accuracy."""
    rows = []
    for t in np.unique(tracks):
        sel = tracks == t
        mean = probs[sel].mean(0)
        p = int(mean.argmax())
        rows.append({"track": names[int(t)], "style": styles[int(labels[sel][0])], "predicted": styles[p],
                     "probability": float(mean[p]), "clips": int(sel.sum()),
                     "clip_accuracy": float(np.mean(probs[sel].argmax(1) == labels[sel]))})
    return rows


def crossval(ds: PreparedDataset, settings, folds: int = 4, out: str | Path | None = None,
             progress: bool = True, log: Callable[[str], None] = print, repeats: int = 1) -> dict:
    """Cross-validate ``settings`` (a :class:`~thesis_lib.train.TrainSettings`) on ``ds``; see the module doc.

    ``repeats`` > 1 deals the folds again with seeds ``settings.seed + 1``, ``+ 2``, ... (the
    weights' seed too: repeat ``r`` is exactly ``crossval`` at that seed) and reports over all
    ``repeats × folds`` folds, with each dealing's means in ``repeats``. Why: which tracks share a
    fold moves the mean by a track or two on a small collection (chapter 4b); a second dealing
    shows how much of a difference between two models is that.
    """
    import torch

    from .robust import prepared_for
    from .runtime import select_device

    check_folds(folds, repeats)   # before the collection is prepared at the model's rate
    ds = prepared_for(ds, settings, log=log)    # the rate this model reads (16 kHz log-mel); no bar in a page

    styles = [s for s, n in ds.clips_per_style().items() if n > 0]
    remap = {ds.styles.index(s): i for i, s in enumerate(styles)}
    track_label = np.array([remap.get(int(s), -1) for s in ds.track_style], np.int64)
    per_style = np.bincount(track_label[track_label >= 0], minlength=len(styles))
    if per_style.min() < 2:
        raise DatasetError(f"cross-validation by track needs at least 2 tracks per style; "
                           f"{dict(zip(styles, per_style.tolist()))}")
    if folds > per_style.min():
        log(f"warning: {folds} folds but a style has only {per_style.min()} tracks; "
            "some folds test no track of it")
    k = len(styles)
    results, clip_conf, track_conf, dealings = [], np.zeros((k, k), np.int64), np.zeros((k, k), np.int64), []
    for r in range(repeats):
        run = replace(settings, seed=settings.seed + r)
        if repeats > 1:
            log(f"dealing {r + 1}/{repeats} (seed {run.seed})")
        folds_r, cc, tc = _one_dealing(ds, run, folds, styles, track_label, progress, log)
        for f in folds_r:
            f.update(repeat=r + 1, seed=run.seed)
        results += folds_r
        clip_conf, track_conf = clip_conf + cc, track_conf + tc
        dealings.append({"seed": run.seed,
                         "clip_accuracy_mean": float(np.mean([f["clip_accuracy"] for f in folds_r])),
                         "track_accuracy_mean": float(np.mean([f["track_accuracy"] for f in folds_r])),
                         "tracks_wrong": int(tc.sum() - np.trace(tc))})
    clip = np.array([r["clip_accuracy"] for r in results])
    track = np.array([r["track_accuracy"] for r in results])
    report = {
        "format": "thesis_lib.crossval/1", "data": str(ds.report.get("data", ds.path)), "styles": styles,
        "folds_k": folds, "folds": results,
        "clip_accuracy_mean": float(clip.mean()), "clip_accuracy_std": float(clip.std()),
        "track_accuracy_mean": float(track.mean()), "track_accuracy_std": float(track.std()),
        "repeats": dealings,
        "confusion": clip_conf.tolist(), "track_confusion": track_conf.tolist(),
        "seconds_per_fold": float(np.mean([r["seconds"] for r in results])),
        "settings": asdict(settings), "device": str(select_device(settings.device)),
        "threads": torch.get_num_threads(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from .train import jsonable

        (out / "crossval.json").write_text(json.dumps(jsonable(report), indent=1, ensure_ascii=False))
    return report


def _one_dealing(ds: PreparedDataset, settings, folds: int, styles: list[str], track_label: np.ndarray,
                 progress: bool, log: Callable[[str], None]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The ``folds`` folds dealt with ``settings.seed``: each fold's result, and the clip and track
    confusion matrices summed over them (every clip and track tested once)."""
    from .predict import clip_probabilities
    from .robust import train_any
    from .runtime import select_device

    k = len(styles)
    fold_tracks = track_folds(track_label, folds, settings.seed)
    results, clip_conf, track_conf = [], np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
    all_tracks = np.flatnonzero(track_label >= 0)
    for f, test_tracks in enumerate(fold_tracks):
        train_tracks = np.setdiff1d(all_tracks, test_tracks)
        assert not np.intersect1d(train_tracks, test_tracks).size
        for w in few_test_tracks(styles, track_label[test_tracks], hint="add tracks or use fewer folds"):
            log(f"warning (fold {f + 1}): {w}")
            warnings.warn(w, stacklevel=3)
        split = Split(np.flatnonzero(np.isin(ds.track_of, train_tracks)),
                      np.flatnonzero(np.isin(ds.track_of, test_tracks)), styles, "track",
                      [f"cross-validation fold {f + 1} of {folds}"])
        log(f"fold {f + 1}/{folds}: {len(train_tracks)} training tracks ({len(split.train)} clips), "
            f"{len(test_tracks)} test tracks ({len(split.test)} clips)")
        t0 = time.perf_counter()
        r = train_any(ds, split, settings, out=None, progress=False, log=log if progress else (lambda m: None))
        seconds = time.perf_counter() - t0
        m = r.metrics
        probs = clip_probabilities(r.model, ds.clips, settings.test_batch_size, select_device(settings.device),
                                    rows=split.test, fold=False)
        labels = track_label[ds.track_of[split.test]]
        clip_conf += np.asarray(m["confusion"])
        tconf, tacc = _track_votes(probs, labels, ds.track_of[split.test], k)
        track_conf += tconf
        predictions = track_predictions(probs, labels, ds.track_of[split.test], styles, ds.tracks)
        results.append({"fold": f + 1, "clip_accuracy": m["test_accuracy"], "track_accuracy": tacc,
                        "test_loss": m["test_loss"], "seconds": seconds,
                        "n_train_tracks": int(len(train_tracks)), "n_train_clips": int(len(split.train)),
                        "n_test_clips": int(len(split.test)),
                        "test_tracks": [ds.tracks[t] for t in test_tracks],
                        "selected_epoch": m.get("selected_epoch"), "track_predictions": predictions})
        log(f"fold {f + 1}/{folds}: clip accuracy {m['test_accuracy']:.3f}, track accuracy {tacc:.3f}, "
            f"{seconds:.0f} s")
    return results, clip_conf, track_conf

"""Chapter 4b's library (thesis_lib.book.realmusic): cached cross-validation, wrong tracks, the leak splits."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from thesis_lib.book import realmusic
from thesis_lib.config import TrainSettings


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THESIS_LIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_compared_settings_are_the_thesis_the_members_and_train_defaults():
    full = realmusic.compared_settings(False)
    assert [s.model for s in full.values()] == ["thesis", "mel", "baseline", "musicnn", "fusion"]
    thesis, mel, base, tagger, fused = full.values()
    assert (thesis.learning_rate, thesis.batch_size, thesis.epochs, thesis.recipe) == (0.01, 480, 20, "thesis")
    assert mel == TrainSettings.recommended("mel") and base == TrainSettings.recommended("baseline")
    assert tagger == TrainSettings.recommended("musicnn")
    assert fused == TrainSettings.recommended() and "train's default" in list(full)[-1]
    small = realmusic.compared_settings(True)
    assert all(s.epochs == 2 for s in small.values()) and list(small.values())[0].batch_size == 8
    assert all(s.epochs == 3 for s in realmusic.compared_settings(False, epochs=3).values())


def test_cache_key_names_what_a_model_is_beyond_its_settings(toy_prepared, monkeypatch):
    """``fusion`` meant the CNN and the baseline before the tagger joined, with the same settings:
    a report cached then must not be read as the new fusion's (chapter 4b's first build did)."""
    from thesis_lib import fusion, musicnn

    fused, tagger = TrainSettings.recommended("fusion"), TrainSettings.recommended("musicnn")
    k_fused, k_tagger = (realmusic.cache_key(toy_prepared, s, {"folds": 2}) for s in (fused, tagger))
    assert realmusic.model_identity("mel") == {}
    assert realmusic.model_identity("baseline") == {"probe_fit": "style-balanced"}   # reports fitted unweighted are stale
    monkeypatch.setitem(fusion.FUSIONS, "fusion", ("cnn", "baseline"))
    assert realmusic.cache_key(toy_prepared, fused, {"folds": 2}) != k_fused
    monkeypatch.setattr(musicnn, "WEIGHTS_SHA256", "0" * 64)                  # other tagger weights
    assert realmusic.cache_key(toy_prepared, tagger, {"folds": 2}) != k_tagger


def test_cache_key_covers_data_settings_and_folds_not_device(toy_prepared):
    s = TrainSettings.recommended("baseline")
    k = realmusic.cache_key(toy_prepared, s, {"folds": 2})
    assert k == realmusic.cache_key(toy_prepared, replace(s, device="cpu", impl="fast"), {"folds": 2})
    assert k != realmusic.cache_key(toy_prepared, replace(s, seed=1), {"folds": 2})
    assert k != realmusic.cache_key(toy_prepared, s, {"folds": 3})
    assert k != realmusic.cache_key(toy_prepared, replace(s, sample_rate=None), {"folds": 2})


def test_steering_key_names_everything_a_steering_result_depends_on(toy_prepared, monkeypatch):
    """A change of the effect search's starts, of the sample-level steering or of the judge's fit
    is a new steering result: chapter 4b must not read the old one as it (the key once named only
    the search's penalty and iterations, and the CNN's settings instead of the judge's)."""
    from thesis_lib import pretrained
    from thesis_lib.dream import settings

    effects, transform = settings.EFFECTS, settings.TRANSFORM
    monkeypatch.setattr(pretrained, "info", lambda net: {"sha256": "a" * 64})
    key = lambda: realmusic._steering_key(toy_prepared, "mel-free", 16, "metal")   # noqa: E731
    k = key()
    assert k == key() and k != realmusic._steering_key(toy_prepared, "mel-free", 16, "metal", penalties=[1.0])
    for changed in ({"starts": ()}, {"eq_bands_hz": (100.0, 1000.0)}, {"confidence": None}):
        monkeypatch.setattr(settings, "EFFECTS", replace(effects, **changed))
        assert key() != k, changed
    monkeypatch.setattr(settings, "EFFECTS", effects)
    assert key() == k
    monkeypatch.setattr(settings, "TRANSFORM", replace(transform, steer_iterations=5))
    assert key() != k
    monkeypatch.setattr(settings, "TRANSFORM", transform)
    monkeypatch.setattr(realmusic, "model_identity", lambda model: {"probe_fit": "unweighted"})
    assert key() != k                                   # the judge (log-mel baseline) fitted another way
    monkeypatch.setattr(pretrained, "info", lambda net: {"sha256": "b" * 64})
    assert realmusic._steering_key(toy_prepared, "mel-free", 16, "metal") != k


def test_cached_crossval_runs_once_and_names_the_wrong_tracks(toy_prepared, cache):
    s = replace(TrainSettings.recommended("baseline"), device="cpu")
    rep, reused = realmusic.cached_crossval(toy_prepared, s, 2)
    assert not reused and any("test track" in w for w in rep["warnings"])
    again, reused = realmusic.cached_crossval(toy_prepared, s, 2)
    assert reused and again["clip_accuracy_mean"] == pytest.approx(rep["clip_accuracy_mean"])
    assert len(list((cache / "book").glob("cv-*/cv.json"))) == 1
    dealt, reused = realmusic.cached_crossval(toy_prepared, s, 2, repeats=2)    # another result, cached apart
    assert not reused and len(dealt["folds"]) == 4 and [d["seed"] for d in dealt["repeats"]] == [0, 1]
    assert dealt["folds"][0]["test_tracks"] == rep["folds"][0]["test_tracks"]
    assert len(list((cache / "book").glob("cv-*/cv.json"))) == 2
    # a report with one wrong track, surest first
    fake = {"folds": [{"fold": 1, "track_predictions": [
        {"track": "a/x.wav", "style": "a", "predicted": "b", "probability": 0.6, "clips": 2, "clip_accuracy": 0.0},
        {"track": "a/y.wav", "style": "a", "predicted": "a", "probability": 0.9, "clips": 2, "clip_accuracy": 1.0}]},
        {"fold": 2, "track_predictions": [
        {"track": "b/z.wav", "style": "b", "predicted": "a", "probability": 0.8, "clips": 1, "clip_accuracy": 0.0}]}]}
    assert [(r["track"], r["fold"]) for r in realmusic.wrong_tracks(fake)] == [("b/z.wav", 2), ("a/x.wav", 1)]
    other = {"folds": [{"fold": 1, "track_predictions": [
        {"track": "a/x.wav", "style": "a", "predicted": "c", "probability": 0.5, "clips": 2, "clip_accuracy": 0.0},
        {"track": "b/z.wav", "style": "b", "predicted": "b", "probability": 0.7, "clips": 1, "clip_accuracy": 1.0}]}]}
    assert realmusic.shared_mistakes(fake, other) == ["a/x.wav"]     # wrong in both, whatever style each voted
    assert realmusic.shared_mistakes(fake, fake) == ["b/z.wav", "a/x.wav"]
    n_wrong = np.asarray(rep["track_confusion"]).sum() - np.trace(rep["track_confusion"])
    assert len(realmusic.wrong_tracks(rep)) == n_wrong
    row = realmusic.crossval_table({"base": rep})[0]
    assert row["model and settings"] == "base" and "±" in row["clip accuracy"]
    clip = realmusic.track_clip(toy_prepared, toy_prepared.tracks[0])
    assert clip.shape == toy_prepared.clips.shape[1:] and clip.dtype == np.float32


def test_leak_splits_hold_out_tracks_or_clips_alike(toy_prepared):
    ds = toy_prepared
    by_track, by_clip = realmusic.leak_splits(ds, seed=0, folds=2)
    for sp in (by_track, by_clip):
        assert not np.intersect1d(sp.train, sp.test).size and len(sp.train) + len(sp.test) == len(ds)
    assert not np.intersect1d(ds.track_of[by_track.train], ds.track_of[by_track.test]).size
    assert np.array_equal(np.bincount(ds.style_of[by_track.test], minlength=len(ds.styles)),
                          np.bincount(ds.style_of[by_clip.test], minlength=len(ds.styles)))
    assert (by_track.mode, by_clip.mode) == ("track", "clip")


def test_leak_comparison_is_cached(toy_prepared, cache):
    s = replace(TrainSettings.recommended("baseline"), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res, reused = realmusic.leak_comparison(toy_prepared, s, 2)
    assert not reused and len(res["runs"]) == 4 and res["track"]["shared"] == 0
    assert 0 <= res["clip"]["mean"] <= 1 and res["seeds"] == 2
    assert realmusic.leak_comparison(toy_prepared, s, 2)[1]


def test_real_steering_runs_only_on_the_shipped_nets_collection(toy_prepared):
    assert realmusic.real_steering(toy_prepared) is None       # other styles: the net never heard them


def test_collection_clips_come_from_the_held_out_tracks_and_not_the_target(toy_prepared):
    from thesis_lib.config import THESIS
    from thesis_lib.data import split_dataset
    from thesis_lib.dream.effects import collection_clips

    ds = toy_prepared
    pick = collection_clips(ds, "high", 3, split_seed=0, seed=1)
    test = split_dataset(ds, THESIS.train_per_style, THESIS.test_per_style, "track", 0).test
    assert len(set(pick.tolist())) == len(pick) and set(pick.tolist()) <= set(test.tolist())
    assert all(ds.styles[ds.style_of[i]] != "high" for i in pick)
    assert len(collection_clips(ds, "high", 100)) == int(np.sum(ds.style_of != ds.styles.index("high")))

import json

import numpy as np
import pytest

from thesis_lib.config import THESIS
from thesis_lib.data import DatasetError, PreparedDataset, find_tracks, prepare_dataset, split_dataset

from conftest import TRACK_SECONDS, tone_track, write_track


def test_prepare_reports_counts_and_caches(toy_data, tmp_path):
    ds = prepare_dataset(toy_data, tmp_path / "p", progress=False, jobs=1)
    assert ds.styles == ["high", "low"]
    assert ds.clips_per_style() == {"high": 8, "low": 8}
    assert ds.clips.shape == (16, THESIS.clip_samples)
    assert ds.report["skipped"] == []
    # a second call is served from the cache: same folder, same files, no rewrite
    mtime = (tmp_path / "p" / "clips.f32").stat().st_mtime_ns
    again = prepare_dataset(toy_data, tmp_path / "p", progress=False)
    assert (tmp_path / "p" / "clips.f32").stat().st_mtime_ns == mtime
    assert np.array_equal(np.asarray(again.clips), np.asarray(ds.clips))


def test_parallel_preparation_matches_serial(toy_data, tmp_path):
    a = prepare_dataset(toy_data, tmp_path / "a", progress=False, jobs=1)
    b = prepare_dataset(toy_data, tmp_path / "b", progress=False, jobs=2)
    assert a.tracks == b.tracks and np.array_equal(np.asarray(a.clips), np.asarray(b.clips))


def test_cache_key_changes_with_files(toy_data, tmp_path):
    prepare_dataset(toy_data, tmp_path / "p", progress=False, jobs=1)
    extra = write_track(toy_data / "low" / "zz_extra.wav", tone_track(120, TRACK_SECONDS))
    try:
        ds = prepare_dataset(toy_data, tmp_path / "p", progress=False, jobs=1)
        assert "low/zz_extra.wav" in ds.tracks
    finally:
        extra.unlink()


def test_bad_tracks_are_skipped_and_reported(tmp_path):
    root = tmp_path / "music"
    for style, f in (("a", 200), ("b", 900)):
        write_track(root / style / "good one.wav", tone_track(f))
        write_track(root / style / "gööd twö ♪.flac", tone_track(f * 1.1))
    (root / "a" / "empty.mp3").write_bytes(b"")
    (root / "a" / "readme.mp3").write_text("not music")
    (root / "b" / "corrupt.ogg").write_bytes(b"OggS" + bytes(500))
    write_track(root / "b" / "silence.wav", np.zeros((8000 * 70, 1), np.float32), 8000)
    write_track(root / "b" / "short.wav", tone_track(300, 20.0))
    (root / "b" / "cover.jpg").write_bytes(b"\xff\xd8")
    (root / "b" / "theme.MID").write_bytes(b"MThd\0\0\0\x06\0\0\0\x01\0\x60")
    (root / "tune.mid").write_bytes(b"MThd")
    ds = prepare_dataset(root, tmp_path / "prep", progress=False, jobs=2)
    skipped = {s["file"]: s["reason"] for s in ds.report["skipped"]}
    assert set(skipped) == {"a/empty.mp3", "a/readme.mp3", "b/corrupt.ogg", "b/silence.wav", "b/short.wav"}
    assert "empty" in skipped["a/empty.mp3"] and "decode" in skipped["a/readme.mp3"]
    assert "silent" in skipped["b/silence.wav"] and "too short" in skipped["b/short.wav"]
    assert ds.tracks_per_style() == {"a": 2, "b": 2}
    assert "gööd twö ♪.flac" in " ".join(ds.tracks)
    report = json.loads((tmp_path / "prep" / "report.json").read_text())
    ignored = {i["file"]: i["reason"] for i in report["ignored"]}
    assert ignored.pop("b/cover.jpg") == "not an audio file (extension '.jpg')"
    for midi in ("b/theme.MID", "tune.mid"):          # inside a style or beside them: the same hint
        assert ignored.pop(midi).startswith("a MIDI file: notes, not sound; render it to WAV first")
    assert not ignored
    assert {u["file"] for u in report["used"]} == set(ds.tracks)


def test_one_style_folder_is_refused(tmp_path):
    write_track(tmp_path / "only" / "t.wav", tone_track(200, 1.0))
    with pytest.raises(DatasetError, match="need at least two"):
        find_tracks(tmp_path)


def test_style_with_no_usable_track(tmp_path):
    write_track(tmp_path / "good" / "t.wav", tone_track(200))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.mp3").write_text("nope")
    with pytest.raises(DatasetError, match=r"only 1 style.*report\.json"):
        prepare_dataset(tmp_path, tmp_path / "prep", progress=False, jobs=1)


def test_missing_folder():
    with pytest.raises(DatasetError, match="not a folder"):
        find_tracks("/no/such/folder")


def test_split_by_track_keeps_songs_apart(toy_prepared):
    sp = split_dataset(toy_prepared, train_per_style=100, test_per_style=2, split="track", seed=3)
    assert not set(toy_prepared.track_of[sp.train]) & set(toy_prepared.track_of[sp.test])
    for s in range(2):  # balanced
        assert np.sum(toy_prepared.style_of[sp.train] == s) == len(sp.train) // 2
        assert np.sum(toy_prepared.style_of[sp.test] == s) == len(sp.test) // 2
    assert sp.notes and "balanced" in sp.notes[0]


def test_split_by_clip_leaks(toy_prepared):
    sp = split_dataset(toy_prepared, train_per_style=6, test_per_style=2, split="clip", seed=0)
    assert len(sp.train) == 12 and len(sp.test) == 4 and not sp.notes
    assert not set(sp.train) & set(sp.test)
    # with 2 clips per track and 6 of 8 clips per style trained on, some test track is also trained on
    assert set(toy_prepared.track_of[sp.train]) & set(toy_prepared.track_of[sp.test])


def test_split_is_seeded(toy_prepared):
    a = split_dataset(toy_prepared, 4, 2, seed=1)
    b = split_dataset(toy_prepared, 4, 2, seed=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)


def test_track_split_needs_two_tracks(tmp_path):
    write_track(tmp_path / "a" / "t.wav", tone_track(200))
    write_track(tmp_path / "b" / "t.wav", tone_track(900))
    ds = prepare_dataset(tmp_path, tmp_path / "prep", progress=False, jobs=1)
    with pytest.raises(DatasetError, match="--split clip"):
        split_dataset(ds, split="track")


def test_load_rejects_non_prepared(tmp_path):
    with pytest.raises(DatasetError, match="prepare"):
        PreparedDataset.load(tmp_path)

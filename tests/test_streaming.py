"""Streaming decode (issue 13): the same samples as the old whole-file librosa path, block by block."""

import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from thesis_lib import audio
from thesis_lib.audio import AudioError, decode_track, load_audio, prepare_track
from thesis_lib.config import THESIS

from conftest import tone_track, write_track

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def old_load_audio(path, sample_rate=THESIS.sample_rate, res_type=THESIS.resample_type):
    """The whole-file decode this project used before issue 13 (the reference)."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, _ = librosa.load(path, sr=sample_rate, mono=True, res_type=res_type)
    return y.astype(np.float32, copy=False)


def old_prepare_track(path, cfg=THESIS):
    y = audio.peak_normalize(old_load_audio(path, cfg.sample_rate, cfg.resample_type), cfg.peak)
    return audio.cut_clips(audio.trim_ends(y, cfg.trim_samples), cfg.clip_samples)


def music(seconds, sr, channels, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.stack([0.3 * np.sin(2 * np.pi * (180 + 40 * c) * t) * (1 + 0.3 * np.sin(t)) for c in range(channels)], 1)
    return (y + 0.05 * rng.standard_normal(y.shape)).astype(np.float32)


@pytest.mark.parametrize("name,sr,channels", [("stereo 44k.flac", 44_100, 2), ("mono 22k.wav", 22_050, 1),
                                              ("native 8k.wav", 8_000, 1), ("six 48k.flac", 48_000, 6)])
def test_streaming_equals_the_whole_file_decode(tmp_path, monkeypatch, name, sr, channels):
    """A few minutes, in small blocks (many block boundaries): bit for bit the old clips."""
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 10_007)
    path = write_track(tmp_path / name, music(100, sr, channels), sr)
    old, new = old_load_audio(path), load_audio(path)
    assert old.shape == new.shape and np.array_equal(old, new)
    clips = prepare_track(path)
    assert clips.shape == (8, THESIS.clip_samples) and np.array_equal(clips, old_prepare_track(path))


def test_streaming_mp3_matches(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no mp3")
    path = tmp_path / "t.mp3"
    sf.write(path, music(20, 44_100, 2), 44_100, format="MP3")
    assert np.array_equal(load_audio(path), old_load_audio(path))


@pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg")
def test_ffmpeg_format_matches_audioread_and_is_not_called_damaged(tmp_path):
    """m4a: soundfile cannot read it; ffmpeg's 16-bit PCM, as librosa's audioread fallback gave."""
    wav = write_track(tmp_path / "src.wav", music(12, 44_100, 2), 44_100)
    m4a = tmp_path / "t.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), str(m4a)], check=True)
    with decode_track(m4a) as t:
        y = t.read()
        assert t.notes == ["decoded by ffmpeg (a format soundfile cannot read)"]
    ref = old_load_audio(m4a)
    assert y.shape == ref.shape and np.allclose(y, ref, atol=1e-6)


@pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg")
def test_truncated_flac_is_marked_damaged(tmp_path):
    path = write_track(tmp_path / "t.flac", music(20, 44_100, 1), 44_100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with decode_track(path) as t:
        assert t.seconds < 15
        assert any(n.startswith("decoded by ffmpeg after soundfile failed:") for n in t.notes), t.notes
        assert any(n.startswith("truncated: its header promises 20.0 s") for n in t.notes), t.notes


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_named(tmp_path, bad):
    y = music(3, 16_000, 2)
    y[20_000, 1] = bad
    path = tmp_path / "float.wav"
    sf.write(path, y, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"samples are not finite .*first at 1\.25 s") as info:
        load_audio(path)
    assert "float.wav" in str(info.value) and "is it a real" not in str(info.value)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(AudioError, match="is a folder, not an audio file"):
        load_audio(tmp_path)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_decoded_track_keeps_only_a_file(tmp_path):
    path = write_track(tmp_path / "t.wav", tone_track(300, 3.0, sr=16_000))
    with decode_track(path) as t:
        assert t.n_samples == 3 * THESIS.sample_rate and t.read(10, 20).shape == (10,)
        assert np.isclose(t.peak, 0.5, atol=1e-2)
    assert t._store.closed


@pytest.mark.parametrize("seconds,trim", [(100, "auto"), (40, "auto"), (3, "auto"), (100, "none")])
def test_predict_streams_the_same_verdict(tmp_path, seconds, trim):
    import torch

    from thesis_lib.model import StyleNet
    from thesis_lib.predict import classify_track, clip_probabilities, track_clips

    torch.manual_seed(0)
    model = StyleNet(2).eval()
    path = write_track(tmp_path / "t.flac", music(seconds, 44_100, 2), 44_100)
    v = classify_track(model, ["x", "y"], path, trim=trim, batch_size=3)
    clips, trimmed, padded = track_clips(old_load_audio(path), THESIS, trim)
    ref = clip_probabilities(model, clips, 3).mean(0)
    assert (v.n_clips, v.trimmed, v.padded) == (len(clips), trimmed, padded)
    assert np.allclose(list(v.probabilities.values()), ref, atol=1e-6)


def test_dream_clip_is_the_old_clip(tmp_path):
    from thesis_lib.dream.layers import load_clip

    path = write_track(tmp_path / "t.wav", music(12, 22_050, 2), 22_050)
    y = audio.peak_normalize(old_load_audio(path))
    for offset, start in ((None, (y.size - THESIS.clip_samples) // 2), (2.0, 2 * THESIS.sample_rate)):
        assert np.array_equal(load_clip(path, offset), y[start:start + THESIS.clip_samples])


def test_channels_in_opposite_phase_are_read_from_the_first(tmp_path, monkeypatch):
    """Left = -right (a tracker's surround panning): the mean of the channels is silence plus
    rounding, which peak normalisation would blow up into noise. The first channel is read instead,
    and the notes say why; ordinary stereo keeps the thesis's mean of the channels."""
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 10_007)
    left = music(12, 44_100, 1)[:, 0]
    path = write_track(tmp_path / "surround.wav", np.stack([left, -left], 1), 44_100)
    alone = write_track(tmp_path / "left.wav", left[:, None], 44_100)
    with decode_track(path) as t, decode_track(alone) as ref:
        assert np.array_equal(t.read(), ref.read()) and t.peak == ref.peak
        assert any(n.startswith("its channels cancel in a mono mix") and "first channel" in n for n in t.notes)
    partly = np.stack([left, -0.9 * left], 1)          # 26 dB below its channels: still cancels
    with decode_track(write_track(tmp_path / "partly.wav", partly, 44_100)) as t:
        assert any("cancel" in n for n in t.notes)
    wide = music(12, 44_100, 2)                        # two different channels: the mean, no note
    path = write_track(tmp_path / "wide.wav", wide, 44_100)
    with decode_track(path) as t:
        assert t.notes == [] and np.array_equal(t.read(), old_load_audio(path))
    wide_anti = np.stack([wide[:, 0], -0.5 * wide[:, 0] + wide[:, 1]], 1)   # partly opposite, mostly not
    with decode_track(write_track(tmp_path / "anti.wav", wide_anti, 44_100)) as t:
        assert t.notes == []


def _tracker_module(path, orders=2, period=428):
    """A ProTracker module ("M.K.", 4 channels): one square-wave instrument, a note every fourth row
    of one 64-row pattern played ``orders`` times -- 7.68 s a pattern at the default speed 6, tempo 125."""
    import struct

    wave = (np.sign(np.sin(2 * np.pi * np.arange(32) / 32)) * 100).astype(np.int8)
    instrument = b"square".ljust(22, b"\0") + struct.pack(">HBBHH", len(wave) // 2, 0, 64, 0, len(wave) // 2)
    empty = b"\0" * 22 + struct.pack(">HBBHH", 0, 0, 0, 0, 1)
    pattern = bytearray(1024)                          # 64 rows x 4 channels x 4 bytes
    for row in range(0, 64, 4):
        pattern[16 * row:16 * row + 4] = bytes([period >> 8, period & 0xFF, 1 << 4, 0])   # instrument 1
    path.write_bytes(b"thesis test".ljust(20, b"\0") + instrument + empty * 30 + bytes([orders, 127])
                     + bytes(128) + b"M.K." + bytes(pattern) + wave.tobytes())
    return path


def _ffmpeg_renders_modules() -> bool:
    if not HAVE_FFMPEG:
        return False
    out = subprocess.run(["ffmpeg", "-hide_banner", "-formats"], capture_output=True, text=True).stdout
    return "libopenmpt" in out


@pytest.mark.skipif(not _ffmpeg_renders_modules(), reason="needs ffmpeg with libopenmpt")
def test_tracker_modules_are_music(tmp_path):
    """Much free game music ships as tracker modules (.mod/.xm/.s3m/.it): ffmpeg renders them once
    through the song, and a collection folder counts them as tracks."""
    from thesis_lib.data import find_tracks

    (tmp_path / "game").mkdir()
    mod = _tracker_module(tmp_path / "game" / "tune.mod")
    with decode_track(mod, 16_000) as t:
        y = t.read()
        assert 15.0 < t.seconds < 17.0                 # two patterns of 7.68 s, played once, a short tail
        assert t.notes == ["decoded by ffmpeg (a format soundfile cannot read)"]
        assert np.isfinite(y).all() and t.peak > 0.05
        assert np.mean(np.abs(y[: 16_000 * 7])) > 0.01  # sound, not silence, all along the first pattern
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tune.xm").write_bytes(mod.read_bytes())   # libopenmpt reads the content, not the name
    found = find_tracks(tmp_path)
    assert [p.name for p in found.tracks["game"]] == ["tune.mod"] and found.tracks["other"][0].suffix == ".xm"


def test_a_module_ffmpeg_cannot_render_says_what_is_missing(tmp_path, monkeypatch):
    path = tmp_path / "tune.it"
    path.write_bytes(b"IMPM" + bytes(200))
    monkeypatch.setattr(audio, "_ffmpeg_blocks", lambda p: (_ for _ in ()).throw(
        AudioError(p, "ffmpeg finds no audio stream (Invalid data found when processing input)")))
    with pytest.raises(AudioError, match="tracker module needs an ffmpeg built with libopenmpt") as info:
        load_audio(path)
    assert "tune.it" in str(info.value)


def test_preparation_names_a_track_read_from_its_first_channel(tmp_path):
    from thesis_lib.data import describe_report, prepare_dataset

    for style, sign in (("a", 1.0), ("b", -1.0)):
        (tmp_path / "music" / style).mkdir(parents=True)
        left = music(70, 16_000, 1, seed=1 if style == "a" else 2)[:, 0]
        write_track(tmp_path / "music" / style / "t.wav", np.stack([left, sign * left], 1), 16_000)
    ds = prepare_dataset(tmp_path / "music", tmp_path / "prep", jobs=1, progress=False)
    summary = describe_report(ds)
    assert "used, from its first channel: b/t.wav: its channels cancel in a mono mix" in summary
    assert "a/t.wav" not in summary and ds.report["n_tracks"] == 2 and not ds.report["skipped"]

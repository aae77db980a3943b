import numpy as np
import pytest
import soundfile as sf

from thesis_lib.audio import (AudioError, cut_clips, load_audio, peak_normalize, prepare_track, to_int16,
                              trim_ends, write_wav)
from thesis_lib.config import THESIS

from conftest import TRACK_SECONDS, tone_track, write_track


def test_load_resamples_stereo_to_mono_8k(tmp_path):
    path = write_track(tmp_path / "stereo 44k.wav", tone_track(440, 2.0, sr=44_100, channels=2), 44_100)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 2 * THESIS.sample_rate) <= 1
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * THESIS.sample_rate / y.size - 440) < 2   # pitch survives resampling


@pytest.mark.parametrize("fmt", ["flac", "ogg", "wav"])
def test_load_formats(tmp_path, fmt):
    path = tmp_path / f"track.{fmt}"
    sf.write(path, tone_track(300, 1.0, sr=22_050)[:, 0], 22_050)
    assert abs(load_audio(path).size - THESIS.sample_rate) <= 2


def test_load_mp3(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write mp3")
    path = tmp_path / "track.mp3"
    sf.write(path, tone_track(300, 1.0, sr=22_050)[:, 0], 22_050, format="MP3")
    assert abs(load_audio(path).size - THESIS.sample_rate) < 2000  # mp3 adds encoder padding


def test_peak_normalize():
    y = peak_normalize(np.array([0.1, -0.5, 0.25], np.float32))
    assert np.isclose(np.max(np.abs(y)), THESIS.peak)
    assert np.allclose(y / y[1], [-0.2, 1.0, -0.5])
    with pytest.raises(ValueError, match="silent"):
        peak_normalize(np.zeros(10, np.float32))


def test_trim_and_cut():
    y = np.arange(2 * THESIS.trim_samples + 2 * THESIS.clip_samples + 123, dtype=np.float32)
    body = trim_ends(y)
    assert body[0] == THESIS.trim_samples and body.size == 2 * THESIS.clip_samples + 123
    clips = cut_clips(body)
    assert clips.shape == (2, THESIS.clip_samples)
    assert clips[1, 0] == THESIS.trim_samples + THESIS.clip_samples  # consecutive, no overlap
    assert trim_ends(np.ones(100)).size == 0


def test_prepare_track_order_and_shape(tmp_path):
    path = write_track(tmp_path / "t.wav", tone_track(200, TRACK_SECONDS))
    clips = prepare_track(path)
    assert clips.shape == (1, THESIS.clip_samples) and clips.dtype == np.float32
    # normalised on the whole track before trimming: the clip's peak is the track's 0.9
    assert np.isclose(np.max(np.abs(clips)), THESIS.peak, atol=1e-3)


@pytest.mark.parametrize("name,content,reason", [
    ("empty.wav", b"", "empty file"),
    ("notes.mp3", b"this is a text file, not music\n" * 20, "cannot decode"),
    ("corrupt.flac", b"fLaC" + bytes(range(256)) * 8, "cannot decode"),
])
def test_bad_files_name_file_and_cause(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason) as info:
        prepare_track(path)
    assert name in str(info.value)


def test_silent_and_short_tracks(tmp_path):
    silent = write_track(tmp_path / "silent.wav", np.zeros((THESIS.sample_rate * 70, 1), np.float32), 8000)
    with pytest.raises(AudioError, match="silent"):
        prepare_track(silent)
    short = write_track(tmp_path / "short.wav", tone_track(300, 40.0))
    with pytest.raises(AudioError, match=r"too short: 40\.0 s.*65 s"):
        prepare_track(short)


def test_write_wav_is_16bit_peak_09(tmp_path):
    y = np.array([0.0, 2.0, -4.0, np.nan, 1.0])
    path = write_wav(tmp_path / "out.wav", y)
    info = sf.info(path)
    assert info.subtype == "PCM_16" and info.samplerate == THESIS.sample_rate
    back, _ = sf.read(path)
    assert np.isclose(np.max(np.abs(back)), 0.9, atol=1e-4) and np.all(np.isfinite(back))
    assert to_int16(np.array([5.0]), peak=None)[0] == 32767  # clipped, never wrapped

"""Collections bigger than memory: preparation streams to disk, and a dead preparation is never trusted."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import tone_track, write_track
from thesis_lib.config import THESIS
from thesis_lib.data import PreparedDataset, prepare_dataset

SR = THESIS.sample_rate
TRACK_S = 100          # 100 s at 8 kHz: 8 clips (1.3 MB of clips) per track


def _collection(root: Path, per_style: int) -> Path:
    for i in range(per_style):
        write_track(root / "low" / f"low_{i}.wav", tone_track(100 + 7 * i, TRACK_S, sr=SR, noise=0.1, seed=i), SR)
        write_track(root / "high" / f"high_{i}.wav", tone_track(1400 + 9 * i, TRACK_S, sr=SR, noise=0.1, seed=50 + i), SR)
    return root


PROBE = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    from thesis_lib.config import THESIS
    from thesis_lib.data import _warm_decoder, prepare_dataset
    _warm_decoder(THESIS)  # the decoder's imports happen before measuring: they are not preparation
    tracemalloc.start()
    ds = prepare_dataset(sys.argv[1], sys.argv[2], jobs=int(sys.argv[3]), progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"clips": len(ds), "traced_peak": peak,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def _probe(data: Path, out: Path, jobs: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(data), str(out), str(jobs)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_preparation_memory_does_not_grow_with_the_collection(tmp_path):
    """6 tracks against 12, decoded by 2 worker processes (at most 4 tracks in flight)."""
    small = _probe(_collection(tmp_path / "small", 3), tmp_path / "p_small", 2)
    large = _probe(_collection(tmp_path / "large", 6), tmp_path / "p_large", 2)
    assert large["clips"] == 2 * small["clips"] == 2 * 6 * 8
    track_bytes = 8 * THESIS.clip_samples * 4                          # 1.3 MB of clips per track
    clip_bytes_large = large["clips"] * THESIS.clip_samples * 4          # 15.4 MB
    # At most 2 * jobs decoded tracks wait in the window, plus the one being written and the one
    # being decoded in this process: the peak is bounded by a few tracks, not by the collection.
    bound = (2 * 2 + 2) * track_bytes + 2_000_000
    assert small["traced_peak"] < bound and large["traced_peak"] < bound, (small, large, bound)
    assert large["traced_peak"] < 0.6 * clip_bytes_large                # far from holding the clips
    # Resident memory of the whole process (imports included) does not grow by the clips either.
    assert (large["maxrss_kb"] - small["maxrss_kb"]) * 1024 < 0.5 * (clip_bytes_large / 2), (small, large)
    ds = PreparedDataset.load(tmp_path / "p_large")
    assert isinstance(ds.clips, np.memmap)                    # training reads from disk, not RAM


KILLER = textwrap.dedent("""
    import os, sys
    import thesis_lib.data as data
    real, seen = data._prepare_one, []
    def dying(args):
        seen.append(args)
        if len(seen) == 3:
            os._exit(9)        # killed midway: no cleanup code runs
        return real(args)
    data._prepare_one = dying
    data.prepare_dataset(sys.argv[1], sys.argv[2], jobs=1, progress=False, force=True)
""")


def test_killed_preparation_leaves_nothing_a_rerun_would_trust(toy_data, tmp_path):
    out = tmp_path / "prep"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(toy_data), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 9
    assert not out.exists()                      # half-written clips stay under a temporary name
    leftovers = list(tmp_path.glob(".prep.tmp-*"))
    assert leftovers and not (leftovers[0] / "index.json").exists()
    ds = prepare_dataset(toy_data, out, jobs=1, progress=False)      # the rerun rebuilds
    assert len(ds) == 16 and (out / "index.json").is_file()
    # A second preparation that dies while replacing a good cache leaves the good one intact.
    before = (out / "clips.f32").read_bytes()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(toy_data), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 9
    assert (out / "clips.f32").read_bytes() == before
    again = prepare_dataset(toy_data, out, jobs=1, progress=False)
    assert np.array_equal(np.asarray(again.clips), np.asarray(ds.clips))


def test_failed_preparation_cleans_up(toy_data, tmp_path, monkeypatch):
    """An error while writing (e.g. a full disk) removes the temporary folder and creates no cache."""
    import thesis_lib.data as data

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data, "_replace_dir", full_disk)
    with pytest.raises(OSError, match="No space"):
        prepare_dataset(toy_data, tmp_path / "prep", jobs=1, progress=False)
    assert list(tmp_path.iterdir()) == []


LONG_PROBE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from thesis_lib.config import THESIS
    from thesis_lib.data import _prepare_one, _warm_decoder
    from thesis_lib.model import StyleNet
    from thesis_lib.predict import classify_track
    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = StyleNet(2).eval()
    _warm_decoder(THESIS)
    classify_track(model, ["a", "b"], sys.argv[3])           # imports and first-call costs, a short file
    from thesis_lib.predict import clip_probabilities       # and the net's activations for one full batch
    clip_probabilities(model, np.zeros((THESIS.test_batch_size, THESIS.clip_samples), np.float32))
    base = rss()
    res = _prepare_one((sys.argv[1], THESIS, sys.argv[2]))
    after_prepare = rss()
    verdict = classify_track(model, ["a", "b"], sys.argv[1])
    print(json.dumps({"prepare": res, "n_clips": verdict.n_clips, "error": verdict.error,
                      "prepare_growth": after_prepare - base, "predict_growth": rss() - after_prepare,
                      "total_growth": rss() - base}))
""")


def test_a_long_track_is_decoded_in_bounded_memory(tmp_path):
    """A 6-minute stereo 44.1 kHz mix: preparing and classifying it hold a window, not the track.

    The old whole-file decode held the track as float32 in both channels (127 MB here) before
    resampling, so its peak grew by at least that much; the streaming decode holds a few blocks
    and one batch of clips. The bound is a quarter of the whole decoded track.
    """
    sr, minutes = 44_100, 6
    path = tmp_path / "mix.wav"
    rng = np.random.default_rng(0)
    import soundfile as sf
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        for lo in range(0, minutes * 60 * sr, 10 * sr):
            t = np.arange(lo, lo + 10 * sr) / sr
            f.write(np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1)
                    + 0.02 * rng.standard_normal((t.size, 2)))
    short = write_track(tmp_path / "short.wav", tone_track(300, 10.0, sr=sr), sr)
    whole_track_bytes = minutes * 60 * sr * 2 * 4
    proc = subprocess.run([sys.executable, "-c", LONG_PROBE, str(path), str(tmp_path / "part.f32"), str(short)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    n_clips = (minutes * 60 * SR - 2 * THESIS.trim_samples) // THESIS.clip_samples
    assert r["prepare"]["clips"] == r["n_clips"] == n_clips and r["error"] is None
    assert (tmp_path / "part.f32").stat().st_size == n_clips * THESIS.clip_samples * 4
    assert r["total_growth"] < whole_track_bytes / 4, r

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

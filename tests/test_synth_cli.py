import json

import numpy as np
import soundfile as sf

from thesis_lib.cli import main
from thesis_lib.synth import STYLES, SynthSpec, compose_track, generate_dataset

TINY = SynthSpec(tracks_per_style=3, min_seconds=66, max_seconds=72)


def test_compose_is_deterministic_and_safe():
    a = compose_track("metal", np.random.default_rng(5), 10, 11_025)
    b = compose_track("metal", np.random.default_rng(5), 10, 11_025)
    assert np.array_equal(a, b)
    assert np.all(np.isfinite(a)) and 0.5 < np.max(np.abs(a)) <= 1.0


def test_metal_is_noisier_than_cpop():
    """Distortion, cymbals and growls make metal's spectrum flatter (more noise-like) on average."""
    from scipy.signal import stft

    def flatness(style):
        values = []
        for seed in range(6):
            y = compose_track(style, np.random.default_rng(seed), 20, 11_025)
            power = np.abs(stft(y, 11_025, nperseg=512)[2]) ** 2 + 1e-12
            values.append(np.mean(np.exp(np.mean(np.log(power), 0)) / np.mean(power, 0)))
        return np.mean(values)
    assert flatness("metal") > 1.5 * flatness("cpop")


def test_generate_writes_tracks_and_is_idempotent(tmp_path):
    root = generate_dataset(tmp_path / "d", TINY, jobs=1, progress=False)
    files = sorted(root.rglob("*.flac"))
    assert len(files) == 6 and {f.parent.name for f in files} == set(STYLES)
    info = sf.info(files[0])
    assert info.samplerate == 11_025 and info.subtype == "PCM_16"
    mtimes = [f.stat().st_mtime_ns for f in files]
    generate_dataset(root, TINY, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_cli_prepare_and_train(tmp_path, capsys):
    data = generate_dataset(tmp_path / "d", TINY, jobs=2, progress=False)
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "prep"), "--quiet"]) == 0
    report = json.loads((tmp_path / "prep" / "report.json").read_text())
    assert report["n_tracks"] == 6 and report["skipped"] == []
    rc = main(["train", "--data", str(tmp_path / "prep"), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--batch-size", "2", "--quiet", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "track accuracy" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["styles"] == list(STYLES) and metrics["batch_size"] == 2
    assert (tmp_path / "run" / "model.pt").is_file()


def test_cli_reports_unusable_dataset(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    assert main(["prepare", "--data", str(tmp_path), "--out", str(tmp_path / "p")]) == 1
    assert "need at least two" in capsys.readouterr().err


def test_reproduce_small(tmp_path):
    from thesis_lib.reproduce import reproduce
    from thesis_lib.train import TrainSettings

    result = reproduce(tmp_path / "r", TINY, settings=TrainSettings.thesis(epochs=2, batch_size=4, device="cpu"),
                       data_dir=tmp_path / "d", progress=False, log=lambda m: None)
    for name in ("model.pt", "metrics.json", "figure21.png", "table1.md", "report.json"):
        assert (tmp_path / "r" / name).is_file()
    table = (tmp_path / "r" / "table1.md").read_text()
    assert "| 1 | 0.621 |" in table and "| 3 | 0.101 | – |" in table
    assert result.metrics["learning_rate"] == 0.01

"""thesis_lib.book: what every chapter loads or rebuilds, and the small tables it prints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thesis_lib import book
from thesis_lib.model import frequency_response
from thesis_lib.config import THESIS
from thesis_lib.data import split_dataset
from thesis_lib.model import StyleNet


def test_network_table_has_the_thesis_receptive_fields_and_frequencies():
    rows = book.network_table()
    assert [r["output steps"] for r in rows] == [19997, 4992, 1217]
    assert [(r["receptive field (samples)"], r["hop (samples)"]) for r in rows] == [(8, 2), (70, 8), (1086, 32)]
    assert rows[2]["receptive field (ms)"] == pytest.approx(135.8, abs=0.1)
    assert [r["lowest frequency (Hz)"] for r in rows] == [1000.0, 250.0, 62.5]
    assert THESIS.input_rates() == [8000.0, 4000.0, 1000.0]


def test_run_key_ignores_where_a_run_trains_but_not_what_changes_its_result():
    s = book.synth_spec(True)
    base = book.run_key(s, book.train_settings(True), "track", (2400, 240))
    assert base == book.run_key(s, book.train_settings(True, device="cuda"), "track", (2400, 240))
    assert base != book.run_key(s, book.train_settings(True, epochs=3), "track", (2400, 240))
    assert base != book.run_key(s, book.train_settings(True), "clip", (2400, 240))
    assert base != book.run_key(book.synth_spec(False), book.train_settings(True), "track", (2400, 240))


def test_small_and_full_settings_are_the_thesis_optimiser():
    full, small = book.train_settings(False), book.train_settings(True)
    assert (full.learning_rate, full.batch_size, full.epochs) == (0.01, 480, 20)
    assert (small.learning_rate, small.momentum, small.epochs) == (0.01, 0.9, book.SMALL_EPOCHS)
    assert book.synth_spec(False).tracks_per_style == 110
    assert book.SMALL_SPEC.min_seconds * THESIS.sample_rate >= THESIS.min_track_samples


def test_trained_model_trains_once_then_reuses_the_cached_run():
    first = book.trained_model(True)
    again = book.trained_model(True)
    assert again.reused and again.path == first.path
    assert (again.path / "model.pt").is_file() and (again.path / "book.json").is_file()
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert len(again.history) == book.SMALL_EPOCHS
    assert again.styles == ["cpop", "metal"]
    clip = again.test_clip("metal", 5)
    assert clip.shape == (THESIS.clip_samples,) and clip.flags.writeable
    test_ids = set(again.split.test.tolist())
    assert any(np.array_equal(clip, again.dataset.clips[i]) for i in test_ids)
    with pytest.raises(ValueError):
        again.test_clip("jazz")
    assert any(r["path"] == str(again.path) for r in book.finished_runs(small=True))
    mine = next(r for r in book.finished_runs(small=True) if r["path"] == str(again.path))
    assert mine["impl"] in ("fast", "reference") and mine["train_clips"] == len(again.split.train)
    assert not any(r["path"] == str(again.path) for r in book.finished_runs(small=False))


def test_leakage_is_zero_by_track_and_counts_shared_songs_by_clip():
    ds = book.dataset(True)
    by_track = book.leakage(ds, split_dataset(ds, split="track"))
    assert by_track["from tracks also in training"] == 0
    by_clip = book.leakage(ds, split_dataset(ds, split="clip"))
    assert by_clip["from tracks also in training"] > 0
    per = book.clips_per_track(ds)
    assert sum(map(sum, per.values())) == len(ds) and all(c == sorted(c, reverse=True) for c in per.values())


def test_frequency_response_of_a_known_filter():
    # A 2-tap average is a low-pass: 0 dB at DC, a null at Nyquist.
    f, db = frequency_response(np.array([[[0.5, 0.5]]]), 8000.0, n_fft=512)
    assert f[0] == 0 and f[-1] == 4000
    assert db[0, 0] == pytest.approx(0.0, abs=1e-6) and db[0, -1] < -30
    torch.manual_seed(0)
    rows = book.filter_stats({"random": StyleNet()})
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3"]
    assert rows[0]["mean abs weight"] > 4 * rows[2]["mean abs weight"]  # Glorot: more inputs, smaller weights


def test_dc_gain_and_weight_change_and_shared_filter_scale():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, avg = frequency_response(np.array([[[0.5, 0.5]]]), 8000.0, n_fft=512)     # low-pass: DC above the mean
    _, diff = frequency_response(np.array([[[0.5, -0.5]]]), 8000.0, n_fft=512)   # high-pass: DC blocked
    assert book.dc_gain_db(avg)[0] > 3 and book.dc_gain_db(diff)[0] < -30
    stats = [{"net": "a", "layer": "conv1", "mean abs weight": 1.16},
             {"net": "b", "layer": "conv1", "mean abs weight": 1.0}]
    assert book.weight_change(stats, "a", "b") == {"conv1": pytest.approx(0.16)}
    torch.manual_seed(0)
    small, large = StyleNet(), StyleNet()
    with torch.no_grad():
        large.conv("conv2").weight.mul_(3)
    limit = book.filter_limit([small, large], "conv2")
    assert limit == pytest.approx(float(large.conv("conv2").weight.detach().abs().max()))
    fig = book.plot_filters(small, "conv2", limit=limit)
    assert fig.axes[0].get_ylim()[1] >= limit and fig.axes[0].get_ylim()[1] < 1.1 * limit
    assert fig.axes[0].get_ylabel() == "weight" and fig.axes[4].get_xlabel().startswith("tap")
    plt.close(fig)


def test_players_play_as_received_or_renormalised():
    import base64
    import io

    import soundfile as sf

    y = 0.3 * np.sin(np.linspace(0, 200, 8000)).astype(np.float32)

    def peak_of(html):
        b64 = html.split("base64,")[1].split('"')[0]
        return float(np.abs(sf.read(io.BytesIO(base64.b64decode(b64)))[0]).max())

    assert peak_of(book.audio_html(y)) == pytest.approx(0.9, abs=1e-3)
    assert peak_of(book.audio_html(y, peak=None)) == pytest.approx(0.3, abs=1e-3)
    with pytest.raises(ValueError, match="full scale"):
        book.audio_html(2 * y / 0.3, peak=None)


def test_markdown_table_formats_floats_and_keeps_columns():
    text = book.markdown_table([{"a": 1, "b": 0.123456}, {"a": "x", "b": 2.0}])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| x | 2 |"]
    assert book.markdown_table([{"|w|": "a|b"}]).splitlines()[::2] == ["| \\|w\\| |", "| a\\|b |"]


def test_epoch_and_exp_timings_are_positive():
    assert book.exp_timing("cpu", 1000, 5) > 0
    assert book.epoch_timing(1, batch_size=2) > 0
    assert book.epoch_timing(1, batch_size=2, impl="reference") > 0 and book.epoch_timing(1, batch_size=2, impl="fast") > 0
    both = book.epoch_timings(2, [("fast", "fp32"), ("fast", "bf16")], batch_size=2)
    assert set(both) == {("fast", "fp32"), ("fast", "bf16")} and min(both.values()) > 0
    with pytest.raises(ValueError, match="impl"):
        book.epoch_timing(1, batch_size=2, impl="fastest")


def test_two_chapters_asking_at_once_train_the_run_only_once(monkeypatch, tmp_path):
    import threading
    import time

    monkeypatch.setenv("THESIS_LIB_CACHE", str(tmp_path))
    calls = []

    def fake_train(out, done, *args):
        calls.append(out)
        time.sleep(0.3)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("{}")

    monkeypatch.setattr(book.runs, "_train_run", fake_train)
    errors = []

    def ask():
        try:
            book.trained_model(True)
        except Exception as exc:  # the fake run has no model.pt; only the training count matters
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(errors) == 3


def test_h100_figures_shown_by_chapter_8_are_the_readmes():
    """Chapter 8 shows the H100 epoch times as measured elsewhere; they must be the README's, not retyped."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    gpu = readme[readme.index("## GPU"):]
    for seconds in book.H100_SECONDS_PER_EPOCH.values():
        assert f"| {seconds:.3f} |" in gpu, seconds


def test_a_page_log_never_shows_the_machines_cache_folder(tmp_path, monkeypatch):
    """Chapter 4 prints the main job's log when it trains anew; the folder it composes into is this machine's."""
    from thesis_lib.book.runs import page_log

    monkeypatch.setenv("THESIS_LIB_CACHE", str(tmp_path / "cache"))
    seen: list[str] = []
    page_log(seen.append)(f"1/4 composing 4 tracks per style into {tmp_path / 'cache'}/synth/eb0bde5b87ca")
    assert seen == ["1/4 composing 4 tracks per style into $THESIS_LIB_CACHE/synth/eb0bde5b87ca"]
    page_log(None)("nothing to show")                      # no log: nothing printed, nothing raised

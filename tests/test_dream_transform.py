"""Inversion, Gatys style transfer, class steering, the STFT style transfer and the measures they report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from dream_support import FEW, chord, clip_of, random_net, trained
from thesis_lib.dream.audio_style import (AUDIO_STYLE, compare_style_transfer, griffin_lim, net_style_transfer,
                                          spectral_convergence, stft, stft_style_transfer)
from thesis_lib.cli import main
from thesis_lib.config import THESIS
from thesis_lib.dream import DreamError
from thesis_lib.dream.measures import (audio_problems, describe, envelope_correlation, log_spectral_distance,
                                 ltas_distance, snr_db, spectral_flatness)
from thesis_lib.dream.transform import (TRANSFORM, gatys_transfer, gram_capacity, gram_separability,
                                  invert_layers, steer, steer_many)

TINY_STFT = replace(AUDIO_STYLE, filters=32, iterations=FEW, griffin_lim_iterations=8)


@pytest.fixture(scope="module")
def net(toy_prepared):
    return trained(toy_prepared)


# --- measures -----------------------------------------------------------------

def test_measures_say_what_they_should():
    sr = THESIS.sample_rate
    rng = np.random.default_rng(0)
    tone = chord()
    noise = rng.standard_normal(THESIS.clip_samples).astype(np.float32)
    assert snr_db(tone, tone) == float("inf")
    assert abs(snr_db(tone + 0.1 * tone, tone) - 20.0) < 1e-6
    assert log_spectral_distance(tone, tone) == 0.0 and log_spectral_distance(tone, noise) > 5
    assert spectral_flatness(noise) > 0.5 > 0.1 > spectral_flatness(tone)
    assert ltas_distance(tone, 2 * tone) < 1e-9 and ltas_distance(tone, noise) > 3
    assert envelope_correlation(tone, tone) == pytest.approx(1.0)
    d = describe(tone, sr)
    assert abs(d["dominant_hz"] - 220) < sr / 512 + 1 and d["active_fraction"] == 1.0
    assert d["full_scale_fraction"] < 0.01 and describe(np.sign(tone))["full_scale_fraction"] > 0.99
    assert audio_problems(tone) == []
    bad = tone.copy()
    bad[5] = np.nan
    assert any("non-finite" in p for p in audio_problems(bad))
    assert any("samples, expected" in p for p in audio_problems(tone[:100]))
    assert "silent" in audio_problems(np.zeros(THESIS.clip_samples), peak=None)


# --- inversion ----------------------------------------------------------------

def test_inversion_brings_layer_outputs_closer(net):
    model, _, ds = net
    target = clip_of(ds, "low")
    results = invert_layers(model, target, ("input_norm", "conv1", "conv3"), iterations=FEW, progress=False)
    for layer, r in results.items():
        assert r.distance_after < 0.9 * r.distance_before, layer
        assert audio_problems(r.audio) == [] and np.isfinite(r.spectral_distance_db), layer
    # input_norm is an affine map of the waveform: inverting it must give the clip back.
    assert results["input_norm"].snr_db > 20
    assert results["input_norm"].spectral_distance_db < results["conv3"].spectral_distance_db


# --- Gatys on the thesis net ------------------------------------------------------

def test_gatys_lowers_both_losses_and_gram_capacity_is_36_per_layer(net):
    model, _, ds = net
    content, style = clip_of(ds, "low"), clip_of(ds, "high")
    r = gatys_transfer(model, content, style, iterations=FEW, balanced=True, progress=False)
    assert r.content_loss_after < r.content_loss_before and r.style_loss_after < r.style_loss_before
    assert audio_problems(r.audio) == [] and r.metrics["beta"] > TRANSFORM.beta
    assert {"style_ltas_db", "content_ltas_db", "envelope_corr", "flatness"} <= set(r.metrics)
    cap = gram_capacity(model)
    assert [v["gram_numbers"] for v in cap["layers"].values()] == [36, 36, 36]
    assert cap["gram_numbers_total"] == 108 and cap["samples_per_gram_number"] == pytest.approx(40000 / 108)
    assert all(0 <= v["mean_abs_filter_cosine"] <= 1 for v in cap["layers"].values())
    clips = np.stack([clip_of(ds, s, k) for s in ("low", "high") for k in range(3)])
    sep = gram_separability(model, clips, np.array([0, 0, 0, 1, 1, 1]))
    assert set(sep) == {"conv1", "conv2", "conv3"} and all(np.isfinite(v) and v > 0 for v in sep.values())
    with pytest.raises(DreamError, match="init must be"):
        gatys_transfer(model, content, style, iterations=1, init="zeros", progress=False)


def test_gram_separability_refuses_one_style_and_measures_a_real_difference():
    """Clips of one style gave a silent 0 (chapter 7 took the first test clips of a split sorted by style)."""
    model = random_net(seed=3)
    quiet = np.stack([0.1 * chord(seed=k) for k in range(4)]).astype(np.float32)
    with pytest.raises(DreamError, match="at least two styles"):
        gram_separability(model, quiet, np.zeros(4, int))
    with pytest.raises(DreamError, match="labels"):
        gram_separability(model, quiet, np.array([0, 1]))
    same = gram_separability(model, np.concatenate([quiet, quiet]), np.array([0] * 4 + [1] * 4))
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in same.values())  # same clips under two names
    loud = gram_separability(model, np.concatenate([quiet, 8 * quiet]), np.array([0] * 4 + [1] * 4))
    assert all(v > 1 for v in loud.values()), loud  # loudness moves every Gram entry more than the noise does
    three = gram_separability(model, np.concatenate([quiet, 4 * quiet, 8 * quiet]), np.repeat([0, 1, 2], 4))
    assert set(three) == set(loud) and all(np.isfinite(v) and v > 0 for v in three.values())


# --- class steering --------------------------------------------------------------

def test_steering_raises_the_target_probability(net):
    model, styles, ds = net
    clips = np.stack([clip_of(ds, "low", k) for k in range(2)])
    target = styles.index("high")
    summary, results = steer_many(model, clips, target, iterations=FEW, progress=False)
    for r in results:
        assert r.p_target_after > r.p_target_before and np.isfinite(r.snr_db)
        assert audio_problems(r.audio) == []
    assert summary["clips"] == 2 and summary["flipped"] + summary["already_target"] <= 2
    assert summary["assigned_target_after"] == sum(r.predicted_after == target for r in results)
    # A much heavier content term keeps the clip closer to the original.
    near = steer(model, clips[0], target, FEW, content_weight=1e4, progress=False)
    assert near.snr_db > results[0].snr_db
    with pytest.raises(DreamError, match="out of range"):
        steer(model, clips[0], 5, 1, progress=False)


# --- STFT style transfer (Ulyanov & Lebedev) -------------------------------------------------

def test_griffin_lim_recovers_a_signal_from_its_magnitude():
    y = chord(1.0)
    mag = stft(torch.as_tensor(y)).abs()
    rebuilt = griffin_lim(mag, y.size, replace(AUDIO_STYLE, griffin_lim_iterations=30), progress=False)
    start = spectral_convergence(griffin_lim(mag, y.size, replace(AUDIO_STYLE, griffin_lim_iterations=0),
                                             progress=False), mag)   # random phase only
    assert rebuilt.shape == y.shape and np.all(np.isfinite(rebuilt))
    assert spectral_convergence(rebuilt, mag) < 0.25 < start


def test_stft_style_transfer_lowers_its_losses():
    content = chord(1.0, seed=0)      # any length works; one second keeps the test quick
    style = (0.3 * np.random.default_rng(2).standard_normal(THESIS.sample_rate)).astype(np.float32)
    for init in ("noise", "content"):
        r = stft_style_transfer(content, style, replace(TINY_STFT, init=init), "cpu", progress=False)
        assert r.style_loss_after < r.style_loss_before, init
        assert audio_problems(r.audio, content.size) == [], init
        assert r.metrics["gram_numbers"] == 32 * 33 // 2 and 0 <= r.metrics["spectral_convergence"] < 1
    with pytest.raises(ValueError, match="silent"):
        stft_style_transfer(content, np.zeros_like(style), TINY_STFT, "cpu", progress=False)


def test_net_style_transfer_uses_the_same_losses_on_the_net():
    model = random_net(0)
    r = net_style_transfer(model, chord(seed=0), chord(seed=1)[::-1].copy(), replace(TINY_STFT, iterations=FEW),
                           progress=False)
    assert r.content_loss_after + r.style_loss_after < r.content_loss_before + r.style_loss_before
    assert r.metrics["gram_numbers"] == 108 and audio_problems(r.audio) == []


def test_compare_style_transfer_gives_rows_and_results_for_every_method():
    model = random_net(0)
    content, style = chord(seed=0), chord(seed=1)[::-1].copy()
    gatys = gatys_transfer(model, content, style, iterations=2, balanced=True, progress=False)
    results = {}
    rows = compare_style_transfer(model, content, style, TINY_STFT, progress=False, others=(gatys,),
                                  results=results)
    assert list(rows) == ["content (unchanged)", "style clip", "ulyanov-lebedev-stft", "ul-losses-thesis-net",
                          "gatys-thesis-net"]
    assert set(results) == set(list(rows)[2:]) and results["gatys-thesis-net"] is gatys
    assert rows["content (unchanged)"]["envelope_corr"] == pytest.approx(1.0)
    assert rows["content (unchanged)"]["content_ltas_db"] < 1e-9 and rows["style clip"]["style_ltas_db"] < 1e-9
    for method, r in results.items():
        assert {"style_ltas_db", "envelope_corr", "flatness", "seconds"} <= set(rows[method])
        assert audio_problems(r.audio) == [], method
    assert compare_style_transfer(model, content, style, TINY_STFT, progress=False).keys() == set(list(rows)[:4])


# --- CLI ---------------------------------------------------------------------------

def test_transform_and_style_transfer_cli(net, tmp_path, capsys):
    from thesis_lib.checkpoint import save_model

    model, styles, _ = net
    path = save_model(model, styles, tmp_path / "model.pt")
    sf.write(tmp_path / "a.wav", chord(6.0, seed=0), THESIS.sample_rate)
    sf.write(tmp_path / "b.wav", chord(6.0, seed=1)[::-1].copy(), THESIS.sample_rate)
    common = ["--model", str(path), "--clip", str(tmp_path / "a.wav"), "--quiet", "--iterations", "2"]
    assert main(["transform", "--mode", "invert", "--layer", "conv1", "--out", str(tmp_path / "inv.wav"),
                 *common]) == 0
    assert "SNR" in capsys.readouterr().out
    assert main(["transform", "--mode", "steer", "--out", str(tmp_path / "steer.wav"), *common]) == 0
    assert "steering toward" in capsys.readouterr().out
    assert main(["transform", "--mode", "gatys", "--out", str(tmp_path / "g.wav"), *common]) == 1
    assert "needs --style" in capsys.readouterr().err
    assert main(["transform", "--mode", "steer", "--target", "jazz", "--out", str(tmp_path / "s.wav"), *common]) == 1
    assert "not a style of this model" in capsys.readouterr().err
    assert main(["style-transfer", "--clip", str(tmp_path / "a.wav"), "--style", str(tmp_path / "b.wav"),
                 "--out", str(tmp_path / "st.wav"), "--filters", "8", "--iterations", "1", "--quiet", "--griffin-lim-iterations", "2",
                 "--device", "cpu"]) == 0
    assert "long-term spectrum distance" in capsys.readouterr().out
    for name in ("inv.wav", "inv_original.wav", "steer.wav", "st.wav", "st_content.wav", "st_style.wav"):
        info = sf.info(tmp_path / name)
        assert info.subtype == "PCM_16" and info.frames == THESIS.clip_samples, name
        assert abs(np.max(np.abs(sf.read(tmp_path / name)[0])) - 0.9) < 1e-3, name

"""Layer dreaming (thesis 4.3), DeepDream ascent, guides, controls and the ``dream`` CLI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from dream_support import FEW, chord, clip_of, random_net, trained
from thesis_lib.audio import AudioError
from thesis_lib.cli import main
from thesis_lib.config import THESIS
from thesis_lib.dream import (DREAM, DreamError, check_clip, dream, dream_layers, filter_dreams,
                              filter_responses, guided_dream, layer_objective, load_clip, minimize_lbfgs,
                              objective_value, random_net_like, response_agreement)
from thesis_lib.dream.measures import audio_problems

QUICK = replace(DREAM, steps_per_octave=FEW, octaves=2)


@pytest.fixture(scope="module")
def net(toy_prepared):
    return trained(toy_prepared)


def test_lbfgs_dream_raises_every_conv_layers_objective(net):
    model, _, ds = net
    clip = clip_of(ds, "low")
    results = dream_layers(model, clip, ("conv1", "conv2", "conv3"), "lbfgs", FEW, progress=False)
    for layer, r in results.items():
        # the objective is scaled to 1 at the clip, so the steps are gradual: a few iterations gain tens of %
        assert r.objective_after > 1.2 * r.objective_before, layer
        assert r.objective_written > r.objective_before, layer   # still higher after the peak-0.9 scaling
        assert audio_problems(r.audio) == [], layer
        assert r.audio.dtype == np.float32 and np.max(np.abs(r.raw)) <= DREAM.bound + 1e-6
        assert r.history[-1] >= r.history[0] and r.iterations <= FEW
        assert np.array_equal(r.original, clip)
    assert not np.allclose(results["conv1"].audio, results["conv3"].audio)


def test_dream_leaves_the_weights_alone(net):
    model, _, ds = net
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    dream(model, clip_of(ds, "high"), "conv2", iterations=2, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert not model.training


def test_ascent_with_jitter_and_octaves_raises_objective_in_range(net):
    model, _, ds = net
    clip = clip_of(ds, "low", 1)
    r = dream(model, clip, "conv2", "ascent", cfg=QUICK, progress=False)
    assert r.objective_after > r.objective_before and r.iterations == FEW * 2
    assert np.max(np.abs(r.raw)) <= 1.0 and audio_problems(r.audio) == []
    again = dream(model, clip, "conv2", "ascent", cfg=QUICK, progress=False)
    assert np.array_equal(r.audio, again.audio)                      # seeded jitter: repeatable
    other = dream(model, clip, "conv2", "ascent", cfg=replace(QUICK, seed=1), progress=False)
    assert not np.array_equal(r.audio, other.audio)


def test_ascent_on_full_length_layers_runs_at_full_rate(net):
    model, _, ds = net
    r = dream(model, clip_of(ds, "high"), "out", "ascent", cfg=QUICK, progress=False)
    assert r.iterations == FEW and r.objective_after > r.objective_before   # one octave only


def test_guided_dream_takes_on_the_guide(net):
    model, _, ds = net
    clip, guide = clip_of(ds, "low"), clip_of(ds, "high")
    for mode in ("aligned", "average"):
        r = guided_dream(model, clip, guide, "conv2", "lbfgs", mode, FEW, progress=False)
        assert r.objective_after > r.objective_before, mode
        assert audio_problems(r.audio) == []
    r = guided_dream(model, clip, guide, "conv1", "ascent", "average", cfg=QUICK, progress=False)
    assert r.objective_after > r.objective_before


def test_random_net_control_is_untrained_and_repeatable(net):
    model, _, ds = net
    a, b = random_net_like(model, 3), random_net_like(model, 3)
    wa, wt = a.conv_layers()[0].weight, model.conv_layers()[0].weight
    assert torch.equal(wa, b.conv_layers()[0].weight) and not torch.equal(wa, wt)
    assert not a.training and a.architecture() == model.architecture()
    r = dream(a, clip_of(ds, "low"), "conv1", iterations=FEW, progress=False)
    assert r.objective_after > r.objective_before


def test_filter_responses_and_their_dreams(net):
    model, _, ds = net
    freqs, resp = filter_responses(model)
    assert resp.shape == (8, 257) and freqs[-1] == THESIS.sample_rate / 2 and np.all(np.isfinite(resp))
    w = model.conv_layers()[0].weight.detach().numpy()[0, 0]
    assert np.isclose(10 ** (resp[0, 0] / 20), abs(w.sum()), rtol=1e-4)    # DC gain is the sum of taps
    dreams = filter_dreams(model, clip_of(ds, "low"), iterations=2, progress=False)
    assert len(dreams) == 8 and all(d.objective_after > d.objective_before for d in dreams)
    assert all("channel" in d.objective for d in dreams)
    agree = response_agreement(freqs, resp, [d.audio for d in dreams])
    assert len(agree) == 8 and all(-1 <= a <= 1 for a in agree)
    # A filter's own response, played as a sound, agrees with itself.
    phase = np.exp(2j * np.pi * np.random.default_rng(0).random(257))
    impulse_sound = np.fft.irfft(10 ** (resp[0] / 20) * phase)
    assert response_agreement(freqs, resp[:1], [np.tile(impulse_sound, 80)[:THESIS.clip_samples]])[0] > 0.9


def test_minimize_lbfgs_solves_a_boxed_quadratic():
    target = torch.tensor([0.5, 2.0, -3.0])
    out = minimize_lbfgs(lambda x: ((x - target) ** 2).sum(), np.zeros(3), 20, (-1.0, 1.0), progress=False)
    assert np.allclose(out.x, [0.5, 1.0, -1.0], atol=1e-4) and out.history[-1] <= out.history[0]


def test_bad_requests_give_clear_errors(net):
    model, _, ds = net
    clip = clip_of(ds, "low")
    with pytest.raises(DreamError, match="unknown layer 'conv9'"):
        dream(model, clip, "conv9", progress=False)
    with pytest.raises(DreamError, match="at least 1"):
        dream(model, clip, "conv1", iterations=0, progress=False)
    with pytest.raises(DreamError, match="method must be"):
        dream(model, clip, "conv1", "adam", progress=False)
    with pytest.raises(DreamError, match="40000 samples"):
        dream(model, clip[:1000], "conv1", progress=False)
    with pytest.raises(DreamError, match="NaN"):
        check_clip(np.full(THESIS.clip_samples, np.nan))
    with pytest.raises(DreamError, match="silent"):
        check_clip(np.zeros(THESIS.clip_samples))
    with pytest.raises(DreamError, match="no channel 8"):
        objective_value(layer_objective(model, "conv1", 8), clip)


def test_load_clip_cuts_one_clip_and_refuses_short_files(tmp_path):
    sr = THESIS.sample_rate
    long = tmp_path / "long.wav"
    sf.write(long, chord(7.0), sr)
    clip = load_clip(long)
    assert clip.shape == (THESIS.clip_samples,) and np.isclose(np.max(np.abs(clip)), 0.9, atol=0.01)
    assert load_clip(long, offset=2.0).shape == (THESIS.clip_samples,)
    with pytest.raises(AudioError, match="leaves no full"):
        load_clip(long, offset=3.0)
    short = tmp_path / "short.wav"
    sf.write(short, chord(3.0), sr)
    with pytest.raises(AudioError, match="too short for dreaming: 3.00 s"):
        load_clip(short)


def test_dream_cli_end_to_end(net, tmp_path, capsys):
    from thesis_lib.checkpoint import save_model

    model, styles, _ = net
    path = save_model(model, styles, tmp_path / "model.pt")
    sf.write(tmp_path / "song.wav", chord(6.0), THESIS.sample_rate)
    out = tmp_path / "dreams" / "conv2.wav"
    rc = main(["dream", "--model", str(path), "--clip", str(tmp_path / "song.wav"), "--layer", "conv2",
               "--out", str(out), "--iterations", "3", "--quiet", "--device", "cpu", "--json"])
    text = capsys.readouterr().out
    assert rc == 0 and "before" in text and "after" in text and '"objective_after"' in text
    for f in (out, out.with_name("conv2_original.wav")):
        info = sf.info(f)
        assert info.subtype == "PCM_16" and info.frames == THESIS.clip_samples and info.samplerate == 8000
        y, _ = sf.read(f)
        assert abs(np.max(np.abs(y)) - 0.9) < 1e-3
    rc = main(["dream", "--model", str(path), "--clip", str(tmp_path / "song.wav"), "--layer", "conv1",
               "--out", str(tmp_path / "a.flac"), "--iterations", "2", "--method", "ascent", "--quiet",
               "--random-net", "--guide", str(tmp_path / "song.wav"), "--guide-mode", "average"])
    assert rc == 0 and sf.info(tmp_path / "a.flac").format == "FLAC"


def test_dream_cli_errors(net, tmp_path, capsys):
    from thesis_lib.checkpoint import save_model

    model, styles, _ = net
    path = save_model(model, styles, tmp_path / "model.pt")
    sf.write(tmp_path / "short.wav", chord(2.0), THESIS.sample_rate)
    sf.write(tmp_path / "song.wav", chord(6.0), THESIS.sample_rate)
    base = ["dream", "--model", str(path), "--quiet", "--iterations", "1"]
    cases = [(["--clip", str(tmp_path / "short.wav"), "--out", str(tmp_path / "x.wav")], "too short"),
             (["--clip", str(tmp_path / "song.wav"), "--out", str(tmp_path / "x.ogg")], ".wav or .flac"),
             (["--clip", str(tmp_path / "song.wav"), "--out", str(tmp_path / "x.wav"), "--layer", "pool1"],
              "unknown layer"),
             (["--clip", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "x.wav")], "no such file")]
    for args, message in cases:
        assert main(base + args) == 1
        assert message in capsys.readouterr().err
    assert main(["dream", "--model", str(tmp_path / "missing.pt"), "--clip", str(tmp_path / "song.wav"),
                 "--out", str(tmp_path / "x.wav")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_a_seeded_random_net_dreams_the_other_named_layers():
    model = random_net(0)
    clip = chord()
    for layer in ("norm1", "fc", "out"):   # conv layers are tested above
        r = dream(model, clip, layer, iterations=1, progress=False)
        assert r.objective_after >= r.objective_before and audio_problems(r.audio) == [], layer


def test_unbounded_lbfgs_only_turns_the_volume_up(net):
    model, _, ds = net
    clip = clip_of(ds, "low")
    r = dream(model, clip, "conv3", iterations=2, cfg=replace(DREAM, bound=None), progress=False)
    assert np.max(np.abs(r.raw)) > 10 and r.objective_after > 100 * r.objective_written
    assert audio_problems(r.audio) == []          # still written safely at peak 0.9


def test_dream_figures(net):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thesis_lib import plots
    from thesis_lib.dream import figures

    model, _, ds = net
    clip = clip_of(ds, "low")
    signals = {"original": clip, "conv1": dream(model, clip, "conv1", iterations=1, progress=False).audio}
    for fig in (plots.plot_signals(signals, "waveform"), plots.plot_signals(signals, "spectrogram")):
        assert len(fig.axes) >= 2
        plt.close(fig)
    fig = plots.spectrogram(clip)                    # with its dB colour bar
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "power (dB)"
    lo, hi = fig.axes[0].collections[0].get_clim()
    assert hi - lo == plots.SPECTROGRAM_RANGE_DB
    plt.close(fig)
    freqs, resp = filter_responses(model)
    fig = figures.filter_responses_and_dreams(freqs, resp, [clip] * 8)
    assert len(fig.axes) == 16
    plt.close(fig)
    fig = figures.objective_histories({"a": [1.0, 2.0, 4.0]})
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)


def test_dream_report_quick(net, tmp_path):
    from thesis_lib.dream.report import markdown, measure

    model, styles, ds = net
    only = ("Gatys, thesis net",)      # filter dreams are tested above; each L-BFGS-B run costs ~0.5 s
    report = measure(model, clip_of(ds, "low"), clip_of(ds, "high"), np.stack([clip_of(ds, "low", 1)]),
                     styles.index("high"), tmp_path, quick=True, progress=False, only=only)
    assert {r["method"] for r in report["rows"]} == set(only) and len(report["rows"]) == 2
    assert "filters" not in report
    assert all(np.isfinite(r["after"]) and r["seconds"] >= 0 for r in report["rows"])
    assert report["steering"]["clips"] == 1
    assert (tmp_path / "report.md").read_text() == markdown(report)
    assert len(list(tmp_path.glob("*.wav"))) == len(report["rows"]) + 2


# ----------------------------------------------------------------------------
# Why L-BFGS-B stopped early, and the scale-free dream (chapter 6, issue 11)
# ----------------------------------------------------------------------------

def test_scaled_loss_keeps_the_minimiser_and_reports_the_stop():
    target = torch.tensor([0.5, 2.0, -3.0])
    big = minimize_lbfgs(lambda x: 1e6 * ((x - target) ** 2).sum() + 1e6, np.zeros(3), 30, (-1.0, 1.0),
                         progress=False, scale=True, pgtol=1e-12)
    assert np.allclose(big.x, [0.5, 1.0, -1.0], atol=1e-4)
    assert big.loss > 1e6 and big.history[0] > 1e6          # reported in the loss's own units
    assert "CONVERG" in big.message.upper() and big.iterations < 30


def test_stop_reasons_in_words():
    from thesis_lib.dream import stop_reason

    assert stop_reason("STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT") == "iteration limit"
    assert stop_reason("CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL").startswith("converged")
    assert stop_reason("CONVERGENCE: REL_REDUCTION_OF_F_<=_FACTR*EPSMCH").startswith("converged")
    assert stop_reason("ABNORMAL_TERMINATION_IN_LNSRCH").startswith("line search failed")


def test_bounded_dream_uses_its_iterations(net):
    """Unscaled, the raw gradient (values in the millions) threw every sample onto the box within a few
    iterations, so 10 and 50 iterations gave one and the same corner; scaled, more iterations go further."""
    model, _, ds = net
    clip = clip_of(ds, "low")
    few = dream(model, clip, "conv2", iterations=2, progress=False)
    more = dream(model, clip, "conv2", iterations=8, progress=False)
    assert few.stop == "iteration limit" and few.iterations == 2
    assert more.iterations > few.iterations and more.objective_after > few.objective_after
    assert not np.array_equal(few.audio, more.audio)
    assert more.summary()["stop"] == more.stop and more.evaluations >= more.iterations


def test_normalised_dream_is_scale_free_and_moves_with_iterations(net):
    from thesis_lib.dream.measures import correlation

    model, _, ds = net
    clip = clip_of(ds, "low")
    cfg = replace(DREAM, bound=None, normalise=True)
    one = dream(model, clip, "conv3", iterations=1, cfg=cfg, progress=False)
    many = dream(model, clip, "conv3", iterations=FEW * 2, cfg=cfg, progress=False)
    energy = np.linalg.norm(clip.astype(np.float64))
    for r in (one, many):
        assert np.isclose(np.linalg.norm(r.raw.astype(np.float64)), energy, rtol=1e-4)   # the clip's energy
        assert audio_problems(r.audio) == []
    assert many.iterations > one.iterations and many.objective_after > one.objective_after
    assert correlation(many.audio, clip) < correlation(one.audio, clip)   # further from the clip
    assert "normalised" in many.method
    with pytest.raises(DreamError, match="bound=None"):
        dream(model, clip, "conv3", iterations=1, cfg=replace(DREAM, normalise=True), progress=False)


def test_thesis_observations_criteria():
    from thesis_lib.dream.measures import correlation
    from thesis_lib.dream.report import CRITERIA, THESIS_HEARD, thesis_observations

    heard = {"conv1": {"corr": 0.05, "envelope_corr": -0.1, "centroid_hz": 3000.0},
             "conv2": {"corr": 0.2, "envelope_corr": -0.6, "centroid_hz": 1500.0},
             "conv3": {"corr": 0.6, "envelope_corr": 0.8, "centroid_hz": 400.0}}
    assert thesis_observations(heard, 600.0) == dict.fromkeys(CRITERIA, True)
    opposite = {"conv1": {"corr": 0.9, "envelope_corr": 0.9, "centroid_hz": 900.0},
                "conv2": {"corr": 0.1, "envelope_corr": 0.3, "centroid_hz": 900.0},
                "conv3": {"corr": 0.05, "envelope_corr": 0.8, "centroid_hz": 900.0}}
    assert thesis_observations(opposite, 600.0) == {"conv1": False, "conv2": False, "conv3 outline": True,
                                                     "conv3 fundamentals": False}
    assert {k.split()[0] for k in CRITERIA} == set(THESIS_HEARD) == {"conv1", "conv2", "conv3"}
    a = chord()
    assert correlation(a, a) > 0.999 and correlation(a, -a) < -0.999 and correlation(a, np.zeros_like(a)) == 0.0

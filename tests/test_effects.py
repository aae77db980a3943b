"""Effect steering (issue 14, part 1): the differentiable chain, the judge, the comparison and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from dream_support import chord, clip_of, random_net, trained
from thesis_lib.cli import main
from thesis_lib.config import THESIS
from thesis_lib.dream import DreamError
from thesis_lib.dream.effects import (EffectChain, Judge, change_measures, compare_steering, comparison_markdown,
                                      compressor, describe_parameters, drive, effect_steer, equalizer, gain,
                                      parameters, peak_normalise, steering_strength, strength_markdown)
from thesis_lib.dream.measures import audio_problems
from thesis_lib.dream.settings import EFFECTS

ITER = 6


@pytest.fixture(scope="module")
def net(toy_prepared):
    return trained(toy_prepared)


@pytest.fixture(scope="module")
def judge(net):
    """The log-mel baseline fitted on the toy clips: another front end, fitted in well under a second."""
    from thesis_lib.baseline import LogMelBaseline

    _, styles, ds = net
    labels = np.array([styles.index(ds.styles[s]) for s in ds.style_of])
    return Judge(LogMelBaseline(len(styles)).fit(np.array(ds.clips, np.float32), labels), styles, "baseline")


def test_neutral_chain_is_the_identity_and_extremes_stay_finite():
    x = torch.as_tensor(chord())
    chain = EffectChain()
    assert len(chain.params) == len(set(chain.names)) >= 10
    y = chain.apply(x, chain.vector({}))
    assert torch.allclose(y, peak_normalise(x), atol=1e-5)
    for stage_out in (gain(x[None], torch.tensor(0.0)), drive(x[None], torch.tensor(12.0), torch.tensor(0.0)),
                      compressor(x[None], torch.tensor(-30.0), torch.tensor(1.0), THESIS.sample_rate),
                      equalizer(x[None], torch.zeros(6), chain.weights, chain.pad)):
        assert torch.allclose(stage_out[0], x, atol=1e-5)
    for corner in (chain.low, chain.high):
        z = chain.apply(x, corner)
        assert torch.isfinite(z).all() and abs(float(z.abs().max()) - 0.9) < 1e-5
    with pytest.raises(DreamError, match="unknown effect parameters"):
        chain.vector({"reverb": 1.0})


def test_every_stage_is_differentiable_with_finite_gradients():
    chain = EffectChain()
    x = torch.as_tensor(chord())
    mid = torch.tensor([(p.low + p.high) / 2 for p in chain.params], requires_grad=True)
    (g,) = torch.autograd.grad((chain.apply(x, mid) ** 2).mean() + chain.apply(x, mid)[:4000].sum(), mid)
    assert torch.isfinite(g).all() and (g != 0).sum() >= len(chain.params) - 1
    u = torch.full((len(chain.params),), 0.5, requires_grad=True)
    (gu,) = torch.autograd.grad(chain.apply(x, chain.from_unit(u)).pow(3).sum(), u)
    assert torch.isfinite(gu).all()


def test_effects_audibly_change_the_clip_and_are_described_in_words():
    chain = EffectChain()
    x = torch.as_tensor(chord())
    values = {"drive_db": 20.0, "drive_mix": 0.7, "ratio": 4.0, "threshold_db": -20.0,
              "eq_100Hz_db": -6.0, "eq_1.6kHz_db": 6.0}
    y = chain.apply(x, chain.vector(values)).numpy()
    m = change_measures(y, chain.apply(x, chain.vector({})).numpy())
    assert m["snr_db"] < 15 and m["spectral_distance_db"] > 3 and m["loudness_change_db"] > 1
    words = describe_parameters({**{p.name: p.neutral for p in parameters()}, **values})
    assert "+20 dB drive (mix 70 %)" in words and "-6 dB below 100 Hz" in words and "+6 dB around 1.6 kHz" in words
    assert "compression 4.0:1 above -20 dB" in words
    assert describe_parameters({p.name: p.neutral for p in parameters()}).startswith("no audible change")


def test_effect_steering_raises_the_target_within_bounds_and_the_judge_is_not_consulted(net, judge):
    model, styles, ds = net
    clip = clip_of(ds, "low")
    target = styles.index("high")
    calls = []
    handle = judge.model.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    try:
        r = effect_steer(model, clip, target, ITER, judge=judge, styles=styles, progress=False)
    finally:
        handle.remove()
    assert calls == [False, False]          # the clip and the result, never inside the search
    assert r.p_target_after > r.p_target_before
    for p in parameters():
        assert p.low - 1e-5 <= r.params[p.name] <= p.high + 1e-5, p.name
    assert audio_problems(r.audio) == [] and audio_problems(r.original) == []
    assert r.judge_p_target_before is not None and r.judge_flipped in (True, False)
    assert {"loudness_change_db", "snr_db", "spectral_distance_db", "ltas_db", "envelope_corr"} <= set(r.measures)
    assert isinstance(r.summary()["words"], str)
    # A huge penalty keeps every control at neutral: the result is the clip.
    # (the confidence rule relaxes it its 6 times, to 1e6 / 729, and gives up)
    still = effect_steer(model, clip, target, 2, penalty=1e6, progress=False)
    assert still.measures["snr_db"] > 30 and still.words.startswith("no audible change")
    assert still.searches == 1 + EFFECTS.relaxations and still.penalty == pytest.approx(1e6 / 3 ** 6)


def test_bad_input_is_refused_clearly(net, judge):
    model, styles, ds = net
    clip = clip_of(ds, "low")
    with pytest.raises(DreamError, match="out of range"):
        effect_steer(model, clip, 7, 1, progress=False)
    with pytest.raises(DreamError, match="penalty"):
        effect_steer(model, clip, 1, 1, penalty=-1, progress=False)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(DreamError, match="confidence must be a probability"):
            effect_steer(model, clip, 1, 1, confidence=bad, progress=False)
    with pytest.raises(DreamError, match="style names"):
        effect_steer(model, clip, 1, 1, judge=judge, progress=False)
    with pytest.raises(DreamError, match="does not know the style"):
        effect_steer(model, clip, 1, 1, judge=Judge(judge.model, ["jazz", "pop"]), styles=styles, progress=False)
    with pytest.raises(DreamError, match="samples"):
        effect_steer(model, clip[:100], 1, 1, progress=False)


def test_compare_steering_reports_both_kinds_side_by_side(net, judge):
    model, styles, ds = net
    clips = np.stack([clip_of(ds, "low", 0), clip_of(ds, "low", 1)])
    summary, verdicts = compare_steering(model, styles, clips, styles.index("high"), judge, steer_iterations=2,
                                         effect_iterations=2, progress=False)
    for kind in ("samples", "effects"):
        row = summary[kind]
        assert row["clips"] == 2 and len(verdicts[kind]) == 2
        assert 0 <= row["both_flipped"] <= min(row["net_flipped"], row["judge_flipped"])
        assert {"net_flip_rate", "judge_flip_rate", "mean_snr_db", "mean_envelope_corr",
                "mean_loudness_change_db", "mean_spectral_distance_db"} <= set(row)
    assert "effect chain" in comparison_markdown(summary) and summary["target"] == "high"
    with pytest.raises(DreamError, match="at least one clip"):
        compare_steering(model, styles, clips[:0], 1, judge, progress=False)


def test_steering_strength_moves_the_controls_further_as_the_penalty_falls(net, judge):
    """One row per penalty, each the effect summary of the same clips; a much smaller penalty lets
    the search change the sound more (lower SNR) -- the trade the book's chapter 4b shows."""
    model, styles, ds = net
    clips = np.stack([clip_of(ds, "low", 0), clip_of(ds, "low", 1)])
    rows = steering_strength(model, styles, clips, styles.index("high"), judge, (10.0, 0.01), iterations=ITER,
                             progress=False)
    assert [r["penalty"] for r in rows] == [10.0, 0.01]
    assert all(r["clips"] == 2 and 0 <= r["judge_flipped"] <= r["judge_candidates"] for r in rows)
    assert rows[1]["mean_snr_db"] < rows[0]["mean_snr_db"]
    table = strength_markdown(rows)
    assert table.index("| 10 |") < table.index("| 0.01 |")
    with pytest.raises(DreamError, match="at least one clip"):
        steering_strength(model, styles, clips[:0], 1, judge, (1.0,), progress=False)


def test_effects_cli_prints_parameters_and_both_models(net, judge, tmp_path, capsys):
    from thesis_lib.checkpoint import save_model

    model, styles, ds = net
    path = save_model(model, styles, tmp_path / "model.pt")
    judge_path = save_model(judge.model, styles, tmp_path / "judge.pt")
    sf.write(tmp_path / "a.wav", np.concatenate([clip_of(ds, "low"), clip_of(ds, "low", 1)[:8000]]), THESIS.sample_rate)
    common = ["--model", str(path), "--clip", str(tmp_path / "a.wav"), "--quiet", "--iterations", "2",
              "--mode", "effects"]
    assert main(["transform", *common, "--target", "high", "--out", str(tmp_path / "fx.wav"),
                 "--judge", str(judge_path)]) == 0
    out = capsys.readouterr().out
    assert "effects toward high" in out and "parameters:" in out and "judge" in out and "SNR" in out
    assert "penalty " in out
    for name in ("fx.wav", "fx_original.wav"):
        info = sf.info(tmp_path / name)
        assert info.subtype == "PCM_16" and info.frames == THESIS.clip_samples, name
    assert main(["transform", *common, "--out", str(tmp_path / "fx2.wav")]) == 0      # no judge: the other style
    assert "judge" not in capsys.readouterr().out
    assert main(["transform", *common, "--target", "jazz", "--out", str(tmp_path / "s.wav")]) == 1
    assert "not a style of this model" in capsys.readouterr().err
    assert main(["transform", *common, "--judge", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "s.wav")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["transform", "--mode", "invert", "--judge", str(judge_path), "--model", str(path), "--clip",
                 str(tmp_path / "a.wav"), "--out", str(tmp_path / "s.wav"), "--quiet"]) == 1
    assert "--judge" in capsys.readouterr().err


def test_random_net_chain_runs_on_a_synthetic_chord():
    r = effect_steer(random_net(0), chord(), 1, 2, progress=False)
    assert np.isfinite(r.p_target_after) and audio_problems(r.audio) == []


class _DensityNet(torch.nn.Module):
    """A stand-in steering net whose "target" logit grows with the clip's mean level at peak 0.9 (drive and
    compression both raise it)."""

    def __init__(self):
        super().__init__()
        self.cfg, self.n_styles = THESIS, 2
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        density = x.abs().mean(-1) / x.abs().amax(-1)
        return torch.stack([torch.zeros_like(density), 40 * self.w * (density - 0.3)], 1)


def test_a_second_start_with_the_drive_engaged_finds_a_lower_loss_than_neutral_alone():
    from dataclasses import replace

    net, clip = _DensityNet(), chord()
    alone = effect_steer(net, clip, 1, ITER, penalty=0.1, cfg=replace(EFFECTS, starts=()), progress=False)
    both = effect_steer(net, clip, 1, ITER, penalty=0.1, progress=False)
    assert both.loss < alone.loss                       # the engaged start ends lower here, and is the one kept
    assert both.params != alone.params
    assert both.params["drive_mix"] > 0.05 and both.params["drive_db"] > 6   # this net wants drive: it is kept
    with pytest.raises(DreamError, match="unknown controls"):
        effect_steer(net, clip, 1, 1, cfg=replace(EFFECTS, starts=((("reverb", 1.0),),)), progress=False)


def test_the_penalty_is_relaxed_until_the_net_is_sure_and_no_further():
    """One search at a penalty of 10 leaves the density net unsure; the confidence rule divides the
    penalty by 3 and searches on until it is sure, and stops there; a confidence the first search
    already meets changes nothing."""
    net, clip = _DensityNet(), chord()
    fixed = effect_steer(net, clip, 1, ITER, penalty=10.0, confidence=None, progress=False)
    assert fixed.p_target_after < 0.95 and fixed.searches == 1 and fixed.penalty == 10.0
    sure = effect_steer(net, clip, 1, ITER, penalty=10.0, confidence=0.95, progress=False)
    assert sure.p_target_after >= 0.95 and 1 < sure.searches <= 1 + EFFECTS.relaxations
    assert sure.penalty == pytest.approx(10.0 / EFFECTS.relax_factor ** (sure.searches - 1))
    assert sure.measures["snr_db"] < fixed.measures["snr_db"]          # surer took a larger change
    met = effect_steer(net, clip, 1, ITER, penalty=10.0, confidence=fixed.p_target_after / 2, progress=False)
    assert met.searches == 1 and met.params == fixed.params and met.iterations == fixed.iterations


def test_a_judge_that_reads_16_khz_hears_the_8_khz_clip_resampled():
    from thesis_lib.config import TrainSettings
    from thesis_lib.mel import MelNet

    cfg16 = TrainSettings.recommended("mel").applied_to(THESIS)
    model = MelNet(2, cfg16)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    p = Judge(model, ["low", "high"], "mel16").proba(chord(), THESIS.sample_rate)
    assert seen == [2 * THESIS.clip_samples] and p.shape == (2,) and np.isclose(p.sum(), 1)


def test_steer_compare_cli_counts_both_kinds_over_a_collection(net, judge, tmp_path, capsys):
    import json

    from thesis_lib.checkpoint import save_model

    model, styles, ds = net
    path = save_model(model, styles, tmp_path / "model.pt")
    judge_path = save_model(judge.model, styles, tmp_path / "judge.pt")
    common = ["steer-compare", "--model", str(path), "--judge", str(judge_path), "--data", str(ds.path),
              "--clips", "3", "--iterations", "2", "--quiet"]
    assert main([*common, "--target", "high", "--out", str(tmp_path / "cmp.json")]) == 0
    assert "effect chain" in capsys.readouterr().out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert len(saved["clips"]) == 3 and all(c["track"].startswith("low/") for c in saved["clips"])
    assert saved["summary"]["samples"]["clips"] == saved["summary"]["effects"]["clips"] == 3
    assert main([*common, "--target", "jazz", "--out", str(tmp_path / "x.json")]) == 1
    assert "not a style of the model" in capsys.readouterr().err
    assert main([*common, "--target", "high", "--penalty", "2", "--strengths", "0.5", "--out",
                 str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["penalty"] == 2 and [r["penalty"] for r in saved["strengths"]] == [0.5]
    assert "| 2, relaxed to p ≥ 0.95" in out and "| 0.5 |" in out
    assert saved["confidence"] == 0.95 and saved["summary"]["effects"]["confidence"] == 0.95
    assert main([*common, "--target", "high", "--confidence", "0", "--out", str(tmp_path / "c.json")]) == 0
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["confidence"] is None and saved["summary"]["effects"]["median_penalty"] == 1.0
    assert main([*common, "--target", "high", "--confidence", "1.5", "--out", str(tmp_path / "z.json")]) == 1
    assert "confidence must be a probability" in capsys.readouterr().err
    assert main([*common, "--target", "high", "--strengths", "-1", "--out", str(tmp_path / "y.json")]) == 1
    assert "penalty must be" in capsys.readouterr().err

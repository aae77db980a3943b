"""Issue 10: random windows, augmentation, the log-mel models, the robust recipe and cross-validation."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import red_and_blue_noise, tone_track, write_track
from thesis_lib.augment import AugmentSettings, TrackWindows, augment_batch, shift
from thesis_lib.baseline import LinearProbe, LogMelBaseline
from thesis_lib.checkpoint import CheckpointError, load_model
from thesis_lib.config import THESIS, TRAIN_DEFAULTS, TrainSettings
from thesis_lib.crossval import crossval, few_test_tracks, track_folds
from thesis_lib.data import DatasetError, prepare_dataset, split_dataset
from thesis_lib.mel import LogMel, MelNet
from thesis_lib.robust import build_model, prepared_for, train_any, validation_tracks

FAST = dict(epochs=2, batch_size=4, device="cpu")
CFG16 = THESIS.with_(sample_rate=16_000, trim_samples=480_000, clip_samples=80_000)


@pytest.fixture(scope="module")
def three_styles(tmp_path_factory):
    """Three easy styles (low hum, mid tone, high whistle), 3 tracks each, 2 clips per track."""
    root = tmp_path_factory.mktemp("three")
    seconds = (2 * THESIS.trim_samples + 2 * THESIS.clip_samples) / THESIS.sample_rate + 0.5
    for i in range(3):
        for style, f in (("low", 110), ("mid", 440), ("high", 1500)):
            write_track(root / style / f"{style}_{i}.wav",
                        tone_track(f * (1 + 0.1 * i), seconds, sr=8000, noise=0.2, seed=i), sr=8000)
    return prepare_dataset(root, tmp_path_factory.mktemp("three_prep") / "p", progress=False, jobs=1)


# ---------------------------------------------------------------- folds
def test_track_folds_group_by_track_and_stratify_by_style():
    track_style = np.array([0] * 10 + [1] * 7 + [2] * 5)
    folds = track_folds(track_style, 4, seed=3)
    allt = np.concatenate(folds)
    assert sorted(allt.tolist()) == list(range(len(track_style)))          # every track exactly once
    for s, n in ((0, 10), (1, 7), (2, 5)):
        per_fold = [int(np.sum(track_style[f] == s)) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n     # stratified
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert [f.tolist() for f in track_folds(track_style, 4, seed=3)] == [f.tolist() for f in folds]
    with pytest.raises(ValueError):
        track_folds(track_style, 1)


def test_validation_tracks_only_from_styles_with_three_tracks():
    ts = np.array([0, 0, 0, 0, 0, 1, 1])
    val = validation_tracks(ts, np.arange(7), 0.2, np.random.default_rng(0))
    assert len(val) == 1 and ts[val[0]] == 0


def test_few_test_tracks_warning():
    w = few_test_tracks(["a", "b"], np.array([0, 0, 0, 1]))
    assert len(w) == 1 and "'b'" in w[0] and "1 test track" in w[0]


# ---------------------------------------------------------------- windows and augmentation
def test_random_windows_stay_inside_their_track(toy_prepared):
    ds = toy_prepared
    win = TrackWindows(ds)
    tracks = np.arange(len(ds.tracks))
    starts, labels, which = win.draw(tracks, ds.track_style[tracks], 200, np.random.default_rng(0))
    m = ds.clips.shape[1]
    for s, t, y in zip(starts, which, labels):
        clips = np.flatnonzero(ds.track_of == t)
        assert clips[0] * m <= s and s + m <= (clips[-1] + 1) * m          # inside track t's audio
        assert ds.track_style[t] == y
    x = win.read(starts[:5])
    assert x.shape == (5, m) and x.dtype == np.float32
    # a window at a clip boundary is exactly the concatenation of the two clips' halves
    t = which[0]
    c0 = np.flatnonzero(ds.track_of == t)[0]
    if np.sum(ds.track_of == t) >= 2:
        w = win.read(np.array([c0 * m + m // 2]))[0]
        assert np.array_equal(w, np.concatenate([ds.clips[c0][m // 2:], ds.clips[c0 + 1][: m // 2]]))
    assert set(np.unique(labels)) == set(np.unique(ds.track_style))      # every style drawn


def test_per_clip_windows_are_the_clips(toy_prepared):
    win = TrackWindows(toy_prepared, per_clip=True)
    starts, _, which = win.draw(np.array([0, 3]), np.array([0, 1]), 10, np.random.default_rng(1))
    assert np.array_equal(win.read(starts), np.asarray(toy_prepared.clips[which], np.float32))


def test_augmentations_keep_shape_finiteness_and_peaks():
    rng = np.random.default_rng(0)
    x = (0.9 * np.clip(rng.standard_normal((16, 4000)), -1, 1)).astype(np.float32)
    y = np.array([0, 1] * 8)
    out = augment_batch(x, y, rng, AugmentSettings(max_shift=100))
    assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out).max() <= np.abs(x).max() + 1e-6
    assert not np.allclose(out, x)
    # mixing only within a style: windows of style 0 that are all zero stay silent
    z = x.copy()
    z[y == 0] = 0
    out = augment_batch(z, y, np.random.default_rng(1), AugmentSettings(mix_probability=1.0))
    assert np.abs(out[y == 0]).max() == 0 and np.abs(out[y == 1]).max() > 0
    assert np.array_equal(shift(x, 0, rng), x)
    assert np.allclose(np.sort(shift(x, 50, rng)[0]), np.sort(x[0]))


# ---------------------------------------------------------------- models
def test_mel_front_end_and_model_shapes():
    x = 0.3 * torch.randn(3, 1, THESIS.clip_samples)
    fe = LogMel()
    m = fe(x)
    assert m.shape == (3, 64, fe.frames(THESIS.clip_samples)) and torch.isfinite(m).all()
    net = MelNet(4)
    assert net(x).shape == (3, 4) and net.embed(x).shape == (3, 256)
    assert net(x[:, 0]).shape == (3, 4)                   # (B, L) works as well
    assert sum(p.numel() for p in net.parameters()) < 200_000


def test_baseline_learns_a_separable_set():
    x, y = red_and_blue_noise(12, THESIS.clip_samples)
    model = LogMelBaseline(2).fit(x[::2], y[::2])
    with torch.no_grad():
        pred = model(torch.from_numpy(x[1::2]).unsqueeze(1)).argmax(1).numpy()
    assert (pred == y[1::2]).all()


def test_style_weights_make_every_style_weigh_the_same():
    from thesis_lib.baseline import style_weights

    w = style_weights(np.array([0, 0, 0, 2]), 3)             # style 1 absent: the two present share the weight
    assert np.allclose(w, [2 / 3, 2 / 3, 2 / 3, 2]) and np.isclose(w.mean(), 1)
    assert np.allclose(style_weights(np.array([1, 0, 1, 0]), 2), 1) and style_weights(np.array([], int), 2).size == 0


def test_a_balanced_fit_does_not_let_a_large_style_out_vote_a_small_one():
    """Overlapping styles, 9 training clips of one to 1 of the other: the unweighted fit moves its
    boundary into the small style (most of its clips called the large one); the balanced fit does not.
    With as many clips of each style the two fits are the same."""
    rng = np.random.default_rng(0)

    def draw(n0, n1):
        f = np.concatenate([rng.normal(0, 1, (n0, 4)), rng.normal(0, 1, (n1, 4)) + [1.0, 0, 0, 0]])
        return torch.tensor(f, dtype=torch.float32), np.r_[np.zeros(n0, int), np.ones(n1, int)]

    f, y = draw(900, 100)
    test, ty = draw(500, 500)
    recall = {}
    for balanced in (False, True):
        probe = LinearProbe(2, THESIS, 4, balanced=balanced).fit_features(f, y)
        with torch.no_grad():
            pred = probe.out((test - probe.mean) / probe.scale).argmax(1).numpy()
        recall[balanced] = [float(np.mean(pred[ty == s] == s)) for s in (0, 1)]
    assert recall[False][1] < 0.3 < 0.55 < recall[True][1]          # the small style is heard again
    assert min(recall[True]) > 0.55                                   # at a fair cost to the large one
    f, y = draw(300, 300)
    a, b = (LinearProbe(2, THESIS, 4, balanced=flag).fit_features(f, y) for flag in (False, True))
    assert torch.allclose(a.out.weight, b.out.weight, atol=1e-5)


def test_a_checkpoint_says_how_its_probe_was_fitted():
    from thesis_lib.checkpoint import build_architecture

    arch = LogMelBaseline(3).architecture()
    assert arch["balanced"] is True and build_architecture(arch, 3, THESIS).balanced is True
    del arch["balanced"]                                            # written before the field: fitted unweighted
    assert build_architecture(arch, 3, THESIS).balanced is False


def test_late_fusion_is_the_normalised_geometric_mean_of_its_members():
    from thesis_lib.fusion import LateFusion

    torch.manual_seed(0)
    fused = LateFusion(3, kind="fusion-mel").eval()
    with torch.no_grad():
        fused.baseline.out.weight.normal_()          # an untrained baseline would vote uniformly
    x = 0.3 * torch.randn(5, 1, THESIS.clip_samples)
    with torch.no_grad():
        p = fused.predict_proba(x)
        a, b = torch.softmax(fused.cnn(x), 1), torch.softmax(fused.baseline(x), 1)
    g = (a * b).sqrt()
    assert torch.allclose(p, g / g.sum(1, keepdim=True), atol=1e-6)
    assert not torch.allclose(p, a, atol=1e-3) and not torch.allclose(p, b, atol=1e-3)   # both count
    veto = torch.tensor([[0.98, 0.01, 0.01]]).log(), torch.tensor([[0.4, 0.3, 0.3]]).log()
    with torch.no_grad():                            # a confident member outvotes an unsure one
        fused.cnn.forward = lambda x: veto[0].expand(len(x), 3)
        fused.baseline.forward = lambda x: veto[1].expand(len(x), 3)
        assert fused(x).argmax(1).tolist() == [0] * 5
    with pytest.raises(ValueError, match="styles"):
        LateFusion(3, members={"cnn": MelNet(3), "baseline": LogMelBaseline(2)})
    with pytest.raises(ValueError, match="two or more members"):
        LateFusion(3, members={"cnn": MelNet(3)})
    with pytest.raises(ValueError, match="two or more members"):
        LateFusion(3, members={"cnn": MelNet(3), "resnet": LogMelBaseline(3)})
    with pytest.raises(ValueError, match="unknown fusion"):
        LateFusion(3, kind="fusion-resnet")


def test_clip_votes_of_a_fusion_are_its_probabilities_and_each_members_own():
    from thesis_lib.fusion import LateFusion
    from thesis_lib.predict import clip_probabilities, clip_votes

    torch.manual_seed(1)
    fused = LateFusion(3, kind="fusion-mel").eval()
    with torch.no_grad():
        fused.baseline.out.weight.normal_()
    clips = (0.3 * np.random.default_rng(0).standard_normal((7, THESIS.clip_samples))).astype(np.float32)
    probs, members = clip_votes(fused, clips, batch_size=3)
    assert np.allclose(probs, clip_probabilities(fused, clips, 3), atol=1e-6)      # batches of 3, 3 and 1
    assert set(members) == {"cnn", "baseline"}
    for name, m in fused.members().items():
        assert np.allclose(members[name], clip_probabilities(m, clips, 3), atol=1e-6)
    g = np.sqrt(members["cnn"] * members["baseline"])
    assert np.allclose(probs, g / g.sum(1, keepdims=True), atol=1e-5)
    alone, none = clip_votes(fused.cnn, clips, batch_size=3)                          # any other model
    assert none == {} and np.allclose(alone, members["cnn"], atol=1e-6)


@pytest.mark.parametrize("fusion", ["fusion", "fusion-mel"])
def test_fusion_trains_each_member_as_alone(three_styles, fusion):
    """Each member of a fusion is the model ``train --model M`` gives alone with the same seed (same
    data, same draws): the CNN ``--model mel``'s, the probes ``--model musicnn``'s and ``--model
    baseline``'s. Nothing is fitted on the pair."""
    from thesis_lib.fusion import FUSIONS, MEMBER_MODELS

    runs = {}
    for model in (fusion, *(MEMBER_MODELS[m] for m in FUSIONS[fusion])):
        settings = replace(TrainSettings.recommended(model), **FAST)
        ds = prepared_for(three_styles, settings, log=lambda m: None)
        sp = split_dataset(ds, 100, 100, "track", seed=0)
        runs[model] = train_any(ds, sp, settings, progress=False, log=lambda m: None)
    fused = runs[fusion].model
    assert fused.member_names == FUSIONS[fusion] and fused.kind == fusion
    for name, member in fused.members().items():
        alone = runs[MEMBER_MODELS[name]].model.state_dict()
        for k, v in member.state_dict().items():
            assert torch.allclose(v, alone[k], atol=1e-5), (name, k)
    assert runs[fusion].metrics["model"] == fusion and runs[fusion].history


def test_build_model_names():
    assert type(build_model("thesis", 2)).__name__ == "StyleNet"
    assert type(build_model("mel", 3)).__name__ == "MelNet"
    assert type(build_model("baseline", 2)).__name__ == "LogMelBaseline"
    assert build_model("musicnn", 2, CFG16).kind == "musicnn"
    assert build_model("musicnn-vgg", 2, CFG16).kind == "vgg"
    fused = build_model("fusion", 3, CFG16)
    assert type(fused).__name__ == "LateFusion" and fused.member_names == ("tagger", "vgg", "baseline")
    assert type(fused.tagger.tagger).__name__ == "Musicnn" and type(fused.vgg.tagger).__name__ == "MusicnnVGG"
    assert fused.baseline.n_styles == 3
    fused = build_model("fusion-mel", 3, dropout=0.3)
    assert type(fused).__name__ == "LateFusion" and fused.cnn.dropout_p == 0.3 and fused.baseline.n_styles == 3
    with pytest.raises(ValueError):
        build_model("resnet", 2)
    thesis_drop = build_model("thesis", 2, dropout=0.5)
    assert set(thesis_drop.state_dict()) == set(build_model("thesis", 2).state_dict())


def test_defaults_are_recorded():
    assert TRAIN_DEFAULTS.model == "fusion" and TRAIN_DEFAULTS.recipe == "robust"
    assert TrainSettings.recommended() == TRAIN_DEFAULTS
    for fusion, members in (("fusion", ("musicnn", "baseline")), ("fusion-mel", ("mel", "baseline"))):
        for member in members:                                                       # each trains as alone
            assert replace(TrainSettings.recommended(fusion), model=member) == TrainSettings.recommended(member)
    assert TrainSettings().model == "thesis" and TrainSettings().recipe == "thesis"      # the API's old default
    assert TrainSettings.thesis().learning_rate == THESIS.learning_rate


# ---------------------------------------------------------------- train / predict round trips
@pytest.mark.parametrize("model,recipe", [("mel", "robust"), ("thesis", "robust"), ("baseline", "robust"),
                                          ("musicnn", "robust"), ("fusion", "robust"), ("fusion-mel", "robust"),
                                          ("thesis", "thesis")])
def test_train_predict_round_trip(three_styles, tmp_path, model, recipe):
    from thesis_lib.predict import clip_probabilities

    base = TrainSettings.recommended(model) if recipe == "robust" else TrainSettings()
    settings = replace(base, **FAST)
    ds = prepared_for(three_styles, settings, log=lambda m: None)       # 16 kHz for mel and baseline
    assert ds.clips.shape[1] == 5 * (16_000 if model != "thesis" else 8_000)
    sp = split_dataset(ds, 100, 100, "track", seed=0)
    res = train_any(ds, sp, settings, tmp_path / "run", progress=False, log=lambda m: None)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["settings"]["model"] == model
    assert metrics["settings"]["recipe"] == recipe and len(metrics["styles"]) == 3
    assert np.asarray(metrics["confusion"]).shape == (3, 3)
    loaded, styles, ckpt = load_model(tmp_path / "run" / "model.pt")
    assert styles == sp.styles and ckpt["settings"]["model"] == model
    clips = np.asarray(ds.clips[sp.test], np.float32)
    p1 = clip_probabilities(loaded, clips, 8)
    res.model.eval()
    with torch.no_grad():
        p0 = torch.softmax(res.model(torch.from_numpy(clips).unsqueeze(1)), 1).numpy()
    assert p1.shape == (len(clips), 3) and np.allclose(p0, p1, atol=1e-4)
    if model != "thesis":
        with pytest.raises(CheckpointError, match="--model thesis"):
            load_model(tmp_path / "run" / "model.pt", require="StyleNet")


def test_a_fusion_checkpoint_with_damaged_members_is_refused_by_name(tmp_path):
    from thesis_lib.checkpoint import model_state
    from thesis_lib.fusion import LateFusion

    state = model_state(LateFusion(2, kind="fusion-mel"), ["a", "b"])
    for members, match in (({"cnn": state["architecture"]["members"]["cnn"]}, "expected two or more of"),
                           ({"cnn": {"name": "MelNet"}, "resnet": {}}, "expected two or more of"),
                           ({"cnn": {"name": "ResNet"}, "baseline": {}}, "unknown architecture 'ResNet'")):
        bad = {**state, "architecture": {**state["architecture"], "members": members}}
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=match) as err:
            load_model(tmp_path / "bad.pt")
        assert str(tmp_path / "bad.pt") in str(err.value)
    torch.save(state, tmp_path / "good.pt")
    model, styles, _ = load_model(tmp_path / "good.pt")
    assert type(model).__name__ == "LateFusion" and styles == ["a", "b"]


def test_robust_recipe_with_a_clip_split_trains_on_training_clips_only(toy_prepared):
    sp = split_dataset(toy_prepared, 100, 2, "clip", seed=0)
    res = train_any(toy_prepared, sp, replace(TrainSettings.recommended("baseline"), device="cpu", sample_rate=None),
                    progress=False, log=lambda m: None)
    assert res.metrics["n_train"] == len(sp.train)


def test_log_mel_models_read_16_khz_and_data_of_another_rate_is_prepared_again_or_refused(toy_prepared, tmp_path):
    mel, thesis = TrainSettings.recommended("mel"), TrainSettings.recommended("thesis")
    assert (mel.sample_rate, TrainSettings.recommended("baseline").sample_rate, thesis.sample_rate) == \
        (16_000, 16_000, None)
    cfg = mel.applied_to(THESIS)
    assert (cfg.sample_rate, cfg.clip_samples, cfg.trim_samples) == (16_000, 80_000, 480_000)
    assert cfg.clip_seconds == THESIS.clip_seconds and thesis.applied_to(THESIS).sample_rate == THESIS.sample_rate
    assert prepared_for(toy_prepared, thesis) is toy_prepared                      # already what it reads
    again = prepared_for(toy_prepared, mel, log=lambda m: None)
    assert again.clips.shape[1] == 80_000 and again.tracks == toy_prepared.tracks
    sp = split_dataset(toy_prepared, 100, 2, "track", seed=0)
    with pytest.raises(DatasetError, match="reads 5-second clips at 16000 Hz"):
        train_any(toy_prepared, sp, replace(mel, **FAST), progress=False, log=lambda m: None)
    import shutil
    moved = shutil.copytree(toy_prepared.path, tmp_path / "prep")
    orphan = type(toy_prepared).load(moved)
    orphan.report["data"] = str(tmp_path / "gone")
    with pytest.raises(DatasetError, match="not here to prepare again"):
        prepared_for(orphan, mel)
    with pytest.raises(ValueError, match="too low"):
        replace(mel, sample_rate=100).applied_to(THESIS)


def test_thesis_recipe_is_the_thesis_net_only(toy_prepared):
    sp = split_dataset(toy_prepared, 100, 2, "track", seed=0)
    with pytest.raises(ValueError):
        train_any(toy_prepared, sp, TrainSettings(model="mel"), progress=False, log=lambda m: None)


# ---------------------------------------------------------------- cross-validation
def test_crossval_never_tests_a_training_track(three_styles, tmp_path, monkeypatch):
    import thesis_lib.robust as robust

    seen = []
    real = robust.train_any

    def spy(ds, split, settings, *a, **k):
        train_tracks = set(np.unique(ds.track_of[split.train]).tolist())
        test_tracks = set(np.unique(ds.track_of[split.test]).tolist())
        assert not train_tracks & test_tracks
        seen.append(test_tracks)
        return real(ds, split, settings, *a, **k)

    monkeypatch.setattr(robust, "train_any", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = crossval(three_styles, replace(TrainSettings.recommended("baseline"), device="cpu"), 3,
                       tmp_path / "cv", progress=False, log=lambda m: None)
    assert len(seen) == 3 and set().union(*seen) == set(range(len(three_styles.tracks)))
    saved = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    for key in ("folds", "clip_accuracy_mean", "clip_accuracy_std", "track_accuracy_mean", "track_accuracy_std",
                "confusion", "settings", "seconds_per_fold", "styles"):
        assert key in saved
    assert len(saved["folds"]) == 3
    for f in saved["folds"]:
        assert {"clip_accuracy", "track_accuracy", "test_tracks", "seconds"} <= set(f)
        assert 0 <= f["clip_accuracy"] <= 1 and len(f["test_tracks"]) == 3
    assert np.asarray(saved["confusion"]).sum() == len(three_styles)       # every clip tested once
    assert np.asarray(saved["track_confusion"]).sum() == len(three_styles.tracks)
    assert saved["clip_accuracy_mean"] == pytest.approx(np.mean([f["clip_accuracy"] for f in saved["folds"]]))
    assert saved["settings"]["model"] == "baseline" and rep["folds_k"] == 3
    votes = [r for f in saved["folds"] for r in f["track_predictions"]]   # every track voted once
    assert sorted(r["track"] for r in votes) == sorted(three_styles.tracks)
    assert sum(r["style"] != r["predicted"] for r in votes) == \
        np.asarray(saved["track_confusion"]).sum() - np.trace(saved["track_confusion"])
    assert all(0 <= r["clip_accuracy"] <= 1 and r["clips"] > 0 for r in votes)


def test_repeated_crossval_is_each_dealing_of_its_seed_and_reports_over_all(three_styles, tmp_path):
    """``repeats=2`` is the dealings of seeds 0 and 1, exactly as two runs at those seeds give them,
    and its means are over all 2 × K folds."""
    s = replace(TrainSettings.recommended("baseline"), device="cpu")
    quiet = dict(progress=False, log=lambda m: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = crossval(three_styles, s, 3, tmp_path / "cv", repeats=2, **quiet)
        one, other = crossval(three_styles, s, 3, **quiet), crossval(three_styles, replace(s, seed=1), 3, **quiet)
    assert len(both["folds"]) == 6 and [f["repeat"] for f in both["folds"]] == [1, 1, 1, 2, 2, 2]
    assert [f["seed"] for f in both["folds"]] == [0, 0, 0, 1, 1, 1]
    for mine, alone in zip(both["folds"], one["folds"] + other["folds"]):
        assert mine["test_tracks"] == alone["test_tracks"]
        assert mine["clip_accuracy"] == pytest.approx(alone["clip_accuracy"])
    assert [f["test_tracks"] for f in one["folds"]] != [f["test_tracks"] for f in other["folds"]]  # another dealing
    assert both["clip_accuracy_mean"] == pytest.approx(np.mean([one["clip_accuracy_mean"],
                                                                other["clip_accuracy_mean"]]))
    assert [d["seed"] for d in both["repeats"]] == [0, 1]
    assert both["repeats"][1]["track_accuracy_mean"] == pytest.approx(other["track_accuracy_mean"])
    wrong = np.asarray(other["track_confusion"])
    assert both["repeats"][1]["tracks_wrong"] == wrong.sum() - np.trace(wrong)
    assert np.asarray(both["track_confusion"]).sum() == 2 * len(three_styles.tracks)   # every track twice
    assert json.loads((tmp_path / "cv" / "crossval.json").read_text())["repeats"] == both["repeats"]
    assert one["repeats"][0]["seed"] == 0 and len(one["repeats"]) == 1
    with pytest.raises(ValueError, match="repeats"):
        crossval(three_styles, s, 3, repeats=0, **quiet)


def test_crossval_warns_about_few_test_tracks(toy_prepared, tmp_path):
    with pytest.warns(UserWarning, match="test track"):
        crossval(toy_prepared, replace(TrainSettings.recommended("baseline"), device="cpu"), 2,
                 progress=False, log=lambda m: None)


def test_cli_crossval_and_train_models(three_styles, tmp_path, capsys):
    from thesis_lib.cli import main

    rc = main(["crossval", "--data", str(three_styles.path), "--folds", "3", "--out", str(tmp_path / "cv"),
               "--model", "baseline", "--quiet", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "fold 3/3" in out and "track accuracy" in out
    assert json.loads((tmp_path / "cv" / "crossval.json").read_text())["folds_k"] == 3
    rc = main(["crossval", "--data", str(three_styles.path), "--folds", "3", "--out", str(tmp_path / "cv2"),
               "--model", "baseline", "--quiet", "--device", "cpu", "--repeats", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "dealing 2/2 (seed 1)" in out and "dealing with seed 1: clip accuracy" in out
    assert "over 2 dealings × 3 folds" in out
    assert len(json.loads((tmp_path / "cv2" / "crossval.json").read_text())["folds"]) == 6
    for bad in (["--repeats", "0"], ["--folds", "1"]):
        assert main(["crossval", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), *bad]) == 1
        assert "at least" in capsys.readouterr().err and not (tmp_path / "x").exists()
    rc = main(["train", "--data", str(three_styles.path), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--batch-size", "4", "--quiet", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "warning: style" in out                       # one test track per style
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["model"] == TRAIN_DEFAULTS.model and m["settings"]["recipe"] == "robust"
    assert f"fitted in      {m['train_seconds']:.1f} s on cpu (the fusion model has no epochs" in out  # probes only
    assert "GTX TITAN X" not in out and "seconds/epoch" not in out
    rc = main(["train", "--data", str(three_styles.path), "--out", str(tmp_path / "mel"), "--epochs", "1",
               "--batch-size", "4", "--quiet", "--device", "cpu", "--model", "fusion-mel"])
    assert rc == 0 and "(the fusion-mel model; the thesis's" in capsys.readouterr().out    # a net with epochs
    assert main(["train", "--data", str(three_styles.path), "--out", str(tmp_path / "bad"), "--model", "mel",
                 "--recipe", "thesis"]) == 1
    assert "thesis net only" in capsys.readouterr().err
    rc = main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--json",
               str(three_styles.report.get("data", ""))])
    assert rc == 0
    verdicts = json.loads(capsys.readouterr().out)["tracks"]
    assert len(verdicts) == 9 and all(v["style"] in ("low", "mid", "high") for v in verdicts)

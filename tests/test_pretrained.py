"""The nets shipped with the package: intact, loadable by name, and as accurate as their manifest says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from thesis_lib import pretrained
from thesis_lib.book import runs
from thesis_lib.checkpoint import load_model, save_model
from thesis_lib.data import prepare_dataset
from thesis_lib.model import StyleNet
from thesis_lib.predict import clip_probabilities
from thesis_lib.synth import SynthSpec, compose_tracks


def test_every_shipped_net_matches_its_manifest_hash_and_loads_as_float32():
    assert "thesis-synth" in pretrained.names()
    for name in pretrained.names():
        entry = pretrained.info(name)
        file = pretrained.path(name)                      # checks the sha256
        assert pretrained.sha256(file) == entry["sha256"]
        assert file.stat().st_size == entry["bytes"]
        model, styles, ckpt = pretrained.load(name)
        assert styles == entry["styles"]
        assert type(model).__name__ == entry["architecture"]
        assert not model.training
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(v.dtype in (torch.float16, torch.int64) for v in ckpt["state_dict"].values())


def test_pretrained_prefix_works_wherever_a_model_path_does():
    model, styles, _ = load_model("pretrained:thesis-synth", require="StyleNet")
    assert isinstance(model, StyleNet) and styles == ["cpop", "metal"]
    with pytest.raises(pretrained.PretrainedError, match="no pretrained net named 'nope'.*thesis-synth"):
        load_model("pretrained:nope")


def test_shipped_thesis_net_scores_as_recorded_on_freshly_composed_test_tracks(tmp_path):
    """The manifest's ``check`` tracks, composed anew, give the recorded accuracy and probabilities."""
    entry = pretrained.info("thesis-synth")
    spec = SynthSpec(**entry["data"]["spec"])
    check = entry["check"]
    assert len(check) >= 4 and {f.split("/")[0] for f in check} == {"cpop", "metal"}
    root = compose_tracks(tmp_path / "data", sorted(check), spec)
    ds = prepare_dataset(root, cfg=StyleNet(2).cfg, cache_dir=tmp_path / "cache", progress=False)
    model, styles, _ = pretrained.load("thesis-synth")
    for f, want in check.items():
        rows = runs.clips_of(ds, {f: want["clips"]})
        p = clip_probabilities(model, ds.clips, 64, "cpu", rows=rows, fold=False)
        assert np.mean(p.argmax(1) == styles.index(f.split("/")[0])) == pytest.approx(want["accuracy"])
        np.testing.assert_allclose(p.mean(0), want["mean_probability"], atol=2e-3)


def test_a_damaged_or_missing_shipped_file_is_refused_with_its_name(tmp_path):
    shutil.copy(pretrained.HERE / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(pretrained.PretrainedError, match="thesis-synth.*file is missing"):
        pretrained.path("thesis-synth", tmp_path)
    data = bytearray((pretrained.HERE / "thesis-synth.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "thesis-synth.pt").write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match=r"thesis-synth\.pt: sha256 does not match"):
        pretrained.path("thesis-synth", tmp_path)


def test_export_halves_the_weights_and_records_hash_and_facts(tmp_path):
    torch.manual_seed(0)
    net = StyleNet(3)
    src = save_model(net, ["a", "b", "c"], tmp_path / "model.pt", settings={"epochs": 1})
    entry = pretrained.export(src, "tiny-net", {"metrics": {"test_accuracy": 0.5}}, tmp_path / "ship")
    assert entry["bytes"] < src.stat().st_size * 0.6          # float16: about half the bytes
    assert pretrained.names(tmp_path / "ship") == ["tiny-net"]
    assert pretrained.info("tiny-net", tmp_path / "ship")["metrics"] == {"test_accuracy": 0.5}
    loaded, styles, _ = load_model(pretrained.path("tiny-net", tmp_path / "ship"))
    assert styles == ["a", "b", "c"]
    for k, v in net.state_dict().items():
        w = loaded.state_dict()[k]
        want = v.half().float() if v.is_floating_point() else v
        assert torch.equal(w, want), k
    with pytest.raises(ValueError, match="letters, digits"):
        pretrained.export(src, "../evil", {}, tmp_path / "ship")


def test_test_set_mapping_round_trips_through_track_names(tmp_path):
    ds = runs.dataset(small=True)
    rows = np.arange(0, len(ds), 3)
    mapping = runs.test_set_of(ds, rows)
    assert sum(len(v) for v in mapping.values()) == len(rows)
    np.testing.assert_array_equal(runs.clips_of(ds, mapping), rows)
    first = next(iter(mapping))
    with pytest.raises(Exception, match="asks for clip"):
        runs.clips_of(ds, {first: [10_000]})


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory):
    """A cache with no trained run and no built-in data, for this module's tests."""
    import os

    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("THESIS_LIB_CACHE")
    os.environ["THESIS_LIB_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("THESIS_LIB_CACHE")
    else:
        os.environ["THESIS_LIB_CACHE"] = old


@pytest.mark.slow
def test_chapters_fall_back_to_the_shipped_net_without_a_cached_run(empty_cache):
    """No trained run, no built-in data: the thesis-sized run is the shipped net on its own test clips."""
    run = runs.trained_model(small=False)
    entry = pretrained.info("thesis-synth")
    assert run.extra["pretrained"] == "thesis-synth" and run.reused
    assert len(run.split.train) == 0 and len(run.split.test) == sum(map(len, entry["data"]["test_set"].values()))
    assert not (empty_cache / "book").exists()                           # nothing was trained
    composed = list((empty_cache / "synth").glob("*-test/*/*.flac"))
    assert len(composed) == len(entry["data"]["test_set"])                 # only the test tracks
    from thesis_lib.data import label_of
    from thesis_lib.train import evaluate

    m = evaluate(run.model, run.dataset, run.split.test, label_of(run.dataset, run.split.test, run.split), run.styles)
    assert m["test_accuracy"] == pytest.approx(entry["metrics"]["test_accuracy"])
    assert "shipped with the package" in runs.run_origin(run)


@pytest.mark.slow
def test_dreaming_chapters_analyse_the_shipped_net_even_beside_a_trained_run(empty_cache):
    """shipped_first: chapters 5-7 take the shipped net's fixed weights, and say how the cached run differs."""
    entry = pretrained.info("thesis-synth")
    own = empty_cache / "book" / entry["data"]["run_key"]      # a finished run of the same settings, other weights
    own.mkdir(parents=True)
    save_model(StyleNet(2), list(entry["styles"]), own / "model.pt")
    (own / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "epochs": []}))
    (own / "book.json").write_text("{}")
    try:
        first = runs.trained_model(small=False, shipped_first=True)
        assert first.extra == {"pretrained": "thesis-synth", "shipped_first": True}
        origin = runs.run_origin(first)
        assert "analyses the net shipped" in origin and "has other weights (test accuracy 0.500" in origin
        model, _, _ = pretrained.load("thesis-synth")               # the run's own weights, rounded as shipped
        save_model(model, list(entry["styles"]), own / "model.pt")
        assert "has the same weights" in runs.run_origin(runs.trained_model(small=False, shipped_first=True))
    finally:
        shutil.rmtree(empty_cache / "book")


def test_cli_predict_accepts_a_pretrained_model(tmp_path):
    from thesis_lib.synth import compose_track
    from thesis_lib.audio import write_wav

    y = compose_track("metal", np.random.default_rng(5), 40.0, 8000)
    write_wav(tmp_path / "song.wav", y, 8000)
    res = subprocess.run([sys.executable, "-m", "thesis_lib", "predict", "--model", "pretrained:thesis-synth",
                          "--json", str(tmp_path / "song.wav")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert "metal" in json.dumps(doc) and "cpop" in json.dumps(doc)


def test_reference_sounds_are_intact_and_made_by_the_shipped_net():
    from thesis_lib.book import references as refs

    index = refs.references()
    assert index["net_sha256"] == pretrained.info(index["net"])["sha256"]
    assert {"original-cpop", "dream-conv1", "dream-conv3", "inversion-conv2", "style-transfer",
            "effects-metal"} <= set(index["sounds"])
    for slug, entry in index["sounds"].items():
        y, rate = refs.reference_audio(slug)                   # checks the sha256
        assert rate == index["sample_rate"] == 8000
        assert len(y) == StyleNet(2).cfg.clip_samples
        assert 0.85 < np.max(np.abs(y)) <= 0.9 + 1e-3, slug
        assert entry["chapter"] in ("", "6", "7")
    html = refs.reference_players(["original-cpop", "dream-conv3"])._repr_html_()
    assert html.count("<audio") == 2


@pytest.mark.slow
def test_reference_sounds_are_what_the_shipped_net_makes_here(empty_cache, tmp_path):
    """Two references made again on this machine sound like the shipped ones (same net, same clip)."""
    from thesis_lib.book import references as refs
    from thesis_lib.dream.measures import envelope_correlation, log_spectral_distance

    refs.make_references(tmp_path, only=["ascent-conv3"], log=lambda m: None)
    refs.make_references(tmp_path, only=["dream-conv2"], log=lambda m: None)   # remaking one keeps the other
    assert set(refs.references(tmp_path)["sounds"]) == {"ascent-conv3", "dream-conv2"}
    for slug in ("ascent-conv3", "dream-conv2"):
        mine, rate = refs.reference_audio(slug, tmp_path)
        shipped, _ = refs.reference_audio(slug)
        assert envelope_correlation(mine, shipped) > 0.95, slug
        assert log_spectral_distance(mine, shipped, rate) < 3.0, slug


def test_a_train_run_exports_with_its_settings_and_crossvalidated_accuracy(toy_prepared, tmp_path):
    from dataclasses import replace

    from thesis_lib.config import TrainSettings
    from thesis_lib.data import split_dataset
    from thesis_lib.robust import train_any

    settings = replace(TrainSettings.recommended("baseline"), device="cpu", sample_rate=None)
    sp = split_dataset(toy_prepared, 100, 2, "track", seed=0)
    train_any(toy_prepared, sp, settings, tmp_path / "run", progress=False, log=lambda m: None)
    cv = {"clip_accuracy_mean": 0.8, "clip_accuracy_std": 0.1, "track_accuracy_mean": 0.9,
          "track_accuracy_std": 0.05, "folds_k": 4}
    (tmp_path / "cv.json").write_text(json.dumps(cv))
    facts = pretrained.run_facts(tmp_path / "run", "toy baseline", tmp_path / "cv.json")
    assert facts["settings"]["model"] == "baseline" and facts["recipe"] == "robust"
    assert facts["metrics"]["track_accuracy_mean"] == 0.9 and facts["metrics"]["crossval_folds"] == 4
    assert 0 <= facts["metrics"]["test_accuracy"] <= 1
    entry = pretrained.export(tmp_path / "run" / "model.pt", "toy-base", facts, tmp_path / "ship")
    model, styles, _ = load_model(pretrained.path("toy-base", tmp_path / "ship"))
    assert type(model).__name__ == entry["architecture"] == "LogMelBaseline" and styles == sp.styles


@pytest.mark.parametrize("name,architecture", [("mel-free", "MelNet"), ("fusion-free", "LateFusion")])
def test_the_shipped_real_music_nets_read_16_khz_and_predict_a_song(tmp_path, name, architecture):
    from thesis_lib.synth import compose_track
    from thesis_lib.audio import write_wav

    model, styles, ckpt = pretrained.load(name)
    assert styles == ["electronic", "metal", "orchestral"] and model.cfg.sample_rate == 16_000
    assert type(model).__name__ == pretrained.info(name)["architecture"] == architecture
    assert pretrained.info(name)["metrics"]["crossval_folds"] == 4
    assert pretrained.info(name)["settings"]["model"] == ckpt["settings"]["model"]
    y = compose_track("metal", np.random.default_rng(7), 75.0, 11025)
    write_wav(tmp_path / "song.wav", y, 11025)
    res = subprocess.run([sys.executable, "-m", "thesis_lib", "predict", "--model", f"pretrained:{name}",
                          "--json", str(tmp_path / "song.wav")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    track = json.loads(res.stdout)["tracks"][0]
    assert track["style"] in styles and track["n_clips"] == 3 and set(track["probabilities"]) == set(styles)
    if architecture == "LateFusion":          # each member's own verdict is shown beside the fused one
        assert set(track["members"]) == {"tagger", "vgg", "baseline"}
        assert all(set(p) == set(styles) and abs(sum(p.values()) - 1) < 1e-4 for p in track["members"].values())
        text = subprocess.run([sys.executable, "-m", "thesis_lib", "predict", "--model", f"pretrained:{name}",
                               str(tmp_path / "song.wav")], capture_output=True, text=True).stdout
        assert "tagger alone: " in text and "vgg alone: " in text and "baseline alone: " in text
    else:
        assert "members" not in track


def test_a_built_wheel_carries_the_shipped_nets_and_reference_sounds(tmp_path):
    """Colab and Binder install the package, not the repository: the weights must travel in the wheel."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    if res.returncode != 0 and "No module named pip" in res.stderr:
        pytest.skip("pip is not available in this environment")
    assert res.returncode == 0, res.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("thesis_lib-*.whl"))).namelist())
    want = {f"thesis_lib/pretrained/{e['file']}" for e in pretrained.manifest().values()}
    want |= {"thesis_lib/pretrained/manifest.json", "thesis_lib/pretrained/reference/reference.json",
             "thesis_lib/pretrained/musicnn-msd.pt", "thesis_lib/pretrained/musicnn-vgg-msd.pt",
             "thesis_lib/pretrained/MUSICNN_LICENSE"}
    from thesis_lib.book import references as refs
    want |= {f"thesis_lib/pretrained/reference/{e['file']}" for e in refs.references()["sounds"].values()}
    assert want <= names, sorted(want - names)


def test_the_shipped_default_net_was_trained_with_train_defaults():
    """README and chapter 4b call `fusion-free` train's default: it must stay so when the defaults move."""
    from dataclasses import asdict

    from thesis_lib.config import TRAIN_DEFAULTS

    shipped = pretrained.info("fusion-free")["settings"]
    moved = {k: (v, shipped.get(k)) for k, v in asdict(TRAIN_DEFAULTS).items()
             if k != "precision" and shipped.get(k) != v}      # a run records the precision it resolved
    assert not moved, f"train's defaults moved since fusion-free was trained: {moved}"
    from thesis_lib.baseline import LinearProbe
    from thesis_lib.fusion import FUSIONS

    model, _, _ = pretrained.load("fusion-free")       # the settings name the fusion, its members say which
    assert model.member_names == FUSIONS[TRAIN_DEFAULTS.model]
    default_fit = LinearProbe(2, model.cfg, 1).balanced            # how a probe is fitted now
    assert all(m.balanced == default_fit for m in model.members().values() if isinstance(m, LinearProbe))

"""book.reader_run: chapters 4-7 on the reader's own music and net (issue 11, item 4).

"The reader's music" here is the small built-in data folder, composed once in
the test cache; the reader runs themselves live in a fresh cache of their own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from thesis_lib import book
from thesis_lib.checkpoint import save_model
from thesis_lib.data import DatasetError, label_of
from thesis_lib.model import StyleNet
from thesis_lib.predict import clip_probabilities

SHIPPED = f"pretrained:{book.PRETRAINED}"


@pytest.fixture(scope="module")
def music() -> Path:
    """The small built-in data's folder (cpop/, metal/), standing in for a reader's collection."""
    return Path(book.dataset(small=True).report["data"])


@pytest.fixture(scope="module")
def cache(music, tmp_path_factory):
    """A cache of the module's own, so the first reader run really trains."""
    root = tmp_path_factory.mktemp("reader_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THESIS_LIB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def trained(music, cache):
    return book.reader_run(music, small=True, epochs=1)


def test_reader_data_trains_the_thesis_net_once_then_reuses_it(music, cache, trained):
    assert not trained.reused and trained.path.parent == cache / "book" and trained.path.name.startswith("reader-")
    again = book.reader_run(str(music), small=True, epochs=1)
    assert again.reused and again.path == trained.path
    for a, b in zip(trained.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert isinstance(again.model, StyleNet) and again.styles == ["cpop", "metal"] and again.spec is None
    assert again.metrics["recipe"] == "robust" and again.settings == book.reader_settings(True, 1)
    assert len(again.history) == 1 and again.metrics["n_test"] == len(again.split.test)
    facts = json.loads((again.path / "book.json").read_text())
    assert facts["kind"] == "reader" and facts["split"] == "track" and Path(facts["data"]) == music
    # the book's own runs of the built-in data are listed for chapter 8; a reader's run is not
    for small in (None, True, False):
        assert not any(r["path"] == str(again.path) for r in book.finished_runs(small))
    origin = book.run_origin(again)
    assert str(music) in origin and "trained here" in origin and book.READER_NOTE in origin


def test_a_split_by_clip_is_another_run_and_an_interrupted_one_starts_again(music, cache, trained):
    leaky = book.reader_run(music, small=True, epochs=1, split="clip")   # chapter 4's leak experiment
    assert leaky.path != trained.path and not leaky.reused and leaky.split.mode == "clip"
    assert book.leakage(leaky.dataset, leaky.split)["from tracks also in training"] > 0
    (leaky.path / "book.json").unlink()   # as if killed before it finished
    (leaky.path / "stale").write_text("left by the interrupted run")
    redo = book.reader_run(music, small=True, epochs=1, split="clip")
    assert not redo.reused and redo.path == leaky.path
    assert not (redo.path / "stale").exists() and (redo.path / "book.json").is_file()


def test_the_split_keeps_every_track_on_one_side(trained):
    sp, ds = trained.split, trained.dataset
    assert sp.mode == "track" and len(sp.test) and len(sp.train)
    assert not set(ds.track_of[sp.train].tolist()) & set(ds.track_of[sp.test].tolist())
    assert book.leakage(ds, sp)["from tracks also in training"] == 0
    assert {ds.styles[s] for s in ds.style_of[sp.test]} == {"cpop", "metal"}
    assert trained.metrics["n_test_tracks"] == len(np.unique(ds.track_of[sp.test]))


def test_a_net_of_other_styles_is_refused_naming_both_lists(music, cache, tmp_path):
    path = save_model(StyleNet(2), ["cpop", "jazz"], tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"\['cpop', 'jazz'\].*\['cpop', 'metal'\].*without \['jazz'\]"):
        book.reader_run(music, path)


def test_the_shipped_net_on_the_readers_music_is_tested_on_the_same_held_out_tracks(music, cache, trained):
    run = book.reader_run(music, SHIPPED)
    assert run.reused and run.styles == ["cpop", "metal"] and run.extra["reader"]["model"] == SHIPPED
    np.testing.assert_array_equal(run.split.test, trained.split.test)   # same data, same seed: same test clips
    assert any("may have heard these songs" in n for n in run.split.notes)
    probs = clip_probabilities(run.model, run.dataset.clips, 16, "cpu", rows=run.split.test, fold=False)
    labels = label_of(run.dataset, run.split.test, run.split)
    assert run.metrics["test_accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == labels)))
    assert run.metrics["test_accuracy"] > 0.5   # the shipped net knows the built-in styles
    origin = book.run_origin(run)
    assert SHIPPED in origin and str(music) in origin and book.READER_NOTE in origin
    assert run.style_pair() == ("cpop", "metal")


def test_the_readers_net_keeps_only_its_styles_test_clips(music, cache, tmp_path):
    root = tmp_path / "three"
    root.mkdir()
    for s in ("cpop", "metal"):
        (root / s).symlink_to(music / s)           # a link to a style folder outside the data folder
    (root / "jazz").mkdir()
    for f in sorted((music / "cpop").iterdir())[:2]:
        shutil.copy(f, root / "jazz" / f.name)
    run = book.reader_run(root, SHIPPED)
    assert run.dataset.styles == ["cpop", "jazz", "metal"] and run.split.styles == ["cpop", "metal"]
    tested = {run.dataset.styles[s] for s in run.dataset.style_of[run.split.test]}
    assert tested == {"cpop", "metal"}
    assert set(run.metrics["per_style_accuracy"]) == {"cpop", "metal"}


def test_a_net_without_data_needs_data_unless_shipped_for_the_built_in_data(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="needs DATA"):
        book.reader_run(model=tmp_path / "model.pt")
    with pytest.raises(ValueError, match="no pretrained net named 'nothing'"):
        book.reader_run(model="pretrained:nothing")
    asked = []

    def shipped(name, *args):   # composing the shipped net's test tracks takes a while; its own tests do it
        asked.append(name)
        return book.BookRun(None, ["cpop", "metal"], {"test_accuracy": 0.9}, [], tmp_path, None,
                            book.runs.Split(np.zeros(0), np.arange(3), ["cpop", "metal"], "track"), None, None,
                            extra={"pretrained": name})

    monkeypatch.setattr(book.runs, "pretrained_run", shipped)
    run = book.reader_run(model=SHIPPED)
    assert asked == [book.PRETRAINED] and run.extra["model"] == SHIPPED
    assert "as MODEL asks" in book.run_origin(run) and "No trained run was cached" not in book.run_origin(run)


def test_neither_data_nor_model_is_the_books_own_run(monkeypatch):
    asked = []
    monkeypatch.setattr(book.runs, "trained_model", lambda *a, **k: asked.append(a) or "built-in run")
    assert book.reader_run(None, None, True, split="clip", epochs=3, seed=4) == "built-in run"
    assert asked[0][:5] == (True, "clip", 3, "auto", 4)


def test_a_missing_data_folder_is_named_and_a_home_folder_is_expanded(music, cache, monkeypatch, tmp_path):
    with pytest.raises(DatasetError, match=r"DATA = '.*nowhere': no such folder.*one sub-folder per style"):
        book.reader_run(tmp_path / "nowhere")
    monkeypatch.setenv("HOME", str(music.parent))
    ds = book.reader_data(f"~/{music.name}")    # chapter 2 opens DATA here too
    assert Path(ds.report["data"]) == music and ds.styles == ["cpop", "metal"]


def test_style_pair_defaults_to_the_first_two_styles_and_checks_names(trained):
    assert trained.style_pair() == ("cpop", "metal")
    assert trained.style_pair("metal") == ("metal", "cpop")
    assert trained.style_pair(target="cpop") == ("metal", "cpop")
    with pytest.raises(ValueError, match=r"CONTENT = 'jazz' is not a style.*\['cpop', 'metal'\]"):
        trained.style_pair("jazz")
    with pytest.raises(ValueError, match="both 'metal'"):
        trained.style_pair("metal", "metal")

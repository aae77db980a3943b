"""Issue 13: styles are real folders, the report accounts for every entry, no traceback from user files."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from thesis_lib.audio import find_audio
from thesis_lib.data import DatasetError, find_tracks, prepare_dataset

from conftest import TRACK_SECONDS, tone_track, write_track


def _two_styles(root):
    write_track(root / "a" / "a1.wav", tone_track(200))
    write_track(root / "b" / "b1.flac", tone_track(900))
    return root


def test_link_to_the_root_is_not_a_style(tmp_path):
    root = _two_styles(tmp_path / "music")
    os.symlink(".", root / "c")                       # ln -s . ROOT/c
    os.symlink(root / "a", root / "a_again")           # a second path to style a
    tl = find_tracks(root)
    assert tl.styles == ["a", "b"]
    reasons = {str(p.relative_to(root)): r for p, r in tl.ignored}
    assert "not a style" in reasons["c"] and "not a style" in reasons["a_again"]


def test_loops_and_links_outside_are_followed_once(tmp_path):
    root = _two_styles(tmp_path / "music")
    outside = tmp_path / "elsewhere"
    write_track(outside / "o1.wav", tone_track(300))
    os.symlink(outside, root / "c")                    # a style that lives outside: followed
    os.symlink("..", outside / "up")                   # a loop back up from the outside folder
    os.symlink(root / "a", root / "b" / "into_a")      # a link inside a style to another style
    os.symlink(root / "a" / "a1.wav", root / "b" / "a1_link.wav")
    os.symlink(outside / "o1.wav", root / "a" / "o1_again.wav")   # same file as style c's
    tl = find_tracks(root)
    assert tl.styles == ["a", "b", "c"]
    assert tl.tracks["a"] == [root / "a" / "a1.wav", root / "a" / "o1_again.wav"]
    assert tl.tracks["b"] == [root / "b" / "b1.flac"]
    assert tl.tracks["c"] == []                                     # o1.wav already counted in a
    reasons = {str(p): r for p, r in tl.ignored}
    assert "already counted" in reasons[str(root / "c" / "o1.wav")]
    assert "not followed" in reasons[str(root / "b" / "into_a")]
    assert "counted where it is" in reasons[str(root / "b" / "a1_link.wav")]
    assert "contains the data folder" in reasons[str(root / "c" / "up")]   # the loop is not walked
    all_tracks = [p for ps in tl.tracks.values() for p in ps]
    assert len({os.path.realpath(p) for p in all_tracks}) == len(all_tracks)


def test_self_link_and_link_loop_do_not_hang(tmp_path):
    root = _two_styles(tmp_path / "music")
    os.symlink("self", root / "a" / "self")            # a self-referencing link
    os.symlink(root / "b", root / "b" / "loop")
    files = find_audio(root)
    assert sorted(p.name for p in files) == ["a1.wav", "b1.flac"]
    tl = find_tracks(root)
    reasons = {p.name: r for p, r in tl.ignored}
    assert "dangling or looping" in reasons["self"] and "not followed" in reasons["loop"]


def test_report_accounts_for_every_entry(tmp_path):
    root = _two_styles(tmp_path / "music")
    (root / "a" / "._a1.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(100))   # AppleDouble
    (root / "a" / ".DS_Store").write_bytes(bytes(64))
    (root / ".DS_Store").write_bytes(bytes(64))
    os.symlink(root / "a" / "gone.mp3", root / "a" / "dangling.mp3")
    os.symlink("loop.mp3", root / "b" / "loop.mp3")
    write_track(root / "b" / "album.mp3" / "inner.wav", tone_track(700))     # a folder named like a file
    (root / "b" / "notes.txt").write_text("liner notes")
    write_track(root / "stray.wav", tone_track(400, 1.0))
    (root / "a" / "broken.flac").write_bytes(b"fLaC" + bytes(300))
    ds = prepare_dataset(root, tmp_path / "prep", progress=False, jobs=1)
    report = json.loads((tmp_path / "prep" / "report.json").read_text())
    used = {u["file"] for u in report["used"]}
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    ignored = {i["file"]: i["reason"] for i in report["ignored"]}
    assert used == {"a/a1.wav", "b/b1.flac", "b/album.mp3/inner.wav"} == set(ds.tracks)
    assert set(skipped) == {"a/broken.flac"}
    assert "AppleDouble" in ignored["a/._a1.wav"] and "Finder" in ignored["a/.DS_Store"]
    assert "Finder" in ignored[".DS_Store"] and "outside any style" in ignored["stray.wav"]
    assert "dangling" in ignored["a/dangling.mp3"] and "dangling or looping" in ignored["b/loop.mp3"]
    assert "a folder" in ignored["b/album.mp3"] and "not an audio file" in ignored["b/notes.txt"]
    seen = {str(p.relative_to(root)) for p in root.rglob("*")}
    assert seen <= used | set(skipped) | set(ignored) | {"a", "b"}
    assert report["n_entries"] == len(used) + len(skipped) + len(ignored)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_damaged_file_used_through_ffmpeg_is_marked(tmp_path):
    root = _two_styles(tmp_path / "music")
    path = write_track(root / "a" / "half.flac", tone_track(250, 2 * TRACK_SECONDS, noise=0.05))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    prepare_dataset(root, tmp_path / "prep", progress=False, jobs=1)
    report = json.loads((tmp_path / "prep" / "report.json").read_text())
    entry = next(u for u in report["used"] if u["file"] == "a/half.flac")
    assert entry["notes"][0].startswith("decoded by ffmpeg after soundfile failed:")
    assert [d["file"] for d in report["damaged"]] == ["a/half.flac"]


def test_non_finite_wav_is_skipped_with_the_truth(tmp_path):
    root = _two_styles(tmp_path / "music")
    y = tone_track(300)
    y[1000, 0] = np.nan
    sf.write(root / "a" / "nan.wav", y, 16_000, subtype="FLOAT")
    ds = prepare_dataset(root, tmp_path / "prep", progress=False, jobs=1)
    reason = {s["file"]: s["reason"] for s in ds.report["skipped"]}["a/nan.wav"]
    assert "samples are not finite" in reason and "is it a real" not in reason


def test_only_links_inside_give_a_clear_refusal(tmp_path):
    write_track(tmp_path / "a" / "t.wav", tone_track(200, 1.0))
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(DatasetError, match=r"found 1 style.*1 link\(s\) to folders inside it are not styles"):
        find_tracks(tmp_path)


# ----------------------------------------------------------------------------
# No traceback from any file a user can hand us
# ----------------------------------------------------------------------------

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "thesis_lib", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _good_state(tmp_path):
    import torch

    from thesis_lib.checkpoint import model_state
    from thesis_lib.model import StyleNet

    torch.manual_seed(0)
    return model_state(StyleNet(2), ["x", "y"])


def _broken_checkpoints(tmp_path):
    """One checkpoint per required field missing, and per field of the wrong type."""
    import torch

    from thesis_lib.checkpoint import MODEL_FIELDS

    good = _good_state(tmp_path)
    cases = {}
    for name in MODEL_FIELDS:
        cases[f"missing {name}"] = ({k: v for k, v in good.items() if k != name}, repr(name))
    wrong = {"config": ("config", ["not", "a", "dict"]), "styles": ("styles", "xy"),
             "state_dict": ("state_dict", {"w": [1, 2]}), "architecture": ("architecture", 3),
             "config.sample_rate": ("config", {**good["config"], "sample_rate": "fast"}),
             "config.convs": ("config", {**good["config"], "convs": [{"filters": 8}]}),
             "one style": ("styles", ["x"]), "twice the same style": ("styles", ["x", "x"])}
    for label, (field, value) in wrong.items():
        cases[f"wrong {label}"] = ({**good, field: value}, field.split(".")[-1] if "." in label else field)
    cases["only format and styles"] = ({"format": "thesis_lib.checkpoint/1", "styles": ["x", "y"]}, "'config'")
    paths = {}
    for label, (state, needle) in cases.items():
        path = tmp_path / (label.replace(" ", "_").replace(".", "_") + ".pt")
        torch.save(state, path)
        paths[label] = (path, needle)
    return paths


def test_every_broken_checkpoint_is_named_not_a_traceback(tmp_path):
    from thesis_lib.checkpoint import CheckpointError, load_model

    for label, (path, needle) in _broken_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        assert str(path) in str(info.value) and needle in str(info.value), (label, str(info.value))


def test_predict_with_an_incomplete_checkpoint_exits_cleanly(tmp_path):
    import torch

    song = write_track(tmp_path / "song.wav", tone_track(300, 6.0))
    torch.save({"format": "thesis_lib.checkpoint/1", "styles": ["x", "y"]}, tmp_path / "m.pt")
    r = _cli("predict", "--model", tmp_path / "m.pt", song)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "m.pt" in r.stderr and "'config' is missing" in r.stderr


def test_resume_state_is_validated(tmp_path):
    import torch

    from thesis_lib.checkpoint import CheckpointError
    from thesis_lib.train import resume

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="no epoch was completed"):
        resume(run, progress=False)
    state = {**_good_state(tmp_path), "optimizer": {}, "history": [], "settings": {}, "data": str(tmp_path),
             "split": {"train": torch.arange(3), "test": "oops", "styles": ["x", "y"], "mode": "track", "notes": []}}
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: damaged or incomplete resume state: the split's 'test'"):
        resume(run, progress=False)
    del state["history"]
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="'history' is missing"):
        resume(run, progress=False)


@pytest.mark.parametrize("damage,needle", [
    ("index_json_garbage", "not readable JSON"),
    ("index_missing_field", "'clips_per_track' is missing"),
    ("index_wrong_type", "'n_clips' is not a count"),
    ("clips_truncated", "promises"),
])
def test_damaged_prepared_folder_is_named(toy_prepared, tmp_path, damage, needle):
    from thesis_lib.data import PreparedDataset

    folder = tmp_path / "p"
    shutil.copytree(toy_prepared.path, folder)
    index = json.loads((folder / "index.json").read_text())
    if damage == "index_json_garbage":
        (folder / "index.json").write_text("{ not json")
    elif damage == "index_missing_field":
        del index["clips_per_track"]
        (folder / "index.json").write_text(json.dumps(index))
    elif damage == "index_wrong_type":
        index["n_clips"] = "many"
        (folder / "index.json").write_text(json.dumps(index))
    else:
        with open(folder / "clips.f32", "r+b") as f:
            f.truncate(1000)
    with pytest.raises(DatasetError, match=needle) as info:
        PreparedDataset.load(folder)
    assert str(folder) in str(info.value)


def test_a_folder_as_clip_says_it_is_a_folder(tmp_path):
    from thesis_lib.audio import AudioError
    from thesis_lib.dream.layers import load_clip

    with pytest.raises(AudioError, match="is a folder, not an audio file"):
        load_clip(tmp_path)


def test_interrupt_hint_promises_only_what_works(tmp_path):
    from thesis_lib.cli import _interrupt_hint, build_parser

    prep = build_parser().parse_args(["prepare", "--data", str(tmp_path), "--out", str(tmp_path / "p")])
    assert "--resume" not in _interrupt_hint(prep) and "again" in _interrupt_hint(prep)
    train = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert "--resume" not in _interrupt_hint(train)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    assert f"train --resume {tmp_path / 'run'}" in _interrupt_hint(train)


def test_unknown_or_incomplete_architecture_is_named(tmp_path):
    import torch

    from thesis_lib.checkpoint import CheckpointError, load_model

    good = _good_state(tmp_path)
    for arch, needle in (({"name": "Nope"}, "unknown architecture 'Nope'"), ({"name": "MelNet"}, "cannot be built")):
        path = tmp_path / "a.pt"
        torch.save({**good, "architecture": arch}, path)
        with pytest.raises(CheckpointError, match=needle) as info:
            load_model(path)
        assert str(path) in str(info.value)


def test_available_memory_reads_the_container_limit_and_the_machine(tmp_path):
    from thesis_lib.runtime import available_memory

    proc, v2, v1 = tmp_path / "proc", tmp_path / "v2", tmp_path / "v1"
    for d in (proc, v2, v1 / "memory"):
        d.mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    assert available_memory(proc, tmp_path / "none") == 20000000 * 1024           # no cgroup: the machine's
    (v2 / "memory.max").write_text("2147483648\n")
    (v2 / "memory.current").write_text("536870912\n")
    assert available_memory(proc, v2) == 2147483648 - 536870912                    # Binder: the limit's rest
    (v2 / "memory.stat").write_text("anon 268435456\ninactive_file 134217728\nactive_file 1\n")
    assert available_memory(proc, v2) == 2147483648 - (536870912 - 134217728)      # reclaimable cache is free
    (v2 / "memory.max").write_text("max\n")
    assert available_memory(proc, v2) == 20000000 * 1024
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(1 << 30))
    (v1 / "memory" / "memory.usage_in_bytes").write_text(str(1 << 28))
    assert available_memory(proc, v1) == (1 << 30) - (1 << 28)
    assert available_memory(tmp_path / "no-proc", tmp_path / "none") is None


def test_training_that_cannot_fit_is_refused_before_it_starts(toy_prepared, tmp_path, monkeypatch, capsys):
    import torch

    import thesis_lib.train as train_mod
    from thesis_lib.cli import main
    from thesis_lib.config import TrainSettings
    from thesis_lib.data import split_dataset

    monkeypatch.delenv("THESIS_LIB_NO_MEMORY_CHECK", raising=False)
    cpu, s = torch.device("cpu"), TrainSettings.thesis(precision="fp32", impl="fast")
    held = 300 << 20                   # what this process holds counts as its own (fixed here: pytest's grows)
    monkeypatch.setattr(train_mod, "resident_memory", lambda: held)
    need = train_mod.training_memory(480, "fast", "fp32")
    assert train_mod.memory_problem(s, cpu, available=need - held + 1) is None
    problem = train_mod.memory_problem(s, cpu, available=need - held - (100 << 20))
    table = train_mod.TRAINING_MEMORY_MB
    fits = int((need - (100 << 20)) / 2 ** 20 - table["fixed"]) // table[("fast", "fp32")]
    assert "batch 480" in problem and f"about {int(fits)} fits" in problem and "GB" in problem
    assert train_mod.memory_problem(s, torch.device("cuda"), available=0) is None   # GPU memory is another matter
    small = train_mod.training_memory(12, "fast", "fp32") - held                     # 12 clips: a batch holds 12
    assert train_mod.memory_problem(s, cpu, available=small + 1, clips=12) is None
    assert "batch 12 needs" in train_mod.memory_problem(s, cpu, available=small - (1 << 20), clips=12)
    # a run too short to compile its batch norms keeps other intermediates: the check uses their own peak
    eager = train_mod.training_memory(480, "fast", "fp32", compiled=False)
    assert eager == int((table["fixed"] + 480 * table[("fast", "fp32", "eager")]) * 2 ** 20) != need
    assert train_mod.memory_problem(s, cpu, available=eager - held + 1, compiled=False) is None
    assert "fast, fp32, uncompiled" in train_mod.memory_problem(s, cpu, available=eager - held - (1 << 20),
                                                                compiled=False)
    monkeypatch.setenv("THESIS_LIB_NO_MEMORY_CHECK", "1")
    assert train_mod.memory_problem(s, cpu, available=0) is None
    monkeypatch.delenv("THESIS_LIB_NO_MEMORY_CHECK")
    # train and the command line: a clear refusal, nothing written
    monkeypatch.setattr(train_mod, "available_memory", lambda: 0)
    sp = split_dataset(toy_prepared, 6, 2, split="clip", seed=0)
    with pytest.raises(train_mod.NotEnoughMemory, match="batch 4 needs"):
        train_mod.train(toy_prepared, sp, TrainSettings(epochs=1, batch_size=4, device="cpu"), tmp_path / "run",
                        progress=False)
    assert not (tmp_path / "run").exists()
    rc = main(["train", "--data", str(toy_prepared.path), "--out", str(tmp_path / "cli"), "--model", "thesis",
               "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"])
    assert rc == 1 and "needs about" in capsys.readouterr().err and not (tmp_path / "cli" / "model.pt").exists()

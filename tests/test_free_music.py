"""free-music on fake Debian packages: built with ``dpkg-deb --build``, never fetched from the network."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from thesis_lib import free_music as fm
from thesis_lib.free_music import Source

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build fake packages")

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2020 Game Authors
License: GPL-2+

Files: data/music/metal_*.flac
Copyright: 2011 A Band
License: CC-BY-SA-3.0

Files: base/music/hymn.ogg
Copyright: 2012 A Composer
License: CC-BY-3.0

Files: content/*
Copyright: 2013 Artists
License: CC0-1.0

Files: debian/*
Copyright: 2020 A Maintainer
License: GPL-2+

License: GPL-2+
 This program is free software.
"""


def _tone(seconds: float, sr: int, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _audio(path: Path, seconds: float, sr: int, fmt: str | None = None, freq: float = 220.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _tone(seconds, sr, freq), sr, format=fmt)
    return path


def _build_deb(root: Path, package: str, version: str, out_dir: Path) -> Path:
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
        f"Description: fake music for the tests\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.fixture(autouse=True)
def no_apt(monkeypatch):
    """The tests never run apt-get: any attempt fails loudly."""
    real_run, real_popen = subprocess.run, subprocess.Popen

    def guard(cmd):
        if cmd and str(cmd[0]).endswith("apt-get"):
            raise AssertionError(f"a test tried to run {cmd}")

    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: (guard(cmd), real_run(cmd, *a, **k))[1])
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, *a, **k: (guard(cmd), real_popen(cmd, *a, **k))[1])


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    """Two fake packages: FLAC/WAV/extension-less Ogg files, one Ogg in a .pk3, one 20-s jingle."""
    tmp = tmp_path_factory.mktemp("debs")
    out = tmp / "debs"
    # fake-metal-music: two 75-s FLAC songs, a 20-s WAV jingle, an Ogg without an ending, a text file
    r = tmp / "metal"
    music = r / "usr/share/games/fake/music"
    _audio(music / "metal_one.flac", 75, 4000, freq=110)
    _audio(music / "metal_two.flac", 76, 4000, freq=130)
    _audio(music / "jingle.wav", 20, 2000)
    _audio(music / "noext", 80, 8000, fmt="OGG")
    (music / "readme.txt").write_text("not music")
    (r / "usr/share/doc/fake-metal-music").mkdir(parents=True)
    (r / "usr/share/doc/fake-metal-music/copyright").write_text(COPYRIGHT)
    _build_deb(r, "fake-metal-music", "1.0-1", out)
    # fake-orch-data: a 75-s Ogg inside a pk3 archive, one plain 72-s WAV
    r = tmp / "orch"
    base = r / "usr/share/games/fake/base"
    ogg = _audio(tmp / "hymn.ogg", 75, 8000, fmt="OGG", freq=330)
    base.mkdir(parents=True)
    with zipfile.ZipFile(base / "0music.pk3", "w") as z:
        z.write(ogg, "music/hymn.ogg")
        z.writestr("maps/x.bsp", b"map")
    _audio(r / "usr/share/games/fake/sound/march.wav", 72, 2000, freq=440)
    (r / "usr/share/doc/fake-orch-data").mkdir(parents=True)
    (r / "usr/share/doc/fake-orch-data/copyright").write_text(COPYRIGHT)
    _build_deb(r, "fake-orch-data", "2:3.0+dfsg-2", out)
    return out


FAKE = (
    Source("fake-metal-music", "metal", ("usr/share/games/fake/music/*",), "fake metal band",
           exclude=("*/readme.txt",), suffix=".ogg"),
    Source("fake-orch-data", "orchestral", ("usr/share/games/fake/base/*.pk3!music/*.ogg",
                                            "usr/share/games/fake/sound/*.wav"), "fake orchestra"),
)


def _build(out: Path, debs: Path, tmp: Path, **kw) -> fm.Result:
    return fm.build_collection(out, cache=tmp / "cache", fetch=fm.local_fetch(debs), sources=kw.pop("sources", FAKE),
                               progress=False, **kw)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_layout_licenses_and_short_tracks(debs, tmp_path):
    out = tmp_path / "music"
    res = _build(out, debs, tmp_path)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["SOURCES.md", "metal/fake-metal-music-metal_one.flac", "metal/fake-metal-music-metal_two.flac",
                     "metal/fake-metal-music-noext.ogg", "orchestral/fake-orch-data-hymn.ogg",
                     "orchestral/fake-orch-data-march.wav", "sources.json"]
    assert res.copied == 5 and res.kept == 0 and not res.failed

    manifest = json.loads((out / "sources.json").read_text())
    tracks = {Path(t["path"]).name: t for t in manifest["tracks"]}
    assert set(tracks) == {Path(f).name for f in files if "/" in f}
    for t in manifest["tracks"]:
        p = out / t["path"]
        assert t["sha256"] == _sha(p) and t["bytes"] == p.stat().st_size
        assert t["seconds"] >= 70 and t["minutes"] == pytest.approx(t["seconds"] / 60, abs=0.01)
    # the license of each file: the most specific Files: paragraph of the package's copyright file
    assert tracks["fake-metal-music-metal_one.flac"]["license"] == "CC-BY-SA-3.0"
    assert tracks["fake-metal-music-metal_one.flac"]["copyright"] == "2011 A Band"
    assert tracks["fake-orch-data-hymn.ogg"]["license"] == "CC-BY-3.0"       # pk3 member, base/music/ pattern
    assert tracks["fake-metal-music-noext.ogg"]["license"] == "GPL-2+"       # falls back to Files: *
    assert tracks["fake-orch-data-march.wav"]["version"] == "2:3.0+dfsg-2"
    assert tracks["fake-orch-data-hymn.ogg"]["source_path"] == \
        "usr/share/games/fake/base/0music.pk3!music/hymn.ogg"
    # the extension-less file really is Ogg and was kept as shipped
    assert _sha(out / "metal/fake-metal-music-noext.ogg") == _sha_member(debs, "fake-metal-music", "noext")

    # the 20-s jingle is left out, and said so
    assert not any("jingle" in f for f in files)
    (short,) = [e for e in manifest["excluded"] if "jingle" in e["source_path"]]
    assert "shorter than 70 s" in short["reason"] and short["seconds"] == pytest.approx(20, abs=0.5)
    assert manifest["styles"]["metal"]["tracks"] == 3 and manifest["styles"]["orchestral"]["tracks"] == 2

    md = (out / "SOURCES.md").read_text()
    for t in manifest["tracks"]:
        assert t["sha256"] in md
    assert "CC-BY-SA-3.0" in md and "2011 A Band" in md and "jingle.wav" in md and "fake orchestra" in md


def _sha_member(debs: Path, package: str, name: str) -> str:
    deb = next(debs.glob(f"{package}_*.deb"))
    for tar, info in fm._iter_data_tar(deb):
        if info.name.endswith("/" + name):
            return hashlib.sha256(tar.extractfile(info).read()).hexdigest()
    raise AssertionError(name)


def test_rerun_skips_present_files_and_repairs_changed_ones(debs, tmp_path):
    out = tmp_path / "music"
    first = _build(out, debs, tmp_path)
    manifest = (out / "sources.json").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.parent != out}

    again = _build(out, debs, tmp_path)
    assert again.copied == 0 and again.kept == first.copied
    assert (out / "sources.json").read_text() == manifest
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # a damaged and a deleted file are copied again; the others stay
    damaged = out / "metal/fake-metal-music-metal_one.flac"
    damaged.write_bytes(b"garbage")
    (out / "orchestral/fake-orch-data-march.wav").unlink()
    third = _build(out, debs, tmp_path)
    assert third.copied == 2
    assert (out / "sources.json").read_text() == manifest
    assert json.loads(manifest)["tracks"][0]["sha256"] in (out / "SOURCES.md").read_text()
    for t in json.loads(manifest)["tracks"]:
        assert _sha(out / t["path"]) == t["sha256"]


def test_styles_subset_and_a_missing_package(debs, tmp_path, capsys):
    out = tmp_path / "music"
    sources = FAKE + (Source("fake-not-packaged", "metal", ("*",), "does not exist"),)
    res = _build(out, debs, tmp_path, sources=sources, styles=["metal"])
    assert sorted(p.parent.name for p in out.rglob("*.*") if p.parent != out) == ["metal"] * 3
    assert [f["package"] for f in res.failed] == ["fake-not-packaged"]
    assert "fake-not-packaged skipped" in capsys.readouterr().err
    assert "fake-not-packaged" in (out / "SOURCES.md").read_text()
    # adding the other style later keeps the first
    _build(out, debs, tmp_path, styles=["orchestral"])
    manifest = json.loads((out / "sources.json").read_text())
    assert sorted(manifest["styles"]) == ["metal", "orchestral"] and len(manifest["tracks"]) == 5
    with pytest.raises(fm.FreeMusicError, match="unknown style"):
        _build(out, debs, tmp_path, styles=["polka"])


def test_no_apt_get_says_so_and_how_to_use_ones_own_folder(tmp_path, monkeypatch, capsys):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "apt-get" else real_which(name, *a, **k))
    with pytest.raises(fm.FreeMusicError) as err:
        fm.build_collection(tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert "apt-get" in str(err.value) and "--data MYFOLDER" in str(err.value)
    assert fm.main(["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet"]) == 2
    msg = capsys.readouterr().err
    assert "Debian or Ubuntu" in msg and "--data MYFOLDER" in msg and "--deb-dir" in msg


def test_cli_with_deb_dir(debs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fm, "SOURCES", FAKE)
    out = tmp_path / "music"
    argv = ["--out", str(out), "--deb-dir", str(debs), "--cache", str(tmp_path / "c"), "--quiet"]
    assert fm.main(argv) == 0
    text = capsys.readouterr().out
    assert "metal" in text and "orchestral" in text and "5 files copied" in text
    assert fm.main(argv + ["--styles", "orchestral"]) == 0
    assert "0 files copied, 2 already present" in capsys.readouterr().out
    assert fm.main(["--list"]) == 0
    assert "fake orchestra" in capsys.readouterr().out


def test_reading_debs_without_dpkg_deb(debs, tmp_path, monkeypatch):
    """Without dpkg-deb (macOS with --deb-dir), the .deb's ar container is read in Python."""
    with_dpkg = _build(tmp_path / "a", debs, tmp_path)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name == "dpkg-deb" else real_which(name, *a, **k))
    without = _build(tmp_path / "b", debs, tmp_path)
    assert [t["sha256"] for t in without.tracks] == [t["sha256"] for t in with_dpkg.tracks]
    assert [t["license"] for t in without.tracks] == [t["license"] for t in with_dpkg.tracks]


def test_license_matching():
    text = COPYRIGHT
    assert fm.license_for(text, ["usr/share/games/g/music/metal_x.flac"]).name == "CC-BY-SA-3.0"
    assert fm.license_for(text, ["usr/share/games/g/music/other.flac"]).name == "GPL-2+"
    # '*' crosses folders, as in DEP-5: content/* covers content/audio/music/x.ogg
    assert fm.license_for(text, ["usr/share/g/content/audio/music/x.ogg"]).name == "CC0-1.0"
    assert fm.license_for(text, ["usr/share/g/base/music/hymn.ogg"]).holder == "2012 A Composer"
    # a pattern's tail must keep a literal folder: debian/* does not match every file
    assert fm.license_for(text, ["usr/share/x/readme"]).matched == "*"
    assert fm.license_for(None, ["x"]).name.startswith("unknown")
    free = "This package is under the GNU General Public License as published by the FSF; " \
           "either version 2 of the License, or (at your option) any later version."
    assert fm.license_for(free, ["x"]).name == "GPL-2+ (free-form copyright file)"


def test_reserved_packages_are_refused_and_the_table_is_clean():
    for pkg in ("nexuiz-music", "fretsonfire-songs-sectoid", "wesnoth-1.16-music", "supertux-data",
                "frozen-bubble-data", "fb-music-high", "singularity-music"):
        assert fm.is_reserved(pkg)
        with pytest.raises(ValueError, match="reserved"):
            fm._check_sources([Source(pkg, "metal", ("*",), "no")])
    assert not any(fm.is_reserved(s.package) for s in fm.SOURCES)
    assert len({s.style for s in fm.SOURCES}) >= 3


def test_import_is_light():
    """``--help`` of the main CLI imports this module: it must not pull numpy, soundfile or torch."""
    code = ("import sys, thesis_lib.free_music; "
            "print(sorted(m for m in ('numpy', 'soundfile', 'torch', 'tqdm') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_registered_in_the_main_cli_and_on_binder():
    from thesis_lib.cli import build_parser

    args = build_parser().parse_args(["free-music", "--out", "x", "--styles", "metal"])
    assert args.handler is fm.main and args.styles == "metal"
    post_build = Path(__file__).resolve().parents[1] / "binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111 and "thesis_lib free-music" in post_build.read_text()


def test_a_style_dropped_from_the_table_is_removed(debs, tmp_path):
    out = tmp_path / "music"
    _build(out, debs, tmp_path)
    res = _build(out, debs, tmp_path, sources=FAKE[:1])          # orchestral no longer in the table
    assert not (out / "orchestral").exists()
    assert {t["style"] for t in res.tracks} == {"metal"} and res.kept == 3
    assert sorted(json.loads((out / "sources.json").read_text())["styles"]) == ["metal"]

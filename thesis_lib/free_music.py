"""``free-music``: a free-licensed collection of real music, rebuilt from Debian packages.

The thesis's C-pop and metal MP3s cannot be shipped, and the built-in synthetic
styles are not real recordings. Debian (and Ubuntu, hence Colab and Binder)
ships the soundtracks of free games as ordinary packages, each with a
``copyright`` file that names the license of every file. This module fetches
a chosen set of them with ``apt-get download`` (no root needed), unpacks only
the music with ``dpkg-deb``, and lays the tracks out as the rest of the
library expects them::

    DIR/<style>/<package>-<track>.<ogg|opus|mp3|...>   (copied as shipped, never re-encoded)
    DIR/SOURCES.md     per style and per file: package, version, license, copyright, minutes, sha256
    DIR/sources.json   the same, machine-readable, plus what was left out and why

Only tracks of at least :data:`MIN_SECONDS` seconds are kept (the thesis drops
30 s at each end and cuts 5-second clips; jingles and loops of a few seconds
are no music to learn a style from). A re-run skips every file that is already
present with the same checksum, so an interrupted build simply continues.

Which package (or which files of a package) count as which style is decided in
one table, :data:`SOURCES`, with a one-line reason each; edit it to change the
collection. The packages in :data:`RESERVED` are never used: they are kept for
an independent evaluation of the library's defaults on music it has never seen.

Without ``apt-get`` (macOS, Windows, other Linux distributions) the command says
so and stops; use your own music instead (``--data MYFOLDER`` with one folder
per style), or pass ``--deb-dir`` with ``.deb`` files fetched elsewhere.

Run it as ``python -m thesis_lib free-music --out DIR`` or, equivalently,
``python -m thesis_lib.free_music --out DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

MIN_SECONDS = 70.0
"""Shortest track kept, in seconds: one 5-second clip survives the thesis's 30-s trims with room to spare."""

AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3")
"""Endings of the files taken from a package (formats the library decodes: soundfile, else ffmpeg)."""

MANIFEST = "sources.json"
REPORT = "SOURCES.md"
REPORT_VERSION = 1
"""Bumped when the way files are selected or described changes: a re-run then checks every package again."""

# ---------------------------------------------------------------------------------------------
# The collection: which package gives which style. Edit this table to change the collection.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Files of one Debian package that belong to one style.

    ``include`` and ``exclude`` are shell globs on the path inside the package
    (``usr/share/games/...``; ``*`` also matches ``/``). A glob of the form
    ``ARCHIVE!MEMBER`` selects members of a zip/pk3 archive. ``suffix`` is the
    ending given to files that the package ships without one (their content is
    checked before). ``reason`` says why these files are this style.
    """

    package: str
    style: str
    include: tuple[str, ...]
    reason: str
    exclude: tuple[str, ...] = ()
    suffix: str | None = None

    def rule_key(self) -> str:
        """What, besides the package version, decides the files taken from the package."""
        d = dataclasses.asdict(self)
        d.pop("reason")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


RESERVED = frozenset({
    "fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid", "singularity-music",
    "wesnoth-music", "wesnoth-1.16-music", "wesnoth-1.14-music", "wesnoth-1.18-music",
    "supertux-data", "frozen-bubble-data", "fb-music-high", "nexuiz-music",
})
"""Packages never used here (prefixes ``fretsonfire-songs-`` and ``wesnoth-`` + ``-music`` too):
they are kept for an independent evaluation that the library's defaults must generalise to."""


def is_reserved(package: str) -> bool:
    """True for a package kept for the independent evaluation (see :data:`RESERVED`)."""
    return (package in RESERVED or package.startswith("fretsonfire-songs-")
            or (package.startswith("wesnoth-") and package.endswith("-music")))


# fmt: off
# How the styles were decided (Debian 12 "bookworm" versions): the package descriptions and
# copyright files, the artists' own tags in the files (ffprobe: genre, album, artist), and numbers
# computed with numpy/scipy on a minute of each track. Per style, median [10th-90th percentile]:
#                 crest factor dB   loudness range dB   spectral flatness   pulse clarity
#   metal           9.4 [8.9-10.6]     3.4 [2.3-6.3]      0.47 [0.34-0.48]   0.54 [0.37-0.62]
#   orchestral     14.0 [12.1-18.1]    8.6 [4.8-18.1]     0.11 [0.02-0.19]   0.44 [0.08-0.91]
#   electronic     13.6 [10.6-15.9]   11.0 [6.5-17.5]     0.35 [0.19-0.53]   0.74 [0.54-0.87]
# (crest: peak/RMS; loudness range: 95th/10th percentile of the 100-ms RMS; flatness: geometric/
# arithmetic mean of the spectrum, noise-like distortion and cymbals high, tonal strings low; pulse
# clarity: autocorrelation peak of the onset envelope at lags of 0.25-1.5 s, a drum machine's steady
# beat high). Metal is the dense, compressed, noisy wall of sound; the orchestra is tonal and
# breathes; electronic music has the steadiest beat.
# Considered and left out: warzone2100-music (30 long Opus tracks, LupusMechanicus and the 1999
# OST: dark ambient-electronic with orchestral parts, no single style; two remastered duplicates),
# hyperrogue-music, colobot-common-sounds, naev-data, redeclipse-data, hedgewars-data,
# drascula-music (each a mix of styles, or a style the files do not state), widelands-data
# (orchestral and folk; its three tracks tagged 'Thrash Metal' do not measure like metal),
# 0ad-data (orchestral, but a 1.4 GB download), boswars-data and lugaru-data (no music of 70 s),
# openttd-openmsx (MIDI), asc-music and openarena-088-data (3 and 7 tracks of unclear style), and
# in ufoai-music the GPL-2 paragraph (Psymong, ufo1/2, dawn, space, dbsea, AlexFightmare: its
# holders include OpenArena and "Nexuiz GPLed Data", and Nexuiz's music is reserved), the Marine*
# and David* tracks (bright and noise-like, flatness 0.3-0.5: not an orchestra's spectrum) and
# the public-domain map tracks.
STYLES: dict[str, str] = {     # style -> what a listener hears
    "metal":      "distorted guitars, double-kick drums and sung vocals; dense and loud throughout",
    "orchestral": "strings, brass, woodwinds, choir and timpani: film-score and classical orchestra",
    "electronic": "synthesisers over a steady drum-machine beat: electronica, techno, drum and bass",
}

SOURCES: tuple[Source, ...] = (
    Source("marsshooter-data", "metal",
           ("usr/share/games/marsshooter/audio/music/*.ogg", "usr/share/games/marsshooter/audio/menu.ogg",
            "usr/share/games/marsshooter/audio/tutorial.ogg"),
           "Obsidian Shell, a Hungarian band: albums Elysia and Angelic Asylum, tagged 'Female Fronted Metal'"),
    Source("ufoai-music", "orchestral",
           ("usr/share/games/ufoai/base/0music.pk3!music/van_*.ogg",
            "usr/share/games/ufoai/base/0music.pk3!music/karlmacklin_geoscape.ogg",
            "usr/share/games/ufoai/base/0music.pk3!music/azrael1.ogg",
            "usr/share/games/ufoai/base/0music.pk3!music/Crystan-*.ogg"),
           "UFO: Alien Invasion's orchestral score: Manuel 'Vanethian' Marino, Christian 'Crystan' "
           "Hoffmann, Karl Macklin, azrael1322 (CC-BY / CC-BY-SA paragraphs only)"),
    Source("unknown-horizons", "orchestral",
           ("usr/share/unknown-horizons/content/audio/music/*.ogg",),
           "Tobias Escher's orchestral score for Unknown Horizons, and Grieg's Peer Gynt (Czech National "
           "Symphony Orchestra, Musopen)"),
    Source("wizznic-data", "electronic",
           ("usr/share/games/wizznic/packs/*/music/*.ogg", "usr/share/games/wizznic/data/menu-music.ogg"),
           "Sean Hawk's Wizznic Soundtrack, tagged 'Electronica'"),
    Source("freedroidrpg-data", "electronic",
           ("usr/share/freedroidrpg/data/sound/music/*.ogg",),
           "electronica from the kahvi.org netlabel (4T Thieves, stud) and Arvid Picciani's "
           "drum and bass ('dnb')"),
    Source("zaz-data", "electronic", ("usr/share/games/zaz/mus*.ogg",),
           "paniq's electronic album 'Neurons: Fire At Will'"),
    Source("davegnukem-data", "electronic",
           ("usr/share/games/davegnukem/music/eric_matyas/Techno-*.ogg",
            "usr/share/games/davegnukem/music/eric_matyas/8-Bit-Mayhem.ogg",
            "usr/share/games/davegnukem/music/eric_matyas/Retro-Frantic*.ogg",
            "usr/share/games/davegnukem/music/eric_matyas/Funky-Gameplay*.ogg",
            "usr/share/games/davegnukem/music/eric_matyas/Monster*.ogg"),
           "Eric Matyas's techno and retro-synth game loops (his slow, beatless ones are left out)"),
    Source("blobwars-data", "electronic",
           tuple(f"usr/share/games/blobwars/music/{n}" for n in
                 ("cave", "final", "hub", "space", "title", "tomb", "tunnel",
                  "biomech", "end", "grasslands", "ice")),
           "dance tracks of the Dutch tracker scene: DJ Sjors (albums Sleep Well, Wake Up) and Ambick; "
           "shipped as Ogg Vorbis without a file ending", suffix=".ogg"),
)
# fmt: on


def _check_sources(sources: Iterable[Source]) -> None:
    for s in sources:
        if is_reserved(s.package):
            raise ValueError(f"{s.package} is reserved for the independent evaluation and must not be used")
        if s.style not in STYLES:
            raise ValueError(f"{s.package}: unknown style {s.style!r} (known: {', '.join(STYLES)})")


_check_sources(SOURCES)


# ---------------------------------------------------------------------------------------------
# Messages and errors
# ---------------------------------------------------------------------------------------------

NO_APT_MESSAGE = """\
free-music needs Debian or Ubuntu: `apt-get` was not found on this machine (macOS, Windows and
other Linux distributions do not have it). The collection is made of Debian packages of free game
soundtracks, fetched with `apt-get download` and unpacked with `dpkg-deb`.

Instead you can
  * use your own music: put one folder per style under a folder, e.g.
        MYFOLDER/metal/*.mp3   MYFOLDER/orchestral/*.ogg   ...
    and train on it with  python -m thesis_lib train --data MYFOLDER --out runs/mine
  * run this command where apt-get exists: a Debian/Ubuntu machine or container, Colab, Binder;
  * or download the .deb files elsewhere (https://packages.debian.org) into one folder and pass
        --deb-dir THAT_FOLDER
    (the packages are listed by  python -m thesis_lib free-music --list)."""


class FreeMusicError(RuntimeError):
    """A problem that stops the whole build (as opposed to one package, which is skipped)."""


class FetchError(RuntimeError):
    """One package could not be fetched; the build warns and goes on with the others."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Fetching .deb files
# ---------------------------------------------------------------------------------------------

Fetch = Callable[[str, Path], Path]
"""``fetch(package, cache_dir) -> path of the .deb``; raises :class:`FetchError`."""


def default_cache() -> Path:
    """Where .deb files are kept between runs: ``$THESIS_LIB_CACHE/debs`` (default ``~/.cache/thesis_lib/debs``)."""
    return Path(os.environ.get("THESIS_LIB_CACHE", Path.home() / ".cache" / "thesis_lib")) / "debs"


def deb_version(deb: Path) -> str:
    """Version of a .deb: from its file name (``pkg_VERSION_arch.deb``), else ``dpkg-deb -f``."""
    parts = deb.name[:-len(".deb")].split("_")
    if len(parts) == 3 and parts[1]:
        return urllib.parse.unquote(parts[1])
    if shutil.which("dpkg-deb"):
        r = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return "unknown"


def _version_key(version: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", version)]


def find_deb(package: str, folder: Path) -> Path | None:
    """The newest ``package_*.deb`` in ``folder``, or None."""
    if not folder.is_dir():
        return None
    debs = [p for p in folder.glob(f"{package}_*.deb") if p.name.split("_")[0] == package]
    if not debs:
        return None
    return max(debs, key=lambda p: (_version_key(deb_version(p)), p.stat().st_mtime))


def apt_fetch(package: str, cache_dir: Path) -> Path:
    """``apt-get download PACKAGE`` in a temporary folder; the .deb is moved into ``cache_dir``.

    A .deb already in ``cache_dir`` is used as it is (no network).
    """
    cached = find_deb(package, cache_dir)
    if cached is not None:
        return cached
    if not shutil.which("apt-get"):
        raise FreeMusicError(NO_APT_MESSAGE)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".apt-", dir=cache_dir) as tmp:
        r = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            err = [ln for ln in (r.stderr or "").splitlines() if ln.startswith("E:")] or (r.stderr or "").splitlines()
            raise FetchError(f"apt-get download {package} failed: {err[-1] if err else f'exit {r.returncode}'}"
                             " (is the package in your apt sources? try `apt-get update`)")
        dest = cache_dir / debs[0].name
        os.replace(debs[0], dest)
        return dest


def local_fetch(deb_dir: Path) -> Fetch:
    """A fetch function that only looks in ``deb_dir`` (``--deb-dir``; used by the tests): never the network."""
    deb_dir = Path(deb_dir)

    def fetch(package: str, cache_dir: Path) -> Path:
        deb = find_deb(package, deb_dir)
        if deb is None:
            raise FetchError(f"no {package}_*.deb in {deb_dir}")
        return deb

    return fetch


# ---------------------------------------------------------------------------------------------
# Reading a .deb
# ---------------------------------------------------------------------------------------------

class _Slice(io.RawIOBase):
    """Read ``size`` bytes of ``f`` from its current position (one member of an ar archive)."""

    def __init__(self, f, size: int):
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        b[:len(data)] = data
        self._left -= len(data)
        return len(data)


def _iter_data_tar(deb: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Stream the members of a .deb's data archive: ``dpkg-deb --fsys-tarfile`` if present,
    else a pure-Python reader of the ar container (gzip, xz or bzip2 data; zstd needs dpkg-deb)."""
    if shutil.which("dpkg-deb"):
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for info in tar:
                    yield tar, info
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            rc = proc.wait()
        if rc != 0:
            raise FetchError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {err.strip()[:300]}")
        return
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb.name} is not a .deb (ar) archive")
        while True:
            header = f.read(60)
            if len(header) < 60:
                raise FetchError(f"{deb.name}: no data.tar member")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise FetchError(f"{deb.name}: zstd-compressed data; install dpkg (dpkg-deb) to read it")
                with tarfile.open(fileobj=io.BufferedReader(_Slice(f, size), 1 << 20), mode="r|*") as tar:
                    for info in tar:
                        yield tar, info
                return
            f.seek(size + (size & 1), os.SEEK_CUR)


def _norm(name: str) -> str:
    return name[2:] if name.startswith("./") else name.lstrip("/")


def _match(path: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


@dataclass
class _Unpacked:
    copyright: str | None = None
    files: list[tuple[str, Path]] = field(default_factory=list)   # (path in package, extracted file)
    symlinks: list[str] = field(default_factory=list)


def _safe_join(root: Path, rel: str) -> Path:
    out = (root / rel).resolve()
    if not str(out).startswith(str(root.resolve()) + os.sep):
        raise FetchError(f"unsafe path in package: {rel}")
    return out


def unpack(deb: Path, source: Source, work: Path) -> _Unpacked:
    """Extract the package's copyright file and the files ``source`` selects (archive members too) into ``work``."""
    copyright_path = f"usr/share/doc/{source.package}/copyright"
    file_globs = [g for g in source.include if "!" not in g]
    archive_globs = [g.split("!", 1) for g in source.include if "!" in g]
    got = _Unpacked()
    archives: list[tuple[str, Path]] = []
    for tar, info in _iter_data_tar(deb):
        name = _norm(info.name)
        wanted_file = _match(name, file_globs) and not _match(name, source.exclude)
        wanted_archive = any(fnmatch.fnmatchcase(name, a) for a, _ in archive_globs)
        if name == copyright_path:
            if info.isfile():
                got.copyright = tar.extractfile(info).read().decode("utf-8", errors="replace")
            else:
                got.symlinks.append(name)
            continue
        if not (wanted_file or wanted_archive):
            continue
        if not info.isfile():
            if info.issym() or info.islnk():
                got.symlinks.append(name)
            continue
        dest = _safe_join(work, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        (archives if wanted_archive else got.files).append((name, dest))
    for name, path in archives:
        member_globs = [m for a, m in archive_globs if fnmatch.fnmatchcase(name, a)]
        try:
            with zipfile.ZipFile(path) as z:
                for m in z.infolist():
                    full = f"{name}!{m.filename}"
                    if m.is_dir() or not _match(m.filename, member_globs) or _match(full, source.exclude):
                        continue
                    dest = _safe_join(work, f"{name}.d/{m.filename}")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(m) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    got.files.append((full, dest))
        except zipfile.BadZipFile as exc:
            _log(f"warning: {source.package}: {name} is not a zip archive ({exc}); skipped")
        finally:
            path.unlink(missing_ok=True)
    return got


# ---------------------------------------------------------------------------------------------
# Licenses: Debian's machine-readable copyright format (DEP-5), with a fallback for free text
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class License:
    name: str          # short name(s) as the copyright file spells them, e.g. "CC-BY-SA-3.0"
    holder: str        # the Copyright: field of the matching paragraph (first lines), or ""
    matched: str       # the Files: pattern that matched, "*", or "free-form text"


def parse_dep5(text: str) -> list[dict[str, str]]:
    """Paragraphs of a DEP-5 copyright file as dicts (field names lower-case, continuation lines kept)."""
    paragraphs, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                paragraphs.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t":
            if key:
                cur[key] += "\n" + line.strip()
            continue
        m = re.match(r"([A-Za-z][A-Za-z0-9-]*):\s*(.*)$", line)
        if m:
            key = m.group(1).lower()
            cur[key] = m.group(2).strip()
        else:
            key = None
    if cur:
        paragraphs.append(cur)
    return paragraphs


def _pattern_score(pattern: str, parts: list[str]) -> tuple[int, int] | None:
    """How specifically a ``Files:`` pattern matches an installed path (None: no match).

    Copyright patterns are paths in the *source* package (``data/music/x.ogg``),
    installed paths differ in their leading folders (``usr/share/games/g/music/x.ogg``);
    so the pattern's tail is matched against the path's tail. A tail without one
    literal component (``*``, ``*.ogg``) only counts as the whole pattern.
    """
    pp = [p for p in pattern.strip().strip("/").split("/") if p not in ("", ".")]
    for drop in range(len(pp)):
        tail = pp[drop:]
        if drop and not any(not re.search(r"[*?\[]", c) for c in tail):
            break
        glob = "/".join(tail)
        # ``*`` crosses folders in DEP-5 (``content/*`` covers content/audio/music/x.ogg): try longer tails too
        lengths = range(len(tail), len(parts) + 1) if "*" in glob else (len(tail),)
        if any(k <= len(parts) and fnmatch.fnmatchcase("/".join(parts[-k:]), glob) for k in lengths):
            return len(tail), len(re.sub(r"[*?]", "", glob))
    return None


_FREE_FORM = [
    (r"Creative Commons Attribution[- ]Share[- ]?Alike[^\n]{0,20}?(\d\.\d)", "CC-BY-SA-{}"),
    (r"Creative Commons Attribution[^\n]{0,20}?(\d\.\d)", "CC-BY-{}"),
    (r"GNU General Public License[^.]{0,120}?version (\d)(?:[^.]{0,80}?(or \(at your option\) any later))?",
     "GPL-{}{}"),
    (r"public domain", "public-domain"),
]


def license_for(copyright_text: str | None, candidates: list[str]) -> License:
    """The license of the file at (any of) ``candidates``, paths inside the package.

    DEP-5 files: the most specific ``Files:`` paragraph whose pattern matches
    (the later one on a tie, as DEP-5 says), else the ``Files: *`` paragraph.
    Free-form files: the licenses the text names, marked as such.
    """
    if not copyright_text:
        return License("unknown (no copyright file in the package)", "", "")
    paragraphs = parse_dep5(copyright_text)
    if any("files" in p for p in paragraphs):
        best, best_score = None, None
        for p in paragraphs:
            if "files" not in p or "license" not in p:
                continue
            for pattern in p["files"].split():
                for cand in candidates:
                    s = _pattern_score(pattern, [c for c in cand.split("/") if c])
                    if s is not None and (best_score is None or s >= best_score):
                        best, best_score, best_pat = p, s, pattern
        if best is not None:
            name = best["license"].split("\n", 1)[0].strip() or "see copyright file"
            holder = "; ".join([ln.strip() for ln in best.get("copyright", "").split("\n") if ln.strip()][:3])
            return License(name, holder, best_pat)
    found = []
    for rx, fmt in _FREE_FORM:
        for m in re.finditer(rx, copyright_text, flags=re.I | re.S):
            groups = [g or "" for g in m.groups()]
            if fmt.startswith("GPL"):
                groups = [groups[0], "+" if groups[1] else ""]
            name = fmt.format(*groups)
            if name not in found:
                found.append(name)
    return License((" / ".join(found) or "see copyright file") + " (free-form copyright file)", "", "free-form text")


# ---------------------------------------------------------------------------------------------
# Audio checks
# ---------------------------------------------------------------------------------------------

_MAGIC = {b"OggS": ".ogg", b"fLaC": ".flac", b"RIFF": ".wav", b"ID3": ".mp3"}


def sniff_suffix(path: Path) -> str | None:
    """The audio type from the first bytes of a file (for files shipped without an ending)."""
    with open(path, "rb") as f:
        head = f.read(4)
    for magic, suffix in _MAGIC.items():
        if head.startswith(magic):
            return suffix
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return ".mp3"
    return None


def duration_seconds(path: Path) -> float | None:
    """Length of an audio file: ``soundfile.info``, else ``ffprobe``; None when neither can read it."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - any failure: try ffprobe
        pass
    if shutil.which("ffprobe"):
        r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                            "-of", "default=nw=1:nk=1", str(path)], capture_output=True, text=True)
        try:
            return float(r.stdout.strip())
        except ValueError:
            return None
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _track_name(package: str, inner: str, suffix: str) -> str:
    stem = Path(inner.split("!")[-1]).name
    if Path(stem).suffix.lower() in AUDIO_SUFFIXES:
        stem = stem[:-len(Path(stem).suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.") or "track"
    return f"{package}-{stem}{suffix}"


# ---------------------------------------------------------------------------------------------
# Building the collection
# ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    out: Path
    tracks: list[dict]
    excluded: list[dict]
    failed: list[dict]
    copied: int = 0
    kept: int = 0

    def summary(self) -> dict[str, dict]:
        """Per style: tracks, minutes, packages."""
        s: dict[str, dict] = {}
        for t in self.tracks:
            d = s.setdefault(t["style"], {"tracks": 0, "minutes": 0.0, "packages": []})
            d["tracks"] += 1
            d["minutes"] = round(d["minutes"] + t["minutes"], 2)
            if t["package"] not in d["packages"]:
                d["packages"].append(t["package"])
        return dict(sorted(s.items()))


def _rule(key: str, min_seconds: float) -> str:
    return f"{key}:{min_seconds:g}:{REPORT_VERSION}"


def _load_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _still_valid(out: Path, entries: list[dict]) -> bool:
    """Every file of a previous run is there with its checksum."""
    for e in entries:
        p = out / e["path"]
        if not p.is_file() or p.stat().st_size != e.get("bytes", -1) or sha256(p) != e["sha256"]:
            return False
    return True


def build_collection(out: str | Path, styles: Iterable[str] | None = None, cache: str | Path | None = None,
                     fetch: Fetch | None = None, sources: Iterable[Source] = None,
                     min_seconds: float = MIN_SECONDS, progress: bool = True) -> Result:
    """Fetch, unpack, check and lay out the collection in ``out``; write SOURCES.md and sources.json.

    ``fetch`` defaults to :func:`apt_fetch` (which needs ``apt-get``); pass
    :func:`local_fetch` for .deb files on disk. A package that cannot be fetched
    or read is reported and skipped. Returns what was done.
    """
    out = Path(out)
    sources = tuple(SOURCES if sources is None else sources)
    _check_sources(sources)
    known_styles = sorted({s.style for s in sources})
    if styles:
        styles = list(dict.fromkeys(styles))
        unknown = [s for s in styles if s not in known_styles]
        if unknown:
            raise FreeMusicError(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(known_styles)}")
        sources = tuple(s for s in sources if s.style in styles)
    if fetch is None:
        if not shutil.which("apt-get"):
            raise FreeMusicError(NO_APT_MESSAGE)
        fetch = apt_fetch
    if not shutil.which("dpkg-deb"):
        _log("note: dpkg-deb not found; reading .deb files with Python (gzip/xz/bzip2 data only)")
    cache = Path(cache) if cache is not None else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    previous = _load_manifest(out)
    prev_tracks = previous.get("tracks", [])
    done_styles = {s.style for s in sources}
    # Tracks of the table's other styles (not asked for with ``--styles``) stay as they are; tracks of
    # a style that is no longer in the table are stale and removed below.
    carried = set(known_styles) - done_styles
    tracks = [t for t in prev_tracks if t["style"] in carried and (out / t["path"]).is_file()]
    excluded = [e for e in previous.get("excluded", []) if e.get("style") in carried]
    failed: list[dict] = []
    result = Result(out, tracks, excluded, failed)
    seen = {t["sha256"]: t["path"] for t in tracks}   # one recording never counts twice

    try:
        from tqdm.auto import tqdm
        bar = tqdm(sources, desc="free-music", unit="pkg", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency of the library
        bar = sources
    for src in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{src.package} -> {src.style}")
        try:
            deb = fetch(src.package, cache)
            version = deb_version(deb)
            key = src.rule_key()
            old = [t for t in prev_tracks if t["package"] == src.package and t["style"] == src.style]
            if (old and all(t["version"] == version and t.get("rule") == _rule(key, min_seconds) for t in old)
                    and _still_valid(out, old)):
                tracks.extend(old)
                seen.update((t["sha256"], t["path"]) for t in old)
                excluded.extend(e for e in previous.get("excluded", [])
                                if e["package"] == src.package and e.get("style") == src.style)
                result.kept += len(old)
                continue
            with tempfile.TemporaryDirectory(prefix=".free-music-", dir=out) as tmp:
                new, skipped = _take_package(deb, version, src, Path(tmp), out, min_seconds, result, seen)
            tracks.extend(new)
            excluded.extend(skipped)
            if not new:
                _log(f"warning: {src.package}: no track of at least {min_seconds:g} s matched {src.include}")
        except FetchError as exc:
            _log(f"warning: {src.package} skipped: {exc}")
            failed.append({"package": src.package, "style": src.style, "reason": str(exc)})
        except FreeMusicError:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken package must not stop the others
            _log(f"warning: {src.package} skipped: {type(exc).__name__}: {exc}")
            failed.append({"package": src.package, "style": src.style, "reason": f"{type(exc).__name__}: {exc}"})

    # Files that an earlier run wrote for the styles built now, and that this run no longer selects,
    # are removed: a stale track would silently join its style.
    now = {t["path"] for t in tracks}
    failed_pkgs = {f["package"] for f in failed}
    for t in prev_tracks:
        if t["style"] not in carried and t["path"] not in now and t["package"] not in failed_pkgs:
            (out / t["path"]).unlink(missing_ok=True)
            with contextlib.suppress(OSError):       # the folder of a style that is gone
                (out / t["path"]).parent.rmdir()
    # A package that failed this time keeps the files of an earlier run, if they are intact.
    for pkg in failed_pkgs:
        old = [t for t in prev_tracks if t["package"] == pkg and t["style"] in done_styles]
        if old and _still_valid(out, old):
            tracks.extend(old)
    tracks.sort(key=lambda t: (t["style"], t["path"]))
    _write_reports(result, sources, min_seconds)
    return result


def _take_package(deb: Path, version: str, src: Source, work: Path, out: Path, min_seconds: float,
                  result: Result, seen: dict[str, str]) -> tuple[list[dict], list[dict]]:
    got = unpack(deb, src, work)
    if got.copyright is None:
        _log(f"warning: {src.package}: no usr/share/doc/{src.package}/copyright in the package")
    new, skipped = [], []
    names: set[str] = set()
    style_dir = out / src.style
    for inner, path in sorted(got.files):
        base = {"package": src.package, "version": version, "style": src.style, "source_path": inner}
        suffix = Path(inner.split("!")[-1]).suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            sniffed = sniff_suffix(path)
            if src.suffix is None or sniffed != src.suffix:
                found = sniffed or "unknown type"
                skipped.append({**base, "reason": f"not a {src.suffix or 'known'} audio file ({found})"})
                continue
            suffix = src.suffix
        seconds = duration_seconds(path)
        if seconds is None:
            skipped.append({**base, "reason": "cannot be decoded (soundfile and ffprobe failed)"})
            continue
        if seconds < min_seconds:
            skipped.append({**base, "seconds": round(seconds, 1),
                            "reason": f"shorter than {min_seconds:g} s ({seconds:.0f} s)"})
            continue
        name = _track_name(src.package, inner, suffix)
        if name in names:  # same file name in two folders of one package
            name = _track_name(src.package, inner.replace("/", "_"), suffix)
        names.add(name)
        if inner.count("!"):
            archive, member = inner.split("!", 1)
            candidates = [str(Path(archive).parent / member), member]
        else:
            candidates = [inner]
        lic = license_for(got.copyright, candidates)
        digest = sha256(path)
        if digest in seen:
            skipped.append({**base, "seconds": round(seconds, 1), "reason": f"the same file as {seen[digest]}"})
            continue
        seen[digest] = f"{src.style}/{name}"
        dest = style_dir / name
        if dest.is_file() and dest.stat().st_size == path.stat().st_size and sha256(dest) == digest:
            result.kept += 1
        else:
            style_dir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.part")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
            result.copied += 1
        new.append({**base, "path": f"{src.style}/{name}", "license": lic.name, "copyright": lic.holder,
                    "license_pattern": lic.matched, "seconds": round(seconds, 2),
                    "minutes": round(seconds / 60, 2), "sha256": digest, "bytes": path.stat().st_size,
                    "rule": _rule(src.rule_key(), min_seconds)})
    return new, skipped


# ---------------------------------------------------------------------------------------------
# SOURCES.md and sources.json
# ---------------------------------------------------------------------------------------------

def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _write_reports(result: Result, sources: tuple[Source, ...], min_seconds: float) -> None:
    out = result.out
    summary = result.summary()
    reasons = {(s.package, s.style): s.reason for s in sources}
    manifest = {
        "generated_by": "python -m thesis_lib free-music",
        "min_seconds": min_seconds,
        "styles": {k: {**v, "description": STYLES.get(k, "")} for k, v in summary.items()},
        "sources": [{"package": s.package, "style": s.style, "reason": s.reason} for s in sources],
        "tracks": result.tracks,
        "excluded": result.excluded,
        "failed": result.failed,
    }
    tmp = out / f".{MANIFEST}.part"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, out / MANIFEST)

    lines = [
        "# Sources of this collection",
        "",
        "Built by `python -m thesis_lib free-music` from Debian packages of free game soundtracks "
        "(`apt-get download`, `dpkg-deb`). Every file is copied as the package ships it. The license "
        "of each file is read from the package's `/usr/share/doc/<package>/copyright` (Debian's "
        "machine-readable format: the most specific `Files:` paragraph that matches the file); the "
        "copyright holders are named there and below. Redistributing these files means following "
        "those licenses (attribution for CC-BY, share-alike for CC-BY-SA, source for GPL).",
        "",
        f"Only tracks of at least {min_seconds:g} s are kept. `sources.json` has the same in machine-readable form.",
        "",
        "| style | what it sounds like | tracks | minutes | packages |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for style, d in summary.items():
        lines.append(f"| {style} | {_md(STYLES.get(style, ''))} | {d['tracks']} | {d['minutes']:.1f} | "
                     f"{', '.join(d['packages'])} |")
    total = sum(d["tracks"] for d in summary.values())
    minutes = sum(d["minutes"] for d in summary.values())
    lines += [f"| **all** | | **{total}** | **{minutes:.1f}** | |", ""]
    for style in summary:
        lines += [f"## {style}", ""]
        for (pkg, st), reason in reasons.items():
            if st == style:
                lines.append(f"- `{pkg}`: {_md(reason)}")
        lines += ["", "| file | package | version | license | copyright | minutes | sha256 |",
                  "| --- | --- | --- | --- | --- | ---: | --- |"]
        for t in result.tracks:
            if t["style"] == style:
                lines.append(f"| {_md(Path(t['path']).name)} | {t['package']} | {t['version']} | {_md(t['license'])} | "
                             f"{_md(t['copyright'])} | {t['minutes']:.2f} | `{t['sha256']}` |")
        lines.append("")
    if result.excluded:
        lines += ["## Left out", "", "| package | file in the package | reason |", "| --- | --- | --- |"]
        for e in sorted(result.excluded, key=lambda e: (e["package"], e["source_path"])):
            lines.append(f"| {e['package']} | {_md(e['source_path'])} | {_md(e['reason'])} |")
        lines.append("")
    if result.failed:
        lines += ["## Packages that could not be fetched", "", "| package | style | reason |", "| --- | --- | --- |"]
        for f in result.failed:
            lines.append(f"| {f['package']} | {f['style']} | {_md(f['reason'])} |")
        lines.append("")
    tmp = out / f".{REPORT}.part"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out / REPORT)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

DESCRIPTION = (
    "Build a free-licensed collection of real music, OUT/<style>/<track>, from Debian packages of "
    "free game soundtracks: `apt-get download` (no root needed) and `dpkg-deb`, keeping tracks of at "
    f"least {MIN_SECONDS:g} s as shipped, with OUT/SOURCES.md and OUT/sources.json giving each file's "
    "package, version, license (from the package's copyright file), minutes and sha256. Re-running "
    "skips files already present with the same checksum. Needs Debian or Ubuntu (or --deb-dir); "
    "elsewhere, use your own folder of music with `train --data MYFOLDER`.")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", type=Path, help="folder for the collection (required unless --list)")
    p.add_argument("--styles", default=None,
                   help="comma-separated subset of the styles to build (default: all; see --list)")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for the downloaded .deb files, reused by later runs "
                        "(default $THESIS_LIB_CACHE/debs or ~/.cache/thesis_lib/debs)")
    p.add_argument("--deb-dir", type=Path, default=None,
                   help="take the .deb files from this folder instead of apt-get (no network)")
    p.add_argument("--min-seconds", type=float, default=MIN_SECONDS,
                   help=f"shortest track kept, in seconds (default {MIN_SECONDS:g})")
    p.add_argument("--list", action="store_true", help="print the styles and packages, download nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``free-music`` on an ``argparse`` subparsers object; the command runs :func:`main`."""
    p = subparsers.add_parser("free-music", help="build a free real-music collection from Debian packages",
                              description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(handler=main)
    return p


def _print_list() -> None:
    for style, desc in STYLES.items():
        print(f"{style}: {desc}")
        for s in SOURCES:
            if s.style == style:
                print(f"  {s.package:26s} {s.reason}")


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run the command; ``args`` is a parsed namespace, an argv list, or None for ``sys.argv``."""
    if not isinstance(args, argparse.Namespace):
        parser = add_arguments(argparse.ArgumentParser(prog="python -m thesis_lib free-music", description=DESCRIPTION))
        args = parser.parse_args(args)
    if args.list:
        _print_list()
        return 0
    if args.out is None:
        print("error: --out DIR is required", file=sys.stderr)
        return 2
    styles = [s.strip() for s in args.styles.split(",") if s.strip()] if args.styles else None
    fetch = local_fetch(args.deb_dir) if args.deb_dir else None
    try:
        res = build_collection(args.out, styles=styles, cache=args.cache, fetch=fetch,
                               min_seconds=args.min_seconds, progress=not args.quiet)
    except FreeMusicError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    summary = res.summary()
    width = max([len(s) for s in summary] + [5])
    print(f"{'style':{width}s}  tracks  minutes  packages")
    for style, d in summary.items():
        print(f"{style:{width}s}  {d['tracks']:6d}  {d['minutes']:7.1f}  {', '.join(d['packages'])}")
    print(f"{res.copied} files copied, {res.kept} already present; {len(res.excluded)} left out "
          f"(listed in {res.out / REPORT}); {len(res.failed)} package(s) failed")
    if res.failed:
        for f in res.failed:
            print(f"  failed: {f['package']}: {f['reason']}")
    if not res.tracks:
        print("error: no track was collected", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

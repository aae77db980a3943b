"""From a folder of music to prepared clips, and from clips to a train/test split.

A dataset is a folder ``ROOT/<style>/<tracks>``: each sub-folder is a style,
every audio file below it a track. :func:`prepare_dataset` runs the thesis's
pre-processing on every track (in parallel), streams the clips into one
on-disk float32 array and records what it skipped and why. The result is
cached, keyed by the files and the pre-processing parameters, so a second
run costs seconds.

:func:`split_dataset` then draws a balanced train/test split, by track
(default: no song on both sides) or by clip (the thesis's way, which lets
clips of one song leak into the test set).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from .audio import (AUDIO_EXTENSIONS, AudioError, decode_track, junk_reason, not_audio_reason, scan_audio,
                    thesis_clips)
from .config import THESIS, ThesisConfig

FORMAT = "thesis_lib.prepared/1"


class DatasetError(ValueError):
    """A dataset that cannot be used as a whole; the message says what to do."""


def default_cache_dir() -> Path:
    """Where prepared clips are cached: ``$THESIS_LIB_CACHE`` or ``~/.cache/thesis_lib``."""
    return Path(os.environ.get("THESIS_LIB_CACHE", Path.home() / ".cache" / "thesis_lib"))


# ----------------------------------------------------------------------------
# Finding tracks
# ----------------------------------------------------------------------------

@dataclass
class TrackList:
    """The audio files of a dataset folder, per style, and every other entry with the reason.

    ``ignored`` holds ``(path, reason)``: junk (``._x.mp3``, ``.DS_Store``),
    files that are not audio, dangling links, links that would count tracks
    twice, stray audio files outside any style folder, and so on.
    """

    root: Path
    styles: list[str]
    tracks: dict[str, list[Path]]
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def find_tracks(root: str | Path) -> TrackList:
    """List ``root/<style>/**/<audio file>``; raise :class:`DatasetError` if unusable.

    A style is a real sub-folder of ``root``, or a link to a folder outside
    it (followed once). A link to a folder inside ``root`` (``ln -s . ROOT/a``)
    is not a style: its tracks would be counted again under a false label.
    Loops and second paths to one folder or file are detected; nothing is
    counted twice. Every entry that is not a track is kept in ``ignored``
    with the reason (see :func:`thesis_lib.audio.scan_audio`).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. Point --data at a folder with one "
                           "sub-folder per style, e.g. DATA/cpop/*.mp3 and DATA/metal/*.mp3.")
    root_real = Path(os.path.realpath(root))
    ignored: list[tuple[Path, str]] = []
    style_dirs: list[Path] = []
    stray = 0
    for p in sorted(root.iterdir(), key=lambda q: q.name):
        link = p.is_symlink()
        if link and not p.exists():
            ignored.append((p, "dangling or looping link (its target does not exist)"))
        elif p.is_dir():
            real = Path(os.path.realpath(p))
            if p.name.startswith((".", "_")):
                ignored.append((p, "hidden folder (a name starting with '.' or '_' is not a style)"))
            elif link and (real == root_real or root_real in real.parents):
                ignored.append((p, "link to a folder inside the data folder: not a style "
                                   "(its tracks would be counted twice, under a false label)"))
            elif link and real in root_real.parents:
                ignored.append((p, "link to a folder that contains the data folder: not a style (a loop)"))
            else:
                style_dirs.append(p)
        elif not p.is_file():
            ignored.append((p, "not a regular file"))
        elif junk_reason(p.name):
            ignored.append((p, junk_reason(p.name)))
        elif p.suffix.lower() in AUDIO_EXTENSIONS:
            stray += 1
            ignored.append((p, "audio file outside any style folder: put it in ROOT/<style>/"))
        else:
            ignored.append((p, not_audio_reason(p.name)))
    tracks: dict[str, list[Path]] = {}
    seen: set = set()
    for d in style_dirs:
        scan = scan_audio(d, root=(root_real, Path(os.path.realpath(d))), seen=seen)
        tracks[d.name] = scan.files
        ignored += scan.ignored
    if len(style_dirs) < 2:
        hint = f" ({stray} audio files lie directly in it)" if stray else ""
        links = sum(1 for _, r in ignored if r.startswith("link to a folder"))
        hint += f" ({links} link(s) to folders inside it are not styles)" if links else ""
        raise DatasetError(
            f"{root}: found {len(style_dirs)} style folder(s){hint}, need at least two. "
            "Put each style's tracks in its own sub-folder: ROOT/<style>/<track>.")
    return TrackList(root, [d.name for d in style_dirs], tracks, ignored)


def _fingerprint(tl: TrackList, cfg: ThesisConfig) -> str:
    """Cache key: every track's path, size and modification time, plus the pre-processing."""
    h = hashlib.sha256(FORMAT.encode())
    prep = {k: getattr(cfg, k) for k in ("sample_rate", "peak", "trim_samples", "clip_samples", "resample_type")}
    h.update(json.dumps(prep, sort_keys=True).encode())
    h.update(str(tl.root.resolve()).encode())
    for style in tl.styles:
        for p in tl.tracks[style]:
            st = p.stat()
            h.update(f"{style}\0{p.relative_to(tl.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------
# Prepared clips on disk
# ----------------------------------------------------------------------------

@dataclass
class PreparedDataset:
    """Clips of every usable track, as one (memory-mapped) ``(N, clip_samples)`` array.

    ``style_of[i]`` and ``track_of[i]`` say which style and which track clip
    ``i`` came from; ``tracks[j]`` is the path of track ``j`` relative to the
    data folder.
    """

    path: Path
    clips: np.ndarray
    style_of: np.ndarray
    track_of: np.ndarray
    styles: list[str]
    tracks: list[str]
    track_style: np.ndarray
    report: dict

    def __len__(self) -> int:
        return len(self.clips)

    def clips_per_style(self) -> dict[str, int]:
        return {s: int(np.sum(self.style_of == i)) for i, s in enumerate(self.styles)}

    def tracks_per_style(self) -> dict[str, int]:
        return {s: int(np.sum(self.track_style == i)) for i, s in enumerate(self.styles)}

    @classmethod
    def load(cls, path: str | Path) -> "PreparedDataset":
        """Open a prepared folder (``index.json`` + ``clips.f32``) without reading the clips."""
        path = Path(path)
        index_file = path / "index.json"
        if not index_file.is_file():
            raise DatasetError(f"{path}: no index.json, so not a prepared dataset. "
                               "Run `python -m thesis_lib prepare --data AUDIO --out DIR` first.")
        index = _read_index(index_file)
        n, m = index["n_clips"], index["clip_samples"]
        clips_file = path / "clips.f32"
        if n:
            size = clips_file.stat().st_size if clips_file.is_file() else None
            if size != n * m * 4:
                found = "is missing" if size is None else f"has {size:,} bytes"
                raise DatasetError(f"{clips_file}: {found}, but {index_file} promises {n} clips of {m} float32 "
                                   f"samples ({n * m * 4:,} bytes); the folder is damaged: prepare the data again.")
            clips = np.memmap(clips_file, dtype=np.float32, mode="r", shape=(n, m))
        else:
            clips = np.zeros((0, m), np.float32)
        counts = np.array(index["clips_per_track"], dtype=np.int64)
        track_style = np.array(index["track_style"], dtype=np.int64)
        track_of = np.repeat(np.arange(len(counts)), counts)
        try:   # the report is informational: a damaged one does not stop training
            report = json.loads((path / "report.json").read_text()) if (path / "report.json").is_file() else {}
            report = report if isinstance(report, dict) else {}
        except (OSError, ValueError):
            report = {}
        return cls(path, clips, track_style[track_of], track_of, index["styles"],
                   index["tracks"], track_style, report)


def _read_index(index_file: Path) -> dict:
    """``index.json`` of a prepared folder, checked field by field; :class:`DatasetError` naming what is wrong."""
    def bad(what: str) -> DatasetError:
        return DatasetError(f"{index_file}: {what}; the prepared folder is damaged: prepare the data again.")

    try:
        index = json.loads(index_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not readable JSON ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") \
            from None
    if not isinstance(index, dict):
        raise bad(f"a JSON {type(index).__name__}, not an object")
    if index.get("format") != FORMAT:
        raise DatasetError(f"{index_file}: format {index.get('format')!r}, expected {FORMAT!r}; "
                           "prepare the data again.")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def int_list(v):
        return isinstance(v, list) and all(is_int(x) and x >= 0 for x in v)

    for name, ok, want in (("n_clips", lambda v: is_int(v) and v >= 0, "a count"),
                           ("clip_samples", lambda v: is_int(v) and v > 0, "a positive integer"),
                           ("styles", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                            "a list of names"),
                           ("tracks", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                            "a list of paths"),
                           ("track_style", int_list, "a list of style numbers"),
                           ("clips_per_track", int_list, "a list of counts")):
        if name not in index:
            raise bad(f"the field {name!r} is missing")
        if not ok(index[name]):
            raise bad(f"the field {name!r} is not {want}")
    k = len(index["tracks"])
    if len(index["track_style"]) != k or len(index["clips_per_track"]) != k:
        raise bad("'tracks', 'track_style' and 'clips_per_track' differ in length")
    if any(s >= len(index["styles"]) for s in index["track_style"]):
        raise bad("a track's style number is not one of its styles")
    if sum(index["clips_per_track"]) != index["n_clips"]:
        raise bad(f"'clips_per_track' adds up to {sum(index['clips_per_track'])}, not n_clips {index['n_clips']}")
    return index


def _prepare_one(args: tuple[str, ThesisConfig, str]) -> dict | str:
    """Worker: write one track's clips to the file ``part``; ``{"clips", "notes"}`` or the reason it is unusable.

    The track is streamed (:func:`thesis_lib.audio.decode_track`) and its
    clips written a batch at a time, so a worker holds a bounded window
    whatever the track's length, and only a small dict travels back to the
    main process. Never raises.
    """
    path, cfg, part = args
    try:
        with decode_track(path, cfg.sample_rate, cfg.resample_type) as track, open(part, "wb") as f:
            n = 0
            for batch in thesis_clips(track, cfg):
                f.write(batch.tobytes())
                n += len(batch)
            return {"clips": n, "notes": list(track.notes), "seconds": round(track.seconds, 3)}
    except AudioError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - one bad track must not stop the rest
        return f"unexpected error: {type(exc).__name__}: {exc}"


def _warm_decoder(cfg: ThesisConfig) -> None:
    """Import and run the decoder once in this process before the pool forks.

    Workers forked afterwards inherit the imports (soundfile, soxr) instead
    of each paying for them again.
    """
    import tempfile

    import soundfile as sf

    from .audio import load_audio

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "warm.wav"
        sf.write(path, np.zeros(cfg.sample_rate // 10 + 1, np.float32) + 0.1, cfg.sample_rate + 1)
        try:
            load_audio(path, cfg.sample_rate, cfg.resample_type)
        except Exception:  # noqa: BLE001 - warming is an optimisation only
            pass


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the main process, which stops them (no traceback per worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ordered_map(fn, items: list, jobs: int) -> Iterator:
    """``map`` in order with at most ``2 * jobs`` tracks in flight, so memory stays flat.

    On an interruption (Ctrl-C) or an error in the main process the workers
    are stopped at once rather than left to finish the tracks in flight.
    """
    if jobs <= 1:
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(jobs, initializer=_ignore_sigint)
    try:
        window: deque = deque()
        it = iter(items)
        for item in it:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for w in workers:
            w.terminate()
        for w in workers:
            w.join(5)
        raise
    pool.shutdown()


def prepare_dataset(data: str | Path, out: str | Path | None = None, cfg: ThesisConfig = THESIS,
                    jobs: int | None = None, progress: bool = True, force: bool = False,
                    cache_dir: str | Path | None = None) -> PreparedDataset:
    """Pre-process every track of ``data`` into ``out`` and open it.

    Without ``out`` the clips go to ``cache_dir`` (default
    :func:`default_cache_dir`) under ``prepared/<key>``, the key covering the
    files and the pre-processing parameters.

    Unusable tracks are skipped and listed with their reason in
    ``report.json``; they never stop the preparation. A style left with no
    usable track is dropped (and reported); fewer than two usable styles
    raise :class:`DatasetError`. The folder is written under a temporary name
    and renamed when complete, so an interrupted run leaves nothing a later
    run would trust.
    """
    tl = find_tracks(data)
    key = _fingerprint(tl, cfg)
    out = Path(out) if out is not None else Path(cache_dir or default_cache_dir()) / "prepared" / key
    index_file = out / "index.json"
    if not force and index_file.is_file():
        try:
            if _read_index(index_file).get("key") == key:
                return PreparedDataset.load(out)
        except (DatasetError, OSError):
            pass  # a damaged cache is rebuilt
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_prepared(tl, key, cfg, tmp, jobs or os.cpu_count() or 1, progress)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ds = PreparedDataset.load(out)
    usable = [s for s, n in ds.clips_per_style().items() if n > 0]
    if len(usable) < 2:
        raise DatasetError(
            f"{tl.root}: only {len(usable)} style(s) have usable tracks ({', '.join(usable) or 'none'}); "
            f"need at least two. See {out / 'report.json'} for why each file was skipped.")
    return ds


def _write_prepared(tl: TrackList, key: str, cfg: ThesisConfig, tmp: Path, jobs: int, progress: bool) -> None:
    items = [(style, p) for style in tl.styles for p in tl.tracks[style]]
    tracks, track_style, clips_per_track, skipped, used = [], [], [], [], []
    parts = tmp / "parts"
    parts.mkdir()
    with open(tmp / "clips.f32", "wb") as f:
        jobs = max(1, min(jobs, len(items)))
        if jobs > 1:
            _warm_decoder(cfg)
        work = [(str(p), cfg, str(parts / f"{i}.f32")) for i, (_, p) in enumerate(items)]
        results = _ordered_map(_prepare_one, work, jobs)
        for (style, p), (_, _, part), res in tqdm(zip(items, work, results), total=len(items),
                                                  desc="preparing tracks", unit="track", disable=not progress):
            rel = str(p.relative_to(tl.root))
            if isinstance(res, str):
                skipped.append({"file": rel, "style": style, "reason": res})
            else:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
                entry = {"file": rel, "style": style, "clips": res["clips"], "seconds": res["seconds"]}
                if res["notes"]:
                    entry["notes"] = res["notes"]
                used.append(entry)
                tracks.append(rel)
                track_style.append(tl.styles.index(style))
                clips_per_track.append(res["clips"])
            Path(part).unlink(missing_ok=True)
    parts.rmdir()
    per_style = {s: {"tracks": sum(1 for t in track_style if t == i),
                     "clips": sum(c for t, c in zip(track_style, clips_per_track) if t == i)}
                 for i, s in enumerate(tl.styles)}
    empty = [s for s, v in per_style.items() if v["tracks"] == 0]
    ignored = [{"file": _rel(p, tl.root), "reason": r} for p, r in tl.ignored]
    report = {
        "data": str(tl.root), "styles": per_style, "used": used, "skipped": skipped,
        "damaged": [{"file": u["file"], "notes": u["notes"]} for u in used if "notes" in u
                    and any("damaged" in n or n.startswith("truncated") for n in u["notes"])],
        "empty_styles": [{"style": s, "reason": "no usable track in this style folder"} for s in empty],
        "ignored": ignored,
        "n_entries": len(used) + len(skipped) + len(ignored),
        "n_tracks": len(tracks), "n_clips": int(sum(clips_per_track)),
    }
    index = {"format": FORMAT, "key": key, "data": str(tl.root), "styles": tl.styles,
             "tracks": tracks, "track_style": track_style, "clips_per_track": clips_per_track,
             "n_clips": int(sum(clips_per_track)), "clip_samples": cfg.clip_samples,
             "sample_rate": cfg.sample_rate, "config": cfg.to_dict()}
    (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (tmp / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _replace_dir(new: Path, dest: Path) -> None:
    """Swap ``new`` in as ``dest`` (rename; the old one is removed afterwards)."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        dest.rename(old)
    new.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def describe_report(ds: PreparedDataset) -> str:
    """A human summary of a preparation: clips per style and every skipped file."""
    lines = [f"{s}: {v['tracks']} tracks, {v['clips']} clips" for s, v in ds.report.get("styles", {}).items()]
    for item in ds.report.get("skipped", []):
        lines.append(f"skipped {item['file']}: {item['reason']}")
    for item in ds.report.get("damaged", []):
        lines.append(f"used, but damaged: {item['file']}: {'; '.join(item['notes'])}")
    for item in ds.report.get("used", []):
        cancel = [n for n in item.get("notes", []) if n.startswith("its channels cancel")]
        if cancel:
            lines.append(f"used, from its first channel: {item['file']}: {cancel[0]}")
    for item in ds.report.get("ignored", []):
        if isinstance(item, dict) and not item.get("reason", "").startswith(("AppleDouble", "Finder", "hidden")):
            lines.append(f"ignored {item['file']}: {item['reason']}")
    for item in ds.report.get("empty_styles", []):
        lines.append(f"style '{item['style']}' dropped: {item['reason']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Train/test split
# ----------------------------------------------------------------------------

@dataclass
class Split:
    """Clip indices for training and testing, and what the split had to give up."""

    train: np.ndarray
    test: np.ndarray
    styles: list[str]
    mode: str
    notes: list[str] = field(default_factory=list)


def _track_split(ds: PreparedDataset, style: int, test_frac: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole tracks of one style until about ``test_frac`` of its clips are held out."""
    tracks = np.flatnonzero(ds.track_style == style)
    name = ds.styles[style]
    if len(tracks) < 2:
        raise DatasetError(
            f"style '{name}' has {len(tracks)} usable track(s); a split by track needs at least two "
            "(one to train on, one to test on). Add tracks, or use --split clip.")
    rng.shuffle(tracks)
    counts = np.bincount(ds.track_of, minlength=len(ds.tracks))[tracks]
    total = counts.sum()
    held = 1
    while held < len(tracks) - 1 and counts[:held].sum() < test_frac * total:
        held += 1
    test_tracks = set(tracks[:held].tolist())
    clips = np.flatnonzero(ds.style_of == style)
    in_test = np.isin(ds.track_of[clips], list(test_tracks))
    return clips[~in_test], clips[in_test]


def split_dataset(ds: PreparedDataset, train_per_style: int = THESIS.train_per_style,
                  test_per_style: int = THESIS.test_per_style, split: str = "track",
                  seed: int = 0) -> Split:
    """A balanced split: the same number of training (and of test) clips for every style.

    ``split="track"`` keeps every track wholly on one side; ``split="clip"``
    draws clips at random, as the thesis did, so clips of one song can sit on
    both sides. When a style has fewer clips than asked for, all styles get
    as many as the smallest one has, and :attr:`Split.notes` says so.
    """
    if split not in ("track", "clip"):
        raise ValueError(f"split must be 'track' or 'clip', not {split!r}")
    rng = np.random.default_rng(seed)
    styles = [i for i, n in enumerate(ds.clips_per_style().values()) if n > 0]
    test_frac = test_per_style / (train_per_style + test_per_style)
    sides = []
    for s in styles:
        if split == "track":
            sides.append(_track_split(ds, s, test_frac, rng))
        else:
            clips = rng.permutation(np.flatnonzero(ds.style_of == s))
            n_test = max(1, int(round(len(clips) * test_frac))) if len(clips) < train_per_style + test_per_style \
                else test_per_style
            sides.append((clips[n_test:], clips[:n_test]))
    n_train = min(train_per_style, *(len(tr) for tr, _ in sides))
    n_test = min(test_per_style, *(len(te) for _, te in sides))
    notes = []
    if n_train < train_per_style or n_test < test_per_style:
        avail = ", ".join(f"{ds.styles[s]}: {len(tr)} train / {len(te)} test"
                          for s, (tr, te) in zip(styles, sides))
        notes.append(f"asked for {train_per_style} train + {test_per_style} test clips per style, "
                     f"using {n_train} + {n_test} per style to keep the styles balanced ({avail})")
    if n_train == 0 or n_test == 0:
        raise DatasetError("not enough clips for a train/test split: " + "; ".join(notes))
    train = np.concatenate([rng.choice(tr, n_train, replace=False) for tr, _ in sides])
    test = np.concatenate([rng.choice(te, n_test, replace=False) for _, te in sides])
    return Split(np.sort(train), np.sort(test), [ds.styles[s] for s in styles], split, notes)


def label_of(ds: PreparedDataset, idx: np.ndarray, split: Split) -> np.ndarray:
    """Class labels (positions in ``split.styles``) of clips ``idx``."""
    remap = {ds.styles.index(name): i for i, name in enumerate(split.styles)}
    return np.array([remap[s] for s in ds.style_of[idx]], dtype=np.int64)

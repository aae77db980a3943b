"""Audio in and out, and the thesis's pre-processing of one track (thesis 4.1).

The steps run in the thesis's order: load as mono at 8 kHz through a
high-quality resampler, normalise the peak to 0.9, drop 30 s at each end,
cut consecutive 5-second clips and drop the short remainder. Each step is its
own function so the book can show them one at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from .config import SILENCE, THESIS, ThesisConfig

MODULE_EXTENSIONS = (".mod", ".xm", ".s3m", ".it")
"""Tracker modules (ProTracker, FastTracker 2, Scream Tracker 3, Impulse Tracker): notes and
instrument samples that a player renders, the way much free game music is shipped (Pingus's,
for one). libsndfile cannot read them; ffmpeg renders them with libopenmpt (Debian's and
Ubuntu's ffmpeg are built with it), once through the song."""

AUDIO_EXTENSIONS = (".mp3", ".ogg", ".oga", ".flac", ".wav", ".aif", ".aiff", ".m4a", ".opus", *MODULE_EXTENSIONS)
"""File endings that preparation treats as music; anything else is ignored."""



class AudioError(ValueError):
    """A track that cannot be used, with the file and the reason in the message."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


JUNK_NAMES = {".DS_Store": "Finder metadata (macOS), not audio",
              "Thumbs.db": "thumbnail cache (Windows), not audio",
              "desktop.ini": "folder settings (Windows), not audio"}


def is_audio_file(path: Path) -> bool:
    """A visible file with one of :data:`AUDIO_EXTENSIONS` (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in AUDIO_EXTENSIONS


def not_audio_reason(name: str) -> str:
    """Why a file called ``name`` is not taken as a track (its ending is not in :data:`AUDIO_EXTENSIONS`).

    MIDI gets a hint of its own: game soundtracks often ship it, and it holds notes, not sound --
    it must be rendered with instruments (a SoundFont) before anything can hear it.
    """
    suffix = Path(name).suffix.lower()
    if suffix in (".mid", ".midi"):
        return ("a MIDI file: notes, not sound; render it to WAV first, e.g. "
                "`fluidsynth -ni -F song.wav SOUNDFONT.sf2 song.mid`, and put the WAV in its place")
    return f"not an audio file (extension {Path(name).suffix or 'none'!r})"


def junk_reason(name: str) -> str | None:
    """Why a file called ``name`` is not a track though it may look like one; ``None`` if it may be."""
    if name in JUNK_NAMES:
        return JUNK_NAMES[name]
    if name.startswith("._"):
        return "AppleDouble metadata (macOS resource fork), not audio"
    if name.startswith("."):
        return "hidden file"
    return None


@dataclass
class AudioScan:
    """What :func:`scan_audio` saw below a folder.

    ``files``: the audio files (as found, below the folder), sorted;
    ``ignored``: ``(path, reason)`` for every other entry it met (junk,
    non-audio files, dangling links, links it did not follow, folders named
    like audio files, a second path to a file already found).
    """

    files: list[Path] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def scan_audio(folder: str | Path, root=None, seen: set | None = None) -> AudioScan:
    """Walk ``folder`` for audio files, accounting for every entry, following links with care.

    A link to a folder inside ``root`` (default ``folder``; a path or several) is not followed
    (what it points at is walked where it is); a link leading outside is
    followed once; a folder reached twice (a loop, or two links to one
    place) and a file reached twice (by a link) are reported, not counted
    again. ``seen`` (real paths) can be shared between calls so that nothing
    is counted twice across style folders.
    """
    folder = Path(folder)
    roots = [folder] if root is None else [root] if isinstance(root, (str, Path)) else list(root)
    roots_real = [Path(os.path.realpath(r)) for r in roots]
    seen = set() if seen is None else seen
    scan = AudioScan()

    def walk(d: Path) -> None:
        real = Path(os.path.realpath(d))
        if real in seen:
            scan.ignored.append((d, "a folder already walked (a link loop or a second link to it): "
                                    "its files are counted once"))
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            scan.ignored.append((d, f"folder cannot be read ({exc.strerror or exc})"))
            return
        for e in entries:
            p = d / e.name
            link = e.is_symlink()
            if link:
                try:
                    target = Path(os.path.realpath(p, strict=True))
                except (OSError, RuntimeError):
                    scan.ignored.append((p, "dangling or looping link (its target does not exist)"))
                    continue
            else:
                target = Path(os.path.realpath(p))
            try:
                is_dir, is_file = e.is_dir(), e.is_file()
            except OSError as exc:
                scan.ignored.append((p, f"cannot be read ({exc.strerror or exc})"))
                continue
            if is_dir:
                if link and any(_inside(target, r) for r in roots_real):
                    scan.ignored.append((p, "link to a folder inside the data folder: not followed "
                                            "(its files are counted where they are)"))
                    continue
                if link and any(target in r.parents for r in roots_real):
                    scan.ignored.append((p, "link to a folder that contains the data folder: not followed (a loop)"))
                    continue
                if e.name.startswith("."):
                    scan.ignored.append((p, "hidden folder"))
                    continue
                if Path(e.name).suffix.lower() in AUDIO_EXTENSIONS:
                    scan.ignored.append((p, "a folder, though named like an audio file: searched as a folder"))
                walk(p)
            elif not is_file:
                scan.ignored.append((p, "not a regular file"))
            elif junk_reason(e.name):
                scan.ignored.append((p, junk_reason(e.name)))
            elif Path(e.name).suffix.lower() not in AUDIO_EXTENSIONS:
                scan.ignored.append((p, not_audio_reason(e.name)))
            elif link and any(_inside(target, r) for r in roots_real):
                scan.ignored.append((p, "link to a file inside the data folder: counted where it is, not here"))
            elif target in seen:
                scan.ignored.append((p, "the same file as one already counted (a link or a second path)"))
            else:
                seen.add(target)
                scan.files.append(p)

    walk(folder)
    scan.files.sort()
    return scan


def find_audio(folder: str | Path) -> list[Path]:
    """Every audio file below ``folder`` (recursively, hidden files skipped), sorted.

    The one audio discovery (:func:`scan_audio`): preparation lists each
    style folder with it and ``predict`` each folder it is given.
    """
    return scan_audio(folder).files


# ----------------------------------------------------------------------------
# Streaming decode: one block at a time, whatever the track's length
# ----------------------------------------------------------------------------

BLOCK_FRAMES = 1 << 16
"""Frames decoded per block (65,536: 1.5 s of 44.1 kHz audio, 2 MB for 8 float32 channels)."""

MONO_CANCELLATION_DB = 20.0
"""A mono mix this many dB below its channels (each channel's power, averaged) means the channels
cancel: they carry the music in opposite phase (a tracker module's "surround" panning, a
wrongly wired recording). Uncorrelated channels mix 3 dB down, identical ones 0 dB; such a
track is read from its first channel instead (:func:`decode_track` notes it)."""

_SOXR_QUALITY = {"soxr_vhq": "VHQ", "soxr_hq": "HQ", "soxr_mq": "MQ", "soxr_lq": "LQ", "soxr_qq": "QQ"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class DecodedTrack:
    """A track decoded to mono float32 at ``sample_rate``, kept in an unlinked temporary file.

    Built by :func:`decode_track`, which streams the file through the
    decoder and soxr's streaming resampler one block at a time and appends
    the resampled samples to the temporary file. The process therefore holds
    one block, never the track: the 8 kHz mono signal (115 MB an hour) lives
    on disk (in ``$TMPDIR``), and its length and peak are known once decoded,
    so the thesis's peak normalisation (which needs the whole track's peak)
    costs no second decode. ``read`` returns unnormalised samples; ``notes``
    says how the file was decoded when it was not the ordinary way (e.g. by
    ffmpeg after soundfile failed on a damaged file). Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, path: Path, sample_rate: int, store, n_samples: int, peak: float, notes: list[str]):
        self.path, self.sample_rate, self._store = path, sample_rate, store
        self.n_samples, self.peak, self.notes = n_samples, peak, notes

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` (clipped to the track) as float32, not normalised."""
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        start = max(0, min(start, stop))
        self._store.seek(4 * start)
        out = np.empty(stop - start, np.float32)
        self._store.readinto(memoryview(out).cast("B"))
        return out

    def clips(self, start: int, n_clips: int, clip_samples: int, scale: float,
              batch: int = 64) -> Iterator[np.ndarray]:
        """``n_clips`` consecutive clips from ``start``, times ``scale``: ``(k, clip_samples)`` batches."""
        for lo in range(0, n_clips, batch):
            k = min(batch, n_clips - lo)
            y = self.read(start + lo * clip_samples, start + (lo + k) * clip_samples)
            y *= scale                                 # in place: float32, the same as y * scale
            yield y.reshape(k, clip_samples)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "DecodedTrack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _soundfile_blocks(path: Path) -> tuple[int, int | None, Iterator[np.ndarray]]:
    """``(rate, frames in the header, blocks of (frames, channels) float32)`` via libsndfile."""
    f = sf.SoundFile(path)

    def blocks():
        with f:
            while True:
                b = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(b):
                    return
                yield b

    return f.samplerate, f.frames, blocks()


def _ffprobe_stream(path: Path) -> tuple[int, int]:
    """Sample rate and channel count of the first audio stream, from ffprobe."""
    import json
    import subprocess

    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                              "stream=sample_rate,channels", "-of", "json", str(path)],
                             capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AudioError(path, "ffprobe (part of ffmpeg) is not installed") from None
    try:
        stream = json.loads(out.stdout)["streams"][0]
        return int(stream["sample_rate"]), int(stream["channels"])
    except (ValueError, KeyError, IndexError, TypeError):
        err = out.stderr.strip().splitlines()
        raise AudioError(path, f"ffmpeg finds no audio stream ({err[-1] if err else 'no stream'})") from None


def _ffmpeg_blocks(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    """``(rate, blocks)`` decoded by ffmpeg as 16-bit PCM at the file's own rate and channels.

    The bytes are read from ffmpeg's pipe one block at a time (the same
    samples librosa's audioread fallback gave: 16-bit, scaled by 1/32768).
    """
    import subprocess
    import tempfile

    rate, channels = _ffprobe_stream(path)
    if rate <= 0 or not 1 <= channels <= 64:
        raise AudioError(path, f"ffmpeg reports an unusable stream ({rate} Hz, {channels} channels)")

    def blocks():
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le",
                                     "-acodec", "pcm_s16le", "-"],
                                    stdout=subprocess.PIPE, stderr=err)
            try:
                frame_bytes = 2 * channels
                pending = b""
                while True:
                    chunk = proc.stdout.read(BLOCK_FRAMES * frame_bytes)
                    if not chunk:
                        break
                    chunk = pending + chunk
                    usable = len(chunk) - len(chunk) % frame_bytes
                    pending = chunk[usable:]
                    if usable:
                        a = np.frombuffer(chunk[:usable], "<i2").astype(np.float32) * np.float32(1 / 32768)
                        yield a.reshape(-1, channels)
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if rc != 0:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines()
                raise AudioError(path, f"ffmpeg cannot decode it ({lines[-1] if lines else f'exit code {rc}'})")

    return rate, blocks()


def _resampled(blocks: Iterator[np.ndarray], rate: int, sample_rate: int, quality: str,
               path: Path, channel: int | None = None,
               energy: dict[str, float] | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Downmix each block to mono (the mean of the channels, or only ``channel``) and resample it as a stream.

    Yields ``(mono block at sample_rate, input frames so far)``; raises
    :class:`AudioError` at the first block whose samples are not finite. ``energy``, if given,
    sums the power of the mix (``"mix"``) and the channels' mean power (``"channels"``).
    """
    import soxr

    stream = None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32",
                                                                   quality=quality)
    seen = 0
    for b in blocks:
        if not np.all(np.isfinite(b)):
            bad = seen + int(np.flatnonzero(~np.all(np.isfinite(b), axis=1))[0])
            raise AudioError(path, f"its samples are not finite (NaN or infinite values, the first at "
                                   f"{bad / rate:.2f} s): the file is damaged or was written wrongly")
        seen += len(b)
        if channel is not None or b.shape[1] == 1:
            mono = b[:, channel or 0]
        else:
            mono = np.mean(b.T, axis=0)     # as librosa.to_mono
            if energy is not None:
                energy["mix"] += float(np.dot(mono, mono))
                energy["channels"] += float(np.einsum("ij,ij->", b, b)) / b.shape[1]
        yield (mono if stream is None else stream.resample_chunk(np.ascontiguousarray(mono))), seen
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True), seen


def decode_track(path: str | Path, sample_rate: int = THESIS.sample_rate,
                 res_type: str = THESIS.resample_type) -> DecodedTrack:
    """Decode any mp3/ogg/flac/wav/... to mono float32 at ``sample_rate``, streaming.

    Blocks come from soundfile (libsndfile); a file it cannot read, or fails
    on midway, is decoded again from the start by ffmpeg (piped, block by
    block), and the result's ``notes`` say so. Each block is downmixed and fed
    to soxr's streaming resampler (``res_type`` 'soxr_hq' is soxr's 'HQ', as
    ``librosa.load`` used); the output has ``ceil(frames * sample_rate / rate)``
    samples, as librosa's resampling gave, and equals its samples. Raises
    :class:`AudioError` naming the file for an empty, unreadable or
    undecodable file and for one whose samples are not finite. A file whose
    channels cancel in the mix (more than :data:`MONO_CANCELLATION_DB` below
    them) is decoded again from its first channel, and ``notes`` say so.
    """
    import tempfile

    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    if res_type not in _SOXR_QUALITY:
        raise ValueError(f"resample type must be one of {sorted(_SOXR_QUALITY)}, not {res_type!r}")
    quality = _SOXR_QUALITY[res_type]
    store = tempfile.TemporaryFile(prefix="thesis_lib-track-")
    try:
        energy = {"mix": 0.0, "channels": 0.0}
        rate, n, peak, frames, notes = _decode_into(store, path, sample_rate, quality, None, energy)
        if energy["channels"] > 0 and energy["mix"] < energy["channels"] * 10 ** (-MONO_CANCELLATION_DB / 10):
            below = 10 * np.log10(energy["channels"] / max(energy["mix"], 1e-30))
            store.seek(0)
            store.truncate()
            rate, n, peak, frames, notes = _decode_into(store, path, sample_rate, quality, 0, None)
            notes.append(f"its channels cancel in a mono mix ({below:.0f} dB below the channels: opposite "
                         "phase, as a tracker's surround panning gives); the first channel was used")
        if n == 0:
            raise AudioError(path, "decoded to zero samples")
        if rate != sample_rate:  # librosa.resample's fix_length: exactly ceil(frames * ratio) samples
            want = int(np.ceil(frames * (float(sample_rate) / rate)))
            if want > n:
                store.seek(4 * n)
                store.write(bytes(4 * (want - n)))
            if want < n:  # the peak is that of the samples kept
                store.seek(4 * want)
                dropped = np.frombuffer(store.read(), np.float32)
                if dropped.size and float(np.max(np.abs(dropped))) >= peak:
                    peak = _store_peak(store, want)
            n = want
            store.truncate(4 * n)
            if n == 0:
                raise AudioError(path, "decoded to zero samples")
        return DecodedTrack(path, sample_rate, store, n, peak if n else 0.0, notes)
    except BaseException:
        store.close()
        raise


def _decode_into(store, path: Path, sample_rate: int, quality: str, channel: int | None,
                 energy: dict[str, float] | None) -> tuple[int, int, float, int, list[str]]:
    """Decode ``path`` into ``store`` with soundfile, else ffmpeg from the start (see :func:`decode_track`):
    ``(file rate, samples written, peak, input frames, notes)``."""
    notes: list[str] = []
    header_frames = None
    try:
        rate, header_frames, blocks = _soundfile_blocks(path)
        n, peak, frames = _spill(_resampled(blocks, rate, sample_rate, quality, path, channel, energy), store)
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile failed: let ffmpeg try from the start
        sf_reason = _first_line(exc)
        unsupported = header_frames is None and "format not recognised" in sf_reason.lower()
        store.seek(0)
        store.truncate()
        if energy is not None:
            energy.update(mix=0.0, channels=0.0)
        try:
            rate, blocks = _ffmpeg_blocks(path)
            n, peak, frames = _spill(_resampled(blocks, rate, sample_rate, quality, path, channel, energy), store)
        except AudioError as ff:
            if ff.reason.startswith("its samples are not finite"):
                raise
            hint = ("a tracker module needs an ffmpeg built with libopenmpt (`ffmpeg -formats` lists "
                    "it; Debian's and Ubuntu's are)" if path.suffix.lower() in MODULE_EXTENSIONS
                    else "is it a real mp3/ogg/flac/wav file?")
            raise AudioError(path, f"cannot decode audio (soundfile: {sf_reason}; {ff.reason}); {hint}") from None
        if unsupported:
            notes.append("decoded by ffmpeg (a format soundfile cannot read)")
        else:
            notes.append(f"decoded by ffmpeg after soundfile failed: {sf_reason}; the file may be damaged")
        if header_frames and frames < header_frames:
            notes.append(f"truncated: its header promises {header_frames / rate:.1f} s, "
                         f"only {frames / rate:.1f} s could be decoded")
    return rate, n, peak, frames, notes


def _spill(chunks: Iterator[tuple[np.ndarray, int]], store) -> tuple[int, float, int]:
    """Append resampled chunks to ``store``: ``(samples written, peak |sample|, input frames)``."""
    n, peak, frames = 0, 0.0, 0
    for y, frames in chunks:
        if y.size:
            y = np.asarray(y, np.float32)
            peak = max(peak, float(np.max(np.abs(y))))
            store.write(y.tobytes())
            n += y.size
    return n, peak, frames


def _store_peak(store, n: int) -> float:
    peak = 0.0
    store.seek(0)
    for lo in range(0, n, BLOCK_FRAMES * 16):
        y = np.frombuffer(store.read(4 * min(BLOCK_FRAMES * 16, n - lo)), np.float32)
        peak = max(peak, float(np.max(np.abs(y)))) if y.size else peak
    return peak


def load_audio(path: str | Path, sample_rate: int = THESIS.sample_rate,
               res_type: str = THESIS.resample_type) -> np.ndarray:
    """The whole track as mono float32 at ``sample_rate`` (:func:`decode_track`, read whole).

    For short files and the book; the pipeline streams with
    :func:`decode_track` and :func:`track_clips` instead.
    """
    with decode_track(path, sample_rate, res_type) as t:
        return t.read()


def peak_normalize(y: np.ndarray, peak: float = THESIS.peak) -> np.ndarray:
    """Scale so that the largest absolute sample equals ``peak``.

    A silent signal cannot be scaled and raises ``ValueError``.
    """
    m = float(np.max(np.abs(y))) if y.size else 0.0
    if m < SILENCE:
        raise ValueError(f"signal is silent (peak {m:.2e})")
    return (y * (peak / m)).astype(np.float32)


def rms_db(y: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (a full-scale sine is -3 dB).

    Floored at -240 dB so that silence gives a number, not ``-inf``.
    """
    return float(20 * np.log10(max(np.sqrt(np.mean(np.asarray(y, np.float64) ** 2)), 1e-12)))


def loudness_match(signals: list[np.ndarray], peak: float = THESIS.peak) -> list[np.ndarray]:
    """The signals at equal RMS, then all scaled by one factor so that the loudest peak is ``peak``.

    Why: of two clips compared by ear, the louder one tends to sound "more"
    of anything -- more energetic, more distorted, more metal -- so a
    comparison is only about the sound when loudness is taken away. Equal RMS
    is a simple stand-in for equal loudness (it ignores the ear's frequency
    weighting, which matters little between two versions of one clip). A
    single common factor afterwards keeps the RMS equal while nothing clips:
    the clip with the larger crest factor ends at ``peak``, the other below it.
    Raises ``ValueError`` for no signals, an empty, non-finite or silent one.
    """
    if not signals:
        raise ValueError("no signals to match")
    if not 0 < peak <= 1:
        raise ValueError(f"the peak must be in (0, 1], not {peak}")
    out = []
    for i, y in enumerate(signals):
        y = np.asarray(y, np.float64).ravel()
        if y.size == 0:
            raise ValueError(f"signal {i} is empty")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"signal {i} has {int(np.sum(~np.isfinite(y)))} non-finite samples (NaN or inf)")
        if float(np.max(np.abs(y))) < SILENCE:
            raise ValueError(f"signal {i} is silent: its loudness cannot be matched")
        out.append(y / np.sqrt(np.mean(y ** 2)))
    scale = peak / max(float(np.max(np.abs(y))) for y in out)
    return [(y * scale).astype(np.float32) for y in out]


def trim_ends(y: np.ndarray, samples: int = THESIS.trim_samples) -> np.ndarray:
    """Drop ``samples`` at the start and at the end (silence, intro, coda)."""
    if samples == 0:
        return y
    return y[samples:-samples] if y.size > 2 * samples else y[:0]


def cut_clips(y: np.ndarray, clip_samples: int = THESIS.clip_samples) -> np.ndarray:
    """Consecutive, non-overlapping clips of ``clip_samples``; the remainder is dropped."""
    n = y.size // clip_samples
    return y[: n * clip_samples].reshape(n, clip_samples)


def normalise_scale(track: DecodedTrack, peak: float = THESIS.peak) -> float:
    """The factor that brings ``track``'s peak to ``peak``; :class:`AudioError` for a silent track."""
    if track.peak < SILENCE:
        raise AudioError(track.path, f"silent track (signal is silent (peak {track.peak:.2e}))")
    return peak / track.peak


def thesis_clips(track: DecodedTrack, cfg: ThesisConfig = THESIS, batch: int = 64) -> Iterator[np.ndarray]:
    """The thesis's clips of a decoded track, in batches: peak 0.9, 30 s dropped at each end.

    The same samples as :func:`peak_normalize`, :func:`trim_ends` and
    :func:`cut_clips` on the whole signal, read from ``track`` a batch at a
    time. Raises :class:`AudioError` (before yielding anything) for a silent
    track or one too short to give a clip.
    """
    scale = normalise_scale(track, cfg.peak)
    body = track.n_samples - 2 * cfg.trim_samples if track.n_samples > 2 * cfg.trim_samples else 0
    if body < cfg.clip_samples:
        raise AudioError(
            track.path,
            f"too short: {track.seconds:.1f} s, but dropping "
            f"{cfg.trim_seconds:g} s at each end needs at least "
            f"{cfg.min_track_samples / cfg.sample_rate:g} s for one "
            f"{cfg.clip_seconds:g}-second clip")
    return track.clips(cfg.trim_samples, body // cfg.clip_samples, cfg.clip_samples, scale, batch)


def prepare_track(path: str | Path, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """The thesis's whole pre-processing of one track: ``(n_clips, clip_samples)`` float32.

    Raises :class:`AudioError` for a silent track or one too short to give a
    clip. This holds every clip of the track at once; preparation streams
    them to disk with :func:`decode_track` and :func:`thesis_clips` instead.
    """
    with decode_track(path, cfg.sample_rate, cfg.resample_type) as track:
        return np.concatenate(list(thesis_clips(track, cfg)))


def to_int16(y: np.ndarray, peak: float | None = THESIS.peak) -> np.ndarray:
    """16-bit PCM samples; with ``peak`` the signal is first normalised to it.

    Non-finite samples become zero and the result is clipped to [-1, 1], so
    whatever an optimiser produced, playback stays safe for a listener's ears.
    """
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if peak is not None and np.max(np.abs(y), initial=0.0) > 0:
        y = y * (peak / np.max(np.abs(y)))
    return np.round(np.clip(y, -1.0, 1.0) * 32767).astype(np.int16)


def write_wav(path: str | Path, y: np.ndarray, sample_rate: int = THESIS.sample_rate,
              peak: float | None = THESIS.peak) -> Path:
    """Write mono 16-bit WAV (the thesis's output format), normalised to ``peak``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, to_int16(y, peak), sample_rate, subtype="PCM_16")
    return path


def wav_bytes(y: np.ndarray, sample_rate: int = THESIS.sample_rate,
              peak: float | None = THESIS.peak) -> bytes:
    """The same 16-bit WAV as :func:`write_wav`, in memory (for embedded players)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, to_int16(y, peak), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()

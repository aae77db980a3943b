"""Built-in default data: two synthetic styles in the spirit of the thesis's pair.

The thesis's C-pop and melodic-death-metal tracks cannot be shipped, so the
main job runs on music this module composes: soft, slow, pentatonic "c-pop"
against fast, distorted, drum-heavy "metal". The styles are made to overlap
the way real ones do -- metal has clean melodic passages, pop has loud
choruses with an overdriven guitar, tempi, keys and loudness overlap, and
about a quarter of every track is a "crossover" passage that both styles
compose from the same distributions -- so the thesis's net cannot simply
reach 100 % on 5-second clips.

Generation is deterministic: the same seed writes the same samples. Tracks are
written as 16-bit FLAC at 11,025 Hz and read back through exactly the same
preparation as real music (including the resampling to 8 kHz).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt
from tqdm.auto import tqdm

STYLES = ("cpop", "metal")
"""Folder names of the two synthetic styles."""


@dataclass(frozen=True)
class SynthSpec:
    """How much default data to compose.

    The defaults give about 2,900 clips per style, enough for the thesis's
    2,400 training and 240 test clips per style with a split by track.
    """

    tracks_per_style: int = 110
    min_seconds: float = 150.0
    max_seconds: float = 240.0
    sample_rate: int = 11_025
    seed: int = 2016
    #: Version of the composition code; part of the cache key, so changing how
    #: tracks are composed never reuses tracks (or trained runs) of an older version.
    version: int = 2

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------
# Instruments: each returns a float64 signal for one note or hit.
# ----------------------------------------------------------------------------

def midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _t(dur: float, sr: int) -> np.ndarray:
    return np.arange(max(int(dur * sr), 1)) / sr


def _env(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack, flat hold, linear release envelope of ``n`` samples."""
    e = np.ones(n)
    a, r = min(int(attack * sr), n), min(int(release * sr), n)
    if a:
        e[:a] = np.linspace(0, 1, a)
    if r:
        e[n - r:] *= np.linspace(1, 0, r)
    return e


def pluck(f: float, dur: float, sr: int, bright: float = 0.5, decay: float = 3.0) -> np.ndarray:
    """A guzheng/pipa-like plucked string: decaying harmonics, upper ones faster."""
    t = _t(dur, sr)
    y = np.zeros_like(t)
    for k in range(1, 9):
        if k * f >= sr / 2:
            break
        y += (bright ** (k - 1) / k) * np.exp(-decay * k * t) * np.sin(2 * np.pi * k * f * t)
    return y * _env(t.size, sr, 0.002, 0.02)


def voice(f: float, dur: float, sr: int, vibrato: float = 0.006) -> np.ndarray:
    """A sung or bowed (erhu-like) line: few harmonics, vibrato, soft attack."""
    t = _t(dur, sr)
    phase = 2 * np.pi * f * np.cumsum(1 + vibrato * np.sin(2 * np.pi * 5.5 * t)) / sr
    y = np.sin(phase) + 0.35 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    return y * _env(t.size, sr, 0.06, 0.08)


def pad(freqs: list[float], dur: float, sr: int) -> np.ndarray:
    """A soft sustained chord with slight detuning."""
    t = _t(dur, sr)
    y = sum(np.sin(2 * np.pi * f * t) + np.sin(2 * np.pi * f * 1.003 * t) for f in freqs)
    return y / (2 * len(freqs)) * _env(t.size, sr, min(0.4, dur / 3), min(0.4, dur / 3))


def saw(f: float, t: np.ndarray) -> np.ndarray:
    return 2.0 * ((f * t) % 1.0) - 1.0


def dist_chord(freqs: list[float], dur: float, sr: int, gain: float, mute: float,
               tone: np.ndarray) -> np.ndarray:
    """Distorted guitar: sawtooth power chord through a tanh clipper and a cabinet filter.

    ``mute`` > 0 gives a palm-muted chug (fast decay); ``tone`` is a lowpass
    second-order-sections filter standing in for the speaker cabinet.
    """
    t = _t(dur, sr)
    y = sum(saw(f, t) for f in freqs) / len(freqs)
    env = np.exp(-mute * t) if mute else np.ones_like(t)
    y = np.tanh(gain * y * env)
    return sosfilt(tone, y) * _env(t.size, sr, 0.003, 0.01)


def kick(sr: int, level: float = 1.0) -> np.ndarray:
    t = _t(0.22, sr)
    f = 50 + 90 * np.exp(-30 * t)
    return level * np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-14 * t)


def snare(sr: int, rng: np.random.Generator, level: float = 1.0) -> np.ndarray:
    t = _t(0.18, sr)
    body = 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-25 * t)
    return level * (body + rng.standard_normal(t.size) * np.exp(-18 * t) * 0.7)


def hat(sr: int, rng: np.random.Generator, level: float = 0.3, dur: float = 0.05) -> np.ndarray:
    t = _t(dur, sr)
    noise = np.diff(rng.standard_normal(t.size + 1))  # first difference = crude highpass
    return level * noise * np.exp(-6 / dur * t)


def growl(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A death-metal growl: noise amplitude-modulated by a low sawtooth, then clipped."""
    t = _t(dur, sr)
    y = rng.standard_normal(t.size) * (0.6 + 0.4 * saw(f, t))
    y = sosfilt(butter(2, [300, 1800], "bandpass", fs=sr, output="sos"), y)
    return np.tanh(2.5 * y) * _env(t.size, sr, 0.03, 0.05)


# ----------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------

PENTATONIC = (0, 2, 4, 7, 9)
MINOR = (0, 2, 3, 5, 7, 8, 10)
POP_PROGRESSIONS = ((0, 7, 9, 5), (0, 9, 5, 7), (5, 7, 4, 9))      # I-V-vi-IV and friends
METAL_PROGRESSIONS = ((0, 8, 10, 0), (0, 5, 7, 3), (0, 3, 8, 7))    # i-VI-VII-i ...


class _Score:
    """A mono buffer that notes and hits are mixed into."""

    def __init__(self, n: int, sr: int):
        self.y = np.zeros(n)
        self.sr = sr

    def add(self, start_s: float, sig: np.ndarray, gain: float = 1.0) -> None:
        i = int(start_s * self.sr)
        if i >= self.y.size or i < 0:
            return
        m = min(sig.size, self.y.size - i)
        self.y[i:i + m] += gain * sig[:m]


def _melody(rng: np.random.Generator, scale: tuple[int, ...], n: int, root: int,
            octave_span: int = 2) -> list[int]:
    """A random walk over scale degrees: mostly steps, sometimes leaps."""
    degrees = [root + 12 * o + s for o in range(octave_span) for s in scale]
    i, out = rng.integers(len(degrees) // 3, 2 * len(degrees) // 3), []
    for _ in range(n):
        i = int(np.clip(i + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]), 0, len(degrees) - 1))
        out.append(degrees[i])
    return out


def _pop_section(s: _Score, rng, t0: float, bars: int, beat: float, key: int, kind: str) -> None:
    sr = s.sr
    prog = POP_PROGRESSIONS[rng.integers(len(POP_PROGRESSIONS))]
    level = {"verse": rng.uniform(0.25, 0.5), "chorus": rng.uniform(0.7, 1.0),
             "bridge": rng.uniform(0.3, 0.6)}[kind]
    guitar = kind == "chorus" and rng.random() < 0.45
    tone = butter(2, rng.uniform(1500, 3000), fs=sr, output="sos")
    notes = _melody(rng, PENTATONIC, bars * 8, key + 60)
    lead = voice if kind != "verse" or rng.random() < 0.4 else pluck
    for b in range(bars):
        root = key + 48 + prog[b % 4]
        bar_t = t0 + b * 4 * beat
        s.add(bar_t, pad([midi_hz(root), midi_hz(root + 4), midi_hz(root + 7)], 4 * beat, sr),
              0.35 * level)
        for k in range(8):                                    # eighth-note melody
            if rng.random() < 0.25:
                continue
            f = midi_hz(notes[b * 8 + k])
            if lead is pluck:
                s.add(bar_t + k * beat / 2, pluck(f, 1.2 * beat, sr, rng.uniform(0.3, 0.7)), 0.5 * level)
            elif k % 2 == 0:
                s.add(bar_t + k * beat / 2, voice(f, beat, sr), 0.4 * level)
        if kind == "chorus":
            for k in range(4):
                s.add(bar_t + k * beat, kick(sr, 0.9 if k % 2 == 0 else 0.0), level)
                if k % 2:
                    s.add(bar_t + k * beat, snare(sr, rng, 0.5), level)
                s.add(bar_t + k * beat + beat / 2, hat(sr, rng), level)
            s.add(bar_t, pluck(midi_hz(root - 12), 4 * beat, sr, 0.3, 1.0), 0.6 * level)  # bass
            if guitar:
                ch = [midi_hz(root - 12), midi_hz(root - 5), midi_hz(root)]
                for k in range(4):
                    s.add(bar_t + k * beat, dist_chord(ch, beat, sr, rng.uniform(2, 5), 1.5, tone),
                          0.35 * level)
        elif rng.random() < 0.5:                              # soft percussion in verses
            for k in range(8):
                s.add(bar_t + k * beat / 2, hat(sr, rng, 0.12, 0.03), level)


def _metal_section(s: _Score, rng, t0: float, bars: int, beat: float, key: int, kind: str) -> None:
    sr = s.sr
    prog = METAL_PROGRESSIONS[rng.integers(len(METAL_PROGRESSIONS))]
    level = {"riff": rng.uniform(0.7, 1.0), "blast": rng.uniform(0.8, 1.0),
             "melodic": rng.uniform(0.3, 0.65), "lead": rng.uniform(0.6, 0.9)}[kind]
    tone = butter(2, rng.uniform(2000, 4000), fs=sr, output="sos")
    gain = rng.uniform(6, 20)
    notes = _melody(rng, MINOR, bars * 8, key + 60)
    growls = kind in ("riff", "blast") and rng.random() < 0.6
    for b in range(bars):
        root = key + 40 + prog[b % 4]
        bar_t = t0 + b * 4 * beat
        power = [midi_hz(root), midi_hz(root + 7), midi_hz(root + 12)]
        if kind == "melodic":                                 # clean arpeggios, sparse drums
            arp = [root + 12, root + 15, root + 19, root + 24]
            for k in range(8):
                s.add(bar_t + k * beat / 2, pluck(midi_hz(arp[k % 4]), beat, sr, 0.6, 2.0), 0.45 * level)
                if k % 2 == 0 and rng.random() < 0.7:
                    s.add(bar_t + k * beat / 2, voice(midi_hz(notes[b * 8 + k]), beat, sr), 0.3 * level)
            if rng.random() < 0.5:
                s.add(bar_t, kick(sr, 0.8), level)
                s.add(bar_t + 2 * beat, snare(sr, rng, 0.4), level)
            continue
        for k in range(16):                                   # double-bass drums, chugs
            tk = bar_t + k * beat / 4
            s.add(tk, kick(sr, 0.9), level)
            if kind == "blast" or k % 8 == 4:
                if kind != "blast" or k % 2:
                    s.add(tk, snare(sr, rng, 0.7), level)
            if k % 2 == 0:
                s.add(tk, hat(sr, rng, 0.25, 0.12 if k == 0 else 0.05), level)
            if kind != "lead" or k % 4 == 0:
                s.add(tk, dist_chord(power, beat / 4, sr, gain, 12.0 if k % 4 else 0.0, tone),
                      0.5 * level)
        if kind == "lead":
            for k in range(8):
                f = midi_hz(notes[b * 8 + k])
                s.add(bar_t + k * beat / 2, dist_chord([f], beat / 2, sr, gain / 2, 0.0, tone), 0.4 * level)
        if growls and rng.random() < 0.7:
            s.add(bar_t, growl(midi_hz(root - 12), 3.5 * beat, sr, rng), 0.5 * level)
        s.add(bar_t, saw(midi_hz(root - 12), _t(4 * beat, sr)) * 0.5, 0.4 * level)  # bass


CROSSOVER_SCALES = (PENTATONIC, MINOR, (0, 2, 4, 5, 7, 9, 11))


def _crossover_section(s: _Score, rng, t0: float, bars: int, beat: float, key: int, kind: str) -> None:
    """A passage both styles play, drawn from the *same* distributions whatever the style.

    Real styles overlap: metal has clean interludes, pop has band choruses with
    an overdriven guitar. Here a ``clean`` passage (plucked arpeggios, a sung
    line, maybe a pad and soft drums) or a ``band`` passage (moderately
    distorted chords on the beat, backbeat drums, bass, a sung line) is
    rendered by one function for both styles, with its own tempo, so that a
    5-second clip of it carries no trace of the track's style. Only the rest
    of the track tells the styles apart, which caps the clip-level accuracy
    well below 100 %, while a vote over a whole track can still be right.
    """
    sr = s.sr
    scale = CROSSOVER_SCALES[rng.integers(len(CROSSOVER_SCALES))]
    prog = (POP_PROGRESSIONS + METAL_PROGRESSIONS)[rng.integers(6)]
    level = rng.uniform(0.35, 0.9)
    tone = butter(2, rng.uniform(1500, 4000), fs=sr, output="sos")
    notes = _melody(rng, scale, bars * 8, key + 60)
    drums = kind == "band" or rng.random() < 0.5
    for b in range(bars):
        root = key + 48 + prog[b % 4]
        bar_t = t0 + b * 4 * beat
        chord = [root, root + scale[2 % len(scale)], root + 7]
        if kind == "clean":
            if rng.random() < 0.5:
                s.add(bar_t, pad([midi_hz(m) for m in chord], 4 * beat, sr), 0.3 * level)
            for k in range(8):
                s.add(bar_t + k * beat / 2, pluck(midi_hz(chord[k % 3] + 12 * (k // 3 % 2)), beat, sr,
                                                  rng.uniform(0.3, 0.7), rng.uniform(1.5, 3.5)), 0.4 * level)
        else:
            power = [midi_hz(root - 12), midi_hz(root - 5), midi_hz(root)]
            for k in range(4):
                s.add(bar_t + k * beat, dist_chord(power, beat, sr, rng.uniform(3, 9), 2.0, tone), 0.4 * level)
            s.add(bar_t, saw(midi_hz(root - 24), _t(4 * beat, sr)) * 0.4, 0.4 * level)
        for k in range(0, 8, 2):
            if rng.random() < 0.8:
                s.add(bar_t + k * beat / 2, voice(midi_hz(notes[b * 8 + k]), beat, sr), 0.35 * level)
        if drums:
            for k in range(4):
                if k % 2 == 0:
                    s.add(bar_t + k * beat, kick(sr, 0.8), level)
                else:
                    s.add(bar_t + k * beat, snare(sr, rng, 0.5), level)
                s.add(bar_t + k * beat + beat / 2, hat(sr, rng, 0.2), level)


def compose_track(style: str, rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """Compose one track of ``style`` ('cpop' or 'metal') as float32 in [-1, 1]."""
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; choose from {STYLES}")
    s = _Score(int(seconds * sr), sr)
    key = int(rng.integers(0, 12))
    if style == "cpop":
        tempo, kinds, weights, render = (rng.uniform(70, 128), ("verse", "chorus", "bridge", "clean", "band"),
                                         (0.3, 0.35, 0.1, 0.1, 0.15), _pop_section)
    else:
        tempo, kinds, weights, render = (rng.uniform(95, 190), ("riff", "blast", "melodic", "lead", "clean", "band"),
                                         (0.3, 0.1, 0.2, 0.15, 0.15, 0.1), _metal_section)
    t = 0.0
    while t < seconds:
        kind = kinds[rng.choice(len(kinds), p=weights)]
        bars = int(rng.choice([4, 8]))
        if kind in ("clean", "band"):                       # shared passages, shared tempo range
            beat = 60.0 / rng.uniform(80, 140)
            _crossover_section(s, rng, t, bars, beat, key, kind)
        else:
            beat = 60.0 / tempo * (2.0 if style == "metal" and kind == "melodic" and rng.random() < 0.5 else 1.0)
            render(s, rng, t, bars, beat, key, kind)
        t += bars * 4 * beat
    y = s.y + rng.uniform(1e-4, 3e-3) * rng.standard_normal(s.y.size)   # noise floor
    room = butter(1, rng.uniform(2500, 5000), fs=sr, output="sos")      # per-track colour
    y = sosfilt(room, y)
    return (0.95 * y / np.max(np.abs(y))).astype(np.float32)


def _track_path(root: Path, style: str, i: int) -> Path:
    return root / style / f"{style}_{i:03d}.flac"


def _write_one(args: tuple[Path, str, int, int, SynthSpec]) -> str:
    root, style, si, i, spec = args
    path = _track_path(root, style, i)
    rng = np.random.default_rng([spec.seed, si, i])
    seconds = rng.uniform(spec.min_seconds, spec.max_seconds)
    y = compose_track(style, rng, seconds, spec.sample_rate)
    tmp = path.with_name(f".{path.stem}.tmp.flac")
    sf.write(tmp, y, spec.sample_rate, subtype="PCM_16")
    os.replace(tmp, path)
    return str(path)


def compose_tracks(root: str | Path, files: list[str], spec: SynthSpec = SynthSpec()) -> Path:
    """Write only the tracks ``files`` (``"<style>/<style>_<i>.flac"``) of ``spec``'s data under ``root``.

    Each track depends only on ``(spec.seed, style, i)``, so these are the very
    files :func:`generate_dataset` writes: a shipped net's test tracks can be
    regenerated without composing the other 200 (:mod:`thesis_lib.pretrained`).
    """
    root = Path(root)
    for f in files:
        style, _, name = f.partition("/")
        stem = Path(name).stem
        if style not in STYLES or not stem.startswith(style + "_") or not stem[len(style) + 1:].isdigit():
            raise ValueError(f"{f!r} is not a track of the built-in data (expected e.g. 'cpop/cpop_007.flac')")
        i = int(stem[len(style) + 1:])
        if i >= spec.tracks_per_style:
            raise ValueError(f"{f!r}: the spec has only {spec.tracks_per_style} tracks per style")
        (root / style).mkdir(parents=True, exist_ok=True)
        if not _track_path(root, style, i).is_file():
            _write_one((root, style, STYLES.index(style), i, spec))
    return root


def generate_dataset(root: str | Path, spec: SynthSpec = SynthSpec(), jobs: int | None = None,
                     progress: bool = True) -> Path:
    """Write the default dataset as ``root/<style>/<track>.flac``; return ``root``.

    A finished folder carries ``synth.json`` with the spec; calling again with
    the same spec returns at once, and an interrupted run resumes where it
    stopped (each track is written to a temporary name, then renamed).
    """
    root = Path(root)
    marker = root / "synth.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == spec.key():
        return root
    for style in STYLES:
        (root / style).mkdir(parents=True, exist_ok=True)
    todo = [(root, st, si, i, spec) for si, st in enumerate(STYLES)
            for i in range(spec.tracks_per_style) if not _track_path(root, st, i).is_file()]
    jobs = jobs or os.cpu_count() or 1
    bar = tqdm(total=len(todo), desc="composing default tracks", unit="track", disable=not progress)
    if jobs == 1 or len(todo) <= 1:
        for item in todo:
            _write_one(item)
            bar.update()
    else:
        with ProcessPoolExecutor(jobs) as pool:
            for _ in pool.map(_write_one, todo, chunksize=1):
                bar.update()
    bar.close()
    marker.write_text(json.dumps({"key": spec.key(), "spec": asdict(spec), "styles": list(STYLES)}, indent=1))
    return root

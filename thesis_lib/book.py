"""What the book's chapters share: data, a trained net, audio players, small tables.

Every chapter of the book must run on its own (Colab opens one notebook at a
time), so whatever it needs from an earlier chapter it asks for here:

* :func:`dataset` composes and prepares the built-in synthetic data (cached);
* :func:`trained_model` returns a trained net, reusing a finished run of the
  same data and settings from the cache (``default_cache_dir()/book/<key>``)
  or training one through :func:`thesis_lib.reproduce.reproduce`.

``fast=True`` is the small setting that CI and a quick look use: four short
tracks per style and two epochs, so a chapter runs in well under a minute.
``fast=False`` is the thesis's own experiment (110 tracks per style, 4,800
training clips, batch 480, 20 epochs).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import THESIS, ThesisConfig
from .data import PreparedDataset, Split, default_cache_dir, prepare_dataset, split_dataset
from .synth import SynthSpec, generate_dataset
from .train import TrainSettings

FAST_SPEC = SynthSpec(tracks_per_style=4, min_seconds=66.0, max_seconds=80.0)
"""The small synthetic set of ``fast`` mode: 4 tracks of 66-80 s per style (1-4 clips each)."""

FAST_EPOCHS = 2
FAST_BATCH = 8

STATIC_ENV = "THESIS_BOOK_STATIC"
"""Set to 1 while the book is executed for its static HTML (no live widgets then)."""


def in_colab() -> bool:
    return "google.colab" in sys.modules


def static_build() -> bool:
    """True while the chapters are executed to build the static HTML book.

    Live ipywidgets need a kernel; in the built pages only the precomputed
    variants (see :mod:`thesis_lib.widgets`) are shown.
    """
    return os.environ.get(STATIC_ENV, "") not in ("", "0")


def synth_spec(fast: bool) -> SynthSpec:
    return FAST_SPEC if fast else SynthSpec()


def train_settings(fast: bool, epochs: int | None = None, device: str = "auto", seed: int = 0) -> TrainSettings:
    """The thesis's optimiser; ``fast`` only shrinks the batch (to get a few updates) and the epochs."""
    if fast:
        return TrainSettings.thesis(batch_size=FAST_BATCH, epochs=epochs or FAST_EPOCHS, device=device, seed=seed)
    return TrainSettings.thesis(**({"epochs": epochs} if epochs else {}), device=device, seed=seed)


def dataset(fast: bool = True, spec: SynthSpec | None = None, cfg: ThesisConfig = THESIS,
            progress: bool = False) -> PreparedDataset:
    """Compose (once) and prepare (once) the built-in data; both steps are cached."""
    from .reproduce import default_data_dir

    spec = spec or synth_spec(fast)
    root = generate_dataset(default_data_dir(spec), spec, progress=progress)
    return prepare_dataset(root, cfg=cfg, progress=progress)


@dataclass
class BookRun:
    """A trained net and everything a chapter wants to show about it."""

    model: "object"
    styles: list[str]
    metrics: dict
    history: list[dict]
    path: Path
    dataset: PreparedDataset
    split: Split
    spec: SynthSpec
    settings: TrainSettings
    reused: bool = False
    extra: dict = field(default_factory=dict)

    def test_clip(self, style: str, index: int = 0) -> np.ndarray:
        """The ``index``-th test clip of ``style`` (wraps around), as float32 samples."""
        clips = [i for i in self.split.test if self.dataset.styles[self.dataset.style_of[i]] == style]
        if not clips:
            raise ValueError(f"no test clip of style {style!r}; styles are {self.styles}")
        return np.array(self.dataset.clips[clips[index % len(clips)]], dtype=np.float32)  # a writable copy


RESULT_SETTINGS = ("learning_rate", "batch_size", "epochs", "momentum", "test_batch_size", "seed",
                   "calibrate_batchnorm")
"""The fields of :class:`TrainSettings` that change a run's result (and so its cache key)."""


def run_key(spec: SynthSpec, settings: TrainSettings, split: str, per_style: tuple[int, int]) -> str:
    """Cache key of a run: data, the settings that change its result, split and sizes.

    Where and how fast it ran (device, implementation switches) is not part of the key.
    """
    s = {k: v for k, v in asdict(settings).items() if k in RESULT_SETTINGS}
    blob = json.dumps({"spec": asdict(spec), "settings": s, "split": split, "per_style": per_style},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def trained_model(fast: bool = True, split: str = "track", epochs: int | None = None,
                  device: str = "auto", seed: int = 0, progress: bool = False,
                  log=None, cfg: ThesisConfig = THESIS) -> BookRun:
    """A net trained on the built-in data: loaded from the cache, or trained now.

    The run lives in ``default_cache_dir()/book/<key>``; the key covers the
    synthetic data, the optimiser settings, the split and the clip counts, so
    any chapter (or ``make book``'s main job) that asks for the same run gets
    the same files. A run counts as finished once ``book.json`` is written.
    """
    from .checkpoint import load_model

    spec = synth_spec(fast)
    settings = train_settings(fast, epochs, device, seed)
    per_style = (cfg.train_per_style, cfg.test_per_style)
    out = default_cache_dir() / "book" / run_key(spec, settings, split, per_style)
    done = out / "book.json"
    reused = done.is_file()
    if not reused:
        with _lock(out.with_name(out.name + ".lock")):  # two notebooks asking at once train it once
            reused = done.is_file()
            if not reused:
                _train_run(out, done, spec, cfg, settings, split, progress, log)
    model, styles, _ = load_model(out / "model.pt")
    metrics = json.loads((out / "metrics.json").read_text())
    ds = dataset(fast, spec, cfg)
    sp = split_dataset(ds, *per_style, split=split, seed=settings.seed)
    return BookRun(model, styles, metrics, list(metrics.get("epochs", [])), out, ds, sp, spec, settings, reused)


def _lock(path: Path):
    """An exclusive file lock (POSIX); a no-op where fcntl is missing."""
    import contextlib

    @contextlib.contextmanager
    def held():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows
                yield
                return
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    return held()


def _train_run(out: Path, done: Path, spec: SynthSpec, cfg: ThesisConfig, settings: TrainSettings,
               split: str, progress: bool, log) -> None:
    import matplotlib.pyplot as plt

    from .reproduce import reproduce

    if out.exists():
        shutil.rmtree(out)  # an interrupted run: start again
    before = set(plt.get_fignums())
    reproduce(out, spec, cfg, settings, split=split, progress=progress, log=log or (lambda m: None))
    for num in set(plt.get_fignums()) - before:  # reproduce saved figure21.png; do not show it twice
        plt.close(num)
    done.write_text(json.dumps({"spec": asdict(spec), "settings": asdict(settings), "split": split}, indent=1))


# ----------------------------------------------------------------------------
# Audio players and small HTML pieces (embedded: they work in the static book)
# ----------------------------------------------------------------------------

def audio_html(y: np.ndarray, sample_rate: int = THESIS.sample_rate, label: str = "",
               max_seconds: float | None = 6.0) -> str:
    """An ``<audio>`` player with the clip embedded as a 16-bit WAV data URI, peak 0.9.

    ``max_seconds`` keeps pages small (longer signals are cut). The element
    carries ``data-seconds`` (its length), which the browser test compares
    with the duration the browser decodes.
    """
    from .audio import wav_bytes

    y = np.asarray(y, dtype=np.float32).ravel()
    if max_seconds is not None:
        y = y[: int(max_seconds * sample_rate)]
    if y.size == 0:
        raise ValueError("empty signal: nothing to play")
    b64 = base64.b64encode(wav_bytes(y, sample_rate)).decode("ascii")
    seconds = y.size / sample_rate
    cap = f'<div class="tl-audio-label">{html.escape(label)}</div>' if label else ""
    return (f'<div class="tl-audio">{cap}<audio controls preload="auto" data-seconds="{seconds:.4f}" '
            f'src="data:audio/wav;base64,{b64}"></audio></div>')


class HTML:
    """Minimal rich-display object (``_repr_html_``) so this module needs no IPython."""

    def __init__(self, data: str):
        self.data = data

    def _repr_html_(self) -> str:
        return self.data

    def __str__(self) -> str:
        return self.data


def player(y: np.ndarray, sample_rate: int = THESIS.sample_rate, label: str = "") -> HTML:
    """:func:`audio_html` as a displayable object (the last line of a cell shows it)."""
    return HTML(audio_html(y, sample_rate, label))


def players(clips: dict[str, np.ndarray], sample_rate: int = THESIS.sample_rate) -> HTML:
    """Several labelled players side by side."""
    inner = "".join(audio_html(y, sample_rate, label) for label, y in clips.items())
    return HTML(f'<div class="tl-players" style="display:flex;flex-wrap:wrap;gap:1em">{inner}</div>')


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of dicts (floats to 4 significant digits)."""
    columns = columns or list(rows[0])

    def fmt(v):
        return (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def network_table(cfg: ThesisConfig = THESIS) -> list[dict]:
    """Per convolution: filters, length, stride, output length, receptive field, hop, lowest frequency."""
    rows = []
    for i, (spec, n, (rf, hop), low) in enumerate(zip(cfg.convs, cfg.conv_output_lengths(),
                                                      cfg.receptive_fields(), cfg.lowest_frequencies()), 1):
        rows.append({"layer": f"conv{i}", "filters": spec.filters, "length": spec.length, "stride": spec.stride,
                     "output steps": n, "receptive field (samples)": rf,
                     "receptive field (ms)": round(1000 * rf / cfg.sample_rate, 1),
                     "hop (samples)": hop, "lowest frequency (Hz)": low})
    return rows


def clips_per_track(ds: PreparedDataset) -> dict[str, list[int]]:
    """How many clips each track gave, per style (sorted, longest first)."""
    counts = np.bincount(ds.track_of, minlength=len(ds.tracks))
    return {s: sorted((int(counts[t]) for t in np.flatnonzero(ds.track_style == i)), reverse=True)
            for i, s in enumerate(ds.styles)}


def leakage(ds: PreparedDataset, sp: Split) -> dict:
    """How many test clips come from tracks that also have clips in the training set."""
    train_tracks = set(ds.track_of[sp.train].tolist())
    shared = [i for i in sp.test if ds.track_of[i] in train_tracks]
    return {"test clips": int(len(sp.test)), "from tracks also in training": len(shared),
            "share": float(len(shared) / max(len(sp.test), 1))}


def frequency_responses(weights: np.ndarray, sample_rate: float, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude responses (dB) of 1-D filters ``(filters, in_channels, length)``.

    The response of a multi-channel filter is the RMS over its input channels of each
    channel's response; returns ``(frequencies in Hz, dB array of shape (filters, n))``.
    """
    from scipy.signal import freqz

    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        w = w[:, None, :]
    out = np.zeros((w.shape[0], n))
    freqs = None
    for f in range(w.shape[0]):
        mags = []
        for c in range(w.shape[1]):
            freqs, h = freqz(w[f, c][::-1], worN=n, fs=sample_rate)  # flip: torch correlates
            mags.append(np.abs(h) ** 2)
        out[f] = 10 * np.log10(np.mean(mags, axis=0) + 1e-12)
    return freqs, out


def plot_filters(model, layer: str, title: str = ""):
    """The 8 filters of one convolution (thesis Figures 24-26): one panel per filter,
    one line per input channel."""
    import matplotlib.pyplot as plt

    conv = dict(zip(("conv1", "conv2", "conv3"), model.conv_layers()))[layer]
    w = conv.weight.detach().cpu().numpy()
    fig, axes = plt.subplots(2, 4, figsize=(9, 3.4), sharex=True, sharey=True)
    for k, ax in enumerate(axes.flat[: w.shape[0]]):
        ax.plot(w[k].T, lw=0.7)
        ax.set_title(f"{layer} filter {k + 1}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or f"{layer}: {w.shape[0]} filters of length {w.shape[2]} "
                          f"({w.shape[1]} input channel{'s' if w.shape[1] > 1 else ''})", fontsize=10)
    fig.tight_layout()
    return fig


def layer_input_rates(cfg: ThesisConfig = THESIS) -> list[float]:
    """Sample rate of the signal each convolution reads: 8000, 4000, 1000 Hz for the thesis net."""
    rates, r = [], float(cfg.sample_rate)
    for spec in cfg.convs:
        rates.append(r)
        r /= spec.stride
    return rates


def exp_timing(device: str = "cpu", values: int = 230_400, repeats: int = 1000) -> float:
    """Seconds for ``repeats`` element-wise ``exp()`` of ``values`` float32 numbers (thesis 5.1)."""
    import time

    import torch

    x = torch.rand(values, device=device)
    torch.exp(x)  # warm-up (CUDA context, kernels)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        y = torch.exp(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    del y
    return time.perf_counter() - t0


def epoch_timing(batches: int, batch_size: int = THESIS.batch_size, device: str = "cpu", seed: int = 0) -> float:
    """Seconds per training batch of the thesis net (random clips, Nesterov SGD), after one warm-up batch."""
    import time

    import torch
    import torch.nn.functional as F

    from .model import StyleNet

    torch.manual_seed(seed)
    dev = torch.device(device)
    model = StyleNet().to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=THESIS.learning_rate, momentum=THESIS.momentum, nesterov=True)
    x = 0.3 * torch.randn(batch_size, 1, THESIS.clip_samples, device=dev)
    y = torch.randint(0, 2, (batch_size,), device=dev)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / batches


def track_path(ds: PreparedDataset, track: int) -> Path:
    """The audio file of track number ``track`` of a prepared dataset."""
    return Path(ds.report["data"]) / ds.tracks[track]


def plot_preparation(y: np.ndarray, cfg: ThesisConfig = THESIS, title: str = ""):
    """A whole normalised track: the trimmed ends shaded, the 5-second clips numbered,
    the dropped remainder hatched."""
    import matplotlib.pyplot as plt

    sr = cfg.sample_rate
    t = np.arange(y.size) / sr
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.plot(t, y, lw=0.3, color="0.2")
    end = y.size / sr
    ax.axvspan(0, cfg.trim_seconds, color="tab:red", alpha=0.18, label=f"dropped ({cfg.trim_seconds:g} s at each end)")
    ax.axvspan(end - cfg.trim_seconds, end, color="tab:red", alpha=0.18)
    body = max(y.size - 2 * cfg.trim_samples, 0)
    n = body // cfg.clip_samples
    for k in range(n):
        a = cfg.trim_seconds + k * cfg.clip_seconds
        ax.axvspan(a, a + cfg.clip_seconds, color="tab:blue" if k % 2 == 0 else "tab:cyan", alpha=0.15,
                   label="5-second clips" if k == 0 else None)
    rest = cfg.trim_seconds + n * cfg.clip_seconds
    if rest < end - cfg.trim_seconds:
        ax.axvspan(rest, end - cfg.trim_seconds, fill=False, hatch="///", edgecolor="0.5", lw=0,
                   label="remainder (dropped)")
    ax.set(xlim=(0, end), xlabel="time (s)", ylabel="amplitude", title=title or f"{n} clips from a {end:.0f}-s track")
    ax.legend(loc="upper right", fontsize=7, ncols=3)
    fig.tight_layout()
    return fig


def plot_responses(model, layer: str, cfg: ThesisConfig = THESIS, title: str = ""):
    """Magnitude responses of the 8 filters of ``layer`` at the sample rate of that layer's input."""
    import matplotlib.pyplot as plt

    i = ("conv1", "conv2", "conv3").index(layer)
    w = model.conv_layers()[i].weight.detach().cpu().numpy()
    rate = layer_input_rates(cfg)[i]
    f, db = frequency_responses(w, rate)
    fig, ax = plt.subplots(figsize=(9, 2.6))
    for k in range(db.shape[0]):
        ax.plot(f, db[k], lw=0.9, label=f"filter {k + 1}")
    ax.set(xlabel=f"frequency (Hz; {layer} reads a signal sampled at {rate:g} Hz)", ylabel="gain (dB)",
           title=title or f"{layer}: frequency responses", xlim=(0, rate / 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncols=4)
    fig.tight_layout()
    return fig


def filter_stats(models: dict, cfg: ThesisConfig = THESIS) -> list[dict]:
    """Mean absolute weight and dominant frequency per layer for each named model."""
    rows = []
    rates = layer_input_rates(cfg)
    for name, model in models.items():
        for i, conv in enumerate(model.conv_layers()):
            w = conv.weight.detach().cpu().numpy()
            f, db = frequency_responses(w, rates[i])
            peaks = f[np.argmax(db, axis=1)]
            rows.append({"net": name, "layer": f"conv{i + 1}", "mean abs weight": float(np.abs(w).mean()),
                         "max abs weight": float(np.abs(w).max()),
                         "median peak frequency (Hz)": float(np.median(peaks))})
    return rows


def finished_runs(fast: bool | None = None) -> list[dict]:
    """Facts of the finished runs in the cache (optionally only those of the fast or full data)."""
    rows = []
    for done in sorted((default_cache_dir() / "book").glob("*/book.json")):
        info = json.loads(done.read_text())
        if fast is not None and (SynthSpec(**info["spec"]) == FAST_SPEC) != fast:
            continue
        try:
            m = json.loads((done.parent / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append({"path": str(done.parent), "split": info.get("split"), "device": m.get("device"),
                     "epochs": len(m.get("epochs", [])), "seconds_per_epoch": m.get("seconds_per_epoch"),
                     "test_accuracy": m.get("test_accuracy")})
    return rows


def plot_signals(signals: dict[str, np.ndarray], kind: str = "waveform", sample_rate: int = THESIS.sample_rate,
                 title: str = ""):
    """One row per signal, waveform or spectrogram (window 512, 50 % overlap): thesis Figures 22-23."""
    import matplotlib.pyplot as plt

    from . import plots

    if kind not in ("waveform", "spectrogram"):
        raise ValueError("kind must be 'waveform' or 'spectrogram'")
    n = len(signals)
    fig, axes = plt.subplots(n, 1, figsize=(8, (1.5 if kind == "waveform" else 1.9) * n + 0.4),
                             sharex=True, squeeze=False)
    draw = plots.waveform if kind == "waveform" else plots.spectrogram
    for ax, (label, y) in zip(axes[:, 0], signals.items()):
        draw(np.asarray(y), sample_rate, title=label, ax=ax)
        if ax is not axes[-1, 0]:
            ax.set_xlabel("")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def signal_panel(y: np.ndarray, label: str, sample_rate: int = THESIS.sample_rate, note: str = "") -> str:
    """HTML for one precomputed variant: waveform and spectrogram side by side, a player, a note."""
    import matplotlib.pyplot as plt

    from . import plots
    from .widgets import figure_html

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 2.4))
    plots.waveform(np.asarray(y), sample_rate, title=f"{label}: waveform", ax=a)
    plots.spectrogram(np.asarray(y), sample_rate, title=f"{label}: spectrogram", ax=b)
    fig.tight_layout()
    extra = f'<div class="tl-note">{html.escape(note)}</div>' if note else ""
    return figure_html(fig) + audio_html(y, sample_rate, label) + extra

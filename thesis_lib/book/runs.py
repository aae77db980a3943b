"""The book's runs: the built-in data and a trained net, cached, for any chapter that asks.

Every chapter of the book must run on its own (Colab opens one notebook at a
time), so whatever it needs from an earlier chapter it asks for here:

* :func:`dataset` composes and prepares the built-in synthetic data (cached);
* :func:`trained_model` returns a trained net, reusing a finished run of the
  same data and settings from the cache (``default_cache_dir()/book/<key>``)
  or training one through :func:`thesis_lib.reproduce.reproduce`.

``small=True`` is the small setting that CI and a quick look use: four short
tracks per style and two epochs, so a chapter runs in well under a minute.
``small=False`` is the thesis's own experiment (110 tracks per style, 4,800
training clips, batch 480, 20 epochs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import THESIS, ThesisConfig, TrainSettings
from ..data import PreparedDataset, Split, default_cache_dir, prepare_dataset, split_dataset
from ..synth import SynthSpec, generate_dataset

SMALL_SPEC = SynthSpec(tracks_per_style=4, min_seconds=66.0, max_seconds=80.0)
"""The small synthetic set of ``small`` mode: 4 tracks of 66-80 s per style (1-4 clips each)."""


SMALL_EPOCHS = 2


SMALL_BATCH = 8


def synth_spec(small: bool) -> SynthSpec:
    return SMALL_SPEC if small else SynthSpec()


def train_settings(small: bool, epochs: int | None = None, device: str = "auto", seed: int = 0) -> TrainSettings:
    """The thesis's optimiser; ``small`` only shrinks the batch (to get a few updates) and the epochs."""
    if small:
        return TrainSettings.thesis(batch_size=SMALL_BATCH, epochs=epochs or SMALL_EPOCHS, device=device, seed=seed)
    return TrainSettings.thesis(**({"epochs": epochs} if epochs else {}), device=device, seed=seed)


def dataset(small: bool = True, spec: SynthSpec | None = None, cfg: ThesisConfig = THESIS,
            progress: bool = False) -> PreparedDataset:
    """Compose (once) and prepare (once) the built-in data; both steps are cached."""
    from ..reproduce import default_data_dir

    spec = spec or synth_spec(small)
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

    def test_indices(self, style: str) -> list[int]:
        """Dataset indices of the test clips of ``style``, in the split's order."""
        return [int(i) for i in self.split.test if self.dataset.styles[self.dataset.style_of[i]] == style]

    def test_clip(self, style: str, index: int = 0) -> np.ndarray:
        """The ``index``-th test clip of ``style`` (wraps around), as float32 samples."""
        clips = self.test_indices(style)
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


def trained_model(small: bool = True, split: str = "track", epochs: int | None = None,
                  device: str = "auto", seed: int = 0, progress: bool = False,
                  log=None, cfg: ThesisConfig = THESIS) -> BookRun:
    """A net trained on the built-in data: loaded from the cache, or trained now.

    The run lives in ``default_cache_dir()/book/<key>``; the key covers the
    synthetic data, the optimiser settings, the split and the clip counts, so
    any chapter (or ``make book``'s main job) that asks for the same run gets
    the same files. A run counts as finished once ``book.json`` is written.
    """
    from ..checkpoint import load_model

    spec = synth_spec(small)
    settings = train_settings(small, epochs, device, seed)
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
    ds = dataset(small, spec, cfg)
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

    from ..reproduce import reproduce

    if out.exists():
        shutil.rmtree(out)  # an interrupted run: start again
    before = set(plt.get_fignums())
    reproduce(out, spec, cfg, settings, split=split, progress=progress, log=log or (lambda m: None))
    for num in set(plt.get_fignums()) - before:  # reproduce saved figure21.png; do not show it twice
        plt.close(num)
    done.write_text(json.dumps({"spec": asdict(spec), "settings": asdict(settings), "split": split}, indent=1))


def finished_runs(small: bool | None = None) -> list[dict]:
    """Facts of the finished runs in the cache (optionally only those of the small or full data)."""
    rows = []
    for done in sorted((default_cache_dir() / "book").glob("*/book.json")):
        info = json.loads(done.read_text())
        if small is not None and (SynthSpec(**info["spec"]) == SMALL_SPEC) != small:
            continue
        try:
            m = json.loads((done.parent / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append({"path": str(done.parent), "split": info.get("split"), "device": m.get("device"),
                     "impl": m.get("impl", "reference"), "epochs": len(m.get("epochs", [])),
                     "train_clips": m.get("n_train"),
                     "seconds_per_epoch": m.get("seconds_per_epoch"),
                     "test_accuracy": m.get("test_accuracy")})
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


def track_path(ds: PreparedDataset, track: int) -> Path:
    """The audio file of track number ``track`` of a prepared dataset."""
    return Path(ds.report["data"]) / ds.tracks[track]

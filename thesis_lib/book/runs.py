"""The book's runs: the built-in data and a trained net, cached, for any chapter that asks.

Every chapter of the book must run on its own (Colab opens one notebook at a
time), so whatever it needs from an earlier chapter it asks for here:

* :func:`dataset` composes and prepares the built-in synthetic data (cached);
* :func:`trained_model` returns a trained net, reusing a finished run of the
  same data and settings from the cache (``default_cache_dir()/book/<key>``)
  or training one through :func:`thesis_lib.reproduce.reproduce`; when the
  run asked for is the one the package ships (:mod:`thesis_lib.pretrained`)
  and none is cached, it returns the shipped net with its regenerated test
  clips (:func:`pretrained_run`) instead of training for a quarter of an hour;
* :func:`reader_run` is what chapters 4-7 call: the run above, or one on the
  reader's own music (``DATA``) and/or net (``MODEL``), so a reader can follow
  the whole book on their own collection (issue 11).

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
from typing import Callable

import numpy as np

from ..config import THESIS, ThesisConfig, TrainSettings
from ..data import DatasetError, PreparedDataset, Split, default_cache_dir, prepare_dataset, split_dataset
from ..synth import SynthSpec, compose_tracks, generate_dataset

SMALL_SPEC = SynthSpec(tracks_per_style=4, min_seconds=66.0, max_seconds=80.0)
"""The small synthetic set of ``small`` mode: 4 tracks of 66-80 s per style (1-4 clips each)."""


SMALL_EPOCHS = 2


PRETRAINED = "thesis-synth"
"""The shipped net of the book's thesis-sized run (split by track, seed 0), exported from ``make book``'s main job."""


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
    spec: SynthSpec | None   # None: the reader's own music (:func:`reader_run`)
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

    def style_pair(self, content: str | None = None, target: str | None = None) -> tuple[str, str]:
        """The styles chapters 6 and 7 dream from (``content``) and toward (``target``).

        ``None`` picks the run's first style (C-pop on the built-in data) for
        ``content`` and the first other one (metal) for ``target``, so the
        chapters need no style names of their own; a name the run does not know
        is a :class:`ValueError` listing the run's styles.
        """
        for role, name in (("CONTENT", content), ("TARGET", target)):
            if name is not None and name not in self.styles:
                raise ValueError(f"{role} = {name!r} is not a style of this run; its styles are {self.styles}")
        content = content or next(s for s in self.styles if s != target)
        target = target or next(s for s in self.styles if s != content)
        if content == target:
            raise ValueError(f"CONTENT and TARGET are both {content!r}; pick two different styles of {self.styles}")
        return content, target


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
                  log=None, cfg: ThesisConfig = THESIS, pretrained: bool = True,
                  shipped_first: bool = False) -> BookRun:
    """A net trained on the built-in data: loaded from the cache, or trained now.

    The run lives in ``default_cache_dir()/book/<key>``; the key covers the
    synthetic data, the optimiser settings, the split and the clip counts, so
    any chapter (or ``make book``'s main job) that asks for the same run gets
    the same files. A run counts as finished once ``book.json`` is written.
    With ``pretrained`` (the default) a run that is not cached but is the one
    the package ships comes from :func:`pretrained_run`, not from training;
    ``make book``'s main job passes ``pretrained=False`` and trains its own.

    ``shipped_first``: the shipped net even when a trained run is cached (chapters
    5-7 analyse it). What a dream looks like depends on the bits of the weights,
    and a net trained on another machine, or from another seed, differs in them:
    with the shipped net's fixed weights the prose of those chapters describes
    what every reader's build shows, wherever ``make book`` trained its own net.
    """
    from ..checkpoint import load_model

    spec = synth_spec(small)
    settings = train_settings(small, epochs, device, seed)
    per_style = (cfg.train_per_style, cfg.test_per_style)
    key = run_key(spec, settings, split, per_style)
    out = default_cache_dir() / "book" / key
    done = out / "book.json"
    reused = done.is_file()
    shipped = shipped_net_for(key) if (pretrained or shipped_first) and cfg == THESIS else None
    if shipped and shipped_first:
        run = pretrained_run(shipped, device, cfg, progress)
        run.extra["shipped_first"] = True
        return run
    if not reused and shipped:
        if log:
            log(f"no trained run {key} is cached: using the shipped net {shipped!r} (make book trains its own)")
        return pretrained_run(shipped, device, cfg, progress)
    if not reused:
        reused = _once(out, lambda: _train_run(out, done, spec, cfg, settings, split, progress, log))
    model, styles, _ = load_model(out / "model.pt")
    metrics = json.loads((out / "metrics.json").read_text())
    ds = dataset(small, spec, cfg)
    sp = split_dataset(ds, *per_style, split=split, seed=settings.seed)
    return BookRun(model, styles, metrics, list(metrics.get("epochs", [])), out, ds, sp, spec, settings, reused)


def shipped_net_for(key: str) -> str | None:
    """Name of the shipped net whose training run has cache key ``key``, if the package has one."""
    from .. import pretrained

    for name, entry in pretrained.manifest().items():
        if entry.get("data", {}).get("run_key") == key:
            return name
    return None


def _first_clip(ds: PreparedDataset) -> dict[int, int]:
    """``{track: index of its first clip}`` (a track's clips are consecutive in a prepared dataset)."""
    tracks, first = np.unique(ds.track_of, return_index=True)
    return dict(zip(tracks.tolist(), first.tolist()))


def test_set_of(ds: PreparedDataset, clips: np.ndarray) -> dict[str, list[int]]:
    """Clips of ``ds`` as ``{track file: [clip numbers within that track]}``: portable across preparations."""
    first_of = _first_clip(ds)
    out: dict[str, list[int]] = {}
    for i in np.sort(np.asarray(clips)):
        t = int(ds.track_of[i])
        out.setdefault(ds.tracks[t], []).append(int(i) - first_of[t])
    return out


def clips_of(ds: PreparedDataset, test_set: dict[str, list[int]]) -> np.ndarray:
    """Indices into ``ds`` of a :func:`test_set_of` mapping; :class:`DatasetError` when a clip is not there."""
    index = {name: t for t, name in enumerate(ds.tracks)}
    counts = np.bincount(ds.track_of, minlength=len(ds.tracks))
    first_of = _first_clip(ds)
    rows = []
    for name, numbers in test_set.items():
        if name not in index:
            raise DatasetError(f"{ds.path}: the track {name!r} of the test set is not in the prepared data")
        t = index[name]
        bad = [c for c in numbers if not 0 <= c < counts[t]]
        if bad:
            raise DatasetError(f"{ds.path}: {name!r} has {counts[t]} clips, the test set asks for clip(s) {bad}")
        rows += [first_of[t] + c for c in numbers]
    return np.sort(np.asarray(rows, np.int64))


def pretrained_run(name: str = PRETRAINED, device: str = "auto", cfg: ThesisConfig = THESIS,
                   progress: bool = False) -> BookRun:
    """The shipped net ``name`` as a :class:`BookRun`, with the very test clips of its training run.

    Only its test tracks are composed and prepared (about a tenth of the
    built-in data, seconds), unless the whole data is already here. The run has
    no training clips (``split.train`` is empty) and ``extra["pretrained"]``
    names the net, so a chapter can say where its numbers come from
    (:func:`run_origin`).
    """
    from .. import pretrained
    from ..reproduce import default_data_dir
    from ..runtime import select_device

    entry = pretrained.info(name)
    data = entry.get("data", {})
    if data.get("kind") != "synth":
        raise ValueError(f"the shipped net {name!r} was not trained on the built-in data; load it with "
                         f"thesis_lib.pretrained.load({name!r})")
    spec = SynthSpec(**data["spec"])
    if (default_data_dir(spec) / "synth.json").is_file():     # the whole built-in data is here already
        ds = dataset(False, spec, cfg, progress)
    else:
        root = compose_tracks(default_cache_dir() / "synth" / f"{spec.key()}-test", sorted(data["test_set"]), spec)
        ds = prepare_dataset(root, cfg=cfg, progress=progress)
    sp = Split(np.zeros(0, np.int64), clips_of(ds, data["test_set"]), list(entry["styles"]), data["split"],
               [f"the test clips of the shipped net {name!r}"])
    model, styles, ckpt = pretrained.load(name)
    select_device(device)   # the chapters move the model themselves; this only checks the request
    settings = _settings_of(ckpt)
    return BookRun(model, styles, dict(entry["metrics"]), list(entry.get("history", [])),
                   pretrained.path(name, verify=False), ds, sp, spec, settings, reused=True,
                   extra={"pretrained": name})


READER_NOTE = ("The text of this page describes the book's own run on its built-in data; the numbers, tables, "
               "figures and sounds on it are your own.")
"""What :func:`run_origin` adds for a reader's run: chapters 4-7 hold only the built-in run to their prose."""


def reader_settings(small: bool = False, epochs: int | None = None, device: str = "auto",
                    seed: int = 0) -> TrainSettings:
    """How :func:`reader_run` trains the thesis net on a reader's music: ``train``'s recipe for it.

    The thesis's own settings (batch 480, fixed epochs, no regularisation) are
    unstable on a few hundred real clips (see :class:`~thesis_lib.config.TrainSettings`);
    :meth:`TrainSettings.recommended` is the recipe cross-validated on real
    recordings. ``small`` (a quick look) trains :data:`SMALL_EPOCHS` epochs unless
    ``epochs`` says otherwise.
    """
    over: dict = {"seed": seed, "device": device}
    if small or epochs:
        over["epochs"] = epochs or SMALL_EPOCHS
    return TrainSettings.recommended("thesis", **over)


def reader_run(data: str | Path | None = None, model: str | Path | None = None, small: bool = False,
               split: str = "track", epochs: int | None = None, device: str = "auto", seed: int = 0,
               progress: bool = False, log=None, cfg: ThesisConfig = THESIS,
               shipped_first: bool = False) -> BookRun:
    """The run chapters 4-7 use: the book's own, or one on the reader's music and/or net (issue 11).

    * neither ``data`` nor ``model``: the built-in run, :func:`trained_model`
      (cached, or the shipped net when none is; with ``shipped_first`` the shipped
      net whenever the package has one for these settings);
    * ``data`` only: a folder of the reader's music, one sub-folder per style,
      prepared (cached) and split (``split``, by track by default, ``seed``); the
      thesis net is trained on its training tracks with :func:`reader_settings`
      through :func:`thesis_lib.robust.train_any`, once: the run is cached in
      ``default_cache_dir()/book/reader-<key>``, keyed by the prepared data and
      every setting that changes the result, and counts as finished once its
      ``book.json`` is written;
    * ``data`` and ``model`` (a ``model.pt`` or ``pretrained:NAME``; chapters 5-7
      dream, so it must be the thesis net, StyleNet): the net is tested on the
      test clips of the same split of ``data``. Its styles must be among the
      data's. If it was trained on this folder it may have heard these songs,
      and ``split.notes`` says so;
    * ``model`` only: a shipped net trained on the built-in data
      (:func:`pretrained_run`); any other net needs ``data`` (ValueError).

    A reader's run has ``spec=None`` and ``extra["reader"]`` naming its data and
    model, which :func:`run_origin` reports.
    """
    if data is None and model is None:
        return trained_model(small, split, epochs, device, seed, progress, log, cfg, shipped_first=shipped_first)
    if data is None:
        return _shipped_without_data(model, device, cfg, progress)
    import os

    from ..checkpoint import load_model

    folder = Path(os.path.expanduser(str(data)))
    ds = reader_data(folder, cfg, progress)
    per_style = (cfg.train_per_style, cfg.test_per_style)
    sp = split_dataset(ds, *per_style, split=split, seed=seed)
    if model is not None:
        return _reader_model_run(ds, sp, folder, model, device, seed)
    from .realmusic import cache_key

    settings = reader_settings(small, epochs, device, seed)
    key = cache_key(ds, settings, {"run": "reader", "split": split, "per_style": per_style})
    out = default_cache_dir() / "book" / f"reader-{key}"

    def train() -> None:
        if log:
            log(f"training the thesis net on {folder} ({settings.epochs} epochs, split by {split}) into {out}")
        _train_reader(out, ds, sp, settings, cfg, progress, log)

    reused = _once(out, train)
    net, styles, _ = load_model(out / "model.pt", require="StyleNet")
    metrics = json.loads((out / "metrics.json").read_text())
    return BookRun(net, styles, metrics, list(metrics.get("epochs", [])), out, ds, sp, None, settings, reused,
                   extra={"reader": {"data": str(folder), "model": None}})


def reader_data(data: str | Path, cfg: ThesisConfig = THESIS, progress: bool = False) -> PreparedDataset:
    """The reader's ``DATA`` folder (``~`` expanded), prepared (cached): chapters 2 and 4-7 open it here.

    A missing folder is a :class:`DatasetError` that says what ``DATA`` should be.
    """
    import os

    folder = Path(os.path.expanduser(str(data)))
    if not folder.is_dir():
        raise DatasetError(f"DATA = {str(data)!r}: no such folder. DATA is a folder of your music with one "
                           "sub-folder per style (DATA/<style>/<tracks>), or None for the built-in data "
                           "(the free collection: python -m thesis_lib free-music --out DIR)")
    return prepare_dataset(folder, cfg=cfg, progress=progress)


def _shipped_without_data(model: str | Path, device: str, cfg: ThesisConfig, progress: bool) -> BookRun:
    """``MODEL`` without ``DATA``: only a shipped net of the built-in data knows its test clips."""
    from .. import pretrained

    text = str(model)
    name = text[len(pretrained.PREFIX):] if text.startswith(pretrained.PREFIX) else None
    if name is None or pretrained.info(name).get("data", {}).get("kind") != "synth":
        raise ValueError(f"MODEL = {text!r} needs DATA: the chapters test and dream on clips of the music a net "
                         "was trained on, so set DATA to that folder (one sub-folder per style). Only a net "
                         f"shipped for the built-in data (e.g. 'pretrained:{PRETRAINED}') runs without DATA.")
    run = pretrained_run(name, device, cfg, progress)
    run.extra["model"] = text   # asked for by MODEL, not a fallback: run_origin says so
    return run


def _reader_model_run(ds: PreparedDataset, sp: Split, folder: Path, model: str | Path, device: str,
                      seed: int) -> BookRun:
    """The reader's net tested on the test clips of ``sp`` (those of the net's styles)."""
    from .. import pretrained
    from ..checkpoint import load_model
    from ..data import label_of
    from ..runtime import select_device
    from ..train import evaluate

    net, styles, ckpt = load_model(model, require="StyleNet")
    missing = [s for s in styles if s not in sp.styles]
    if missing:
        raise ValueError(f"MODEL = {str(model)!r} knows the styles {styles}, but DATA = {str(folder)!r} has "
                         f"{sp.styles} (styles with usable tracks), without {missing}. Use a net trained on "
                         "these styles, or MODEL = None to train one on DATA.")
    mine = np.isin(ds.style_of, [ds.styles.index(s) for s in styles])
    note = (f"the test clips are a split by {sp.mode} of {folder} (seed {seed}): if the net was trained on this "
            "folder it may have heard these songs (a net the book trained on it with the same seed held exactly "
            "these out)")
    split = Split(sp.train[mine[sp.train]], sp.test[mine[sp.test]], styles, sp.mode, [*sp.notes, note])
    settings = _settings_of(ckpt)
    dev = select_device(device)
    metrics = evaluate(net.to(dev), ds, split.test, label_of(ds, split.test, split), styles,
                       settings.test_batch_size, dev)
    history = list((ckpt.get("metrics") or {}).get("epochs", []))
    metrics.update(device=str(dev), notes=split.notes, n_test=int(len(split.test)), epochs=history)
    return BookRun(net.cpu(), styles, metrics, history, pretrained.resolve(model), ds, split, None, settings,
                   reused=True, extra={"reader": {"data": str(folder), "model": str(model)}})


def _train_reader(out: Path, ds: PreparedDataset, sp: Split, settings: TrainSettings, cfg: ThesisConfig,
                  progress: bool, log) -> None:
    from ..robust import train_any
    from .realmusic import data_key

    if out.exists():
        shutil.rmtree(out)  # an interrupted run: start again
    train_any(ds, sp, settings, out=out, cfg=cfg, progress=progress, log=log or (lambda m: None))
    (out / "book.json").write_text(json.dumps({"kind": "reader", "data": str(ds.report.get("data", ds.path)),
                                               "data_key": data_key(ds), "settings": asdict(settings),
                                               "split": sp.mode}, indent=1))


def _settings_of(ckpt: dict) -> TrainSettings:
    """The :class:`TrainSettings` a checkpoint records (fields this version does not know are dropped)."""
    fields = set(TrainSettings.__dataclass_fields__)
    return TrainSettings(**{k: v for k, v in (ckpt.get("settings") or {}).items() if k in fields})


def ship_run(run: BookRun, name: str = PRETRAINED, folder: str | Path | None = None,
             check_tracks: int = 2) -> dict:
    """Store ``run``'s net in the package as the shipped net ``name`` (maintainers; see :mod:`thesis_lib.pretrained`).

    The manifest gets the run's cache key, data spec, settings and epoch
    history, its test clips (:func:`test_set_of`), and metrics measured anew
    with the float16 weights that ship. ``check`` holds, for the first
    ``check_tracks`` test tracks of each style, the clip numbers, accuracy and
    mean probabilities, which a test re-measures on freshly composed tracks.
    """
    import copy

    from .. import pretrained
    from ..data import label_of
    from ..predict import clip_probabilities
    from ..train import evaluate

    if run.extra.get("pretrained"):
        raise ValueError("this run is itself a shipped net; ship a run trained here")
    half = copy.deepcopy(run.model).cpu()     # the weights as they will ship (float16), in a float32 net
    half.load_state_dict(pretrained.half_state({"state_dict": half.state_dict()})["state_dict"])
    half.eval()
    labels = label_of(run.dataset, run.split.test, run.split)
    metrics = evaluate(half, run.dataset, run.split.test, labels, run.styles)
    test_set = test_set_of(run.dataset, run.split.test)
    check: dict[str, dict] = {}
    for style in run.styles:
        files = [f for f in test_set if f.startswith(style + "/")][:check_tracks]
        for f in files:
            rows = clips_of(run.dataset, {f: test_set[f]})
            p = clip_probabilities(half, run.dataset.clips, 64, "cpu", rows=rows, fold=False)
            check[f] = {"clips": test_set[f], "accuracy": float(np.mean(p.argmax(1) == run.styles.index(style))),
                        "mean_probability": [round(float(v), 6) for v in p.mean(0)]}
    trained = json.loads((run.path / "metrics.json").read_text())
    facts = {
        "title": "The thesis net trained by `reproduce` on the built-in data (chapters 4-7)",
        "recipe": run.settings.recipe, "settings": asdict(run.settings),
        "data": {"kind": "synth", "spec": asdict(run.spec), "split": run.split.mode,
                 "run_key": run.path.name, "test_set": test_set},
        "metrics": {k: metrics[k] for k in ("test_accuracy", "test_loss", "per_style_accuracy", "confusion",
                                            "track_accuracy", "n_test_tracks")},
        "metrics_float32": {k: trained.get(k) for k in ("test_accuracy", "track_accuracy")},
        "history": [{k: h[k] for k in ("epoch", "train_loss") if k in h} for h in run.history],
        "check": check,
        "trained": pretrained.provenance(trained, seconds_per_epoch=trained.get("seconds_per_epoch")),
    }
    return pretrained.export(run.path / "model.pt", name, facts, folder or pretrained.HERE)


def run_origin(run: BookRun) -> str:
    """Markdown for a chapter: which net this page uses and how it compares with the shipped one.

    For a reader's run (:func:`reader_run`): which data and net, and that the
    page's prose describes the built-in run (:data:`READER_NOTE`).
    """
    from .. import pretrained

    name = run.extra.get("pretrained")
    acc = run.metrics.get("test_accuracy")
    reader = run.extra.get("reader")
    if reader:
        where = f"your music in `{reader['data']}` (styles {', '.join(run.styles)}"
        tested = (f"test accuracy {acc:.3f} on {len(run.split.test)} clips of {run.metrics.get('n_test_tracks')} "
                  f"tracks held out by a split by {run.split.mode}")
        if reader["model"]:
            what = (f"the net `{reader['model']}` on {where}): {tested}; if that net was trained on this folder it "
                    "may have heard these songs")
        else:
            what = (f"a thesis net trained here on {where}; {run.settings.recipe} recipe, "
                    f"{len(run.history)} epochs): {tested}")
        return f"This page uses {what}. {READER_NOTE}"
    if name and run.extra.get("model"):
        return (f"This page uses the net shipped with the package, `{name}`, as MODEL asks (trained by `reproduce` "
                f"on the built-in data; test accuracy {acc:.3f} on its {len(run.split.test)} test clips). The text "
                "of this page describes the book's own run on the same data, whose numbers can differ a little.")
    if name and run.extra.get("shipped_first"):
        return (f"This page analyses the net shipped with the package, `{name}` (trained by `reproduce` with the "
                f"thesis's settings on the built-in data; test accuracy {acc:.3f} on its {len(run.split.test)} test "
                "clips). Its weights are fixed, so the text describes the same net in every build of this page. "
                + _own_run_note(run, pretrained.info(name)))
    if name:
        return (f"No trained run was cached, so this page uses the net shipped with the package, `{name}` "
                f"(trained by `reproduce` on the built-in data; test accuracy {acc:.3f} on the same "
                f"{len(run.split.test)} test clips). `make book` trains its own net first; its numbers can "
                "differ a little.")
    key = run.path.name
    shipped = shipped_net_for(key)
    if not shipped:
        return f"This page uses a net trained here (test accuracy {acc:.3f})."
    theirs = pretrained.info(shipped)["metrics"].get("test_accuracy")
    same = abs(theirs - acc) < 0.005
    return (f"This page uses the net trained here by `make book` (test accuracy {acc:.3f}); the package's shipped "
            f"net `{shipped}`, trained with the same settings, scored {theirs:.3f} on the same test clips"
            + (", so numbers on this page match what a reader without a trained run sees."
               if same else ": a reader without a trained run gets the shipped net, and numbers a little different "
                            "from this page's."))


def _own_run_note(run: BookRun, entry: dict) -> str:
    """How the net ``make book`` trained here (when cached) compares with the shipped net ``run`` of the same settings:
    its weights rounded as the package ships them (:func:`thesis_lib.pretrained.half_state`) against the shipped file's."""
    key = entry.get("data", {}).get("run_key")
    own = default_cache_dir() / "book" / str(key)
    if not key or not (own / "book.json").is_file():
        return "`make book` trains a net of its own with the same settings for chapter 4."
    import torch

    from .. import pretrained
    from ..checkpoint import read_checkpoint

    mine = pretrained.half_state(read_checkpoint(own / "model.pt"))["state_dict"]
    theirs = read_checkpoint(run.path)["state_dict"]
    same = mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)
    acc = json.loads((own / "metrics.json").read_text()).get("test_accuracy")
    if same:
        return (f"The net `make book` trained here for chapter 4 (test accuracy {acc:.3f}) has the same weights, to "
                "the shipped float16 precision.")
    return (f"The net `make book` trained here for chapter 4 has other weights (test accuracy {acc:.3f} on the same "
            "clips): a net's weights depend on its seed and on the last bits of the training arithmetic (another "
            "CPU, a GPU, another version of the library), and so do the details of its dreams.")


def _once(out: Path, make) -> bool:
    """Run ``make()`` unless the run in ``out`` is finished (its ``book.json`` exists); True when it was.

    Under a file lock beside ``out``, so two notebooks asking for one run at
    once train it once; ``make`` must write ``out/book.json`` last.
    """
    done = out / "book.json"
    if done.is_file():
        return True
    with _lock(out.with_name(out.name + ".lock")):
        if done.is_file():
            return True
        make()
    return False


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


def page_log(log) -> Callable[[str], None]:
    """``log`` for a page: this machine's cache folder is written ``$THESIS_LIB_CACHE`` (a page the
    book publishes never shows the paths of the machine that built it); ``None`` logs nothing."""
    if log is None:
        return lambda m: None
    root = str(default_cache_dir())
    return lambda m: log(str(m).replace(root, "$THESIS_LIB_CACHE"))


def _train_run(out: Path, done: Path, spec: SynthSpec, cfg: ThesisConfig, settings: TrainSettings,
               split: str, progress: bool, log) -> None:
    import matplotlib.pyplot as plt

    from ..reproduce import reproduce

    if out.exists():
        shutil.rmtree(out)  # an interrupted run: start again
    before = set(plt.get_fignums())
    reproduce(out, spec, cfg, settings, split=split, progress=progress, log=page_log(log))
    for num in set(plt.get_fignums()) - before:  # reproduce saved figure21.png; do not show it twice
        plt.close(num)
    done.write_text(json.dumps({"spec": asdict(spec), "settings": asdict(settings), "split": split}, indent=1))


def finished_runs(small: bool | None = None) -> list[dict]:
    """Facts of the finished runs of the built-in data in the cache (optionally only the small or full data)."""
    rows = []
    for done in sorted((default_cache_dir() / "book").glob("*/book.json")):
        info = json.loads(done.read_text())
        if "spec" not in info:   # a reader's run (:func:`reader_run`): other data, other recipe
            continue
        if small is not None and (SynthSpec(**info["spec"]) == SMALL_SPEC) != small:
            continue
        try:
            m = json.loads((done.parent / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append({"path": str(done.parent), "split": info.get("split"), "device": m.get("device"),
                     "impl": m.get("impl", "reference"), "epochs": len(m.get("epochs", [])),
                     "precision": m.get("settings", {}).get("precision", "fp32"),
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

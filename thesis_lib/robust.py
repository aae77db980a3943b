"""Training that generalises on small real collections (``train``'s default recipe).

Why
---
The thesis's recipe -- the same consecutive clips every epoch, fixed epochs,
no regularisation -- drives the training loss to 0.001 on a few hundred real
clips and then recognises songs it has never heard worse than a log-mel
baseline (issue 10). This recipe uses only standard choices that do not
depend on one collection:

* **fresh random windows** every epoch from the training tracks
  (:class:`~thesis_lib.augment.TrackWindows`), styles drawn equally often;
* **style-keeping augmentation** (:func:`~thesis_lib.augment.augment_batch`:
  gain, polarity, mixing within a style);
* **dropout and weight decay** (AdamW) and a one-cycle learning-rate
  schedule, so late epochs take small steps;
* **the epoch chosen on a validation split by track**: about a fifth of each
  style's training tracks (for styles with at least 3) are held out of
  training, scored after every epoch on their consecutive clips, and the
  weights of the best epoch (clip accuracy, then loss) are kept.

It trains any model of :func:`build_model`: the thesis net (``thesis``, the
only one the dreaming chapters can use), the log-mel CNN (``mel``), and the
linear probes fitted in closed form without epochs (:data:`CLOSED_FORM`): the
log-mel baseline (``baseline``) and the pretrained taggers' probes (``musicnn``,
``musicnn-vgg``, :mod:`thesis_lib.musicnn`); and fusions of them (:mod:`thesis_lib.fusion`):
``fusion`` (both taggers and the baseline, the default) and ``fusion-mel`` (CNN and baseline).
The recipe's windows, augmentation and epochs concern the nets; a probe is
fitted once on every consecutive clip of the training tracks.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentSettings, TrackWindows, augment_batch
from .config import MODELS, THESIS, ThesisConfig
from .data import PreparedDataset, Split
from .predict import clip_probabilities


CLOSED_FORM = ("baseline", "musicnn", "musicnn-vgg")
"""Models fitted in closed form on fixed features (linear probes): no epochs, no learning rate."""


def fitted_in_closed_form(name: str) -> bool:
    """Whether ``train --model name`` has no epochs: a linear probe, or a fusion of nothing else."""
    from .fusion import FUSIONS, MEMBER_MODELS

    return name in CLOSED_FORM or (name in FUSIONS and all(MEMBER_MODELS[m] in CLOSED_FORM for m in FUSIONS[name]))


def build_model(name: str, n_styles: int, cfg: ThesisConfig = THESIS, dropout: float = 0.0) -> nn.Module:
    """A fresh model by name: ``thesis`` (StyleNet), ``mel`` (MelNet), ``baseline`` (LogMelBaseline),
    ``musicnn`` or ``musicnn-vgg`` (MusicnnProbe on either tagger), ``fusion`` (LateFusion of both
    probes and a LogMelBaseline) or ``fusion-mel`` (LateFusion of a MelNet and a LogMelBaseline)."""
    if name == "thesis":
        from .model import StyleNet

        model = StyleNet(n_styles, cfg)
        if dropout > 0:      # after the fc ReLU; no parameters, so state_dict keys stay the thesis's
            model.fc.append(nn.Dropout(dropout))
        return model
    if name == "mel":
        from .mel import MelNet

        return MelNet(n_styles, cfg, dropout=dropout)
    if name == "baseline":
        from .baseline import LogMelBaseline

        return LogMelBaseline(n_styles, cfg)
    if name in ("musicnn", "musicnn-vgg"):
        from .musicnn import MusicnnProbe

        return MusicnnProbe(n_styles, cfg, kind="vgg" if name == "musicnn-vgg" else "musicnn")
    if name in ("fusion", "fusion-mel"):
        from .fusion import LateFusion

        return LateFusion(n_styles, cfg, dropout=dropout, kind=name)
    raise ValueError(f"model must be one of {MODELS}, not {name!r}")


def clip_rate_problem(ds: PreparedDataset, cfg: ThesisConfig, who: str) -> str | None:
    """``None`` when ``ds``'s clips are the ones ``cfg`` reads, else a sentence naming the folder and both sizes."""
    have = ds.clips.shape[1]
    if have == cfg.clip_samples:
        return None
    return (f"{ds.path}: clips of {have} samples, but {who} reads {cfg.clip_seconds:g}-second clips at "
            f"{cfg.sample_rate} Hz ({cfg.clip_samples} samples)")


def prepared_for(ds: PreparedDataset, settings, cfg: ThesisConfig = THESIS, progress: bool = False,
                 log: Callable[[str], None] = print) -> PreparedDataset:
    """``ds`` itself when its clips are what ``settings`` read, else its source folder prepared so (cached).

    The log-mel models of the robust recipe read 16 kHz (``TrainSettings.sample_rate``), the thesis
    net 8 kHz; a collection prepared for one is prepared again, from the same audio files, for the
    other. :class:`~thesis_lib.data.DatasetError` when the source folder is gone.
    """
    from .data import DatasetError, prepare_dataset

    want = settings.applied_to(cfg)
    problem = clip_rate_problem(ds, want, f"the {settings.model} model")
    if problem is None:
        return ds
    source = ds.report.get("data")
    if not source or not Path(source).is_dir():
        raise DatasetError(f"{problem}, and the audio folder it came from ({source or 'unknown'}) is not here to "
                           "prepare again; prepare it with that sample rate or set sample_rate")
    log(f"preparing the collection '{Path(source).name}' at {want.sample_rate} Hz for the {settings.model} model "
        "(cached)")
    return prepare_dataset(source, cfg=want, progress=progress)


def validation_tracks(track_style: np.ndarray, tracks: np.ndarray, fraction: float,
                      rng: np.random.Generator) -> np.ndarray:
    """About ``fraction`` of each style's ``tracks`` (at least one, only for styles with >= 3)."""
    val: list[int] = []
    if fraction <= 0:
        return np.zeros(0, np.int64)
    for s in np.unique(track_style[tracks]):
        mine = rng.permutation(tracks[track_style[tracks] == s])
        if len(mine) >= 3:
            val += mine[: max(1, int(round(fraction * len(mine))))].tolist()
    return np.sort(np.asarray(val, np.int64))


@torch.no_grad()
def _calibrate(model: nn.Module, windows: TrackWindows, tracks, labels, rng, device, n: int = 960, bs: int = 64):
    """Batch-norm statistics averaged over ``n`` fresh training windows (the thesis net's test-time stats)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    starts, _, _ = windows.draw(tracks, labels, n, rng)
    for lo in range(0, n, bs):
        model(torch.from_numpy(windows.read(starts[lo:lo + bs])).unsqueeze(1).to(device))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()


def fit_robust(model: nn.Module, ds: PreparedDataset, train_tracks: np.ndarray, labels: np.ndarray,
               settings, device: torch.device, progress: bool = True,
               log: Callable[[str], None] = print, per_clip: bool = False) -> list[dict]:
    """Train ``model`` in place on ``train_tracks`` (classes ``labels``); returns the epoch history.

    ``settings`` is a :class:`~thesis_lib.config.TrainSettings`. Restores the
    weights of the epoch best on the validation tracks when there are any.
    With ``per_clip`` the "tracks" are clip indices (a split by clip): windows
    are those clips themselves and no validation split is held out. A
    fusion trains each member as it would be trained alone, in order, on the
    same tracks; the history returned is the first member's.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    from .fusion import MEMBER_MODELS, LateFusion

    if isinstance(model, LateFusion):
        histories = [fit_robust(m, ds, train_tracks, labels, replace(settings, model=MEMBER_MODELS[name]), device,
                                progress, log, per_clip)
                     for name, m in model.members().items()]
        model.eval()
        return histories[0]

    rng = np.random.default_rng([settings.seed, 1])
    windows = TrackWindows(ds, per_clip=per_clip)
    owner = np.arange(len(ds)) if per_clip else ds.track_of     # clip -> "track"
    ts = np.full(len(windows.track_start), -1, np.int64)
    ts[train_tracks] = labels
    val = (np.zeros(0, np.int64) if per_clip
           else validation_tracks(ts, train_tracks, settings.val_fraction, rng))
    fit_tracks = np.setdiff1d(train_tracks, val)
    fit_labels = ts[fit_tracks]
    val_clips = np.flatnonzero(np.isin(owner, val))
    val_labels = ts[owner[val_clips]]
    n_epoch = max(settings.batch_size, int(np.isin(owner, fit_tracks).sum()))
    if settings.model in CLOSED_FORM:       # a linear probe: fitted in closed form, no epochs
        t0 = time.perf_counter()
        rows = np.flatnonzero(np.isin(owner, train_tracks))
        model.fit(ds.clips, ts[owner[rows]], rows=rows, progress=progress)
        sec = time.perf_counter() - t0
        log(f"{settings.model} fitted on {len(rows)} clips in {sec:.1f} s")
        return [{"epoch": 1, "train_loss": float("nan"), "seconds": sec}]
    params = [p for p in model.parameters() if p.requires_grad]
    if getattr(settings, "optimizer", "adamw") == "sgd":
        opt = torch.optim.SGD(params, lr=settings.learning_rate, momentum=settings.momentum, nesterov=True,
                              weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = settings.epochs * math.ceil(n_epoch / settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.learning_rate, total_steps=steps, pct_start=0.1)
    net = model
    if settings.model == "thesis":
        from .fast import compile_pays, step_note, training_module

        passes = settings.epochs * n_epoch
        net = training_module(model, settings.impl, device, settings.precision,
                              compiled=compile_pays(passes, ds.clips.shape[1], device))
        if device.type == "cpu" and net is not model:
            log(step_note(net.compiled, passes, ds.clips.shape[1], device))
    aug = AugmentSettings()
    history: list[dict] = []
    best_key, best_state = None, None
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        starts, ys, _ = windows.draw(fit_tracks, fit_labels, n_epoch, rng)
        total = 0.0
        for lo in tqdm(range(0, n_epoch, settings.batch_size), desc="batches", leave=False, disable=not progress):
            x = windows.read(starts[lo:lo + settings.batch_size])
            y = ys[lo:lo + settings.batch_size]
            if settings.augment:
                x = augment_batch(x, y, rng, aug)
            xt = torch.from_numpy(x).unsqueeze(1).to(device)
            yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
            loss = F.cross_entropy(net(xt), yt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
        rec = {"epoch": epoch, "train_loss": total / n_epoch, "seconds": time.perf_counter() - t0}
        if not math.isfinite(rec["train_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch}; try a smaller --lr")
        if len(val_clips):
            if settings.model == "thesis":
                _calibrate(model, windows, fit_tracks, fit_labels, np.random.default_rng([settings.seed, epoch]), device)
            p = clip_probabilities(model, ds.clips, settings.test_batch_size, device, rows=val_clips, fold=False)
            acc = float(np.mean(p.argmax(1) == val_labels))
            vloss = float(-np.mean(np.log(np.clip(p[np.arange(len(p)), val_labels], 1e-12, None))))
            rec.update(val_accuracy=acc, val_loss=vloss)
            if best_key is None or (acc, -vloss) > best_key:
                best_key = (acc, -vloss)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                rec["selected"] = True
        history.append(rec)
        val_txt = f"  val acc {rec['val_accuracy']:.3f} loss {rec['val_loss']:.3f}" if "val_accuracy" in rec else ""
        log(f"epoch {epoch:3d}  train loss {rec['train_loss']:.4f}{val_txt}  {rec['seconds']:7.2f} s")
    if best_state is not None:
        model.load_state_dict(best_state)
    elif settings.model == "thesis":
        _calibrate(model, windows, fit_tracks, fit_labels, np.random.default_rng([settings.seed, 0]), device)
    model.eval()
    return history


def train_robust(ds: PreparedDataset, split: Split, settings, out: str | Path | None = None,
                 cfg: ThesisConfig = THESIS, progress: bool = True, log: Callable[[str], None] = print):
    """Train ``settings.model`` with the robust recipe on the *tracks* of ``split.train``; test on ``split.test``.

    Every clip of a training track is available as windows (not only the
    balanced subset in ``split.train``); the test set is ``split.test``'s
    consecutive clips, scored by :func:`thesis_lib.train.evaluate`. With
    ``out``, writes ``model.pt`` and ``metrics.json`` (no per-epoch
    checkpoint: a run takes minutes; ``--resume`` is for the thesis loop).
    """
    from dataclasses import asdict, replace

    from .checkpoint import save_model
    from .data import label_of
    from .fast import resolve_precision
    from .runtime import select_device
    from .train import NotEnoughMemory, TrainResult, _run_facts, evaluate, jsonable, memory_problem

    if settings.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {settings.model!r}")
    device = select_device(settings.device)
    out = Path(out) if out is not None else None
    # the arithmetic really used, recorded with the results: the log-mel models compute in float32,
    # and so does the thesis net on CUDA here (bf16 and tf32 belong to train's resident GPU trainer)
    precision = (resolve_precision(settings.precision, settings.impl, device)
                 if settings.model == "thesis" and device.type != "cuda" else "fp32")
    settings = replace(settings, precision=precision)
    torch.manual_seed(settings.seed)
    cfg = settings.applied_to(cfg)
    problem = clip_rate_problem(ds, cfg, f"the {settings.model} model")
    if problem:
        from .data import DatasetError
        raise DatasetError(f"{problem}: prepare the data at that rate (thesis_lib.robust.prepared_for) "
                           "or set sample_rate")
    model = build_model(settings.model, len(split.styles), cfg, settings.dropout).to(device)
    remap = {ds.styles.index(name): i for i, name in enumerate(split.styles)}
    per_clip = split.mode == "clip"
    if per_clip:   # other clips of a training song may be test clips: train on the training clips only
        train_tracks = np.asarray(split.train, np.int64)
        labels = np.array([remap[int(s)] for s in ds.style_of[train_tracks]], np.int64)
    else:
        train_tracks = np.unique(ds.track_of[split.train])
        labels = np.array([remap[int(ds.track_style[t])] for t in train_tracks], np.int64)
    if settings.model == "thesis":            # the others are small (a 0.2 MB CNN; probes hear 8 clips at a time)
        from .fast import compile_pays

        # an epoch takes at most every clip of the training tracks: does even that pay for compiling?
        most = settings.epochs * max(settings.batch_size, len(train_tracks) if per_clip
                                     else int(np.isin(ds.track_of, train_tracks).sum()))
        if problem := memory_problem(settings, device, cfg, compiled=compile_pays(most, ds.clips.shape[1], device)):
            raise NotEnoughMemory(problem)
    t0 = time.perf_counter()
    history = fit_robust(model, ds, train_tracks, labels, settings, device, progress, log, per_clip=per_clip)
    seconds = time.perf_counter() - t0
    y_test = label_of(ds, split.test, split)
    metrics = {**evaluate(model, ds, split.test, y_test, split.styles, settings.test_batch_size, device),
               **_run_facts(ds, split, settings, device, history)}
    chosen = [h["epoch"] for h in history if h.get("selected")]
    metrics.update(model=settings.model, recipe=settings.recipe, train_seconds=seconds,
                   selected_epoch=chosen[-1] if chosen else len(history))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_model(model, split.styles, out / "model.pt", metrics=jsonable(metrics), settings=asdict(settings))
        (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1))
    return TrainResult(model, metrics, out, history)


def train_any(ds: PreparedDataset, split: Split, settings, out: str | Path | None = None,
              cfg: ThesisConfig = THESIS, progress: bool = True, log: Callable[[str], None] | None = None):
    """:func:`thesis_lib.train.train` for the thesis recipe on the thesis net, :func:`train_robust` otherwise."""
    from .train import _log_default, train

    log = log or _log_default
    if settings.recipe == "thesis" and settings.model == "thesis":
        result = train(ds, split, settings, out, cfg, progress, log)
        result.metrics.update(model="thesis", recipe="thesis")
        if result.out is not None:
            from .train import jsonable
            (result.out / "metrics.json").write_text(json.dumps(jsonable(result.metrics), indent=1))
        return result
    if settings.recipe not in ("thesis", "robust"):
        raise ValueError(f"recipe must be 'thesis' or 'robust', not {settings.recipe!r}")
    if settings.recipe == "thesis":
        raise ValueError(f"the thesis recipe trains the thesis net only; use recipe 'robust' for {settings.model!r}")
    return train_robust(ds, split, settings, out, cfg, progress, log)

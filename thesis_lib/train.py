"""Training and evaluation of the style classifier (thesis 4.2 and chapter 5).

The loop is the thesis's: shuffled mini-batches, SGD with Nesterov momentum,
cross-entropy on the softmax output, one line per epoch with its mean training
loss and its seconds (Table 1). After every epoch the full training state is
written atomically to ``checkpoint.pt`` so that ``train --resume`` continues an
interrupted run and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import (CheckpointError, atomic_save, model_state, read_checkpoint, save_model,
                         validate_checkpoint)
from .config import THESIS, ThesisConfig, TrainSettings
from . import distributed
from .data import PreparedDataset, Split, label_of
from .fast import (ResidentTrainer, compile_pays, fits_on_device, resolve_impl,
                   resolve_precision, step_note, training_module)
from .model import StyleNet
from .predict import clip_probabilities
from .runtime import available_memory, resident_memory, select_device, synchronize


def new_model(n_styles: int, settings: TrainSettings, cfg: ThesisConfig = THESIS,
              device: torch.device | str = "cpu") -> tuple[StyleNet, torch.optim.Optimizer]:
    """A fresh :class:`StyleNet` on ``device`` and its optimiser: SGD with Nesterov momentum (thesis 4.2; chapter 4).

    Seed torch first for repeatable weights. ``train``, ``bench`` and the book's
    timings all start from here.
    """
    model = StyleNet(n_styles, cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum, nesterov=True)
    return model, opt


def batches(ds: PreparedDataset, idx: np.ndarray, labels: np.ndarray, batch_size: int,
            order: np.ndarray | None = None, pin_memory: bool = False):
    """Yield ``(clips, labels)`` tensors of ``batch_size`` from the on-disk clips.

    Rows of one batch are read in ascending order (sequential disk reads); the
    batch's content, not its row order, is what SGD sees. The rows are
    gathered from the memory map straight into one contiguous array (a
    single copy, no Python loop); ``pin_memory`` page-locks it for fast,
    asynchronous copies to a GPU.
    """
    order = np.arange(len(idx)) if order is None else order
    for start in range(0, len(order), batch_size):
        pick = np.sort(order[start:start + batch_size])
        x = torch.from_numpy(np.ascontiguousarray(ds.clips[idx[pick]], dtype=np.float32))
        if pin_memory:
            x = x.pin_memory()
        yield x.unsqueeze(1), torch.from_numpy(labels[pick])


def train_epoch(model: StyleNet, opt: torch.optim.Optimizer, ds: PreparedDataset, idx: np.ndarray,
                labels: np.ndarray, batch_size: int, rng: np.random.Generator, device: torch.device,
                progress: bool = False, net: torch.nn.Module | None = None,
                dist_info: distributed.DistInfo | None = None) -> float:
    """One pass over the shuffled training clips; returns the mean training loss (chapter 4 of the book).

    ``net`` is what a step calls (default ``model``): the fast wrapper of
    :mod:`thesis_lib.fast` and/or ``DistributedDataParallel``. Under
    ``torchrun`` each process takes its share of the epoch's order (same
    shuffle everywhere) with ``batch_size / world_size`` clips per step, and
    the returned loss is the mean over all processes.
    """
    net = model if net is None else net
    info = dist_info or distributed.DistInfo()
    net.train()
    total, seen = 0.0, 0
    order = distributed.shard(rng.permutation(len(idx)), info)
    local = distributed.local_batch(batch_size, info)
    n_batches = math.ceil(len(order) / local)
    pin = device.type == "cuda"
    for x, y in tqdm(batches(ds, idx, labels, local, order, pin_memory=pin), total=n_batches,
                     desc="batches", leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        seen += len(y)
    total, seen = distributed.all_sum([total, seen], device, info)
    return total / max(seen, 1)


@torch.no_grad()
def calibrate_batchnorm(model: StyleNet, ds: PreparedDataset, idx: np.ndarray, batch_size: int,
                        device: torch.device) -> None:
    """Replace running batch-norm statistics by their average over clips ``idx``.

    Running averages with alpha 0.1 need a few dozen updates to forget their
    initial values; a small collection trained with few updates per epoch would
    be evaluated with statistics that describe no data at all.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches that follow
    model.train()
    dummy = np.zeros(len(idx), dtype=np.int64)
    for x, _ in batches(ds, idx, dummy, batch_size):
        model(x.to(device))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()


@torch.no_grad()
def evaluate(model: StyleNet, ds: PreparedDataset, idx: np.ndarray, labels: np.ndarray,
             styles: list[str], batch_size: int = THESIS.test_batch_size,
             device: torch.device | str = "cpu") -> dict:
    """Test loss and accuracy (thesis), plus per-style, confusion and track-level accuracy.

    Track-level accuracy gives every test track one vote: the style with the
    highest mean probability over its test clips.
    """
    device = torch.device(device)
    probs = clip_probabilities(model, ds.clips, batch_size, device, rows=idx, fold=False)
    pred = probs.argmax(1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    k = len(styles)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    tracks = ds.track_of[idx]
    track_hits, track_truth = [], []
    for t in np.unique(tracks):
        sel = tracks == t
        track_truth.append(int(labels[sel][0]))
        track_hits.append(int(probs[sel].mean(0).argmax() == labels[sel][0]))
    per_style = {s: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else float("nan")
                 for i, s in enumerate(styles)}
    return {
        "test_loss": loss,
        "test_accuracy": float(np.mean(pred == labels)),
        "per_style_accuracy": per_style,
        "confusion": confusion.tolist(),
        "track_accuracy": float(np.mean(track_hits)) if track_hits else float("nan"),
        "n_test_tracks": len(track_hits),
    }


@dataclass
class TrainResult:
    model: StyleNet
    metrics: dict
    out: Path | None = None
    history: list[dict] = field(default_factory=list)


class NotEnoughMemory(MemoryError):
    """A training run would need more memory than this machine (or its container) has left."""


#: Peak resident memory of a process training the thesis net on a CPU, in MB: a fixed part and a part
#: per clip of the batch (the thesis's 40,000 samples), per implementation and precision, and for the
#: fast path with its batch norms uncompiled (``"eager"``: runs too short for compiling to pay,
#: :func:`~thesis_lib.fast.compile_pays`; its plain passes keep other intermediates). The peak is what a
#: container's limit meets: the fast path's *first* steps, which in bf16 reach about twice what later
#: steps hold (4.5 GB against 2.4 GB at batch 480), so an estimate of the steady state lets a run pass
#: the check and then be killed. Measured on this project's 2-core machine (torch 2.13, seventeenth
#: round): a fresh process, two epochs of three steps at batch 60 and at 480, the largest anonymous
#: memory sampled every 20 ms plus the libraries' 120 MB (the memory-mapped clips' pages are clean page
#: cache, which a container reclaims before it kills). Batch 480, four runs each: reference fp32
#: 2,145-2,190 MB, fast fp32 4,876-5,754, fast bf16 4,582-4,583, eager fp32 4,390-5,489, eager bf16
#: 4,456-5,152; batch 60: 651-1,034 MB. ``bench`` (a fresh process per path, an epoch of 4,800 clips,
#: its peak less the 732 MB of mapped clips) then gave 2,290, 4,252, 3,943, 5,643 and 5,177. The
#: allocator's share varies from run to run, so each entry is the largest seen either way, (largest -
#: fixed) / 480 rounded up (the reference's to 4.0, which covers its 688 MB at batch 60 too); ``bench``
#: prints the estimate beside each peak. The first measurement (2026-11, two steps: fast fp32 3,228,
#: fast bf16 1,934-2,858) was out of date; what raised the first steps since was not traced.
TRAINING_MEMORY_MB = {"fixed": 450.0, ("reference", "fp32"): 4.0, ("fast", "fp32"): 11.1, ("fast", "bf16"): 8.7,
                      ("fast", "fp32", "eager"): 10.9, ("fast", "bf16", "eager"): 9.9}


def _mb_per_clip(impl: str, precision: str, cfg: ThesisConfig, compiled: bool = True) -> float:
    """:data:`TRAINING_MEMORY_MB` for one clip of ``cfg``'s length (TF32, a GPU format, is float32 on a
    CPU; ``compiled`` false: the fast path's uncompiled batch norms)."""
    mode = () if compiled or impl != "fast" else ("eager",)
    per_clip = TRAINING_MEMORY_MB.get((impl, precision) + mode, TRAINING_MEMORY_MB[(impl, "fp32") + mode])
    return per_clip * cfg.clip_samples / THESIS.clip_samples


def training_memory(batch_size: int, impl: str, precision: str, cfg: ThesisConfig = THESIS,
                    compiled: bool = True) -> int:
    """Bytes a CPU training run of the thesis net is expected to peak at (:data:`TRAINING_MEMORY_MB`)."""
    return int((TRAINING_MEMORY_MB["fixed"] + batch_size * _mb_per_clip(impl, precision, cfg, compiled)) * 2 ** 20)


def memory_problem(settings: TrainSettings, device: torch.device, cfg: ThesisConfig = THESIS,
                   available: int | None = None, clips: int | None = None, compiled: bool = True) -> str | None:
    """Why a CPU training run with ``settings`` would not fit in the memory left, or ``None``.

    A process past its container's limit is killed without a word (on Binder, about 2 GB, a
    notebook's kernel just dies); this says so before the first step, and which batch fits.
    ``clips``: the training clips, when fewer than a batch (then a batch holds only them);
    ``compiled``: whether the fast path's batch norms will be compiled (:func:`compile_pays`).
    """
    if device.type != "cpu" or os.environ.get("THESIS_LIB_NO_MEMORY_CHECK"):
        return None
    available = available_memory() if available is None else available
    impl = resolve_impl(settings.impl, device)
    precision = resolve_precision(settings.precision, settings.impl, device)
    batch = min(settings.batch_size, clips) if clips else settings.batch_size
    need = training_memory(batch, impl, precision, cfg, compiled)
    held = resident_memory()                     # counted in the container's usage already
    if available is None or need <= available + held:
        return None
    fits = int(((available + held) / 2 ** 20 - TRAINING_MEMORY_MB["fixed"])
               / _mb_per_clip(impl, precision, cfg, compiled))
    advice = (f"a smaller --batch-size (about {fits} fits; the thesis used {THESIS.batch_size})" if fits >= 1
              else "closing other programs")
    how = f"{impl}, {precision}" + (", uncompiled" if impl == "fast" and not compiled else "")
    return (f"training the thesis net at batch {batch} needs about {need / 1e9:.1f} GB here "
            f"({how}); this process holds {held / 1e9:.1f} GB and this machine or its "
            f"container has {available / 1e9:.1f} GB more. "
            f"Try {advice}, or a machine with more memory (THESIS_LIB_NO_MEMORY_CHECK=1 trains anyway)")


def _log_default(msg: str) -> None:
    tqdm.write(msg)


def train(ds: PreparedDataset, split: Split, settings: TrainSettings = TrainSettings(),
          out: str | Path | None = None, cfg: ThesisConfig = THESIS, progress: bool = True,
          log: Callable[[str], None] = _log_default, _resume_state: dict | None = None) -> TrainResult:
    """Train a fresh :class:`StyleNet` on ``split.train``, evaluate on ``split.test``.

    With ``out``, writes ``checkpoint.pt`` after every epoch, then ``model.pt``
    and ``metrics.json`` at the end. A seeded CPU run repeats exactly.
    """
    device = select_device(settings.device)
    cfg = settings.applied_to(cfg)              # model.pt records the settings really used
    passes = settings.epochs * len(split.train)
    compiled = compile_pays(passes, ds.clips.shape[1], device)   # a CPU's batch norms, a GPU's step
    problem = memory_problem(settings, device, cfg, clips=len(split.train), compiled=compiled)
    if problem:
        raise NotEnoughMemory(problem)
    info, device, own_group = distributed.setup(device)
    if not info.is_main:                       # only rank 0 writes files and prints
        out, progress, log = None, False, (lambda msg: None)
    out = Path(out) if out is not None else None
    # the arithmetic really used ("auto": bf16 where the hardware has it), recorded with the results
    asked = settings.precision
    settings = replace(settings, precision=resolve_precision(asked, settings.impl, device))
    torch.manual_seed(settings.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed shapes: let cuDNN pick its fastest kernels
    model, opt = new_model(len(split.styles), settings, cfg, device)
    history: list[dict] = []
    if _resume_state is not None:
        model.load_state_dict(_resume_state["state_dict"])
        opt.load_state_dict(_resume_state["optimizer"])
        history = list(_resume_state["history"])
    y_train = label_of(ds, split.train, split)
    y_test = label_of(ds, split.test, split)
    net = training_module(model, settings.impl, device, settings.precision, compiled=compiled)
    cpu_fast = device.type == "cpu" and net is not model      # a CPU's fast path: compiled batch norms or not
    cpu_compiled = cpu_fast and net.compiled
    resident = resident_trainer(model, opt, ds, split.train, y_train, settings, device, info, compiled)
    if resident is not None:
        log(f"the {len(split.train):,} training clips are held on {device}; "
            + step_note(resident.compiled, passes, ds.clips.shape[1], device))
    elif cpu_fast:
        log(step_note(cpu_compiled, passes, ds.clips.shape[1], device))
    if resident is None and device.type == "cuda" and settings.precision != "fp32":
        # tf32 and bf16 belong to the resident trainer; the streaming CUDA path computes in float32
        if asked != "auto":
            log(f"--precision {asked} applies to clips resident on one GPU; these stream: float32")
        settings = replace(settings, precision="fp32")
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    epochs = tqdm(range(len(history) + 1, settings.epochs + 1), desc="epochs", unit="epoch",
                  disable=not progress, initial=len(history), total=settings.epochs)
    for epoch in epochs:
        rng = np.random.default_rng([settings.seed, epoch])     # per-epoch: resumable shuffles
        t0 = time.perf_counter()
        if resident is not None:
            loss = resident.epoch(rng)
        else:
            loss = train_epoch(model, opt, ds, split.train, y_train, settings.batch_size, rng, device,
                               progress=progress and len(split.train) > 20 * settings.batch_size,
                               net=net, dist_info=info)
        synchronize(device)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": loss, "seconds": seconds})
        log(f"epoch {epoch:3d}  train loss {loss:.4f}  {seconds:7.2f} s")
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss}); "
                                     "try a smaller --lr")
        if out is not None:
            atomic_save(_training_state(model, opt, split, ds, settings, history), out / "checkpoint.pt")
    if settings.calibrate_batchnorm:
        calibrate_batchnorm(model, ds, split.train, max(settings.batch_size, settings.test_batch_size), device)
    metrics = {**evaluate(model, ds, split.test, y_test, split.styles, settings.test_batch_size, device),
               **_run_facts(ds, split, settings, device, history),
               # the CUDA step: clips resident on the GPU, compiled or eager (compile_pays); None: streamed
               "resident_step": None if resident is None else ("compiled" if resident.compiled else "eager"),
               # whether the step ran compiled code (the resident CUDA step, or a CPU's batch norms)
               "step_compiled": bool(resident.compiled if resident is not None else cpu_compiled)}
    if out is not None:
        save_model(model, split.styles, out / "model.pt", metrics=jsonable(metrics), settings=asdict(settings))
        (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1))
    distributed.teardown(own_group)
    return TrainResult(model, metrics, out, history)


def resident_trainer(model: StyleNet, opt: torch.optim.Optimizer, ds: PreparedDataset, idx: np.ndarray,
                     labels: np.ndarray, settings: TrainSettings, device: torch.device,
                     info: distributed.DistInfo, compiled: bool = False) -> ResidentTrainer | None:
    """The CUDA fast path (:class:`~thesis_lib.fast.ResidentTrainer`) where it applies, else ``None``.

    It applies on one CUDA GPU with ``impl`` fast (the default) when the training clips fit in
    its memory; elsewhere :func:`train_epoch` streams batches from the memory-mapped clips.
    ``compiled``: whether its step compiles (``train`` asks :func:`~thesis_lib.fast.compile_pays`).
    """
    if (device.type != "cuda" or info.enabled or resolve_impl(settings.impl, device) != "fast"
            or not fits_on_device(len(idx), ds.clips.shape[1], device)):
        return None
    return ResidentTrainer(model, opt, ds.clips[idx], labels, settings.batch_size, device,
                           precision=settings.precision, compile=compiled)


def _training_state(model, opt, split: Split, ds: PreparedDataset, settings: TrainSettings,
                    history: list[dict]) -> dict:
    return model_state(model, split.styles, optimizer=opt.state_dict(), history=history,
                       settings=asdict(settings), data=str(ds.path),
                       split={"train": torch.from_numpy(split.train), "test": torch.from_numpy(split.test),
                              "styles": split.styles, "mode": split.mode, "notes": split.notes})


def resume(out: str | Path, progress: bool = True, log: Callable[[str], None] = _log_default,
           epochs: int | None = None) -> TrainResult:
    """Continue the run in ``out`` from its last complete epoch (``checkpoint.pt``)."""
    out = Path(out)
    if not out.is_dir():
        raise CheckpointError(f"{out}: no such run folder to resume")
    if not (out / "checkpoint.pt").is_file():
        done = " (the run finished: model.pt is there)" if (out / "model.pt").is_file() else \
            " (no epoch was completed, so there is nothing to resume: start the run again)"
        raise CheckpointError(f"{out / 'checkpoint.pt'}: no resume state{done}")
    state = validate_checkpoint(read_checkpoint(out / "checkpoint.pt"), out / "checkpoint.pt", resume=True)
    ds = PreparedDataset.load(state["data"])
    s = state["split"]
    split = Split(s["train"].numpy(), s["test"].numpy(), list(s["styles"]), s["mode"], list(s.get("notes", [])))
    if len(ds) and (int(split.train.max(initial=-1)) >= len(ds) or int(split.test.max(initial=-1)) >= len(ds)
                    or min(int(split.train.min(initial=0)), int(split.test.min(initial=0))) < 0):
        raise CheckpointError(f"{out / 'checkpoint.pt'}: its split indexes clips that {ds.path} does not have "
                              "(the prepared data changed); start the run again")
    try:
        settings = TrainSettings(**state["settings"])
    except TypeError as exc:
        raise CheckpointError(f"{out / 'checkpoint.pt'}: damaged or incomplete resume state: "
                              f"'settings' do not fit this version ({exc})") from None
    if epochs is not None:
        settings.epochs = epochs
    cfg = ThesisConfig.from_dict(state["config"])
    log(f"resuming {out} after epoch {len(state['history'])} of {settings.epochs}")
    return train(ds, split, settings, out, cfg, progress, log, _resume_state=state)


def _run_facts(ds: PreparedDataset, split: Split, settings: TrainSettings, device: torch.device,
               history: list[dict]) -> dict:
    return {
        "styles": split.styles, "split": split.mode, "notes": split.notes,
        "n_train": int(len(split.train)), "n_test": int(len(split.test)),
        "n_train_tracks": int(len(np.unique(ds.track_of[split.train]))),
        "settings": asdict(settings),
        "learning_rate": settings.learning_rate, "batch_size": settings.batch_size,
        "momentum": settings.momentum, "test_batch_size": settings.test_batch_size,
        "seed": settings.seed, "device": str(device), "calibrate_batchnorm": settings.calibrate_batchnorm, "epochs": history,
        "impl": resolve_impl(settings.impl, device), "world_size": distributed.env_info().world_size,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else float("nan"),
        "torch": str(torch.__version__), "threads": torch.get_num_threads(), "machine": platform.machine(),
        "data": str(ds.report.get("data", ds.path)),
    }


def jsonable(obj):
    """``obj`` with numpy scalars as Python numbers and non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj

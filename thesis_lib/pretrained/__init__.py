"""Trained nets shipped with the package: dream, predict or judge within seconds, no training.

Why
---
Training the thesis net on the built-in data takes a quarter of an hour on two
CPU cores and 3-5 GB of memory at batch 480 (chapter 8); a reader on Binder
(about 2 GB) or a fresh Colab should still be able to open chapters 5-7 and
dream at once. So the package carries a few trained nets, small enough to ship:

* each is a normal :mod:`~thesis_lib.checkpoint` file whose floating-point
  weights are stored as float16 (half the bytes; the loaded model is float32
  again, and its accuracy is re-measured with the half-precision weights);
* ``manifest.json`` beside them records, for each: the file's sha256 (checked
  on every load), the model and styles, the recipe and settings it was trained
  with, the data it was trained on, its metrics, and for the built-in data the
  test tracks and clips, so the same test set can be regenerated anywhere
  (:func:`thesis_lib.book.runs.trained_model` does that for chapters 5-7).

``load("thesis-synth")`` returns a ready model; every command that takes
``--model`` accepts ``pretrained:NAME`` (:func:`resolve` is called by
:func:`thesis_lib.checkpoint.load_model`). Maintainers add or refresh a net
with :func:`export` (``python -m thesis_lib pretrained --export RUN --name NAME``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, atomic_save, read_checkpoint

HERE = Path(__file__).resolve().parent
MANIFEST_NAME = "manifest.json"
PREFIX = "pretrained:"
FORMAT = "thesis_lib.pretrained/1"


class PretrainedError(CheckpointError):
    """An unknown name, a missing file or a file whose hash does not match the manifest."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_index(path: str | Path, fmt: str, what: str) -> dict[str, Any]:
    """A shipped JSON index (the manifest, ``reference.json``): ``{}`` when absent, refused when of another format."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if data.get("format") != fmt:
        raise PretrainedError(f"{path}: not a {what} (format {data.get('format')!r}, expected {fmt!r})")
    return data


def manifest(folder: str | Path = HERE) -> dict[str, dict[str, Any]]:
    """``{name: entry}`` of the nets in ``folder`` (the package's own by default)."""
    return read_index(Path(folder) / MANIFEST_NAME, FORMAT, "pretrained manifest").get("nets", {})


def names(folder: str | Path = HERE) -> list[str]:
    return sorted(manifest(folder))


def info(name: str, folder: str | Path = HERE) -> dict[str, Any]:
    """The manifest entry of ``name``; :class:`PretrainedError` listing the known names otherwise."""
    nets = manifest(folder)
    if name not in nets:
        known = ", ".join(sorted(nets)) or "none"
        raise PretrainedError(f"no pretrained net named {name!r}; shipped: {known}")
    return nets[name]


def path(name: str, folder: str | Path = HERE, verify: bool = True) -> Path:
    """The checkpoint file of ``name``, its sha256 checked against the manifest."""
    entry = info(name, folder)
    file = Path(folder) / entry["file"]
    if not file.is_file():
        raise PretrainedError(f"{file}: the pretrained net {name!r} is in the manifest but its file is missing "
                              "(a partial install? reinstall thesis_lib)")
    if verify and sha256(file) != entry["sha256"]:
        raise PretrainedError(f"{file}: sha256 does not match the manifest's for {name!r}; the file is damaged "
                              "or was replaced (reinstall thesis_lib, or export it again)")
    return file


def resolve(model: str | Path) -> Path:
    """``pretrained:NAME`` -> the verified shipped file; anything else -> ``Path(model)``."""
    text = str(model)
    if text.startswith(PREFIX):
        return path(text[len(PREFIX):])
    return Path(model)


def load(name: str, device: str | torch.device = "cpu", require: str | None = None):
    """``(model in eval mode, style names, checkpoint)`` of the shipped net ``name`` (float32 weights)."""
    from ..checkpoint import load_model

    return load_model(PREFIX + name, device, require=require)


def half_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``ckpt`` with its floating-point weights in float16 (integer buffers such as batch counts kept)."""
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in ckpt["state_dict"].items()}
    return {**ckpt, "state_dict": sd}


def export(model_pt: str | Path, name: str, facts: dict[str, Any], folder: str | Path = HERE) -> dict[str, Any]:
    """Store ``model_pt`` as ``folder/<name>.pt`` (float16 weights) and record it in the manifest.

    ``facts`` is what the manifest says of the net besides the file (recipe,
    data, metrics measured with the half-precision weights, test tracks...).
    Returns the new entry.
    """
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a pretrained name is letters, digits, '-' and '_', not {name!r}")
    folder = Path(folder)
    ckpt = read_checkpoint(model_pt)
    keep = {k: ckpt[k] for k in ("format", "architecture", "config", "styles", "state_dict", "settings")
            if k in ckpt}
    file = atomic_save(half_state(keep), folder / f"{name}.pt")
    entry = {"file": file.name, "sha256": sha256(file), "bytes": file.stat().st_size,
             "architecture": ckpt["architecture"].get("name", "StyleNet"), "styles": list(ckpt["styles"]),
             "weights": "float16", **facts}
    nets = manifest(folder)
    nets[name] = entry
    text = json.dumps({"format": FORMAT, "nets": dict(sorted(nets.items()))}, indent=1, ensure_ascii=False)
    tmp = folder / f".{MANIFEST_NAME}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, folder / MANIFEST_NAME)
    return entry


def provenance(metrics: dict[str, Any], **timing: Any) -> dict[str, Any]:
    """Where and with what a shipped net was trained and exported: the manifest's ``trained`` entry.

    ``metrics`` is the run's ``metrics.json``; ``timing`` the run's own time figures
    (``seconds_per_epoch`` of a thesis run, ``seconds`` of a ``train`` run).
    """
    import platform
    from datetime import date

    return {"device": metrics.get("device"), "torch": metrics.get("torch"), **timing,
            "machine": platform.machine(), "exported": date.today().isoformat(),
            "exported_with_torch": torch.__version__}


def run_facts(run: str | Path, title: str = "", crossval: str | Path | None = None) -> dict[str, Any]:
    """What the manifest says of a ``train`` run: its settings, data, test metrics, and a cross-validation.

    The held-out test of one ``train`` run is a handful of tracks; ``crossval`` (a
    ``crossval.json`` of the same settings on the same data) is the number to trust, so it is
    recorded beside it as ``metrics.clip_accuracy_mean`` and friends.
    """
    run = Path(run)
    m = json.loads((run / "metrics.json").read_text())
    metrics = {k: m[k] for k in ("test_accuracy", "track_accuracy", "per_style_accuracy", "n_test_tracks",
                                 "n_train_tracks") if k in m}
    facts: dict[str, Any] = {"title": title, "recipe": m.get("recipe"), "settings": m.get("settings"),
                             "data": {"kind": "folder", "path": m.get("data"), "split": m.get("split")},
                             "metrics": metrics,
                             "trained": provenance(m, seconds=m.get("train_seconds"))}
    if crossval is not None:
        cv = json.loads(Path(crossval).read_text())
        metrics.update({k: cv[k] for k in ("clip_accuracy_mean", "clip_accuracy_std", "track_accuracy_mean",
                                           "track_accuracy_std")})
        metrics["crossval_folds"] = cv.get("folds_k")
    return facts


__all__ = ["PREFIX", "PretrainedError", "manifest", "names", "info", "path", "resolve", "load", "export",
           "half_state", "sha256", "run_facts", "read_index", "provenance"]

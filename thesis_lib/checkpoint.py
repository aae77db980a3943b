"""Saving and loading trained models, safely.

A checkpoint is a plain dict of tensors and simple values, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). It carries the
architecture, the thesis config and the style names, so a model always knows
what it was trained on. Files are written to a temporary name and renamed,
so an interrupted save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch

from .config import ThesisConfig
from .model import StyleNet

FORMAT = "thesis_lib.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the cause."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def model_state(model: StyleNet, styles: list[str], **extra: Any) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: weights, architecture, config, styles.

    ``config`` is the model's :class:`ThesisConfig`; a trained model's has the optimiser
    fields of the settings it was trained with (:meth:`TrainSettings.applied_to`), and
    ``train`` adds those settings themselves as ``settings``.
    """
    if len(styles) != model.n_styles:
        raise ValueError(f"{len(styles)} style names for a model with {model.n_styles} outputs")
    return {"format": FORMAT, "architecture": model.architecture(),
            "config": model.cfg.to_dict(), "styles": list(styles),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}


def save_model(model: StyleNet, styles: list[str], path: str | Path, **extra: Any) -> Path:
    return atomic_save(model_state(model, styles, **extra), path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; damaged files raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle error, wrong file...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); the file may be damaged "
                              "or not written by thesis_lib") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a thesis_lib checkpoint (format {found!r}, expected {FORMAT!r})")
    return ckpt


def build_from_checkpoint(ckpt: dict[str, Any], cfg: ThesisConfig) -> torch.nn.Module:
    """An untrained model of the checkpoint's architecture: StyleNet, MelNet or LogMelBaseline."""
    arch = ckpt.get("architecture") or {}
    n = len(ckpt["styles"])
    name = arch.get("name", "StyleNet")
    if name == "MelNet":
        from .mel import MelNet

        return MelNet(n, cfg, channels=tuple(arch["channels"]), dropout=arch.get("dropout", 0.0),
                      n_mels=arch.get("n_mels", 64), input_stats=arch.get("input_stats", False),
                      spec_augment=arch.get("spec_augment", False))
    if name == "LogMelBaseline":
        from .baseline import LogMelBaseline

        return LogMelBaseline(n, cfg, n_mels=arch.get("n_mels", 64), C=arch.get("C", 1.0))
    if name != "StyleNet":
        raise CheckpointError(f"unknown architecture {name!r}; this version knows StyleNet, MelNet, LogMelBaseline")
    return StyleNet(n, cfg)


def load_model(path: str | Path, device: str | torch.device = "cpu",
               require: str | None = None) -> tuple[torch.nn.Module, list[str], dict]:
    """Rebuild the trained net from ``path``: ``(model in eval mode, style names, checkpoint)``.

    Any model ``train --model`` writes loads (the thesis's StyleNet, the log-mel
    MelNet, the log-mel baseline). ``require="StyleNet"`` refuses the others
    with a clear message (dreaming needs the thesis net).
    """
    ckpt = read_checkpoint(path)
    cfg = ThesisConfig.from_dict(ckpt["config"])
    model = build_from_checkpoint(ckpt, cfg)
    name = type(model).__name__
    if require is not None and name != require:
        raise CheckpointError(f"{path}: a {name} (train --model {'mel' if name == 'MelNet' else 'baseline'}); "
                              f"this needs a {require}: train with --model thesis")
    if ckpt.get("architecture") != model.architecture():
        raise CheckpointError(f"{path}: architecture {ckpt.get('architecture')} does not match "
                              f"this version's {name} {model.architecture()}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {name}: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), list(ckpt["styles"]), ckpt

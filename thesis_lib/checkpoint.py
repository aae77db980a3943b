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


def _is_str_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _config_problem(config: dict) -> str | None:
    """What is wrong with a checkpoint's ``config`` (compared with the thesis's types), or ``None``."""
    from dataclasses import fields

    from .config import THESIS, ConvSpec

    for f in fields(ThesisConfig):
        if f.name not in config:
            continue
        v, default = config[f.name], getattr(THESIS, f.name)
        if f.name == "convs":
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(c, dict) for c in v):
                return "config field 'convs' is not a list of layer dicts"
            try:
                specs = [ConvSpec(**c) for c in v]
            except TypeError as exc:
                return f"config field 'convs' has an unusable layer ({exc})"
            if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                       for c in specs for x in vars(c).values()):
                return "config field 'convs' has a layer size that is not a positive integer"
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                return f"config field {f.name!r} is {type(v).__name__}, expected bool"
        elif isinstance(default, (int, float)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(default, int)
                                                                         and not isinstance(v, int)):
                return f"config field {f.name!r} is {type(v).__name__}, expected {type(default).__name__}"
        elif isinstance(default, str) and not isinstance(v, str):
            return f"config field {f.name!r} is {type(v).__name__}, expected str"
    return None


MODEL_FIELDS = ("config", "styles", "state_dict", "architecture")
"""Fields every checkpoint (model.pt and the resume state checkpoint.pt) must carry."""

RESUME_FIELDS = MODEL_FIELDS + ("optimizer", "history", "settings", "data", "split")
"""Fields the resume state ``checkpoint.pt`` carries besides the model's."""


def validate_checkpoint(ckpt: dict[str, Any], path: str | Path, resume: bool = False) -> dict[str, Any]:
    """Check the fields and their types; :class:`CheckpointError` naming the file and the field otherwise."""
    def bad(what: str) -> CheckpointError:
        kind = "resume state" if resume else "checkpoint"
        return CheckpointError(f"{path}: damaged or incomplete {kind}: {what}")

    for name in RESUME_FIELDS if resume else MODEL_FIELDS:
        if name not in ckpt:
            raise bad(f"the field {name!r} is missing")
    if not isinstance(ckpt["config"], dict):
        raise bad(f"'config' is {type(ckpt['config']).__name__}, expected a dict")
    problem = _config_problem(ckpt["config"])
    if problem:
        raise bad(problem)
    styles = ckpt["styles"]
    if not _is_str_list(styles) or len(styles) < 2 or len(set(styles)) != len(styles):
        raise bad(f"'styles' is {styles!r}, expected a list of two or more distinct names")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise bad("'state_dict' is not a dict of named tensors")
    arch = ckpt["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name", "StyleNet"), str):
        raise bad(f"'architecture' is {type(arch).__name__}, expected a dict with a 'name'")
    if resume:
        types = {"optimizer": dict, "history": list, "settings": dict, "data": str, "split": dict}
        for name, t in types.items():
            if not isinstance(ckpt[name], t):
                raise bad(f"{name!r} is {type(ckpt[name]).__name__}, expected {t.__name__}")
        split = ckpt["split"]
        for name in ("train", "test"):
            v = split.get(name)
            if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.dtype.is_floating_point or v.is_complex():
                raise bad(f"the split's {name!r} is not a 1-d tensor of clip indices")
        if not _is_str_list(split.get("styles")) or not isinstance(split.get("mode"), str) \
                or not _is_str_list(split.get("notes", [])):
            raise bad("the split's 'styles', 'mode' or 'notes' are missing or of the wrong type")
        if not all(isinstance(h, dict) for h in ckpt["history"]):
            raise bad("'history' is not a list of per-epoch dicts")
    return ckpt


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; damaged or incomplete files raise :class:`CheckpointError`.

    The fields every checkpoint carries are checked (:func:`validate_checkpoint`).
    """
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
    validate_checkpoint(ckpt, path, resume=False)

    return ckpt


ARCHITECTURES = {"StyleNet": "thesis", "MelNet": "mel", "LogMelBaseline": "baseline", "MusicnnProbe": "musicnn",
                 "LateFusion": "fusion"}
"""Every architecture a checkpoint can hold, and the ``train --model`` that writes it."""


def build_architecture(arch: dict[str, Any], n_styles: int, cfg: ThesisConfig) -> torch.nn.Module:
    """An untrained model of a checkpoint's ``architecture`` dict (a fusion builds its members)."""
    name = arch.get("name", "StyleNet")
    if name == "MelNet":
        from .mel import MelNet

        return MelNet(n_styles, cfg, channels=tuple(arch["channels"]), dropout=arch.get("dropout", 0.0),
                      n_mels=arch.get("n_mels", 64), input_stats=arch.get("input_stats", False),
                      spec_augment=arch.get("spec_augment", False))
    if name == "LogMelBaseline":
        from .baseline import LogMelBaseline

        return LogMelBaseline(n_styles, cfg, n_mels=arch.get("n_mels", 64), C=arch.get("C", 1.0),
                              balanced=arch.get("balanced", False))     # fitted unweighted before the field
    if name == "MusicnnProbe":
        from .musicnn import TAGGERS, MusicnnProbe, tagger_weights

        kinds = {tagger_weights(k)[0].name: k for k in TAGGERS}
        kind = kinds.get(arch.get("tagger", "musicnn-msd.pt"))
        if kind is None or arch.get("tagger_sha256", tagger_weights(kind)[1]) != tagger_weights(kind)[1]:
            raise CheckpointError(f"a probe on tagger weights this version does not ship ({arch.get('tagger')}, "
                                  f"sha256 {str(arch.get('tagger_sha256'))[:12]}...): train it again with this version")
        return MusicnnProbe(n_styles, cfg, C=arch.get("C", 1.0), kind=kind, balanced=arch.get("balanced", False))
    if name == "LateFusion":
        from .fusion import MEMBER_MODELS, LateFusion

        members = arch["members"]
        if (not isinstance(members, dict) or len(members) < 2 or not set(members) <= set(MEMBER_MODELS)
                or not all(isinstance(m, dict) for m in members.values())):
            raise CheckpointError(f"a LateFusion whose members are {members!r}, expected two or more of "
                                  f"{', '.join(MEMBER_MODELS)}")
        return LateFusion(n_styles, cfg, members={k: build_architecture(m, n_styles, cfg) for k, m in members.items()})
    if name != "StyleNet":
        raise CheckpointError(f"unknown architecture {name!r}; this version knows {', '.join(ARCHITECTURES)}")
    return StyleNet(n_styles, cfg)


def build_from_checkpoint(ckpt: dict[str, Any], cfg: ThesisConfig) -> torch.nn.Module:
    """An untrained model of the checkpoint's architecture (any of :data:`ARCHITECTURES`)."""
    return build_architecture(ckpt.get("architecture") or {}, len(ckpt["styles"]), cfg)


def load_model(path: str | Path, device: str | torch.device = "cpu",
               require: str | None = None) -> tuple[torch.nn.Module, list[str], dict]:
    """Rebuild the trained net from ``path``: ``(model in eval mode, style names, checkpoint)``.

    Any model ``train --model`` writes loads (the thesis's StyleNet, the log-mel
    MelNet, the log-mel baseline, their late fusion). ``require="StyleNet"`` refuses the others
    with a clear message (dreaming needs the thesis net). ``pretrained:NAME``
    loads a net shipped with the package (:mod:`thesis_lib.pretrained`).
    """
    from .pretrained import resolve

    path = resolve(path)
    ckpt = read_checkpoint(path)
    try:
        cfg = ThesisConfig.from_dict(ckpt["config"])
        model = build_from_checkpoint(ckpt, cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:   # fields the validation cannot know
        raise CheckpointError(f"{path}: damaged or incomplete checkpoint: its architecture "
                              f"{ckpt.get('architecture')!r} cannot be built ({type(exc).__name__}: {exc})") from None
    name = type(model).__name__
    if require is not None and name != require:
        raise CheckpointError(f"{path}: a {name} (train --model {ARCHITECTURES.get(name, '?')}); "
                              f"this needs a {require}: train with --model thesis")
    if ckpt.get("architecture") != model.architecture():
        raise CheckpointError(f"{path}: architecture {ckpt.get('architecture')} does not match "
                              f"this version's {name} {model.architecture()}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {name}: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), list(ckpt["styles"]), ckpt

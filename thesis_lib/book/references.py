"""Reference sounds: what the book heard, shipped with the package so a reader can compare their own run.

Why
---
A dream or a style transfer is a sound; a table of numbers does not say what it
is like. A reader who trains their own net, brings their own music or runs on
another machine wants to know whether their result is the one the book meant.
So the package ships a few seconds of each kind of result, made from the
shipped net (:mod:`thesis_lib.pretrained`, ``thesis-synth``) on one fixed
C-pop test clip and one metal test clip of the built-in data:

* the chapter 6 dreams (scale-free L-BFGS-B on conv1, conv2 and conv3, and
  DeepDream's ascent on conv3);
* an inversion of conv2 (chapter 7);
* a style transfer (Ulyanov & Lebedev's random-filter STFT method, chapter 7);
* an effect steering toward metal (chapter 7).

:func:`make_references` writes them as 16-bit FLAC files with
``reference.json`` (the clip, the function and settings, the measures of
:func:`thesis_lib.dream.report.relation`, each file's sha256); chapters show
them with :func:`reference_players`. ``python -m thesis_lib pretrained
--references`` remakes them (maintainers).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np


HERE = Path(__file__).resolve().parent.parent / "pretrained" / "reference"
INDEX = "reference.json"
FORMAT = "thesis_lib.reference/1"


def _plans(model, content: np.ndarray, style: np.ndarray, target: int) -> dict[str, tuple[str, str, Callable]]:
    """``{slug: (what it is, chapter, thunk returning audio)}`` with each method's book defaults."""
    from ..dream import DREAM, dream
    from ..dream.audio_style import stft_style_transfer
    from ..dream.effects import effect_steer
    from ..dream.transform import invert

    free = replace(DREAM, bound=None, normalise=True)
    plans = {f"dream-{layer}": (f"{layer} dream, scale-free L-BFGS-B, {DREAM.iterations} iterations", "6",
                                lambda l=layer: dream(model, content, l, "lbfgs", cfg=free, progress=False).audio)
             for layer in ("conv1", "conv2", "conv3")}
    plans["ascent-conv3"] = ("conv3 dream, DeepDream's gradient ascent", "6",
                             lambda: dream(model, content, "conv3", "ascent", progress=False).audio)
    plans["inversion-conv2"] = ("conv2 inverted: noise optimised until its conv2 output matches the clip's", "7",
                                lambda: invert(model, content, "conv2", progress=False).audio)
    plans["style-transfer"] = ("the C-pop clip re-sounded with the metal clip's timbre (random-filter STFT)", "7",
                               lambda: stft_style_transfer(content, style, progress=False).audio)
    plans["effects-metal"] = ("the C-pop clip through the effect chain that makes the net hear metal", "7",
                              lambda: effect_steer(model, content, target, progress=False).audio)
    return plans


def make_references(out: str | Path = HERE, name: str = "thesis-synth", clip_number: int = 0,
                    only: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Make every reference sound (or those in ``only``) from the shipped net ``name``, with ``reference.json``."""
    import soundfile as sf
    import torch

    from .. import pretrained
    from ..audio import peak_normalize
    from ..dream.report import relation
    from .runs import pretrained_run, test_set_of

    torch.manual_seed(0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = pretrained_run(name)
    rate = run.model.cfg.sample_rate
    content, style = run.test_clip("cpop", clip_number), run.test_clip("metal", clip_number)
    where = {s: test_set_of(run.dataset, [run.test_indices(s)[clip_number % len(run.test_indices(s))]])
             for s in ("cpop", "metal")}
    sounds = {"original-cpop": ("the C-pop test clip every reference starts from", "", lambda: content),
              "original-metal": ("the metal test clip (style of the transfer)", "", lambda: style),
              **_plans(run.model, content, style, run.styles.index("metal"))}
    unknown = set(only or ()) - set(sounds)
    if unknown:
        raise KeyError(f"no reference sound(s) {sorted(unknown)}; known: {', '.join(sounds)}")
    entries = {}
    for slug, (what, chapter, make) in sounds.items():
        if only is not None and slug not in only:
            continue
        t0 = time.perf_counter()
        y = peak_normalize(np.asarray(make(), np.float32))
        seconds = time.perf_counter() - t0
        file = out / f"{slug}.flac"
        tmp = file.with_name(f".{file.stem}.tmp.flac")
        sf.write(tmp, y, rate, subtype="PCM_16")
        os.replace(tmp, file)
        entries[slug] = {"file": file.name, "what": what, "chapter": chapter, "seconds_to_make": round(seconds, 2),
                         "relation_to_cpop": {k: round(float(v), 4) for k, v in relation(y, content, rate).items()},
                         "sha256": pretrained.sha256(file)}
        log(f"{slug}: {what} ({seconds:.1f} s)")
    kept = references(out).get("sounds", {}) if only is not None else {}   # remaking a few keeps the others
    index = {"format": FORMAT, "net": name, "net_sha256": pretrained.info(name)["sha256"], "sample_rate": rate,
             "clips": where, "torch": torch.__version__,
             "sounds": {k: v for k, v in {**kept, **entries}.items() if (out / v["file"]).is_file()}}
    (out / INDEX).write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    return index


def references(folder: str | Path = HERE) -> dict:
    """``reference.json`` of the shipped sounds (empty when the package has none)."""
    from ..pretrained import read_index

    return read_index(Path(folder) / INDEX, FORMAT, "reference index")


def reference_audio(slug: str, folder: str | Path = HERE) -> tuple[np.ndarray, int]:
    """One shipped reference sound ``(samples, sample_rate)``; its sha256 is checked."""
    import soundfile as sf

    index = references(folder)
    entry = index.get("sounds", {}).get(slug)
    if entry is None:
        raise KeyError(f"no reference sound {slug!r}; shipped: {', '.join(index.get('sounds', {})) or 'none'}")
    from ..pretrained import sha256

    path = Path(folder) / entry["file"]
    if sha256(path) != entry["sha256"]:
        raise ValueError(f"{path}: sha256 does not match reference.json; the file is damaged")
    y, rate = sf.read(path, dtype="float32")
    return y, rate


def reference_players(slugs: list[str], folder: str | Path = HERE):
    """Players of the shipped reference sounds ``slugs``, labelled with what each is, as the book heard them."""
    from .display import players

    index = references(folder)
    if not index:
        from .display import HTML
        return HTML("<p><em>This installation has no reference sounds.</em></p>")
    rate = index["sample_rate"]
    return players({index["sounds"][s]["what"]: reference_audio(s, folder)[0] for s in slugs}, sample_rate=rate,
                   peak=None)


__all__ = ["make_references", "references", "reference_audio", "reference_players"]

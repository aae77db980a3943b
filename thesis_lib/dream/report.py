"""One measured run of every dreaming and transformation method, for the book's closing note.

:func:`measure` runs each method with its default settings on one content
clip (and a style/guide clip), times it, and describes the result in
numbers, since a table cannot be listened to: objective before and after,
seconds (wall and CPU), and how the sound relates to the original (SNR,
loudness-envelope correlation, log-spectral distance) and what it is like
(spectral centroid, flatness: 1 for white noise). ``python -m thesis_lib
dream-report`` prints the table and writes every sound next to it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..audio import write_wav
from .audio_style import AUDIO_STYLE, net_style_transfer, stft_style_transfer
from ..config import CONV_LAYERS, THESIS
from ..model import filter_responses
from .layers import DREAM, dream, filter_dreams, guided_dream, random_net_like, response_agreement
from .measures import correlation, describe, envelope_correlation, log_spectral_distance, snr_db
from ..model import StyleNet
from .transform import TRANSFORM, gatys_transfer, invert, steer_many

LAYERS = CONV_LAYERS


def relation(y: np.ndarray, original: np.ndarray, sample_rate: int = THESIS.sample_rate) -> dict[str, float]:
    """How a result relates to the clip it came from, plus what it is like on its own."""
    d = describe(y, sample_rate)
    return {"snr_db": snr_db(y, original), "corr": correlation(y, original),
            "envelope_corr": envelope_correlation(y, original),
            "lsd_db": log_spectral_distance(y, original, sample_rate), "centroid_hz": d["centroid_hz"],
            "flatness": d["flatness"], "active_fraction": d["active_fraction"],
            "full_scale_fraction": d["full_scale_fraction"]}


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _plans(model: StyleNet, content: np.ndarray, style: np.ndarray, quick: bool) -> list[tuple[str, str, Callable]]:
    """(method, setting, thunk) for every run of the report."""
    it = 3 if quick else None
    dcfg = replace(DREAM, steps_per_octave=3) if quick else DREAM
    acfg = replace(AUDIO_STYLE, iterations=3, filters=64, griffin_lim_iterations=5) if quick else AUDIO_STYLE
    tit = 3 if quick else TRANSFORM.iterations
    rand = random_net_like(model, DREAM.seed)
    plans: list[tuple[str, str, Callable]] = []
    for layer in LAYERS:
        plans.append(("thesis L-BFGS-B", layer, lambda l=layer: dream(model, content, l, "lbfgs", it, progress=False)))
    for layer in LAYERS:
        plans.append(("L-BFGS-B unbounded", layer, lambda l=layer: dream(model, content, l, "lbfgs", it,
                                                                         cfg=replace(dcfg, bound=None),
                                                                         progress=False)))
    for layer in LAYERS:
        plans.append(("DeepDream ascent", layer, lambda l=layer: dream(model, content, l, "ascent", cfg=dcfg,
                                                                       progress=False)))
    for layer in LAYERS:
        plans.append(("random-net L-BFGS-B", layer, lambda l=layer: dream(rand, content, l, "lbfgs", it,
                                                                          progress=False)))
    plans.append(("guided (metal guide)", "conv2", lambda: guided_dream(model, content, style, "conv2", "lbfgs",
                                                                          "aligned", it, progress=False)))
    for layer in ("input_norm", *LAYERS, "fc"):
        plans.append(("inversion", layer, lambda l=layer: invert(model, content, l, tit, progress=False)))
    plans.append(("Gatys, thesis net", f"beta={TRANSFORM.beta:g}",
                  lambda: gatys_transfer(model, content, style, tit, progress=False)))
    plans.append(("Gatys, thesis net", "balanced", lambda: gatys_transfer(model, content, style, tit, balanced=True,
                                                                          progress=False)))
    plans.append(("STFT random filters", f"{acfg.filters} filters",
                  lambda: stft_style_transfer(content, style, acfg, next(model.parameters()).device, False)))
    plans.append(("U&L losses, thesis net", ",".join(acfg.net_layers),
                  lambda: net_style_transfer(model, content, style, acfg, progress=False)))
    return plans


def _row(method: str, setting: str, result, wall: float, cpu: float, content: np.ndarray,
         style: np.ndarray) -> dict:
    row = {"method": method, "setting": setting, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}
    if hasattr(result, "objective_before"):
        row.update(before=result.objective_before, after=result.objective_after, iterations=result.iterations)
    elif hasattr(result, "distance_before"):
        row.update(before=result.distance_before, after=result.distance_after, iterations=result.iterations)
    else:
        row.update(before=result.content_loss_before + result.style_loss_before,
                   after=result.content_loss_after + result.style_loss_after, iterations=result.iterations,
                   style_ltas_db=result.metrics["style_ltas_db"], content_ltas_db=result.metrics["content_ltas_db"])
    row.update(relation(result.audio, content))
    return row


def _slug(method: str, setting: str) -> str:
    keep = "".join(ch if ch.isalnum() else "_" for ch in f"{method}_{setting}".lower())
    return "_".join(filter(None, keep.split("_")))


def measure(model: StyleNet, content: np.ndarray, style: np.ndarray, steer_clips: np.ndarray | None = None,
            steer_target: int = 1, out: str | Path | None = None, quick: bool = False,
            progress: bool = True, only: tuple[str, ...] | None = None) -> dict:
    """Run every method once and return ``{"rows": [...], "steering": {...}}``; with ``out``, write the sounds.

    ``quick`` uses a handful of iterations (for tests of the report itself);
    the numbers the book quotes come from the defaults. ``only`` keeps the
    methods whose names are listed (e.g. ``("inversion",)``).
    """
    model.eval()
    rows = []
    out = Path(out) if out is not None else None
    if out is not None:
        write_wav(out / "original.wav", content)
        write_wav(out / "style.wav", style)
    plans = [p for p in _plans(model, content, style, quick) if only is None or p[0] in only]
    for method, setting, thunk in tqdm(plans, desc="methods", disable=not progress):
        result, wall, cpu = _timed(thunk)
        rows.append(_row(method, setting, result, wall, cpu, content, style))
        if out is not None:
            write_wav(out / f"{_slug(method, setting)}.wav", result.audio)
    report: dict = {"rows": rows}
    if only is None or "filter dreams" in only:
        report["filters"] = _filter_agreement(model, content, 1 if quick else None)
    if steer_clips is not None and len(steer_clips):
        (summary, _), wall, cpu = _timed(lambda: steer_many(model, steer_clips, steer_target,
                                                            3 if quick else TRANSFORM.steer_iterations,
                                                            progress=False))
        report["steering"] = {**summary, "cpu_seconds": round(cpu, 2)}
    if out is not None:
        (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
        (out / "report.md").write_text(markdown(report))
    return report


def _filter_agreement(model: StyleNet, content: np.ndarray, iterations: int | None) -> dict:
    """Each conv1 filter's dream against its response, for the trained and an untrained net."""
    out = {}
    for name, net in (("trained", model), ("random", random_net_like(model, DREAM.seed))):
        (dreams, wall, cpu) = _timed(lambda n=net: filter_dreams(n, content, "lbfgs", iterations, progress=False))
        freqs, resp = filter_responses(net)
        out[name] = {"agreement": response_agreement(freqs, resp, [d.audio for d in dreams]),
                     "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}
    return out


def markdown(report: dict) -> str:
    """The report as a Markdown table (and a steering line)."""
    cols = ["method", "setting", "before", "after", "iterations", "seconds", "cpu_seconds", "snr_db",
            "envelope_corr", "lsd_db", "centroid_hz", "flatness", "full_scale_fraction"]

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in report["rows"]]
    if "filters" in report:
        for name, f in report["filters"].items():
            lines += ["", f"conv1 filter dreams, {name} net: correlation of each filter's response with its "
                          f"dream's spectrum " + ", ".join(f"{a:.2f}" for a in f["agreement"])
                      + f" (mean {np.mean(f['agreement']):.2f}); {f['seconds']:.1f} s."]
    if "steering" in report:
        s = report["steering"]
        lines += ["", f"Steering: {s['flipped']} of {s['clips'] - s['already_target']} clips flipped to the target "
                      f"({s['already_target']} already there); mean SNR {s['mean_snr_db']:.1f} dB (min "
                      f"{s['min_snr_db']:.1f}); p(target) {s['mean_p_target_before']:.3f} → "
                      f"{s['mean_p_target_after']:.3f}; {s['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# The thesis's three observations, as measurable criteria (chapter 6 of the book)
# ----------------------------------------------------------------------------

THESIS_HEARD = {
    "conv1": "a few bursts, hardly related to the original",
    "conv2": "many pulses, fewer where the original is loud",
    "conv3": "keeps the outline and the fundamentals, loses the harmonics",
}
"""What the thesis heard in each layer's dream (thesis 5.3), in our words."""

UNRELATED = 0.3
"""|correlation| below this (waveform and loudness envelope): "hardly related to the original"."""
ANTI_LOUD = -0.2
"""Envelope correlation below this: the dream is louder where the original is quiet."""
OUTLINE = 0.5
"""Envelope correlation above this: the dream keeps the original's outline (loud where it is loud)."""

CRITERIA = {
    "conv1": f"|waveform correlation| < {UNRELATED} and |envelope correlation| < {UNRELATED}",
    "conv2": f"envelope correlation < {ANTI_LOUD}",
    "conv3 outline": f"envelope correlation > {OUTLINE}",
    "conv3 fundamentals": "spectral centroid below the original's",
}
"""How each observation is tested on the numbers of :func:`relation` (conv3's has two halves)."""


def thesis_observations(rows: dict[str, dict], original_centroid_hz: float) -> dict[str, bool]:
    """Which of the thesis's observations the measured dreams reproduce, keyed as :data:`CRITERIA`.

    ``rows`` maps ``conv1``/``conv2``/``conv3`` to :func:`relation` of that
    layer's dream with the original: conv1 unrelated to the original in
    waveform and in loudness; conv2 anti-correlated in loudness (pulses where
    the original is quiet); conv3 following the original's loudness (its
    outline) and, separately, with its energy moved down (harmonics lost,
    fundamentals kept).
    """
    c1, c2, c3 = rows["conv1"], rows["conv2"], rows["conv3"]
    return {
        "conv1": abs(c1["corr"]) < UNRELATED and abs(c1["envelope_corr"]) < UNRELATED,
        "conv2": c2["envelope_corr"] < ANTI_LOUD,
        "conv3 outline": c3["envelope_corr"] > OUTLINE,
        "conv3 fundamentals": c3["centroid_hz"] < original_centroid_hz,
    }


def layer_grid(model: StyleNet, clip: np.ndarray, settings: dict[str, tuple[str, object]],
               iterations: tuple[int, ...], layers: tuple[str, ...] = LAYERS) -> dict[tuple, object]:
    """Dream ``clip`` with every ``(method, DreamConfig)`` of ``settings``, layer and iteration count.

    Returns ``{(setting, layer, iterations): DreamResult}``; the ascent's
    ``iterations`` are its steps per octave.
    """
    return {(name, layer, int(it)): dream(model, clip, layer, method, int(it), cfg=cfg, progress=False)
            for name, (method, cfg) in settings.items() for layer in layers for it in iterations}


def grid_rows(results: dict[tuple, object], original: np.ndarray) -> list[dict]:
    """One row per dream of :func:`layer_grid`: how it stopped and how it relates to the original."""
    rows = []
    for (name, layer, it), r in results.items():
        rel = relation(r.audio, original)
        rows.append({"setting": name, "layer": layer, "asked": it, "iterations": r.iterations,
                     "stop": r.stop or "steps done", "gain": r.gain, **rel})
    return rows


__all__ = ["relation", "measure", "markdown", "LAYERS", "THESIS_HEARD", "CRITERIA", "thesis_observations",
           "layer_grid", "grid_rows"]

"""Layer dreaming: the thesis's transformation (thesis 4.3, 5.3) and DeepDream's ascent.

The trained net is frozen in eval mode and the *input waveform* becomes the
variable. The thesis maximised ``O = ½ Σ y²`` for the output ``y`` of one
convolutional layer with scipy's L-BFGS-B (on ``-O``), gradients coming from
the framework; :func:`dream_lbfgs` does exactly that, torch giving the
gradient. :func:`dream_ascent` adds what Google's DeepDream did and the thesis
did not: plain gradient steps normalised by the mean absolute gradient,
random circular time shifts (jitter) between steps so that no sample position
is favoured, and "octaves" -- the clip is first dreamed at lower sample rates
and the detail found there is carried up to the full rate. Guided dreaming
(DeepDream's guide objective) and the random-net and first-layer-filter
controls live here too; inversion, style transfer and class steering are in
:mod:`thesis_lib.dream.transform` and :mod:`thesis_lib.dream.audio_style`.

Every result is normalised to peak 0.9 (as the thesis wrote its WAV files)
and checked: finite, the clip's length, not silent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.signal import resample
from tqdm.auto import tqdm

from ..audio import AudioError, decode_track, normalise_scale
from ..config import CONV_LAYERS, SILENCE, THESIS, ThesisConfig
from ..model import StyleNet, filter_responses
from ..runtime import device_of
from .settings import DREAM, METHODS, DreamConfig, DreamError
from .base import (LbfgsOutcome, check_clip, cpu_threads, finish_audio, freeze,
                   minimize_lbfgs)




# ----------------------------------------------------------------------------
# Clips in, audio out
# ----------------------------------------------------------------------------

def load_clip(path: str | Path, offset: float | None = None, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """One clip of ``cfg.clip_samples`` from an audio file, peak-normalised as the thesis's tracks.

    The file is decoded at 8 kHz (streamed) and normalised to peak 0.9 on the whole track (thesis 4.1);
    ``offset`` (seconds) picks the clip's start, otherwise the clip in the
    middle of the file is taken, which skips intros the way the thesis's 30-s
    trim does. A file shorter than one clip is an error, not silently padded.
    """
    n = cfg.clip_samples
    with decode_track(path, cfg.sample_rate, cfg.resample_type) as track:   # streamed: any length
        size = track.n_samples
        if size < n:
            raise AudioError(path, f"too short for dreaming: {size / cfg.sample_rate:.2f} s, but one clip is "
                                   f"{cfg.clip_seconds:g} s ({n} samples at {cfg.sample_rate} Hz)")
        try:
            scale = normalise_scale(track, cfg.peak)
        except AudioError as exc:
            raise AudioError(path, exc.reason.replace("silent track (", "silent (", 1)) from None
        if offset is None:
            start = (size - n) // 2
        else:
            start = int(round(offset * cfg.sample_rate))
            if start < 0 or start + n > size:
                raise AudioError(path, f"--offset {offset:g} s leaves no full {cfg.clip_seconds:g}-s clip in a "
                                       f"{size / cfg.sample_rate:.2f}-s file (largest offset "
                                       f"{(size - n) / cfg.sample_rate:.2f} s)")
        clip = (track.read(start, start + n) * scale).astype(np.float32, copy=False)
    if np.sqrt(np.mean(clip.astype(np.float64) ** 2)) < SILENCE:
        raise AudioError(path, f"the clip at {start / cfg.sample_rate:.2f} s is silent; choose another --offset")
    return clip.astype(np.float32)


# ----------------------------------------------------------------------------
# Objectives: a function of the waveform that dreaming maximises
# ----------------------------------------------------------------------------

@dataclass
class Objective:
    """A scalar to *maximise*, as a function of a ``(1, samples)`` waveform tensor.

    ``position_free`` says whether the objective is a sum over time steps that
    does not care where things happen: then it is defined for a shorter
    signal (DeepDream's lower octaves) and a circular shift of the input does
    not change what it asks for (DeepDream's jitter). The fc and out layers and
    time-aligned guides are not position-free.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    name: str
    position_free: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _check_layer(model: StyleNet, layer: str) -> None:
    if layer not in model.layer_names:
        raise DreamError(f"unknown layer {layer!r}; choose from {', '.join(model.layer_names)}")


def _full_length_only(layer: str) -> bool:
    """fc and out read the flattened conv3 output, so they need exactly one clip."""
    return layer in ("fc", "out")


def layer_objective(model: StyleNet, layer: str, channel: int | None = None) -> Objective:
    """The thesis's ``O = ½ Σ y²`` over the output ``y`` of ``layer`` (optionally one channel); chapter 6 of the book."""
    _check_layer(model, layer)

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = model.features(x, [layer])[layer]
        if channel is not None:
            if y.dim() < 3 or not 0 <= channel < y.shape[1]:
                raise DreamError(f"layer {layer} has no channel {channel}")
            y = y[:, channel]
        return 0.5 * (y ** 2).sum()

    name = f"½Σy² of {layer}" + (f" channel {channel}" if channel is not None else "")
    return Objective(fn, name, position_free=not _full_length_only(layer))


def guide_objective(model: StyleNet, guide: np.ndarray, layer: str, mode: str = DREAM.guide_mode,
                    device: torch.device | str = "cpu") -> Objective:
    """DeepDream's guided objective: the dot product of the layer's output for the input and the guide's.

    ``aligned`` multiplies the two outputs time step by time step, so the input
    takes on the guide's features where the guide has them. ``average``
    multiplies by the guide's time-averaged output: the input is pushed toward
    the guide's typical feature mix wherever it is, like DeepDream's
    position-free matching, and works at any length (so also with octaves).
    """
    _check_layer(model, layer)
    if mode not in ("aligned", "average"):
        raise DreamError(f"guide mode must be 'aligned' or 'average', not {mode!r}")
    g = torch.as_tensor(check_clip(guide, model.cfg), device=device)[None]
    with torch.no_grad():
        target = model.features(g, [layer])[layer].detach()
    if mode == "average":
        target = target.mean(dim=-1, keepdim=True) if target.dim() == 3 else target

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (model.features(x, [layer])[layer] * target).sum()

    position_free = mode == "average" and not _full_length_only(layer)
    return Objective(fn, f"guide·{layer} ({mode})", position_free=position_free)


def objective_value(objective: Objective, signal: np.ndarray, device: torch.device | str = "cpu") -> float:
    """The objective of one signal, without gradients."""
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(signal, dtype=np.float32), device=device)[None]
        return float(objective(x))


# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------

@dataclass
class DreamResult:
    """One dream: the audio to play and the numbers that say what the optimiser achieved.

    ``objective_after`` is measured on the optimiser's last signal;
    ``objective_written`` on ``audio`` after the peak-0.9 normalisation, which
    is what the net would see in the written file.
    """

    audio: np.ndarray
    original: np.ndarray
    objective: str
    method: str
    objective_before: float
    objective_after: float
    objective_written: float
    seconds: float
    iterations: int
    history: list[float] = field(default_factory=list)
    raw: np.ndarray | None = None
    stop: str = ""
    evaluations: int = 0

    @property
    def gain(self) -> float:
        """How many times larger the objective became (after / before)."""
        return self.objective_after / self.objective_before if self.objective_before else float("inf")

    def summary(self) -> dict:
        """The numbers, JSON-ready (no arrays)."""
        return {"objective": self.objective, "method": self.method,
                "objective_before": self.objective_before, "objective_after": self.objective_after,
                "objective_written": self.objective_written, "gain": self.gain,
                "seconds": round(self.seconds, 3), "iterations": self.iterations,
                "evaluations": self.evaluations, "stop": self.stop}


# ----------------------------------------------------------------------------
# Optimisers
# ----------------------------------------------------------------------------

def _result(objective: Objective, method: str, clip: np.ndarray, raw: np.ndarray, history: list[float],
            iterations: int, seconds: float, device: torch.device, cfg: ThesisConfig, stop: str = "",
            evaluations: int = 0) -> DreamResult:
    audio = finish_audio(raw, cfg)
    return DreamResult(audio=audio, original=clip, objective=objective.name, method=method,
                       objective_before=objective_value(objective, clip, device),
                       objective_after=objective_value(objective, raw, device),
                       objective_written=objective_value(objective, audio, device),
                       seconds=seconds, iterations=iterations, history=history,
                       raw=np.asarray(raw, dtype=np.float32), stop=stop, evaluations=evaluations)


LBFGS_PGTOL = 1e-10
"""Projected-gradient tolerance of the dreams' L-BFGS-B, on the objective scaled to 1 at the clip.

scipy's default (1e-5, absolute) stopped runs while they were still gaining; the bounded
runs that stop early now stop because every sample sits on the box (a corner: a true
maximum of the box problem), and ``DreamResult.stop`` says so.
"""


def stop_reason(message: str) -> str:
    """scipy's L-BFGS-B message in a reader's words."""
    m = message.upper()
    if "ITERATIONS REACHED" in m or "TOTAL NO. OF" in m:
        return "iteration limit"
    if "PROJECTED GRADIENT" in m:
        return "converged (no uphill direction left inside the box)"
    if "REL_REDUCTION" in m or "RELATIVE REDUCTION" in m:
        return "converged (objective stopped changing)"
    if "ABNORMAL" in m:
        return "line search failed (objective unbounded: the step ran off)"
    return message.strip().lower() or "unknown"


def maximize_lbfgs(model: StyleNet, clip: np.ndarray, objective: Objective, iterations: int = DREAM.iterations,
                   bound: float | None = DREAM.bound, progress: bool = True,
                   threads: int | None = DREAM.cpu_threads, normalise: bool = DREAM.normalise) -> DreamResult:
    """The thesis's method: L-BFGS-B minimising ``-objective`` from the clip itself.

    The objective is scaled to 1 at the clip (its raw value runs to millions,
    which made scipy's absolute gradient tolerance meaningless). With
    ``normalise`` the objective is taken of the waveform rescaled to the
    clip's energy (see :class:`~thesis_lib.dream.settings.DreamConfig`); the
    raw result is then rescaled the same way. ``stop`` on the result says why
    L-BFGS-B stopped.
    """
    if normalise and bound is not None:
        raise DreamError("normalise=True optimises the waveform's shape at the clip's energy; use it with bound=None")
    freeze(model)
    x0 = check_clip(clip, model.cfg)
    device = device_of(model)
    energy = float(np.linalg.norm(x0.astype(np.float64)))

    def loss(x: torch.Tensor) -> torch.Tensor:
        if normalise:
            x = x * (energy / x.norm())
        return -objective(x[None])

    t0 = time.perf_counter()
    out = minimize_lbfgs(loss, x0, iterations, None if bound is None else (-bound, bound), device, progress,
                         desc=f"dream {objective.name}", threads=threads, scale=True, pgtol=LBFGS_PGTOL)
    seconds = time.perf_counter() - t0
    raw = out.x * (energy / max(float(np.linalg.norm(out.x)), 1e-30)) if normalise else out.x
    method = "lbfgs (normalised)" if normalise else "lbfgs"
    return _result(objective, method, x0, raw, [-v for v in out.history], out.iterations, seconds,
                   device, model.cfg, stop_reason(out.message), out.evaluations)


def _octave_lengths(n: int, octaves: int, scale: float) -> list[int]:
    """Signal lengths from the coarsest octave to the full rate."""
    return [int(round(n / scale ** k)) for k in range(octaves - 1, -1, -1)]


def _ascent_steps(objective: Objective, x: torch.Tensor, steps: int, step_size: float, jitter: int,
                  rng: np.random.Generator, bar: tqdm, history: list[float]) -> torch.Tensor:
    """DeepDream's inner loop at one sample rate: shift, step along the normalised gradient, clip."""
    for _ in range(steps):
        shift = int(rng.integers(-jitter, jitter + 1)) if jitter > 0 else 0
        xs = torch.roll(x, shift, dims=-1).requires_grad_(True)
        value = objective(xs)
        (grad,) = torch.autograd.grad(value, xs)
        grad = torch.roll(grad, -shift, dims=-1)
        scale = grad.abs().mean()
        if not torch.isfinite(scale) or scale == 0:
            break
        x = (x + step_size * grad / scale).clamp_(-1.0, 1.0).detach()
        history.append(float(value.detach()))
        bar.update(1)
    return x


def maximize_ascent(model: StyleNet, clip: np.ndarray, objective: Objective, cfg: DreamConfig = DREAM,
                    progress: bool = True) -> DreamResult:
    """DeepDream's gradient ascent with jitter and octaves, the waveform kept in [-1, 1].

    At each octave the clip is resampled (band-limited, FFT) to a lower rate
    and the net sees it as if it were at 8 kHz, so its filters respond to
    lower frequencies; what the ascent adds there (the "detail") is resampled
    up and added to the next finer version of the clip. Objectives that are
    not position-free (fc, out, aligned guides) run at the full rate only and
    without jitter, since shifting the input would change what they ask for.
    """
    freeze(model)
    x0 = check_clip(clip, model.cfg)
    device = device_of(model)
    octaves = cfg.octaves if objective.position_free else 1
    lengths = _octave_lengths(x0.size, max(octaves, 1), cfg.octave_scale)
    rng = np.random.default_rng(cfg.seed)
    history: list[float] = []
    detail = np.zeros(lengths[0])
    t0 = time.perf_counter()
    with cpu_threads(cfg.cpu_threads, device), tqdm(total=cfg.steps_per_octave * len(lengths),
                                                    desc=f"ascent {objective.name}", disable=not progress,
                                                    leave=False) as bar:
        for n in lengths:
            base = x0.astype(np.float64) if n == x0.size else resample(x0.astype(np.float64), n)
            if detail.size != n:
                detail = resample(detail, n)
            x = torch.as_tensor(np.clip(base + detail, -1, 1), dtype=torch.float32, device=device)[None]
            jitter = int(round(cfg.jitter * n / x0.size)) if objective.position_free else 0
            x = _ascent_steps(objective, x, cfg.steps_per_octave, cfg.step_size, jitter, rng, bar, history)
            detail = x[0].cpu().numpy().astype(np.float64) - base
    seconds = time.perf_counter() - t0
    raw = np.clip(x0 + detail, -1, 1)
    return _result(objective, "ascent", x0, raw, history, len(history), seconds, device, model.cfg)


def _run(model: StyleNet, clip: np.ndarray, objective: Objective, method: str, iterations: int | None,
         cfg: DreamConfig, progress: bool) -> DreamResult:
    if iterations is not None and iterations < 1:
        raise DreamError(f"iterations must be at least 1, not {iterations}")
    if method == "lbfgs":
        return maximize_lbfgs(model, clip, objective, cfg.iterations if iterations is None else iterations,
                              cfg.bound, progress, cfg.cpu_threads, cfg.normalise)
    if method == "ascent":
        if iterations is not None:
            cfg = replace(cfg, steps_per_octave=iterations)
        return maximize_ascent(model, clip, objective, cfg, progress)
    raise DreamError(f"method must be one of {METHODS}, not {method!r}")


# ----------------------------------------------------------------------------
# The public entry points the book calls
# ----------------------------------------------------------------------------

def dream(model: StyleNet, clip: np.ndarray, layer: str, method: str = "lbfgs", iterations: int | None = None,
          channel: int | None = None, cfg: DreamConfig = DREAM, progress: bool = True) -> DreamResult:
    """Dream ``clip`` on ``layer``: maximise ``½ Σ y²`` of its output (thesis 4.3).

    ``method="lbfgs"`` is the thesis's L-BFGS-B (``iterations`` L-BFGS-B
    iterations); ``"ascent"`` is DeepDream's (``iterations`` steps per octave).
    The model runs wherever its weights are (move it to the GPU first to use one).
    """
    return _run(model, clip, layer_objective(model, layer, channel), method, iterations, cfg, progress)


def guided_dream(model: StyleNet, clip: np.ndarray, guide: np.ndarray, layer: str, method: str = "lbfgs",
                 mode: str = DREAM.guide_mode, iterations: int | None = None, cfg: DreamConfig = DREAM,
                 progress: bool = True) -> DreamResult:
    """Dream ``clip`` toward ``guide`` (e.g. a metal clip): maximise their layer outputs' dot product."""
    objective = guide_objective(model, guide, layer, mode, device_of(model))
    return _run(model, clip, objective, method, iterations, cfg, progress)


def dream_layers(model: StyleNet, clip: np.ndarray, layers: tuple[str, ...] = CONV_LAYERS,
                 method: str = "lbfgs", iterations: int | None = None, cfg: DreamConfig = DREAM,
                 progress: bool = True) -> dict[str, DreamResult]:
    """The thesis's experiment (Figures 22-23): one dream per layer from the same clip."""
    return {layer: dream(model, clip, layer, method, iterations, cfg=cfg, progress=progress)
            for layer in tqdm(layers, desc="layers", disable=not progress, leave=False)}


# ----------------------------------------------------------------------------
# Controls
# ----------------------------------------------------------------------------

def random_net_like(model: StyleNet, seed: int = DREAM.seed) -> StyleNet:
    """An untrained net of the same architecture (Glorot weights, fresh batch norm), frozen, same device.

    Dreaming on it shows what comes from the architecture alone (strides,
    filter lengths, ReLUs) and, by difference, what the trained net learned.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = StyleNet(model.n_styles, model.cfg)
    return freeze(fresh.to(device_of(model)))


def response_agreement(freqs: np.ndarray, responses_db: np.ndarray, dreams: list[np.ndarray],
                       sample_rate: int = THESIS.sample_rate) -> list[float]:
    """Per conv1 filter: correlation between its response (dB) and its dream's average spectrum (dB).

    Near 1: the dream put its energy where the filter passes most, i.e. the
    first layer's dream is the filter's own pass band made audible.
    """
    from .measures import average_spectrum_db

    out = []
    for resp, y in zip(responses_db, dreams):
        f, level = average_spectrum_db(y, sample_rate, n_fft=2 * (len(freqs) - 1))
        out.append(float(np.corrcoef(np.interp(f, freqs, resp), level)[0, 1]))
    return out


def filter_dreams(model: StyleNet, clip: np.ndarray, method: str = "lbfgs", iterations: int | None = None,
                  cfg: DreamConfig = DREAM, progress: bool = True) -> list[DreamResult]:
    """One dream per first-layer filter (its channel of conv1), to set beside :func:`thesis_lib.model.filter_responses`."""
    n = model.conv_layers()[0].out_channels
    return [_run(model, clip, layer_objective(model, "conv1", c), method, iterations, cfg, progress)
            for c in tqdm(range(n), desc="conv1 filters", disable=not progress, leave=False)]


__all__ = [
    "DreamConfig", "DREAM", "METHODS", "DreamError", "DreamResult", "Objective", "LbfgsOutcome",
    "load_clip", "check_clip", "finish_audio", "layer_objective", "guide_objective", "objective_value",
    "cpu_threads", "minimize_lbfgs", "maximize_lbfgs", "stop_reason", "LBFGS_PGTOL", "maximize_ascent", "dream", "guided_dream", "dream_layers",
    "random_net_like", "filter_responses", "filter_dreams", "response_agreement",
]

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
:mod:`thesis_lib.transform` and :mod:`thesis_lib.audio_style`.

Every result is normalised to peak 0.9 (as the thesis wrote its WAV files)
and checked: finite, the clip's length, not silent.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from scipy.signal import resample
from tqdm.auto import tqdm

from .audio import AudioError, load_audio, peak_normalize
from .config import THESIS, ThesisConfig
from .measures import audio_problems
from .model import StyleNet


@dataclass(frozen=True)
class DreamConfig:
    """Defaults of every dreaming method; the CLI, the book and the tests read them here.

    The thesis gives the objective and the optimiser but not the number of
    iterations nor whether the waveform was bounded; we bound it to [-1, 1]
    (the range of a 16-bit file) because ``½ Σ y²`` of a ReLU net grows
    without limit with the input's scale: unbounded, L-BFGS-B's first line
    search runs off to amplitudes near 1e10 and stops, and what remains
    after the peak-0.9 normalisation is the clip plus its gradient.
    ``bound=None`` gives that run. Bounded, the maximum of this (piecewise)
    convex objective lies on the box's corners, so long runs drive most
    samples to ±1: loud, harsh, with little of the original left. DeepDream's
    small normalised steps (``method="ascent"``) keep the original's shape.
    """

    # --- the thesis's L-BFGS-B (thesis 4.3) -------------------------------
    iterations: int = 50              #: L-BFGS-B iterations (the thesis does not say)
    bound: float | None = 1.0         #: box [-bound, bound] for every sample; None: unbounded
    # --- DeepDream-style gradient ascent -----------------------------------
    steps_per_octave: int = 20        #: gradient steps at each sample rate
    step_size: float = 0.01           #: step in units of the mean |gradient| (full scale is 1)
    jitter: int = 400                 #: largest random circular shift, samples (50 ms at 8 kHz)
    octaves: int = 3                  #: sample rates visited, coarsest first
    octave_scale: float = 1.4         #: ratio of consecutive sample rates (DeepDream's value)
    # --- shared ------------------------------------------------------------
    seed: int = 0                     #: jitter shifts, random nets, starting noise
    cpu_threads: int | None = 1       #: torch CPU threads while optimising one clip (None: leave as is)
    guide_mode: str = "aligned"       #: guided dreaming: "aligned" or "average" (see guide_objective)


DREAM = DreamConfig()
"""The defaults used by the CLI and the book."""

METHODS = ("lbfgs", "ascent")
"""``lbfgs``: the thesis's optimiser. ``ascent``: DeepDream's normalised gradient steps."""


class DreamError(ValueError):
    """A dreaming request that cannot be carried out; the message says why."""


# ----------------------------------------------------------------------------
# Clips in, audio out
# ----------------------------------------------------------------------------

def load_clip(path: str | Path, offset: float | None = None, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """One clip of ``cfg.clip_samples`` from an audio file, peak-normalised as the thesis's tracks.

    The whole file is loaded at 8 kHz and normalised to peak 0.9 (thesis 4.1);
    ``offset`` (seconds) picks the clip's start, otherwise the clip in the
    middle of the file is taken, which skips intros the way the thesis's 30-s
    trim does. A file shorter than one clip is an error, not silently padded.
    """
    y = load_audio(path, cfg.sample_rate, cfg.resample_type)
    n = cfg.clip_samples
    if y.size < n:
        raise AudioError(path, f"too short for dreaming: {y.size / cfg.sample_rate:.2f} s, but one clip is "
                               f"{cfg.clip_seconds:g} s ({n} samples at {cfg.sample_rate} Hz)")
    try:
        y = peak_normalize(y, cfg.peak)
    except ValueError as exc:
        raise AudioError(path, f"silent ({exc})") from None
    if offset is None:
        start = (y.size - n) // 2
    else:
        start = int(round(offset * cfg.sample_rate))
        if start < 0 or start + n > y.size:
            raise AudioError(path, f"--offset {offset:g} s leaves no full {cfg.clip_seconds:g}-s clip in a "
                                   f"{y.size / cfg.sample_rate:.2f}-s file (largest offset "
                                   f"{(y.size - n) / cfg.sample_rate:.2f} s)")
    clip = y[start:start + n]
    if np.sqrt(np.mean(clip.astype(np.float64) ** 2)) < 1e-4:
        raise AudioError(path, f"the clip at {start / cfg.sample_rate:.2f} s is silent; choose another --offset")
    return clip.astype(np.float32)


def check_clip(clip: np.ndarray, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """The clip as 1-D float32 of the net's input length, or a :class:`DreamError` saying what is wrong."""
    x = np.array(clip, dtype=np.float32).squeeze()   # a copy: clips may be read-only memory maps
    if x.ndim != 1 or x.size != cfg.clip_samples:
        raise DreamError(f"a clip must be {cfg.clip_samples} samples (one {cfg.clip_seconds:g}-s clip at "
                         f"{cfg.sample_rate} Hz), got shape {np.shape(clip)}")
    if not np.all(np.isfinite(x)):
        raise DreamError("the clip contains NaN or infinite samples")
    if np.sqrt(np.mean(x.astype(np.float64) ** 2)) < 1e-4:
        raise DreamError("the clip is silent; a dream needs something to start from")
    return x


def finish_audio(raw: np.ndarray, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """What is written and played: finite, peak-normalised to 0.9 (thesis 5.3), float32.

    Raises :class:`DreamError` if the optimiser produced silence, since
    normalising silence would only amplify rounding noise.
    """
    y = np.nan_to_num(np.asarray(raw, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    if np.sqrt(np.mean(y ** 2)) < 1e-6:
        raise DreamError("the optimisation ended in silence; try fewer iterations or another layer")
    y = peak_normalize(y, cfg.peak)
    problems = audio_problems(y, None, cfg.peak)
    if problems:  # pragma: no cover - peak_normalize guarantees these
        raise DreamError("generated audio unusable: " + "; ".join(problems))
    return y


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
    """The thesis's ``O = ½ Σ y²`` over the output ``y`` of ``layer`` (optionally one channel)."""
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

    @property
    def gain(self) -> float:
        """How many times larger the objective became (after / before)."""
        return self.objective_after / self.objective_before if self.objective_before else float("inf")

    def summary(self) -> dict:
        """The numbers, JSON-ready (no arrays)."""
        return {"objective": self.objective, "method": self.method,
                "objective_before": self.objective_before, "objective_after": self.objective_after,
                "objective_written": self.objective_written, "gain": self.gain,
                "seconds": round(self.seconds, 3), "iterations": self.iterations}


# ----------------------------------------------------------------------------
# Optimisers
# ----------------------------------------------------------------------------

@dataclass
class LbfgsOutcome:
    """What :func:`minimize_lbfgs` returns: the minimiser and the loss after each iteration."""

    x: np.ndarray
    loss: float
    history: list[float]
    iterations: int
    evaluations: int
    message: str


@contextmanager
def cpu_threads(threads: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run with ``threads`` torch CPU threads, then restore the previous number.

    One 5-second clip through this small net is far too little work to share
    among threads: on a busy 2-core machine two threads spent ten times the
    CPU time of one, waiting on each other. Nothing changes on a GPU.
    """
    if threads is None or torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def minimize_lbfgs(loss_fn: Callable[[torch.Tensor], torch.Tensor], x0: np.ndarray, iterations: int,
                   bounds: tuple[float | None, float | None] | None = None,
                   device: torch.device | str = "cpu", progress: bool = True,
                   desc: str = "L-BFGS-B", threads: int | None = DREAM.cpu_threads) -> LbfgsOutcome:
    """scipy's L-BFGS-B on a torch loss, as the thesis did with Theano.

    scipy works in float64 numpy, the net in float32 torch; each evaluation
    converts ``x`` in, runs forward and backward, and hands loss and gradient
    back. A non-finite loss is reported as huge so the line search backs off.
    The point returned is the best one evaluated.
    ``bounds=(low, high)`` boxes every variable (``None`` on a side: open).
    ``threads`` limits torch's CPU threads meanwhile (see :func:`cpu_threads`).
    """
    shape = np.shape(x0)
    state = {"loss": float("nan"), "evals": 0, "best": float("inf"), "best_x": None}
    history: list[float] = []

    def f(z: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(z.reshape(shape), dtype=torch.float32, device=device, requires_grad=True)
        loss = loss_fn(x)
        (grad,) = torch.autograd.grad(loss, x)
        value = float(loss.detach())
        state["evals"] += 1
        if not np.isfinite(value) or not torch.isfinite(grad).all():
            return 1e30, np.zeros(z.size)
        state["loss"] = value
        if value < state["best"]:
            state["best"], state["best_x"] = value, z.copy()
        return value, grad.detach().cpu().numpy().astype(np.float64).ravel()

    box = None
    if bounds is not None:
        lo = -np.inf if bounds[0] is None else bounds[0]
        hi = np.inf if bounds[1] is None else bounds[1]
        box = Bounds(np.full(int(np.prod(shape)), lo), np.full(int(np.prod(shape)), hi))
    x_start = np.asarray(x0, dtype=np.float64).ravel()
    if box is not None:
        x_start = np.clip(x_start, box.lb, box.ub)
    with cpu_threads(threads, device), tqdm(total=iterations, desc=desc, disable=not progress, leave=False) as bar:
        def callback(_xk: np.ndarray) -> None:
            history.append(state["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{state['loss']:.4g}")

        res = minimize(f, x_start, jac=True, method="L-BFGS-B", bounds=box, callback=callback,
                       options={"maxiter": iterations, "maxfun": max(20, 4 * iterations)})
    # The best point evaluated: normally L-BFGS-B's answer, but when a line search
    # runs off (an unbounded objective) scipy hands back an older point.
    best, loss = (res.x, float(res.fun)) if state["best_x"] is None else (state["best_x"], state["best"])
    return LbfgsOutcome(best.reshape(shape), loss, history, int(res.nit), state["evals"], str(res.message))


def _device_of(model: StyleNet) -> torch.device:
    return next(model.parameters()).device


def _freeze(model: StyleNet) -> StyleNet:
    """Eval mode: batch norm uses its training-set statistics, as at test time.

    The weights stay untouched because gradients are only ever taken with
    respect to the waveform (``torch.autograd.grad(loss, x)``).
    """
    return model.eval()


def _result(objective: Objective, method: str, clip: np.ndarray, raw: np.ndarray, history: list[float],
            iterations: int, seconds: float, device: torch.device, cfg: ThesisConfig) -> DreamResult:
    audio = finish_audio(raw, cfg)
    return DreamResult(audio=audio, original=clip, objective=objective.name, method=method,
                       objective_before=objective_value(objective, clip, device),
                       objective_after=objective_value(objective, raw, device),
                       objective_written=objective_value(objective, audio, device),
                       seconds=seconds, iterations=iterations, history=history,
                       raw=np.asarray(raw, dtype=np.float32))


def maximize_lbfgs(model: StyleNet, clip: np.ndarray, objective: Objective, iterations: int = DREAM.iterations,
                   bound: float | None = DREAM.bound, progress: bool = True,
                   threads: int | None = DREAM.cpu_threads) -> DreamResult:
    """The thesis's method: L-BFGS-B minimising ``-objective`` from the clip itself."""
    _freeze(model)
    x0 = check_clip(clip, model.cfg)
    device = _device_of(model)
    t0 = time.perf_counter()
    out = minimize_lbfgs(lambda x: -objective(x[None]), x0, iterations,
                         None if bound is None else (-bound, bound), device, progress,
                         desc=f"dream {objective.name}", threads=threads)
    seconds = time.perf_counter() - t0
    return _result(objective, "lbfgs", x0, out.x, [-v for v in out.history], out.iterations, seconds,
                   device, model.cfg)


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
    _freeze(model)
    x0 = check_clip(clip, model.cfg)
    device = _device_of(model)
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
                              cfg.bound, progress, cfg.cpu_threads)
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
    objective = guide_objective(model, guide, layer, mode, _device_of(model))
    return _run(model, clip, objective, method, iterations, cfg, progress)


def dream_layers(model: StyleNet, clip: np.ndarray, layers: tuple[str, ...] = ("conv1", "conv2", "conv3"),
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
    return _freeze(fresh.to(_device_of(model)))


def filter_responses(model: StyleNet, n_fft: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude response (dB) of each first-layer filter: ``(freqs in Hz, (filters, n_fft//2+1))``.

    PyTorch correlates where Lasagne convolved; the magnitude response is the
    same either way, so no flip is needed here.
    """
    w = model.conv_layers()[0].weight.detach().cpu().numpy()[:, 0, :]
    h = np.abs(np.fft.rfft(w, n=n_fft, axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1 / model.cfg.sample_rate)
    return freqs, 20 * np.log10(np.maximum(h, 1e-8))


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
    """One dream per first-layer filter (its channel of conv1), to set beside :func:`filter_responses`."""
    n = model.conv_layers()[0].out_channels
    return [_run(model, clip, layer_objective(model, "conv1", c), method, iterations, cfg, progress)
            for c in tqdm(range(n), desc="conv1 filters", disable=not progress, leave=False)]


__all__ = [
    "DreamConfig", "DREAM", "METHODS", "DreamError", "DreamResult", "Objective", "LbfgsOutcome",
    "load_clip", "check_clip", "finish_audio", "layer_objective", "guide_objective", "objective_value",
    "cpu_threads", "minimize_lbfgs", "maximize_lbfgs", "maximize_ascent", "dream", "guided_dream", "dream_layers",
    "random_net_like", "filter_responses", "filter_dreams", "response_agreement",
]

"""The dreaming wing's shared base: clips in, audio out, and scipy's L-BFGS-B on a torch loss.

Layer dreaming (:mod:`thesis_lib.dream.layers`), inversion, Gatys style
transfer and class steering (:mod:`thesis_lib.dream.transform`) and the
audio style transfer (:mod:`thesis_lib.dream.audio_style`) all optimise a
waveform (or a spectrogram) of a frozen net the same way:

* :func:`freeze` puts the net in eval mode (batch norm uses its training statistics);
* :func:`check_clip` checks the starting clip (length, finite, not silent);
* :func:`minimize_lbfgs` runs scipy's L-BFGS-B with torch's gradient, as the
  thesis did with Theano (thesis 4.3; explained in chapter 6 of the book);
* :func:`finish_audio` turns what the optimiser found into audio to write and
  play: finite, peak 0.9 (thesis 5.3).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from tqdm.auto import tqdm

from ..audio import peak_normalize
from ..config import SILENCE, THESIS, ThesisConfig
from ..model import StyleNet
from .measures import audio_problems
from .settings import DREAM, DreamConfig, DreamError






# ----------------------------------------------------------------------------
# Clips in, audio out
# ----------------------------------------------------------------------------

def check_clip(clip: np.ndarray, cfg: ThesisConfig = THESIS) -> np.ndarray:
    """The clip as 1-D float32 of the net's input length, or a :class:`DreamError` saying what is wrong."""
    x = np.array(clip, dtype=np.float32).squeeze()   # a copy: clips may be read-only memory maps
    if x.ndim != 1 or x.size != cfg.clip_samples:
        raise DreamError(f"a clip must be {cfg.clip_samples} samples (one {cfg.clip_seconds:g}-s clip at "
                         f"{cfg.sample_rate} Hz), got shape {np.shape(clip)}")
    if not np.all(np.isfinite(x)):
        raise DreamError("the clip contains NaN or infinite samples")
    if np.sqrt(np.mean(x.astype(np.float64) ** 2)) < SILENCE:
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
# The optimiser
# ----------------------------------------------------------------------------

def freeze(model: StyleNet) -> StyleNet:
    """The net as dreaming uses it, in eval mode: batch norm uses its training-set statistics, as at test time.

    The weights stay untouched because gradients are only ever taken with
    respect to the waveform (``torch.autograd.grad(loss, x)``).
    """
    return model.eval()


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
                   desc: str = "L-BFGS-B", threads: int | None = DREAM.cpu_threads, scale: bool = False,
                   pgtol: float | None = None, ftol: float | None = None) -> LbfgsOutcome:
    """scipy's L-BFGS-B on a torch loss, as the thesis did with Theano (chapter 6 of the book).

    scipy works in float64 numpy, the net in float32 torch; each evaluation
    converts ``x`` in, runs forward and backward, and hands loss and gradient
    back. A non-finite loss is reported as huge so the line search backs off.
    The point returned is the best one evaluated.
    ``bounds=(low, high)`` boxes every variable (``None`` on a side: open).
    ``threads`` limits torch's CPU threads meanwhile (see :func:`cpu_threads`).

    L-BFGS-B stops on whichever comes first: ``iterations``; a projected
    gradient whose largest component is at most ``pgtol`` (scipy: 1e-5, an
    *absolute* number); a relative change of the loss below ``ftol`` (scipy:
    about 2.2e-9); or a line search that fails. ``scale=True`` divides the
    loss by its magnitude at ``x0`` so that ``pgtol`` means the same for a
    loss of 1e6 as for one of 1 (the layer objectives run to millions).
    The outcome's ``message`` and ``iterations`` say which stop it was.
    """
    shape = np.shape(x0)
    state = {"loss": float("nan"), "evals": 0, "best": float("inf"), "best_x": None}
    history: list[float] = []
    unit = 1.0
    if scale:
        with torch.no_grad():
            at_start = float(loss_fn(torch.tensor(np.reshape(x0, shape), dtype=torch.float32, device=device)))
        if np.isfinite(at_start) and at_start != 0:
            unit = abs(at_start)

    def f(z: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(z.reshape(shape), dtype=torch.float32, device=device, requires_grad=True)
        loss = loss_fn(x) / unit
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
            history.append(state["loss"] * unit)
            bar.update(1)
            bar.set_postfix(loss=f"{state['loss'] * unit:.4g}")

        options = {"maxiter": iterations, "maxfun": max(20, 4 * iterations)}
        if pgtol is not None:
            options["gtol"] = pgtol
        if ftol is not None:
            options["ftol"] = ftol
        res = minimize(f, x_start, jac=True, method="L-BFGS-B", bounds=box, callback=callback, options=options)
    # The best point evaluated: normally L-BFGS-B's answer, but when a line search
    # runs off (an unbounded objective) scipy hands back an older point.
    best, loss = (res.x, float(res.fun)) if state["best_x"] is None else (state["best_x"], state["best"])
    return LbfgsOutcome(best.reshape(shape), loss * unit, history, int(res.nit), state["evals"], str(res.message))


__all__ = ["DreamConfig", "DREAM", "DreamError", "check_clip", "finish_audio", "freeze", "LbfgsOutcome",
           "cpu_threads", "minimize_lbfgs"]

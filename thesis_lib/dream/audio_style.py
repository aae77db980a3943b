"""Audio style transfer that works: Ulyanov & Lebedev's random-filter STFT method.

The thesis's Gatys transfer on its raw-waveform net gave only noise (thesis
chapter 6), and it asked for "a style representation for audio that can be
separated from content". Ulyanov and Lebedev (2016) found one that needs no
training at all:

1. take the log-magnitude STFT, ``log(1 + |S|)``, and treat the frequency
   bins as *channels* of a 1-D signal over time;
2. pass it through one wide layer of *random* 1-D convolutions (thousands of
   filters, each spanning every frequency and a few frames) and a ReLU;
3. content is that layer's output, style its Gram matrix over time (how
   often frequency patterns occur together, wherever they occur);
4. optimise the log-magnitude itself with L-BFGS-B from noise, then recover a
   phase with Griffin-Lim (implemented here with ``torch.stft``/``istft``).

A thousand filters over 257 frequency channels give a Gram matrix of half a
million numbers, against the thesis net's 36 per layer. The same losses
computed with the trained net's features (:func:`net_style_transfer`) make
the comparison the book draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import SILENCE, THESIS
from .base import freeze, check_clip, finish_audio, minimize_lbfgs
from ..model import StyleNet
from ..runtime import device_of
from .settings import AUDIO_STYLE, AudioStyleConfig
from .transform import StyleTransferResult, judge, start_noise




def _default_device() -> torch.device:
    from ..runtime import select_device

    return select_device("auto")


def _window(cfg: AudioStyleConfig, device: torch.device) -> torch.Tensor:
    return torch.hann_window(cfg.n_fft, device=device)


def stft(y: torch.Tensor, cfg: AudioStyleConfig = AUDIO_STYLE) -> torch.Tensor:
    """Complex STFT ``(freq, frames)`` of a 1-D signal, Hann window, centred frames."""
    return torch.stft(y, cfg.n_fft, cfg.hop, window=_window(cfg, y.device), center=True, return_complex=True)


def istft(spec: torch.Tensor, length: int, cfg: AudioStyleConfig = AUDIO_STYLE) -> torch.Tensor:
    """Inverse of :func:`stft`, trimmed or padded to ``length`` samples."""
    return torch.istft(spec, cfg.n_fft, cfg.hop, window=_window(cfg, spec.device), center=True, length=length)


def log_magnitude(y: np.ndarray, cfg: AudioStyleConfig = AUDIO_STYLE,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """``log(1 + |STFT|)``, shape ``(freq, frames)``: the paper's representation."""
    return torch.log1p(stft(torch.as_tensor(np.asarray(y, np.float32), device=device), cfg).abs())


def spectral_convergence(y: np.ndarray, magnitude: torch.Tensor, cfg: AudioStyleConfig = AUDIO_STYLE) -> float:
    """``‖ |STFT(y)| - M ‖ / ‖M‖``: how well a signal realises a magnitude (0 is perfect)."""
    got = stft(torch.as_tensor(np.asarray(y, np.float32), device=magnitude.device), cfg).abs()
    return float(torch.linalg.norm(got - magnitude) / torch.linalg.norm(magnitude).clamp_min(1e-12))


def griffin_lim(magnitude: torch.Tensor, length: int, cfg: AudioStyleConfig = AUDIO_STYLE,
                iterations: int | None = None, progress: bool = True) -> np.ndarray:
    """A waveform whose STFT magnitude is close to ``magnitude`` (fast Griffin-Lim with momentum).

    Alternates between the signal domain and the STFT domain, keeping the
    wanted magnitude and the phase the last inverse produced; the momentum
    term (Perraudin et al., 2013) speeds it up. The start phase is random
    (seeded), as in the paper.
    """
    n = cfg.griffin_lim_iterations if iterations is None else iterations
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    phase = torch.rand(magnitude.shape, generator=gen).to(magnitude.device)
    angles = torch.polar(torch.ones_like(magnitude), 2 * np.pi * phase)
    previous = torch.zeros_like(angles)
    alpha = cfg.momentum / (1 + cfg.momentum)
    for _ in tqdm(range(n), desc="Griffin-Lim", disable=not progress, leave=False):
        rebuilt = stft(istft(magnitude * angles, length, cfg), cfg)
        angles = rebuilt - alpha * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return istft(magnitude * angles, length, cfg).cpu().numpy().astype(np.float64)


def random_filters(n_freq: int, cfg: AudioStyleConfig = AUDIO_STYLE,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """``(filters, freq, width)`` Gaussian weights, scaled as in the paper's code (He-Glorot mix)."""
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    std = np.sqrt(2) * np.sqrt(2.0 / ((n_freq + cfg.filters) * cfg.width))
    return (torch.randn(cfg.filters, n_freq, cfg.width, generator=gen) * std).to(device)


def stft_features(logmag: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU of the random convolution over time, frequency bins as channels: ``(filters, frames')``."""
    return torch.relu(torch.nn.functional.conv1d(logmag[None], weights))[0]


def time_gram(features: torch.Tensor) -> torch.Tensor:
    """``F Fᵀ / T``: which filters fire together, averaged over time (so clip length does not matter)."""
    return features @ features.T / features.shape[-1]


@dataclass
class _Targets:
    content: torch.Tensor
    style_gram: torch.Tensor
    weights: torch.Tensor


def _losses(x: torch.Tensor, t: _Targets, cfg: AudioStyleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's ``2·α·l2(F - P)`` and ``2·l2(G - A)`` (TensorFlow's l2 is half the squared sum)."""
    f = stft_features(x, t.weights)
    return cfg.content_weight * ((f - t.content) ** 2).sum(), ((time_gram(f) - t.style_gram) ** 2).sum()


def stft_style_transfer(content: np.ndarray, style: np.ndarray, cfg: AudioStyleConfig = AUDIO_STYLE,
                        device: torch.device | str | None = None, progress: bool = True,
                        sample_rate: int = THESIS.sample_rate, init: str | None = None) -> StyleTransferResult:
    """Ulyanov & Lebedev's transfer: ``content`` re-sounded with the timbre of ``style``.

    The variable is the log-magnitude (kept ≥ 0, as ``log(1+|S|)`` is), started
    from small noise; the loss is content + Gram style on the random layer;
    the phase comes from :func:`griffin_lim`. ``metrics`` holds the neutral
    measures of :func:`thesis_lib.dream.transform.judge` and the Griffin-Lim
    spectral convergence.
    """
    device = torch.device(device) if device is not None else _default_device()
    c = np.asarray(content, np.float32).ravel()
    s = np.asarray(style, np.float32).ravel()
    for name, y in (("content", c), ("style", s)):
        if y.size < cfg.n_fft * 2 or not np.all(np.isfinite(y)) or np.abs(y).max() < SILENCE:
            raise ValueError(f"the {name} clip must be finite, not silent and longer than {2 * cfg.n_fft} samples")
    lc, ls = log_magnitude(c, cfg, device), log_magnitude(s, cfg, device)
    if lc.shape[1] < cfg.width or ls.shape[1] < cfg.width:
        raise ValueError(f"clips too short for filters {cfg.width} frames wide")
    w = random_filters(lc.shape[0], cfg, device)
    with torch.no_grad():
        targets = _Targets(stft_features(lc, w), time_gram(stft_features(ls, w)), w)
    init = cfg.init if init is None else init
    if init == "noise":
        x0 = (1e-3 * np.abs(np.random.default_rng(cfg.seed).standard_normal(tuple(lc.shape)))).astype(np.float32)
    elif init == "content":
        x0 = lc.cpu().numpy().copy()
    else:
        raise ValueError(f"init must be 'noise' or 'content', not {init!r}")
    with torch.no_grad():
        c0, s0 = (float(v) for v in _losses(torch.as_tensor(x0, device=device), targets, cfg))
    t0 = time.perf_counter()
    out = minimize_lbfgs(lambda x: sum(_losses(x, targets, cfg)), x0, cfg.iterations, (0.0, None), device,
                         progress, desc="STFT style", threads=None)   # a big convolution: use every thread
    x = torch.as_tensor(out.x, dtype=torch.float32, device=device)
    with torch.no_grad():
        c1, s1 = (float(v) for v in _losses(x, targets, cfg))
    magnitude = torch.expm1(x)
    y = griffin_lim(magnitude, c.size, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    metrics = {**judge(y, c, s, sample_rate), "spectral_convergence": spectral_convergence(y, magnitude, cfg),
               "filters": cfg.filters, "gram_numbers": cfg.filters * (cfg.filters + 1) // 2}
    return StyleTransferResult("ulyanov-lebedev-stft", finish_audio(y), c0, c1, s0, s1, seconds,
                               out.iterations, metrics)


def net_style_transfer(model: StyleNet, content: np.ndarray, style: np.ndarray,
                       cfg: AudioStyleConfig = AUDIO_STYLE, init: str = "noise",
                       progress: bool = True) -> StyleTransferResult:
    """The same losses as :func:`stft_style_transfer`, but with the trained net's features.

    Content: the deepest of ``cfg.net_layers``; style: ``F Fᵀ / T`` Gram
    matrices of every layer in ``cfg.net_layers``; the waveform is the
    variable (no Griffin-Lim needed), boxed in [-1, 1].
    """
    freeze(model)
    c, s = check_clip(content, model.cfg), check_clip(style, model.cfg)
    device = device_of(model)
    layers, deepest = cfg.net_layers, cfg.net_layers[-1]
    with torch.no_grad():
        fc = model.features(torch.as_tensor(c, device=device)[None], layers)
        fs = model.features(torch.as_tensor(s, device=device)[None], layers)
    p = fc[deepest][0]
    grams = {k: time_gram(fs[k][0]) for k in layers}

    def losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = model.features(x.reshape(1, -1), layers)
        style_term = sum(((time_gram(f[k][0]) - grams[k]) ** 2).sum() for k in layers)
        return cfg.content_weight * ((f[deepest][0] - p) ** 2).sum(), style_term

    x0 = start_noise(c.size, seed=cfg.seed) if init == "noise" else c.copy()
    with torch.no_grad():
        c0, s0 = (float(v) for v in losses(torch.as_tensor(x0, device=device)))
    t0 = time.perf_counter()
    out = minimize_lbfgs(lambda x: sum(losses(x)), x0, cfg.iterations, (-1.0, 1.0), device, progress,
                         desc="net style")
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        c1, s1 = (float(v) for v in losses(torch.as_tensor(out.x, dtype=torch.float32, device=device)))
    channels = [fc[k].shape[1] for k in layers]
    metrics = {**judge(out.x, c, s, model.cfg.sample_rate), "gram_numbers": sum(m * (m + 1) // 2 for m in channels)}
    return StyleTransferResult("ul-losses-thesis-net", finish_audio(out.x, model.cfg), c0, c1, s0, s1, seconds,
                               out.iterations, metrics)


def compare_style_transfer(model: StyleNet, content: np.ndarray, style: np.ndarray,
                           cfg: AudioStyleConfig = AUDIO_STYLE, progress: bool = True,
                           others: tuple[StyleTransferResult, ...] = (),
                           results: dict[str, StyleTransferResult] | None = None) -> dict[str, dict]:
    """Random-filter STFT against the trained net, plus the inputs themselves as reference rows.

    Each row has the neutral measures of :func:`thesis_lib.dream.transform.judge`
    and the seconds taken; the rows ``content`` and ``style`` show what "no
    change" and "perfect style" score. ``others`` are results computed
    elsewhere (e.g. :func:`~thesis_lib.dream.transform.gatys_transfer`),
    added as rows of their own; ``results``, when given, is filled with every
    result by method name, so a caller can play the audio.
    """
    c, s = np.asarray(content, np.float32), np.asarray(style, np.float32)
    rows = {"content (unchanged)": judge(c, c, s), "style clip": judge(s, c, s)}
    for result in (stft_style_transfer(c, s, cfg, device_of(model), progress),
                   net_style_transfer(model, c, s, cfg, progress=progress), *others):
        rows[result.method] = {**result.metrics, "seconds": result.seconds}
        if results is not None:
            results[result.method] = result
    return rows


__all__ = [
    "AudioStyleConfig", "AUDIO_STYLE", "stft", "istft", "log_magnitude", "spectral_convergence", "griffin_lim",
    "random_filters", "stft_features", "time_gram", "stft_style_transfer", "net_style_transfer",
    "compare_style_transfer",
]

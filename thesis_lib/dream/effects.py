"""Effect steering: an audible transformation toward a style, judged by a second model (issue 14, part 1).

Class steering (:func:`thesis_lib.dream.transform.steer`) moves every sample
of a clip and flips the thesis net at 35 dB SNR: an inaudible, adversarial
change that fools this net and nothing else. Here the variables are instead
the dozen parameters of a small **differentiable effect chain** -- the
controls a producer would turn -- each boxed in musically sensible bounds:

1. :func:`gain` -- input gain (dB), which sets how hard the drive and the
   compressor are hit;
2. :func:`equalizer` -- a six-band graphic EQ (dB per octave band), smooth
   gains applied to the clip's spectrum;
3. :func:`drive` -- a tanh waveshaper with pre-gain (dB) and dry/wet mix:
   distortion, the sound of overdriven guitar amplifiers;
4. :func:`compressor` -- a smooth RMS level detector, threshold (dB) and
   ratio: less dynamics, a denser sound.

The chain's output is peak-normalised to 0.9 like every written clip, so
loudness alone cannot flip the net. L-BFGS-B (:func:`minimize_lbfgs`, the
thesis's optimiser, chapter 6 of the book) searches the parameters,
rescaled to [0, 1], to minimise ``-log p(target) + λ Σ ((p - neutral) / range)²``:
the penalty makes every move of a control cost, so the controls that do
move say what the net has learned a style *is* ("+9 dB drive, -6 dB around
100 Hz").

**The judge.** A second classifier that the optimisation never sees (a
log-mel CNN, the log-mel baseline, a thesis net of another seed) scores the
clip before and after; a transformation counts only when the judge agrees
(:attr:`EffectResult.judge_flipped`). :func:`compare_steering` puts
sample-level steering and effect steering side by side over held-out clips.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import rms_db
from ..config import THESIS
from ..runtime import device_of
from .base import check_clip, finish_audio, freeze, minimize_lbfgs
from .measures import envelope_correlation, log_spectral_distance, ltas_distance, snr_db
from .settings import EFFECTS, TRANSFORM, DreamError, EffectsConfig

PEAK = THESIS.peak
"""Every chain output is peak-normalised to this (thesis 5.3), as the written audio is."""


# ----------------------------------------------------------------------------
# The parameters
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One control of the chain: its bounds, its neutral (do-nothing) value and its unit."""

    name: str
    low: float
    high: float
    neutral: float
    unit: str

    def to_unit(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low)


def _hz(f: float) -> str:
    return f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz"


def parameters(cfg: EffectsConfig = EFFECTS) -> tuple[Param, ...]:
    """The chain's controls in order: gain, one gain per EQ band, drive and mix, threshold and ratio."""
    return (Param("gain_db", -12.0, 12.0, 0.0, "dB"),
            *(Param(f"eq_{_hz(f).replace(' ', '')}_db", -12.0, 12.0, 0.0, "dB") for f in cfg.eq_bands_hz),
            Param("drive_db", 0.0, 30.0, 0.0, "dB"),
            Param("drive_mix", 0.0, 1.0, 0.0, ""),
            Param("threshold_db", -40.0, 0.0, 0.0, "dB"),
            Param("ratio", 1.0, 8.0, 1.0, ":1"))


def neutral(cfg: EffectsConfig = EFFECTS) -> dict[str, float]:
    """The parameters at which the chain does nothing (apart from peak normalisation)."""
    return {p.name: p.neutral for p in parameters(cfg)}


# ----------------------------------------------------------------------------
# The stages: each a differentiable function of a (B, L) waveform
# ----------------------------------------------------------------------------

def db_to_amplitude(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(10.0, db / 20.0)


def gain(x: torch.Tensor, gain_db: torch.Tensor) -> torch.Tensor:
    """Multiply by ``10^(dB/20)``.

    Why: after peak normalisation a gain changes nothing by itself, but it sets
    how hard the following drive and compressor are hit -- the input knob of
    an amplifier (book chapter 2 explains levels in dB).
    """
    return x * db_to_amplitude(gain_db)


def eq_weights(n: int, sample_rate: int, bands_hz: tuple[float, ...], width_octaves: float) -> torch.Tensor:
    """``(bands, n // 2 + 1)``: each band's share of each FFT bin, summing to 1 in every bin.

    Gaussian bumps on a log2-frequency axis, normalised so that equal band
    gains give exactly that gain everywhere (a flat EQ is the identity); below
    the lowest and above the highest centre the outer bands act as shelves.
    """
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    octave = np.log2(np.maximum(f, 20.0))[None, :]
    centres = np.log2(np.asarray(bands_hz, dtype=np.float64))[:, None]
    w = np.exp(-0.5 * ((octave - centres) / width_octaves) ** 2) + 1e-12
    return torch.as_tensor(w / w.sum(0, keepdims=True), dtype=torch.float32)


def equalizer(x: torch.Tensor, band_db: torch.Tensor, weights: torch.Tensor, pad: int = 2048) -> torch.Tensor:
    """A zero-phase graphic EQ: the clip's spectrum times ``10^(Σ_k w_k(f) g_k / 20)``.

    Why: the balance of bass, mids and treble is the first thing that tells a
    metal guitar from a pop vocal; a smooth gain curve over a few octave bands
    is how a mixing engineer would shape it (book chapter 3's spectrograms
    show which bands each style fills). ``weights`` come from
    :func:`eq_weights` for the padded length; the clip is reflect-padded so
    the FFT's wrap-around stays out of the clip.
    """
    n = x.shape[-1]
    xp = torch.nn.functional.pad(x[:, None, :], (pad, pad), mode="reflect")[:, 0]
    curve_db = band_db @ weights
    y = torch.fft.irfft(torch.fft.rfft(xp) * db_to_amplitude(curve_db), n=xp.shape[-1])
    return y[:, pad:pad + n]


def drive(x: torch.Tensor, drive_db: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """``(1 - mix) x + mix tanh(g x) / tanh(g)`` with ``g = 10^(drive/20)``: soft clipping.

    Why: distortion adds harmonics and flattens peaks, the defining sound of
    overdriven guitar amplifiers (heavy metal) and of loud masters; ``tanh``
    is the classic smooth saturation curve and keeps ±1 at ±1. ``mix = 0``
    is the identity (book chapter 6 would explain waveshaping and harmonics).
    """
    g = db_to_amplitude(drive_db)
    wet = torch.tanh(g * x) / torch.tanh(g)
    return (1 - mix) * x + mix * wet


def _moving_average(v: torch.Tensor, width: int) -> torch.Tensor:
    """Centred moving average along time of a ``(B, L)`` tensor, same length (edges replicated)."""
    width = max(1, int(width)) | 1
    kernel = torch.full((1, 1, width), 1.0 / width, dtype=v.dtype, device=v.device)
    vp = torch.nn.functional.pad(v[:, None, :], (width // 2, width // 2), mode="replicate")
    return torch.nn.functional.conv1d(vp, kernel)[:, 0]


def compressor(x: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor, sample_rate: int,
               cfg: EffectsConfig = EFFECTS) -> torch.Tensor:
    """Turn down what is louder than the threshold by ``(1 - 1/ratio)`` of the excess, with a soft knee.

    Why: compression evens out loud and quiet passages, the dense "wall of
    sound" of rock and metal productions; ``ratio = 1`` is the identity. A
    hardware compressor follows the level with a one-pole filter (fast
    attack, slow release), a loop over samples; here the level is the RMS
    over ``compressor_window_ms`` and the gain reduction is smoothed over
    ``compressor_smooth_ms``, both convolutions, so the stage stays fast and
    differentiable (book chapter 2 would explain levels and dynamics).
    """
    ms = _moving_average(x ** 2, round(cfg.compressor_window_ms * sample_rate / 1000))
    level_db = 10 * torch.log10(ms + 1e-10)
    knee = cfg.compressor_knee_db
    excess = knee * torch.nn.functional.softplus((level_db - threshold_db) / knee)
    reduction_db = (1 - 1 / ratio) * excess
    reduction_db = _moving_average(reduction_db, round(cfg.compressor_smooth_ms * sample_rate / 1000))
    return x * db_to_amplitude(-reduction_db)


def peak_normalise(x: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """Scale each clip to ``peak`` (as every written clip): the net cannot be flipped by level alone."""
    return peak * x / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)


class EffectChain:
    """gain -> EQ -> drive -> compressor -> peak 0.9, on clips of ``n`` samples.

    ``apply(x, values)`` takes a ``(B, L)`` or ``(L,)`` tensor and the
    parameter vector in the order of :attr:`params` (natural units: dB,
    mix, ratio); everything is differentiable in both.
    """

    def __init__(self, n: int = THESIS.clip_samples, sample_rate: int = THESIS.sample_rate,
                 cfg: EffectsConfig = EFFECTS, device: torch.device | str = "cpu"):
        self.n, self.sample_rate, self.cfg = n, sample_rate, cfg
        self.params = parameters(cfg)
        self.names = [p.name for p in self.params]
        self.pad = min(2048, n - 1)
        self.weights = eq_weights(n + 2 * self.pad, sample_rate, cfg.eq_bands_hz, cfg.eq_width_octaves).to(device)
        self.low = torch.tensor([p.low for p in self.params], dtype=torch.float32, device=device)
        self.high = torch.tensor([p.high for p in self.params], dtype=torch.float32, device=device)
        self.neutral_unit = np.array([p.to_unit(p.neutral) for p in self.params], dtype=np.float64)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Parameters in natural units from the optimiser's [0, 1] variables."""
        return self.low + u * (self.high - self.low)

    def vector(self, values: dict[str, float]) -> torch.Tensor:
        """A parameter dict (missing names: neutral) as the vector :meth:`apply` takes; unknown names refused."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise DreamError(f"unknown effect parameters {sorted(unknown)}; the chain has {self.names}")
        return torch.tensor([float(values.get(p.name, p.neutral)) for p in self.params], dtype=torch.float32,
                            device=self.low.device)

    def apply(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 1
        x = x[None] if squeeze else x
        k = len(self.cfg.eq_bands_hz)
        v = values
        y = gain(x, v[0])
        y = equalizer(y, v[1:1 + k], self.weights, self.pad)
        y = drive(y, v[1 + k], v[2 + k])
        y = compressor(y, v[3 + k], v[4 + k], self.sample_rate, self.cfg)
        y = peak_normalise(y)
        return y[0] if squeeze else y


def describe_parameters(values: dict[str, float], cfg: EffectsConfig = EFFECTS) -> str:
    """The parameters that moved, in a producer's words ("+9 dB drive (mix 60 %), -6 dB around 100 Hz").

    Moves below 1 dB, a mix under 5 % or a ratio under 1.2:1 are left out as inaudible.
    """
    words = []
    if values["drive_mix"] >= 0.05:
        words.append(f"{values['drive_db']:+.0f} dB drive (mix {100 * values['drive_mix']:.0f} %)")
    bands = cfg.eq_bands_hz
    for i, f in enumerate(bands):
        g = values[f"eq_{_hz(f).replace(' ', '')}_db"]
        if abs(g) >= 1:
            where = (f"below {_hz(f)}" if i == 0 else f"above {_hz(f)}" if i == len(bands) - 1
                     else f"around {_hz(f)}")
            words.append(f"{g:+.0f} dB {where}")
    if values["ratio"] >= 1.2:
        words.append(f"compression {values['ratio']:.1f}:1 above {values['threshold_db']:.0f} dB")
    if abs(values["gain_db"]) >= 1:
        words.append(f"input gain {values['gain_db']:+.0f} dB")
    return ", ".join(words) if words else "no audible change (every control near neutral)"


# ----------------------------------------------------------------------------
# The judge
# ----------------------------------------------------------------------------

@dataclass
class Judge:
    """A second classifier that only ever scores finished audio, never inside an optimisation.

    ``model`` is anything :func:`thesis_lib.checkpoint.load_model` loads (a
    log-mel CNN, the log-mel baseline, a thesis net of another seed); its
    styles are matched to the steering net's by name.
    """

    model: torch.nn.Module
    styles: list[str]
    name: str = "judge"

    @classmethod
    def load(cls, path, device: torch.device | str = "cpu") -> "Judge":
        from ..checkpoint import load_model

        model, styles, ckpt = load_model(path, device)
        return cls(model, styles, f"{type(model).__name__} ({path})")

    def index(self, style: str) -> int:
        if style not in self.styles:
            raise DreamError(f"the judge does not know the style {style!r}; its styles are {self.styles}")
        return self.styles.index(style)

    def proba(self, y: np.ndarray, sample_rate: int = THESIS.sample_rate) -> np.ndarray:
        """The judge's probabilities of the finished clip ``y`` (no gradients, eval mode).

        ``y`` is at ``sample_rate`` (the steering net's, 8 kHz for the thesis net); a judge that
        reads another rate (``train``'s log-mel models read 16 kHz) gets it resampled, so what it
        hears above 4 kHz is what resampling puts there: nothing. Its verdict is on the band both share.
        """
        self.model.eval()
        device = next(self.model.parameters()).device
        rate = getattr(getattr(self.model, "cfg", None), "sample_rate", sample_rate)
        y = np.asarray(y, dtype=np.float32)
        if rate != sample_rate:
            import soxr

            y = soxr.resample(y, sample_rate, rate, quality="HQ").astype(np.float32)
        with torch.no_grad():
            x = torch.as_tensor(y, device=device)[None]
            return torch.softmax(self.model(x), dim=1)[0].cpu().numpy()


# ----------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------

def change_measures(y: np.ndarray, x: np.ndarray, sample_rate: int = THESIS.sample_rate) -> dict[str, float]:
    """How far ``y`` moved from ``x``, both at peak 0.9, the distances loudness-matched.

    ``loudness_change_db``: RMS of ``y`` minus RMS of ``x`` at the same peak
    (drive and compression make a clip denser, hence louder at equal peak).
    The distances compare ``y`` scaled to ``x``'s RMS: ``snr_db`` (waveform),
    ``spectral_distance_db`` (log-spectrogram RMS difference),
    ``ltas_db`` (long-term spectrum, timbre) and ``envelope_corr`` (do they
    swell and fall together; 1 = the same dynamics).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    change = rms_db(y) - rms_db(x)
    matched = y * 10 ** (-change / 20)
    return {"loudness_change_db": change, "snr_db": snr_db(matched, x),
            "spectral_distance_db": log_spectral_distance(matched, x, sample_rate),
            "ltas_db": ltas_distance(matched, x, sample_rate),
            "envelope_corr": envelope_correlation(matched, x)}


# ----------------------------------------------------------------------------
# Effect steering
# ----------------------------------------------------------------------------

@dataclass
class EffectResult:
    """A clip run through the effect chain found for ``target``, with both models' verdicts and the measures."""

    audio: np.ndarray
    original: np.ndarray        #: the clip at peak 0.9: what "before" means for both models
    target: int
    params: dict[str, float]
    words: str
    p_target_before: float
    p_target_after: float
    predicted_before: int
    predicted_after: int
    measures: dict[str, float]
    seconds: float
    iterations: int
    judge_p_target_before: float | None = None
    judge_p_target_after: float | None = None
    judge_predicted_before: int | None = None
    judge_predicted_after: int | None = None
    judge_target: int | None = None
    loss: float = float("nan")  #: the search's objective at the end (-log p(target) + penalty term)
    penalty: float = float("nan")  #: the penalty of the last search (smaller than asked when relaxed)
    searches: int = 1           #: searches run: 1, plus one per relaxation toward the confidence

    @property
    def flipped(self) -> bool:
        """The steering net assigns the target after but not before."""
        return self.predicted_after == self.target and self.predicted_before != self.target

    @property
    def judge_flipped(self) -> bool | None:
        """The judge assigns the target after but not before (``None`` without a judge)."""
        if self.judge_target is None:
            return None
        return self.judge_predicted_after == self.judge_target and self.judge_predicted_before != self.judge_target

    def summary(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("audio", "original")}
        return {**out, "flipped": self.flipped, "judge_flipped": self.judge_flipped}


def _net_proba(model: torch.nn.Module, y: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(y, dtype=np.float32), device=device)[None]
        return torch.softmax(model(x), dim=1)[0].cpu().numpy()


def _judge_target(judge: Judge | None, styles: list[str] | None, target: int) -> int | None:
    if judge is None:
        return None
    if styles is None:
        raise DreamError("a judge needs the steering net's style names (styles=...) to find the target among its own")
    return judge.index(styles[target])


def check_penalty(penalty: float) -> None:
    """A penalty of :func:`effect_steer` is a finite number >= 0 (else :class:`DreamError`)."""
    if not math.isfinite(penalty) or penalty < 0:
        raise DreamError(f"the penalty must be a finite number >= 0, not {penalty}")


def check_confidence(confidence: float | None) -> None:
    """A confidence of :func:`effect_steer` is None or a probability strictly between 0 and 1."""
    if confidence is not None and not 0 < confidence < 1:
        raise DreamError(f"the confidence must be a probability between 0 and 1 (exclusive), not {confidence}")


def effect_steer(model: torch.nn.Module, clip: np.ndarray, target: int, iterations: int = EFFECTS.iterations,
                 penalty: float = EFFECTS.penalty, judge: Judge | None = None, styles: list[str] | None = None,
                 cfg: EffectsConfig = EFFECTS, progress: bool = True,
                 confidence: float | None = EFFECTS.confidence) -> EffectResult:
    """Find the effect parameters that make ``model`` hear ``target``; the judge only scores the result.

    Minimises ``-log p(target | chain(x, p)) + penalty · Σ ((p - neutral) / range)²``
    over the parameters in [0, 1] (their bounds) with L-BFGS-B, from neutral
    and from each of ``cfg.starts`` (drive and compression engaged: at neutral
    the drive amount has no gradient, see :class:`EffectsConfig`), keeping the
    end with the lowest loss -- the penalty still pulls every control toward neutral, so an
    engaged drive survives only where the net wants it.

    With ``confidence`` (default ``cfg``'s 0.95), while the net's probability of the target
    at the end falls short of it, the penalty is divided by ``cfg.relax_factor`` and the search
    runs again -- from where it stopped and from the first search's starts, the lowest loss kept --
    at most ``cfg.relaxations`` times: the penalty method for the
    smallest move of the controls that makes the net *sure* (chapter 4b shows what each
    strength buys). ``confidence=None``: one search at ``penalty``.

    ``judge`` (optional) is called twice, on the clip and on the result, never during the
    search; ``styles`` are the steering net's style names, used to find the target among the
    judge's.
    """
    freeze(model)
    x0 = check_clip(clip, model.cfg)
    if not 0 <= target < model.n_styles:
        raise DreamError(f"target style {target} out of range for a model with {model.n_styles} styles")
    check_penalty(penalty)
    check_confidence(confidence)
    if iterations < 1:
        raise DreamError(f"iterations must be at least 1, not {iterations}")
    judge_target = _judge_target(judge, styles, target)
    device = device_of(model)
    chain = EffectChain(x0.size, model.cfg.sample_rate, cfg, device)
    x = torch.as_tensor(x0, device=device)
    u0 = torch.as_tensor(chain.neutral_unit, dtype=torch.float32, device=device)

    def loss(u: torch.Tensor, weight: float) -> torch.Tensor:
        y = chain.apply(x, chain.from_unit(u))
        logp = torch.log_softmax(model(y[None]), dim=1)[0, target]
        return -logp + weight * ((u - u0) ** 2).sum()

    with torch.no_grad():
        original = chain.apply(x, chain.from_unit(u0)).cpu().numpy()
    p0 = _net_proba(model, original, device)
    t0 = time.perf_counter()
    first = starts = _starts(chain, cfg)
    weight, searches, spent = float(penalty), 0, 0
    while True:
        out = None
        for u_start in starts:
            tried = minimize_lbfgs(lambda u: loss(u, weight), u_start, iterations, (0.0, 1.0), device, progress,
                                   desc=f"effects → {target} (penalty {weight:.3g})")
            if out is None or tried.loss < out.loss:
                out = tried
        searches, spent = searches + 1, spent + out.iterations
        u = torch.as_tensor(out.x, dtype=torch.float32, device=device).clamp(0, 1)
        values = chain.from_unit(u)
        with torch.no_grad():
            y = chain.apply(x, values).cpu().numpy()
        p1 = _net_proba(model, y, device)
        if confidence is None or p1[target] >= confidence or searches > cfg.relaxations:
            break
        # search again from where it stopped and from the first starts: continuing alone got stuck
        # short of the confidence in 2 of the 16 clips of chapter 4b, fresh starts reached it in all
        weight, starts = weight / cfg.relax_factor, [*first, np.asarray(out.x, dtype=np.float64)]
    seconds = time.perf_counter() - t0
    params = {name: float(v) for name, v in zip(chain.names, values.cpu().numpy())}
    audio = finish_audio(y, model.cfg)
    result = EffectResult(audio, finish_audio(original, model.cfg), target, params, describe_parameters(params, cfg),
                          float(p0[target]), float(p1[target]), int(p0.argmax()), int(p1.argmax()),
                          change_measures(audio, original, model.cfg.sample_rate), seconds, spent,
                          loss=float(out.loss), penalty=weight, searches=searches)
    if judge is not None:
        j0, j1 = judge.proba(result.original, model.cfg.sample_rate), judge.proba(result.audio, model.cfg.sample_rate)
        result.judge_target = judge_target
        result.judge_p_target_before, result.judge_p_target_after = float(j0[judge_target]), float(j1[judge_target])
        result.judge_predicted_before, result.judge_predicted_after = int(j0.argmax()), int(j1.argmax())
    return result


def _starts(chain: EffectChain, cfg: EffectsConfig) -> list[np.ndarray]:
    """The first search's starting points in [0, 1]: neutral, then each of ``cfg.starts``."""
    out = []
    for start in ({}, *(dict(s) for s in cfg.starts)):
        unknown = set(start) - set(chain.names)
        if unknown:
            raise DreamError(f"EffectsConfig.starts names unknown controls {sorted(unknown)}; the chain has {chain.names}")
        values0 = {**neutral(cfg), **start}
        out.append(np.array([p.to_unit(values0[p.name]) for p in chain.params], dtype=np.float64))
    return out


# ----------------------------------------------------------------------------
# Sample-level against effect steering, over held-out clips
# ----------------------------------------------------------------------------

@dataclass
class Verdict:
    """One clip steered one way, as :func:`compare_steering` counts it."""

    kind: str                   #: "samples" (class steering) or "effects"
    net_before: int
    net_after: int
    judge_before: int
    judge_after: int
    p_target_before: float
    p_target_after: float
    judge_p_target_before: float
    judge_p_target_after: float
    measures: dict[str, float]
    seconds: float
    params: dict[str, float] = field(default_factory=dict)
    words: str = ""
    penalty: float = float("nan")   #: effects: the penalty of the last search (see :func:`effect_steer`)


def _row(verdicts: list[Verdict], target: int, judge_target: int) -> dict:
    net_cands = [v for v in verdicts if v.net_before != target]
    judge_cands = [v for v in verdicts if v.judge_before != judge_target]
    net_flips = sum(v.net_after == target for v in net_cands)
    judge_flips = sum(v.judge_after == judge_target for v in judge_cands)
    both = [v for v in verdicts if v.net_before != target and v.judge_before != judge_target]
    agreed = sum(v.net_after == target and v.judge_after == judge_target for v in both)

    def rate(k: int, n: int) -> float:
        return k / n if n else float("nan")

    row = {"clips": len(verdicts),
           "net_candidates": len(net_cands), "net_flipped": net_flips, "net_flip_rate": rate(net_flips, len(net_cands)),
           "judge_candidates": len(judge_cands), "judge_flipped": judge_flips,
           "judge_flip_rate": rate(judge_flips, len(judge_cands)),
           "both_candidates": len(both), "both_flipped": agreed, "both_flip_rate": rate(agreed, len(both)),
           "mean_p_target_before": float(np.mean([v.p_target_before for v in verdicts])),
           "mean_p_target_after": float(np.mean([v.p_target_after for v in verdicts])),
           "mean_judge_p_target_before": float(np.mean([v.judge_p_target_before for v in verdicts])),
           "mean_judge_p_target_after": float(np.mean([v.judge_p_target_after for v in verdicts])),
           "seconds": float(sum(v.seconds for v in verdicts))}
    for key in verdicts[0].measures:
        row[f"mean_{key}"] = float(np.mean([v.measures[key] for v in verdicts]))
    penalties = [v.penalty for v in verdicts if math.isfinite(v.penalty)]
    if penalties:
        row["median_penalty"] = float(np.median(penalties))
    return row


def compare_steering(model: torch.nn.Module, styles: list[str], clips: np.ndarray, target: int, judge: Judge,
                     steer_iterations: int = TRANSFORM.steer_iterations,
                     effect_iterations: int = EFFECTS.iterations, penalty: float = EFFECTS.penalty,
                     cfg: EffectsConfig = EFFECTS, progress: bool = True,
                     confidence: float | None = EFFECTS.confidence) -> tuple[dict, dict[str, list[Verdict]]]:
    """Sample-level steering and effect steering of every clip toward ``target``, judged by both models.

    Returns ``(summary, verdicts)``: ``summary["samples"]`` and
    ``summary["effects"]`` each give the flip rate by the steering net
    (among clips it did not already assign to the target), by the judge
    (among clips the judge did not), and by both at once (a transformation
    that counts), the mean probabilities and the mean change measures of
    :func:`change_measures`. Both kinds are measured against the clip at
    peak 0.9 and judged on their written audio (peak 0.9). ``penalty`` and ``confidence``
    are :func:`effect_steer`'s (by default: relaxed until the net is 95 % sure; sample-level
    steering, which has no such rule, makes it surer still).
    """
    from .transform import steer

    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 2 or len(clips) == 0:
        raise DreamError(f"compare_steering needs a (clips, samples) array of at least one clip, got {clips.shape}")
    judge_target = _judge_target(judge, styles, target)
    freeze(model)
    device = device_of(model)
    out: dict[str, list[Verdict]] = {"samples": [], "effects": []}
    for clip in tqdm(clips, desc=f"steering both ways → {styles[target]}", disable=not progress):
        e = effect_steer(model, clip, target, effect_iterations, penalty, judge, styles, cfg, progress=False,
                         confidence=confidence)
        out["effects"].append(_effect_verdict(e))
        original = e.original
        s = steer(model, original, target, steer_iterations, progress=False)
        p0, p1 = _net_proba(model, original, device), _net_proba(model, s.audio, device)
        j0, j1 = judge.proba(original, model.cfg.sample_rate), judge.proba(s.audio, model.cfg.sample_rate)
        out["samples"].append(Verdict("samples", int(p0.argmax()), int(p1.argmax()), int(j0.argmax()),
                                      int(j1.argmax()), float(p0[target]), float(p1[target]),
                                      float(j0[judge_target]), float(j1[judge_target]),
                                      change_measures(s.audio, original, model.cfg.sample_rate), s.seconds))
    summary = {kind: _row(v, target, judge_target) for kind, v in out.items()}
    summary["target"] = styles[target]
    summary["judge"] = judge.name
    summary["effects"].update(penalty=float(penalty), confidence=confidence)
    return summary, out


def _effect_verdict(e: EffectResult) -> Verdict:
    return Verdict("effects", e.predicted_before, e.predicted_after, e.judge_predicted_before,
                   e.judge_predicted_after, e.p_target_before, e.p_target_after, e.judge_p_target_before,
                   e.judge_p_target_after, e.measures, e.seconds, e.params, e.words, e.penalty)


def steering_strength(model: torch.nn.Module, styles: list[str], clips: np.ndarray, target: int, judge: Judge,
                      penalties: tuple[float, ...], iterations: int = EFFECTS.iterations,
                      cfg: EffectsConfig = EFFECTS, progress: bool = True) -> list[dict]:
    """Effect steering of the same clips at several fixed penalties: how strong must the change be
    before the judge agrees? One :func:`compare_steering`-style row per penalty (its
    ``"effects"`` summary plus ``"penalty"``), each one search at that penalty with no relaxing
    toward a confidence. A smaller penalty lets the controls move further from neutral; the
    rows show what that buys (flips) and costs (SNR, loudness, spectrum)."""
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 2 or len(clips) == 0:
        raise DreamError(f"steering_strength needs a (clips, samples) array of at least one clip, got {clips.shape}")
    judge_target = _judge_target(judge, styles, target)
    rows = []
    for penalty in penalties:
        verdicts = [_effect_verdict(effect_steer(model, clip, target, iterations, penalty, judge, styles, cfg,
                                                 progress=False, confidence=None))
                    for clip in tqdm(clips, desc=f"effects at penalty {penalty:g}", disable=not progress)]
        rows.append({"penalty": float(penalty), **_row(verdicts, target, judge_target)})
    return rows


def search_label(row: dict) -> str:
    """How a row's effect search was run: ``"0.3"`` (one search at that penalty) or
    ``"1, relaxed to p ≥ 0.95 (median 0.33)"`` (:func:`effect_steer`'s confidence rule)."""
    if row.get("confidence") is None:
        return f"{row['penalty']:g}"
    median = f" (median {row['median_penalty']:.2g})" if "median_penalty" in row else ""
    return f"{row['penalty']:g}, relaxed to p ≥ {row['confidence']:g}{median}"


def strength_markdown(rows: list[dict]) -> str:
    """The table of :func:`steering_strength`'s rows, strongest penalty first (a row with a
    ``"confidence"`` says so in its first column: see :func:`search_label`)."""
    head = ("| penalty | net flips | judge flips | loudness change dB | SNR dB | spectral distance dB "
            "| envelope corr. |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    return "\n".join([head, *(f"| {search_label(r)} | {r['net_flipped']}/{r['net_candidates']} | "
                               f"{r['judge_flipped']}/{r['judge_candidates']} | {r['mean_loudness_change_db']:+.1f} | "
                               f"{r['mean_snr_db']:.1f} | {r['mean_spectral_distance_db']:.1f} | "
                               f"{r['mean_envelope_corr']:.2f} |"
                               for r in sorted(rows, key=lambda r: (r.get("confidence") is not None, -r["penalty"])))])


def collection_clips(ds, target: str, n: int, split_seed: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` clips of ``ds`` not of style ``target``, drawn with ``seed``.

    With ``split_seed`` only from the test tracks of ``train``'s split with that seed
    (:func:`thesis_lib.data.split_dataset` with the thesis's clip counts): the songs a model
    trained by ``train --seed S`` never heard.
    """
    from ..data import split_dataset

    pool = (split_dataset(ds, THESIS.train_per_style, THESIS.test_per_style, "track", split_seed).test
            if split_seed is not None else np.arange(len(ds)))
    pool = np.array([i for i in pool if ds.styles[ds.style_of[i]] != target], dtype=np.int64)
    if pool.size == 0:
        raise DreamError(f"{ds.path}: no clip that is not already {target!r} to steer")
    return np.random.default_rng(seed).choice(pool, min(n, pool.size), replace=False)


def comparison_markdown(summary: dict) -> str:
    """The side-by-side table of :func:`compare_steering`'s summary."""
    head = ("| steering | net flips | judge flips | both | loudness change dB | SNR dB | spectral distance dB "
            "| envelope corr. |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for kind, label in (("samples", "sample-level"), ("effects", "effect chain")):
        r = summary[kind]
        rows.append(f"| {label} | {r['net_flipped']}/{r['net_candidates']} | {r['judge_flipped']}/"
                    f"{r['judge_candidates']} | {r['both_flipped']}/{r['both_candidates']} | "
                    f"{r['mean_loudness_change_db']:+.1f} | {r['mean_snr_db']:.1f} | "
                    f"{r['mean_spectral_distance_db']:.1f} | {r['mean_envelope_corr']:.2f} |")
    return "\n".join([head, *rows])


__all__ = ["PEAK", "Param", "parameters", "neutral", "gain", "eq_weights", "equalizer", "drive", "compressor",
           "peak_normalise", "EffectChain", "describe_parameters", "Judge", "change_measures", "EffectResult",
           "check_penalty", "check_confidence", "effect_steer", "Verdict", "compare_steering", "steering_strength", "search_label", "strength_markdown",
           "collection_clips", "comparison_markdown"]

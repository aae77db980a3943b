"""The experiments the thesis discussed (chapters 3 and 6) and class steering beyond it.

* **Inversion** (Mahendran & Vedaldi, 2015): start from quiet noise and
  minimise the distance between the layer outputs of the generated audio
  and of a target clip. How close the result comes to the target (SNR,
  log-spectral distance) says how much of the sound a layer keeps.
* **Style transfer** (Gatys et al., 2015) on the thesis's own net: content
  loss at one layer, Gram-matrix style loss over layers. The thesis heard
  only noise; :func:`gram_capacity` shows why -- with 8 filters a Gram matrix
  holds 36 distinct numbers to describe the style of 40,000 samples.
* **Class steering**: push a clip toward another style's class (maximise the
  target's log-probability) while a content term keeps it near the original;
  :func:`steer_many` reports how many clips flip and how far they moved.

Every optimisation is scipy's L-BFGS-B on torch gradients, the waveform boxed
in [-1, 1] (:func:`thesis_lib.dream.minimize_lbfgs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import CONV_LAYERS, THESIS
from .base import freeze, check_clip, finish_audio, minimize_lbfgs
from .settings import TRANSFORM, DreamError, TransformConfig
from .measures import describe, envelope_correlation, log_spectral_distance, ltas_distance, snr_db
from ..model import StyleNet
from ..runtime import device_of




def _tensor(y: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y, dtype=np.float32), device=device)[None]


def start_noise(n: int, noise: float = TRANSFORM.noise, seed: int = TRANSFORM.seed) -> np.ndarray:
    """Quiet white noise to start inversion and style transfer from (Gatys and Mahendran start from noise)."""
    return (noise * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


# ----------------------------------------------------------------------------
# Inversion
# ----------------------------------------------------------------------------

@dataclass
class InversionResult:
    """A reconstruction of ``target`` from one layer's output, and how close it came."""

    layer: str
    audio: np.ndarray
    distance_before: float     #: relative feature distance ‖φ(x)-φ(t)‖²/‖φ(t)‖² from the noise
    distance_after: float      #: the same after optimisation
    snr_db: float              #: waveform SNR of the reconstruction against the target
    spectral_distance_db: float  #: log-spectral distance to the target (phase ignored)
    seconds: float
    iterations: int

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "audio"}


def _relative_distance(model: StyleNet, layer: str, target_feat: torch.Tensor):
    norm = (target_feat ** 2).sum().clamp_min(1e-12)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return ((model.features(x.reshape(1, -1), [layer])[layer] - target_feat) ** 2).sum() / norm
    return loss


def invert(model: StyleNet, target: np.ndarray, layer: str, iterations: int = TRANSFORM.iterations,
           cfg: TransformConfig = TRANSFORM, progress: bool = True) -> InversionResult:
    """Reconstruct ``target`` from ``layer``'s output alone, starting from noise.

    The SNR is measured on the optimiser's signal (at the target's level);
    the written audio is normalised to peak 0.9 like every output.
    """
    freeze(model)
    t = check_clip(target, model.cfg)
    device = device_of(model)
    if layer not in model.layer_names:
        raise DreamError(f"unknown layer {layer!r}; choose from {', '.join(model.layer_names)}")
    with torch.no_grad():
        feat = model.features(_tensor(t, device), [layer])[layer]
    loss = _relative_distance(model, layer, feat)
    x0 = start_noise(t.size, cfg.noise, cfg.seed)
    with torch.no_grad():
        before = float(loss(torch.as_tensor(x0, device=device)))
    t0 = time.perf_counter()
    out = minimize_lbfgs(loss, x0, iterations, (-1.0, 1.0), device, progress, desc=f"invert {layer}")
    seconds = time.perf_counter() - t0
    return InversionResult(layer, finish_audio(out.x, model.cfg), before, out.loss, snr_db(out.x, t),
                           log_spectral_distance(out.x, t, model.cfg.sample_rate), seconds, out.iterations)


def invert_layers(model: StyleNet, target: np.ndarray, layers: tuple[str, ...] = TRANSFORM.invert_layers,
                  iterations: int = TRANSFORM.iterations, cfg: TransformConfig = TRANSFORM,
                  progress: bool = True) -> dict[str, InversionResult]:
    """:func:`invert` for each layer: lower layers should reconstruct better (Mahendran & Vedaldi)."""
    return {layer: invert(model, target, layer, iterations, cfg, progress)
            for layer in tqdm(layers, desc="inversion", disable=not progress, leave=False)}


# ----------------------------------------------------------------------------
# Gatys style transfer on the thesis net
# ----------------------------------------------------------------------------

def gram(features: torch.Tensor) -> torch.Tensor:
    """``G = F Fᵀ`` over time: (channels x channels) for one clip's ``(1, channels, time)`` output."""
    f = features.reshape(features.shape[-2], -1)
    return f @ f.T


def style_loss_terms(model: StyleNet, layers: tuple[str, ...], style: torch.Tensor):
    """Gatys's ``E_l = Σ (G - A)² / (4 N² M²)`` for each layer, as a function of the input."""
    with torch.no_grad():
        feats = model.features(style, layers)
    targets = {name: gram(feats[name]) for name in layers}
    sizes = {name: (feats[name].shape[-2], feats[name].shape[-1]) for name in layers}

    def terms(feats_x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: ((gram(feats_x[name]) - targets[name]) ** 2).sum()
                / (4 * sizes[name][0] ** 2 * sizes[name][1] ** 2) for name in layers}
    return terms


@dataclass
class StyleTransferResult:
    """A style transfer's output and the numbers that judge it.

    Losses come from the method's own objective. The ``*_ltas_db`` and
    ``envelope_corr`` numbers are neutral, the same for every method: a
    transfer that works brings the long-term spectrum near the style clip
    (``style_ltas_db`` down) while the loudness envelope follows the content
    clip (``envelope_corr`` up); a flatness near 1 means noise.
    """

    method: str
    audio: np.ndarray
    content_loss_before: float
    content_loss_after: float
    style_loss_before: float
    style_loss_after: float
    seconds: float
    iterations: int
    metrics: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "audio"}


def judge(y: np.ndarray, content: np.ndarray, style: np.ndarray, sample_rate: int = THESIS.sample_rate) -> dict:
    """Neutral measures of a style transfer: timbre distances, content envelope, noisiness."""
    d = describe(y, sample_rate)
    return {"content_ltas_db": ltas_distance(y, content, sample_rate),
            "style_ltas_db": ltas_distance(y, style, sample_rate),
            "envelope_corr": envelope_correlation(y, content),
            "flatness": d["flatness"], "centroid_hz": d["centroid_hz"]}


def gatys_transfer(model: StyleNet, content: np.ndarray, style: np.ndarray,
                   iterations: int = TRANSFORM.iterations, cfg: TransformConfig = TRANSFORM,
                   init: str = "noise", balanced: bool = False, progress: bool = True) -> StyleTransferResult:
    """Gatys et al.'s ``α·L_content + β·L_style`` on the thesis net, as the thesis tried (chapter 6).

    ``init="noise"`` starts from white noise (Gatys); ``"content"`` from the
    content clip. With Gatys's normalisation ``1/(4 N² M²)`` and M up to
    19,997 time steps the style term is millions of times smaller than the
    content term, so ``β/α = 1000`` leaves style almost unweighted;
    ``balanced=True`` instead sets β so that both terms are equal at the start,
    giving the Gram matrices their fairest chance.
    """
    freeze(model)
    c, s = check_clip(content, model.cfg), check_clip(style, model.cfg)
    device = device_of(model)
    layers = tuple(dict.fromkeys((*cfg.style_layers, cfg.content_layer)))
    with torch.no_grad():
        p = model.features(_tensor(c, device), [cfg.content_layer])[cfg.content_layer]
    style_terms = style_loss_terms(model, cfg.style_layers, _tensor(s, device))

    def parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = model.features(x.reshape(1, -1), layers)
        lc = 0.5 * ((feats[cfg.content_layer] - p) ** 2).sum()
        ls = sum(style_terms(feats).values()) / len(cfg.style_layers)
        return lc, ls

    if init not in ("noise", "content"):
        raise DreamError(f"init must be 'noise' or 'content', not {init!r}")
    x0 = start_noise(c.size, cfg.noise, cfg.seed) if init == "noise" else c.copy()
    with torch.no_grad():
        lc0, ls0 = (float(v) for v in parts(torch.as_tensor(x0, device=device)))
    if balanced:
        cfg = replace(cfg, beta=cfg.alpha * lc0 / max(ls0, 1e-30))
    t0 = time.perf_counter()
    out = minimize_lbfgs(lambda x: _weighted(parts(x), cfg), x0, iterations, (-1.0, 1.0), device, progress,
                         desc="gatys")
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        lc1, ls1 = (float(v) for v in parts(torch.as_tensor(out.x, dtype=torch.float32, device=device)))
    metrics = {**judge(out.x, c, s, model.cfg.sample_rate), "alpha": cfg.alpha, "beta": cfg.beta}
    return StyleTransferResult("gatys-thesis-net", finish_audio(out.x, model.cfg), lc0, lc1, ls0, ls1,
                               seconds, out.iterations, metrics)


def _weighted(parts: tuple[torch.Tensor, torch.Tensor], cfg: TransformConfig) -> torch.Tensor:
    return cfg.alpha * parts[0] + cfg.beta * parts[1]


def gram_capacity(model: StyleNet, layers: tuple[str, ...] = TRANSFORM.style_layers) -> dict:
    """How much a Gram matrix of the thesis net can hold, against what it must describe.

    For each conv layer: filters N, the ``N(N+1)/2`` distinct Gram numbers
    (the matrix is symmetric), the values of the layer output they summarise
    (N x time), and the mean |cosine| between its filters (1: all alike).
    With 8 filters a layer gives 36 numbers, 108 for three layers, to carry
    the style of a 40,000-sample clip.
    """
    convs = dict(zip(CONV_LAYERS, model.conv_layers()))
    lengths = dict(zip(CONV_LAYERS, model.cfg.conv_output_lengths()))
    rows = {}
    for name in layers:
        if name not in convs:
            raise DreamError(f"gram_capacity works on conv layers, not {name!r}")
        w = convs[name].weight.detach().cpu().reshape(convs[name].out_channels, -1)
        n = w.shape[0]
        cos = torch.nn.functional.normalize(w, dim=1) @ torch.nn.functional.normalize(w, dim=1).T
        off = cos[~torch.eye(n, dtype=torch.bool)].abs().mean()
        rows[name] = {"filters": n, "gram_numbers": n * (n + 1) // 2, "feature_values": n * lengths[name],
                      "mean_abs_filter_cosine": float(off)}
    total = sum(r["gram_numbers"] for r in rows.values())
    return {"layers": rows, "gram_numbers_total": total, "clip_samples": model.cfg.clip_samples,
            "samples_per_gram_number": model.cfg.clip_samples / total}


def gram_separability(model: StyleNet, clips: np.ndarray, labels: np.ndarray,
                      layers: tuple[str, ...] = TRANSFORM.style_layers) -> dict[str, float]:
    """Can the Gram matrices tell the styles apart? Between-style over within-style spread, per layer.

    For each layer, the normalised Gram vectors (upper triangle, divided by
    the output length, ``log1p``) of every clip; the ratio of the mean
    distance between the styles' mean vectors (every pair of styles) to the
    mean distance of clips to their own style's mean. Near or below 1: the
    Gram "style" of a clip says little about its style; well above 1: the
    styles' Gram matrices differ by more than clips of one style do.

    ``labels`` must hold at least two styles with a clip each: with one style
    there is no "between" (an unbalanced slice such as the first clips of a
    split sorted by style gave a silent 0 before).
    """
    freeze(model)
    device = device_of(model)
    labels = np.asarray(labels)
    styles = np.unique(labels)
    if len(labels) != len(clips):
        raise DreamError(f"{len(clips)} clips but {len(labels)} labels")
    if len(styles) < 2:
        raise DreamError("gram_separability needs clips of at least two styles; got only "
                         f"{styles.tolist()} (take clips of every style, not the first of a sorted split)")
    out = {}
    with torch.no_grad():
        feats = model.features(torch.as_tensor(np.asarray(clips, np.float32), device=device), layers)
    for name in layers:
        f = feats[name]
        g = torch.einsum("bct,bdt->bcd", f, f) / f.shape[-1]
        iu = torch.triu_indices(g.shape[1], g.shape[1])
        v = g[:, iu[0], iu[1]].cpu().numpy()
        v = np.log1p(np.maximum(v, 0))
        means = [v[labels == k].mean(0) for k in styles]
        within = np.mean([np.linalg.norm(v[labels == k] - m, axis=1).mean() for k, m in zip(styles, means)])
        between = np.mean([np.linalg.norm(means[i] - means[j])
                           for i in range(len(means)) for j in range(i + 1, len(means))])
        out[name] = float(between / max(within, 1e-12))
    return out


# ----------------------------------------------------------------------------
# Class steering
# ----------------------------------------------------------------------------

@dataclass
class SteerResult:
    """A clip pushed toward ``target``: probabilities before and after, and how far it moved."""

    audio: np.ndarray
    target: int
    p_target_before: float
    p_target_after: float
    predicted_before: int
    predicted_after: int
    snr_db: float
    seconds: float
    iterations: int

    @property
    def flipped(self) -> bool:
        """Assigned to the target style after steering but not before."""
        return self.predicted_after == self.target and self.predicted_before != self.target

    def summary(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "audio"}, "flipped": self.flipped}


def _proba(model: StyleNet, y: np.ndarray, device: torch.device) -> np.ndarray:
    return model.predict_proba(_tensor(y, device))[0].cpu().numpy()


def steer(model: StyleNet, clip: np.ndarray, target: int, iterations: int = TRANSFORM.steer_iterations,
          content_weight: float = TRANSFORM.steer_content_weight, progress: bool = True) -> SteerResult:
    """Minimise ``-log p(target | x) + w · mean((x - x0)²) / mean(x0²)`` from the clip ``x0``.

    The content term is ``w`` divided by the linear SNR, so ``w = 10`` makes
    a change at 20 dB SNR cost 0.1 nats: small changes are cheap, but the
    clip cannot simply be replaced. Probabilities and SNR are measured on the
    steered signal at the original's level (the classifier's batch norm is
    fixed at test time, so loudness matters to it); only ``audio``, for
    listening, is normalised to peak 0.9.
    """
    freeze(model)
    x0 = check_clip(clip, model.cfg)
    if not 0 <= target < model.n_styles:
        raise DreamError(f"target style {target} out of range for a model with {model.n_styles} styles")
    device = device_of(model)
    ref = torch.as_tensor(x0, device=device)
    power = float(np.mean(x0.astype(np.float64) ** 2))

    def loss(x: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(model(x.reshape(1, -1)), dim=1)[0, target]
        return -logp + content_weight * ((x - ref) ** 2).mean() / power

    p0 = _proba(model, x0, device)
    t0 = time.perf_counter()
    out = minimize_lbfgs(loss, x0, iterations, (-1.0, 1.0), device, progress, desc=f"steer → {target}")
    seconds = time.perf_counter() - t0
    p1 = _proba(model, out.x, device)
    return SteerResult(finish_audio(out.x, model.cfg), target, float(p0[target]), float(p1[target]),
                       int(p0.argmax()), int(p1.argmax()), snr_db(out.x, x0), seconds, out.iterations)


def steer_many(model: StyleNet, clips: np.ndarray, target: int, iterations: int = TRANSFORM.steer_iterations,
               content_weight: float = TRANSFORM.steer_content_weight,
               progress: bool = True) -> tuple[dict, list[SteerResult]]:
    """:func:`steer` every clip; the summary counts how many the classifier then gives the target style.

    Clips already assigned to the target are steered too but reported apart
    (``already_target``): only the others can flip.
    """
    results = [steer(model, c, target, iterations, content_weight, progress=False)
               for c in tqdm(np.asarray(clips), desc=f"steering → {target}", disable=not progress)]
    candidates = [r for r in results if r.predicted_before != target]
    summary = {"clips": len(results), "already_target": len(results) - len(candidates),
               "flipped": sum(r.flipped for r in candidates),
               "flip_rate": (sum(r.flipped for r in candidates) / len(candidates)) if candidates else float("nan"),
               "assigned_target_after": sum(r.predicted_after == target for r in results),
               "mean_snr_db": float(np.mean([r.snr_db for r in results])),
               "min_snr_db": float(np.min([r.snr_db for r in results])),
               "mean_p_target_before": float(np.mean([r.p_target_before for r in results])),
               "mean_p_target_after": float(np.mean([r.p_target_after for r in results])),
               "seconds": float(sum(r.seconds for r in results))}
    return summary, results


__all__ = [
    "TransformConfig", "TRANSFORM", "start_noise", "InversionResult", "invert", "invert_layers", "gram",
    "style_loss_terms", "StyleTransferResult", "judge", "gatys_transfer", "gram_capacity",
    "gram_separability", "SteerResult", "steer", "steer_many",
]

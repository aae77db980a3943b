"""Classify whole songs with a trained model (``python -m thesis_lib predict``).

A track is loaded exactly as preparation loads it (mono, 8 kHz, high-quality
resampler, peak 0.9) and cut into consecutive 5-second clips; the net scores
every clip and the track's verdict is the style with the highest *mean*
probability over its clips (the track-level vote of ``evaluate``).

Which part of the track is cut into clips:

* ``trim="auto"`` (default): as in training, the first and last 30 s are
  dropped (intros, codas, silence) when the track is long enough to keep at
  least one clip after that; a shorter track is used whole, so every track
  of at least 5 s gets a verdict from the clips it has;
* a track shorter than one clip (under 5 s) is zero-padded to one clip and
  its result says ``padded: true`` (a verdict on little evidence);
* ``trim="thesis"`` always drops the ends and reports a track too short for
  that as an error; ``trim="none"`` never drops them.

Unreadable, empty or silent files are reported with the reason and skipped;
they never stop the others.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .audio import (AudioError, cut_clips, decode_track, find_audio, normalise_scale, peak_normalize,
                    trim_ends)
from .config import THESIS, ThesisConfig
from .runtime import synchronize

TRIM_MODES = ("auto", "thesis", "none")


@dataclass
class TrackVerdict:
    """One track's result: mean style probabilities over its clips and the winner, or an error."""

    file: str
    style: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    n_clips: int = 0
    seconds: float = 0.0
    trimmed: bool = False
    padded: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: For a fused model (:class:`~thesis_lib.fusion.LateFusion`): each member's own mean
    #: probabilities over the same clips, so a reader sees which model carried the verdict.
    members: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"file": self.file}
        if self.error is not None:
            d["error"] = self.error
            return d
        d.update(style=self.style, probabilities=self.probabilities, n_clips=self.n_clips,
                 seconds=round(self.seconds, 3), trimmed=self.trimmed, padded=self.padded)
        if self.notes:
            d["notes"] = self.notes
        if self.members:
            d["members"] = self.members
        return d


def track_clips(y: np.ndarray, cfg: ThesisConfig = THESIS, trim: str = "auto") -> tuple[np.ndarray, bool, bool]:
    """Clips of a decoded track ``y`` (8 kHz mono): ``(clips, trimmed, padded)``; see the module doc."""
    if trim not in TRIM_MODES:
        raise ValueError(f"trim must be one of {TRIM_MODES}, not {trim!r}")
    y = peak_normalize(y, cfg.peak)           # ValueError for a silent track
    trimmed = trim == "thesis" or (trim == "auto" and y.size >= cfg.min_track_samples)
    body = trim_ends(y, cfg.trim_samples) if trimmed else y
    if body.size < cfg.clip_samples:
        if trim == "thesis":
            raise ValueError(f"too short to drop {cfg.trim_seconds:g} s at each end and keep one "
                             f"{cfg.clip_seconds:g}-second clip ({y.size / cfg.sample_rate:.1f} s)")
        out = np.zeros((1, cfg.clip_samples), np.float32)
        out[0, : body.size] = body
        return out, trimmed, True
    return cut_clips(body, cfg.clip_samples), trimmed, False


class FoldedStyleNet(torch.nn.Module):
    """A trained :class:`StyleNet` in eval mode with every batch norm folded into the next layer.

    At test time a batch norm is a fixed per-channel ``a * x + b``; feeding a
    'valid' convolution (or the fc layer), it can be absorbed into that
    layer's weights (``W * a`` over the input channel) and bias
    (``+ sum W * b``). Same function up to rounding, four fewer passes over
    the activations per forward: for inference only (no training, no
    gradients to the original weights).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        norms = model.norm_layers()
        layers = model.conv_layers() + [model.fc[0]]
        self.weights, self.biases = [], []
        with torch.no_grad():
            for norm, layer in zip(norms, layers):
                a = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                shift = norm.bias - norm.running_mean * a
                w = layer.weight
                if isinstance(layer, torch.nn.Linear):          # fc sees (channels x time) flattened
                    w3 = w.view(w.shape[0], a.numel(), -1)
                    self.weights.append((w3 * a[None, :, None]).reshape_as(w).clone())
                    self.biases.append(layer.bias + (w3 * shift[None, :, None]).sum((1, 2)))
                else:
                    self.weights.append((w * a[None, :, None]).clone())
                    self.biases.append(layer.bias + (w * shift[None, :, None]).sum((1, 2)))
        self.strides = [c.stride for c in model.cfg.convs]
        self.out_w, self.out_b = model.out.weight.detach().clone(), model.out.bias.detach().clone()
        self.n_styles = model.n_styles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1) if x.dim() == 2 else x
        for w, b, s in zip(self.weights, self.biases, self.strides):
            h = torch.relu_(torch.nn.functional.conv1d(h, w, b, s))
        h = torch.relu_(torch.nn.functional.linear(h.flatten(1), self.weights[-1], self.biases[-1]))
        return torch.nn.functional.linear(h, self.out_w, self.out_b)


def inference_module(model: torch.nn.Module) -> torch.nn.Module:
    """:class:`FoldedStyleNet` for a StyleNet, the model itself for anything else."""
    from .model import StyleNet

    return FoldedStyleNet(model.eval()) if isinstance(model, StyleNet) else model


@torch.inference_mode()
def clip_probabilities(model: torch.nn.Module, clips: np.ndarray, batch_size: int = THESIS.test_batch_size,
                       device: torch.device | str = "cpu", rows: np.ndarray | None = None,
                       fold: bool = True) -> np.ndarray:
    """Softmax probabilities of ``clips`` ``(n, clip_samples)``, in batches; ``(n, n_styles)``.

    The one batched-probabilities function: ``predict`` classifies tracks with
    it and ``train.evaluate`` scores the test clips with it. ``rows`` picks
    rows of ``clips`` (e.g. the test indices of a memory-mapped dataset; read
    one batch at a time). With ``fold`` a :class:`StyleNet` runs with its batch
    norms folded (:class:`FoldedStyleNet`: the same function up to rounding);
    ``evaluate`` uses ``fold=False`` so that its numbers are the model's own.
    """
    model.eval()
    if rows is not None and hasattr(model, "clip_logits"):   # a linear probe or a fusion: cached features reused
        return torch.softmax(model.clip_logits(clips, rows, batch_size), 1).float().numpy()
    if fold:
        model = inference_module(model)
    device = torch.device(device)
    n = len(clips) if rows is None else len(rows)
    out = []
    for lo in range(0, n, batch_size):
        part = clips[lo:lo + batch_size] if rows is None else clips[np.asarray(rows)[lo:lo + batch_size]]
        x = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
        out.append(torch.softmax(model(x.unsqueeze(1).to(device)), 1).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(model, "n_styles", 2)), np.float32)


def clip_votes(model: torch.nn.Module, clips: np.ndarray, batch_size: int = THESIS.test_batch_size,
               device: torch.device | str = "cpu") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`clip_probabilities` of ``clips``, and for a fused model each member's as well.

    A :class:`~thesis_lib.fusion.LateFusion`'s members are each scored once and their
    probabilities combined by its own rule (:meth:`~thesis_lib.fusion.LateFusion.fused_logits`),
    so the members' votes cost nothing extra; any other model gives ``(probabilities, {})``.
    """
    from .fusion import LateFusion

    if not isinstance(model, LateFusion):
        return clip_probabilities(model, clips, batch_size, device), {}
    members = model.member_probabilities(clips, batch_size=batch_size, device=device)
    return torch.softmax(model.fused_logits(members), 1).numpy(), members


def expand_inputs(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, and every audio file below each folder (:func:`thesis_lib.audio.find_audio`)."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from find_audio(p)
        else:
            yield p


def classify_track(model: torch.nn.Module, styles: list[str], path: str | Path, cfg: ThesisConfig = THESIS,
                   trim: str = "auto", batch_size: int = THESIS.test_batch_size,
                   device: torch.device | str = "cpu") -> TrackVerdict:
    """Whole-track verdict for one file; problems come back in ``error``, never raised.

    The track is streamed (:func:`thesis_lib.audio.decode_track`) and its clips
    scored ``batch_size`` at a time, so memory does not grow with its length;
    the clips and the verdict are those of :func:`track_clips` on the whole
    decoded signal.
    """
    if trim not in TRIM_MODES:
        raise ValueError(f"trim must be one of {TRIM_MODES}, not {trim!r}")
    try:
        with decode_track(path, cfg.sample_rate, cfg.resample_type) as track:
            scale = normalise_scale(track, cfg.peak)
            n = track.n_samples
            trimmed = trim == "thesis" or (trim == "auto" and n >= cfg.min_track_samples)
            lo, hi = (cfg.trim_samples, n - cfg.trim_samples) if trimmed else (0, n)
            body = max(0, hi - lo) if n > 2 * cfg.trim_samples or not trimmed else 0
            if body < cfg.clip_samples:
                if trim == "thesis":
                    raise AudioError(path, f"too short to drop {cfg.trim_seconds:g} s at each end and keep one "
                                           f"{cfg.clip_seconds:g}-second clip ({track.seconds:.1f} s)")
                clip = np.zeros((1, cfg.clip_samples), np.float32)
                clip[0, :body] = (track.read(lo, lo + body) * scale).astype(np.float32, copy=False)
                votes = [clip_votes(model, clip, batch_size, device)]
                padded = True
            else:
                votes = [clip_votes(model, batch, batch_size, device) for batch in
                         track.clips(lo, body // cfg.clip_samples, cfg.clip_samples, scale, batch_size)]
                padded = False
            probs = np.concatenate([p for p, _ in votes])
            members = {name: np.concatenate([m[name] for _, m in votes]) for name in votes[0][1]}
            seconds, notes = track.seconds, list(track.notes)
    except AudioError as exc:
        return TrackVerdict(str(path), error=exc.reason)
    mean = probs.mean(0)
    return TrackVerdict(str(path), styles[int(np.argmax(mean))],
                        {s: float(p) for s, p in zip(styles, mean)}, len(probs),
                        seconds, trimmed, padded, notes=notes,
                        members={name: {s: float(p) for s, p in zip(styles, m.mean(0))}
                                 for name, m in members.items()})


def classify(model: torch.nn.Module, styles: list[str], inputs: Iterable[str | Path], cfg: ThesisConfig = THESIS,
             trim: str = "auto", batch_size: int = THESIS.test_batch_size,
             device: torch.device | str = "cpu") -> Iterator[TrackVerdict]:
    """:func:`classify_track` for every file of ``inputs`` (files and folders)."""
    for path in expand_inputs(inputs):
        yield classify_track(model, styles, path, cfg, trim, batch_size, device)


def format_verdict(v: TrackVerdict) -> str:
    if v.error is not None:
        return f"{v.file}: skipped ({v.error})"
    probs = "  ".join(f"{s} {p:.3f}" for s, p in v.probabilities.items())
    notes = [f"{v.n_clips} clip{'s' * (v.n_clips != 1)}", f"{v.seconds:.1f} s"]
    if not v.trimmed:
        notes.append("ends kept")
    if v.padded:
        notes.append("padded to one clip")
    notes += v.notes
    line = f"{v.file}: {v.style}  ({probs}; {', '.join(notes)})"
    if v.members:      # which member carried the fused verdict
        line += "\n    " + "; ".join(f"{name} alone: {max(p, key=p.get)} {max(p.values()):.3f}"
                                     for name, p in v.members.items())
    return line


def music_throughput(model: torch.nn.Module, seconds: float = 600.0, cfg: ThesisConfig = THESIS,
                     batch_size: int = THESIS.test_batch_size, device: torch.device | str = "cpu",
                     repeats: int = 3) -> float:
    """Seconds of (already decoded) music classified per second of wall time, median of ``repeats``."""
    rng = np.random.default_rng(0)
    n = max(1, math.ceil(seconds * cfg.sample_rate / cfg.clip_samples))
    clips = (0.3 * rng.standard_normal((n, cfg.clip_samples))).astype(np.float32)
    clip_probabilities(model, clips[:batch_size], batch_size, device)      # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        clip_probabilities(model, clips, batch_size, device)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return n * cfg.clip_seconds / float(np.median(times))

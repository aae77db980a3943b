"""Figures of the book, drawn the same way in notebooks, the CLI and tests.

Every function returns a matplotlib ``Figure`` and never calls ``show()``, so
the caller decides whether to display, save or close it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .config import THESIS, THESIS_TABLE1


def loss_curve(history: list[dict], title: str = "Training loss per epoch",
               show_thesis: bool = True) -> Figure:
    """Training loss per epoch beside the thesis's Figure 21 (its Table 1 losses)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if show_thesis:
        ax.plot([r[0] for r in THESIS_TABLE1], [r[1] for r in THESIS_TABLE1], "o--", color="0.5",
                label="thesis (Geng 2016, Table 1)")
    ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], "o-", label="this run")
    ax.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrix(confusion: list[list[int]], styles: list[str], title: str = "Confusion matrix") -> Figure:
    """Counts of true style (rows) against predicted style (columns)."""
    c = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(styles), 1.3 + 1.0 * len(styles)))
    ax.imshow(c, cmap="Blues")
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            ax.text(j, i, str(c[i, j]), ha="center", va="center",
                    color="white" if c[i, j] > c.max() / 2 else "black")
    ax.set(xticks=range(len(styles)), yticks=range(len(styles)), xticklabels=styles, yticklabels=styles,
           xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def waveform(y: np.ndarray, sample_rate: int = THESIS.sample_rate, title: str = "", ax=None) -> Figure:
    """Amplitude against time in seconds."""
    fig = ax.figure if ax is not None else plt.subplots(figsize=(7, 2))[0]
    ax = ax if ax is not None else fig.axes[0]
    ax.plot(np.arange(len(y)) / sample_rate, y, lw=0.4)
    ax.set(xlabel="time (s)", ylabel="amplitude", title=title, xlim=(0, len(y) / sample_rate))
    return fig


SPECTROGRAM_RANGE_DB = 80.0
"""Colour range of every spectrogram: from the loudest cell down this many dB."""


def spectrogram(y: np.ndarray, sample_rate: int = THESIS.sample_rate, title: str = "", ax=None,
                n_fft: int = 512, overlap: float = 0.5, colorbar: bool = True) -> Figure:
    """Log-power spectrogram with a dB colour bar; the thesis used a 512-sample window and 50 % overlap.

    Power is in dB relative to a full-scale sine (a sine of amplitude 1 gives
    about -3 dB in its bin); the colours span :data:`SPECTROGRAM_RANGE_DB`
    below the loudest cell, so two spectrograms of one page read alike.
    """
    from scipy.signal import spectrogram as _spec

    fig = ax.figure if ax is not None else plt.subplots(figsize=(7, 2.6))[0]
    ax = ax if ax is not None else fig.axes[0]
    f, t, s = _spec(y, fs=sample_rate, nperseg=n_fft, noverlap=int(n_fft * overlap), scaling="spectrum")
    db = 10 * np.log10(s + 1e-12)
    top = float(db.max())
    mesh = ax.pcolormesh(t, f, db, shading="auto", cmap="magma", vmin=top - SPECTROGRAM_RANGE_DB, vmax=top)
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)", title=title)
    if colorbar:
        fig.colorbar(mesh, ax=ax, label="power (dB)", pad=0.01)
    return fig


def plot_signals(signals: dict[str, np.ndarray], kind: str = "waveform", sample_rate: int = THESIS.sample_rate,
                 title: str = ""):
    """One row per signal, waveform or spectrogram (window 512, 50 % overlap): thesis Figures 22-23.

    Chapter 6 of the book shows the original and dreamed signals with it.
    """
    if kind not in ("waveform", "spectrogram"):
        raise ValueError("kind must be 'waveform' or 'spectrogram'")
    n = len(signals)
    fig, axes = plt.subplots(n, 1, figsize=(8, (1.5 if kind == "waveform" else 1.9) * n + 0.4),
                             sharex=True, squeeze=False)
    draw = waveform if kind == "waveform" else spectrogram
    for ax, (label, y) in zip(axes[:, 0], signals.items()):
        draw(np.asarray(y), sample_rate, title=label, ax=ax)
        if ax is not axes[-1, 0]:
            ax.set_xlabel("")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig

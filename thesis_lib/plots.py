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


def spectrogram(y: np.ndarray, sample_rate: int = THESIS.sample_rate, title: str = "", ax=None,
                n_fft: int = 512, overlap: float = 0.5) -> Figure:
    """Log-magnitude spectrogram; the thesis used a 512-sample window and 50 % overlap."""
    from scipy.signal import spectrogram as _spec

    fig = ax.figure if ax is not None else plt.subplots(figsize=(7, 2.6))[0]
    ax = ax if ax is not None else fig.axes[0]
    f, t, s = _spec(y, fs=sample_rate, nperseg=n_fft, noverlap=int(n_fft * overlap), scaling="spectrum")
    ax.pcolormesh(t, f, 10 * np.log10(s + 1e-12), shading="auto", cmap="magma")
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)", title=title)
    return fig


# ----------------------------------------------------------------------------
# Dreaming (thesis 5.3, Figures 22-23) and its controls
# ----------------------------------------------------------------------------

def dream_waveforms(signals: dict[str, np.ndarray], sample_rate: int = THESIS.sample_rate,
                    title: str = "Original and dreamed waveforms (cf. thesis Figure 22)") -> Figure:
    """One waveform panel per signal, stacked on a shared time axis, as in the thesis's Figure 22."""
    fig, axes = plt.subplots(len(signals), 1, figsize=(7, 1.5 * len(signals) + 0.6), sharex=True, squeeze=False)
    for ax, (name, y) in zip(axes[:, 0], signals.items()):
        waveform(y, sample_rate, name, ax)
        ax.set(ylim=(-1, 1), xlabel="")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def dream_spectrograms(signals: dict[str, np.ndarray], sample_rate: int = THESIS.sample_rate,
                       title: str = "Spectrograms, window 512, 50 % overlap (cf. thesis Figure 23)",
                       n_fft: int = 512, overlap: float = 0.5) -> Figure:
    """One spectrogram per signal with the thesis's Figure 23 settings, stacked."""
    fig, axes = plt.subplots(len(signals), 1, figsize=(7, 1.8 * len(signals) + 0.6), sharex=True, squeeze=False)
    for ax, (name, y) in zip(axes[:, 0], signals.items()):
        spectrogram(y, sample_rate, name, ax, n_fft, overlap)
        ax.set_xlabel("")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def filter_responses_and_dreams(freqs: np.ndarray, responses_db: np.ndarray, dreams: list[np.ndarray],
                                sample_rate: int = THESIS.sample_rate,
                                title: str = "First-layer filters: response and the spectrum of their dream") -> Figure:
    """Each conv1 filter's magnitude response (left) beside the average spectrum of its dream (right).

    Both are shown relative to their own maximum, so their shapes can be
    compared: a dream that follows its filter puts its energy where the
    filter passes most.
    """
    from .measures import average_spectrum_db

    n = len(dreams)
    fig, axes = plt.subplots(n, 2, figsize=(7.5, 1.1 * n + 0.8), sharex=True, squeeze=False)
    for i in range(n):
        axes[i, 0].plot(freqs, responses_db[i] - responses_db[i].max(), color="C0")
        f, level = average_spectrum_db(dreams[i], sample_rate)
        axes[i, 1].plot(f, level - level.max(), color="C3")
        for ax in axes[i]:
            ax.set(ylim=(-40, 3), yticks=[-30, 0])
            ax.grid(alpha=0.3)
        axes[i, 0].set_ylabel(f"filter {i + 1}", rotation=0, ha="right", va="center")
    axes[0, 0].set_title("filter response (dB)")
    axes[0, 1].set_title("spectrum of its dream (dB)")
    for ax in axes[-1]:
        ax.set_xlabel("frequency (Hz)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def objective_histories(histories: dict[str, list[float]], ylabel: str = "objective ½ Σ y²",
                        title: str = "Objective during optimisation", log: bool = True) -> Figure:
    """The objective after each iteration (or step), one line per run."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, h in histories.items():
        ax.plot(np.arange(1, len(h) + 1), h, "o-", ms=2, label=name)
    ax.set(xlabel="iteration", ylabel=ylabel, title=title, yscale="log" if log else "linear")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig

"""The dreaming wing's figures: each first-layer filter beside its dream, and objectives over iterations.

Original and dreamed signals, stacked as in the thesis's Figures 22-23, are
:func:`thesis_lib.plots.plot_signals`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..config import THESIS
from .measures import average_spectrum_db


def filter_responses_and_dreams(freqs: np.ndarray, responses_db: np.ndarray, dreams: list[np.ndarray],
                                sample_rate: int = THESIS.sample_rate,
                                title: str = "First-layer filters: response and the spectrum of their dream") -> Figure:
    """Each conv1 filter's magnitude response (left) beside the average spectrum of its dream (right).

    Both are shown relative to their own maximum, so their shapes can be
    compared: a dream that follows its filter puts its energy where the
    filter passes most.
    """
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

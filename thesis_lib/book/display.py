"""What a chapter displays without IPython: audio players, HTML pieces, Markdown tables, embedded figures.

Everything is embedded (WAV and PNG as data URIs), so it works in the static
book as well as in a live kernel. :func:`static_build` says which of the two
is running.
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
from pathlib import Path

import numpy as np

from ..config import THESIS

STATIC_ENV = "THESIS_BOOK_STATIC"
"""Set to 1 while the book is executed for its static HTML (no live widgets then)."""

PLAYER_SECONDS = 6.0
"""The longest stretch an embedded player holds: every WAV lives in the page, so pages stay small."""


def in_colab() -> bool:
    return "google.colab" in sys.modules


HEADLESS_RUNNERS = ("papermill", "nbclient", "nbconvert", "nbval", "jupyter-book", "jupyter_book")
"""Programs that execute notebooks without a browser (matched in the command line of the kernel's parent)."""


def headless_kernel() -> bool:
    """True in a kernel that a program executes without a browser: papermill, nbconvert, nbval...

    Nothing renders live ipywidgets there, and nbclient waits forever on an interactive widget whose
    output is megabytes of HTML (measured: a 3 MB panel under papermill 2.7 / nbclient 0.11 never
    returned; a chapter's explorer hung the same way), so the chapters then precompute their panels
    as the book build does. Read from the command line of the process that started the kernel
    (``JPY_PARENT_PID``, Linux ``/proc``); False elsewhere and outside a kernel.
    """
    pid = os.environ.get("JPY_PARENT_PID", "")
    try:
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return False
    return any(name in cmd for name in HEADLESS_RUNNERS)


def static_build() -> bool:
    """True while the chapters are executed to build the static HTML book, or by any program
    without a browser (:func:`headless_kernel`).

    Live ipywidgets need a kernel and a frontend; in the built pages, and in notebooks executed by
    papermill or nbconvert, only the precomputed variants (see :mod:`thesis_lib.book.widgets`) are shown.
    """
    return os.environ.get(STATIC_ENV, "") not in ("", "0") or headless_kernel()


class HTML:
    """Minimal rich-display object (``_repr_html_``) so this module needs no IPython."""

    def __init__(self, data: str):
        self.data = data

    def _repr_html_(self) -> str:
        return self.data

    def __str__(self) -> str:
        return self.data


def audio_html(y: np.ndarray, sample_rate: int = THESIS.sample_rate, label: str = "",
               max_seconds: float | None = PLAYER_SECONDS, peak: float | None = THESIS.peak) -> str:
    """An ``<audio>`` player with the clip embedded as a 16-bit WAV data URI, renormalised to ``peak``.

    ``peak=None`` plays the samples as they are (as the network receives
    them; a signal beyond full scale is refused rather than clipped).
    ``max_seconds`` keeps pages small (longer signals are cut). The element
    carries ``data-seconds`` (its length), which the browser test compares
    with the duration the browser decodes.
    """
    from ..audio import wav_bytes

    y = np.asarray(y, dtype=np.float32).ravel()
    if max_seconds is not None:
        y = y[: int(max_seconds * sample_rate)]
    if y.size == 0:
        raise ValueError("empty signal: nothing to play")
    if peak is None and float(np.max(np.abs(y))) > 1.0:
        raise ValueError("a signal beyond full scale cannot be played as it is; give a peak")
    b64 = base64.b64encode(wav_bytes(y, sample_rate, peak)).decode("ascii")
    seconds = y.size / sample_rate
    cap = f'<div class="tl-audio-label">{html.escape(label)}</div>' if label else ""
    return (f'<div class="tl-audio">{cap}<audio controls preload="auto" data-seconds="{seconds:.4f}" '
            f'src="data:audio/wav;base64,{b64}"></audio></div>')


def player(y: np.ndarray, sample_rate: int = THESIS.sample_rate, label: str = "",
           peak: float | None = THESIS.peak) -> HTML:
    """:func:`audio_html` as a displayable object (the last line of a cell shows it)."""
    return HTML(audio_html(y, sample_rate, label, peak=peak))


def players(clips: dict[str, np.ndarray], sample_rate: int = THESIS.sample_rate,
            peak: float | None = THESIS.peak) -> HTML:
    """Several labelled players side by side (each renormalised to ``peak``; ``None``: as they are)."""
    inner = "".join(audio_html(y, sample_rate, label, peak=peak) for label, y in clips.items())
    return HTML(f'<div class="tl-players" style="display:flex;flex-wrap:wrap;gap:1em">{inner}</div>')


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of dicts (floats to 4 significant digits)."""
    columns = columns or list(rows[0])

    def fmt(v):
        return (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)

def figure_html(fig, dpi: int = 80, close: bool = True) -> str:
    """A matplotlib figure as an ``<img>`` with an embedded PNG (closes the figure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="tl-figure" alt="figure" style="max-width:100%" src="data:image/png;base64,{b64}"/>'


def signal_panel(y: np.ndarray, label: str, sample_rate: int = THESIS.sample_rate, note: str = "") -> str:
    """HTML for one precomputed variant: waveform and spectrogram side by side, a player, a note."""
    import matplotlib.pyplot as plt

    from .. import plots

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 2.4))
    plots.waveform(np.asarray(y), sample_rate, title=f"{label}: waveform", ax=a)
    plots.spectrogram(np.asarray(y), sample_rate, title=f"{label}: spectrogram", ax=b)
    fig.tight_layout()
    extra = f'<div class="tl-note">{html.escape(note)}</div>' if note else ""
    return figure_html(fig) + audio_html(y, sample_rate, label) + extra

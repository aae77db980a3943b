"""The book's figures and tables of the network: preparation, filters, their responses, signals.

The frequency response of a filter is :func:`thesis_lib.model.frequency_response`
(one function, used here and by the dreaming wing; it states the correlation
convention). The book evaluates it on 1,024-point FFTs: 513 frequencies.
"""

from __future__ import annotations

import numpy as np

from ..config import CONV_LAYERS, THESIS, ThesisConfig
from ..model import frequency_response

RESPONSE_FFT = 1024
"""FFT length of the book's filter responses (a point every sample_rate/1024 Hz)."""

def network_table(cfg: ThesisConfig = THESIS) -> list[dict]:
    """Per convolution: filters, length, stride, output length, receptive field, hop, lowest frequency."""
    rows = []
    for i, (spec, n, (rf, hop), low) in enumerate(zip(cfg.convs, cfg.conv_output_lengths(),
                                                      cfg.receptive_fields(), cfg.lowest_frequencies()), 1):
        rows.append({"layer": f"conv{i}", "filters": spec.filters, "length": spec.length, "stride": spec.stride,
                     "output steps": n, "receptive field (samples)": rf,
                     "receptive field (ms)": round(1000 * rf / cfg.sample_rate, 1),
                     "hop (samples)": hop, "lowest frequency (Hz)": low})
    return rows


def dc_gain_db(db: np.ndarray) -> np.ndarray:
    """Per filter: its gain at 0 Hz minus its mean gain over all frequencies, in dB.

    Positive: the filter passes the signal's slow average (DC) more than its
    typical frequency, i.e. it leans low-pass; negative: it blocks DC.
    """
    db = np.atleast_2d(db)
    return db[:, 0] - db.mean(axis=1)


def filter_stats(models: dict, cfg: ThesisConfig = THESIS) -> list[dict]:
    """Per layer of each named model: weight sizes, median peak frequency and median DC gain (:func:`dc_gain_db`)."""
    rows = []
    rates = cfg.input_rates()
    for name, model in models.items():
        for i, conv in enumerate(model.conv_layers()):
            w = conv.weight.detach().cpu().numpy()
            f, db = frequency_response(w, rates[i], RESPONSE_FFT)
            peaks = f[np.argmax(db, axis=1)]
            rows.append({"net": name, "layer": CONV_LAYERS[i], "mean abs weight": float(np.abs(w).mean()),
                         "max abs weight": float(np.abs(w).max()),
                         "median peak frequency (Hz)": float(np.median(peaks)),
                         "median DC gain (dB)": float(np.median(dc_gain_db(db))),
                         "input rate (Hz)": float(rates[i])})
    return rows


def weight_change(stats: list[dict], a: str, b: str) -> dict[str, float]:
    """Per layer, ``|mean abs weight of a / that of b − 1|``: how much net ``a``'s weights differ in size from ``b``'s."""
    by = {(r["net"], r["layer"]): r["mean abs weight"] for r in stats}
    return {layer: abs(by[a, layer] / by[b, layer] - 1) for (net, layer) in by if net == a}


def filter_limit(models, layer: str) -> float:
    """The largest absolute weight of ``layer`` over several models: one y-scale for panels compared side by side."""
    return max(float(np.abs(m.conv(layer).weight.detach().cpu().numpy()).max()) for m in models)


def plot_filters(model, layer: str, title: str = "", limit: float | None = None):
    """The 8 filters of one convolution (thesis Figures 24-26): one panel per filter,
    one line per input channel; ``limit`` fixes the y-range to ±limit (see :func:`filter_limit`)."""
    import matplotlib.pyplot as plt

    conv = model.conv(layer)
    w = conv.weight.detach().cpu().numpy()
    fig, axes = plt.subplots(2, 4, figsize=(9, 3.6), sharex=True, sharey=True)
    for k, ax in enumerate(axes.flat[: w.shape[0]]):
        ax.plot(w[k].T, lw=0.7)
        ax.set_title(f"{layer} filter {k + 1}", fontsize=8)
        ax.tick_params(labelsize=7)
    if limit is not None:
        axes[0, 0].set_ylim(-1.05 * limit, 1.05 * limit)
    for ax in axes[1]:
        ax.set_xlabel("tap (input sample)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("weight", fontsize=8)
    fig.suptitle(title or f"{layer}: {w.shape[0]} filters of length {w.shape[2]} "
                          f"({w.shape[1]} input channel{'s' if w.shape[1] > 1 else ''})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_preparation(y: np.ndarray, cfg: ThesisConfig = THESIS, title: str = ""):
    """A whole normalised track: the trimmed ends shaded, the 5-second clips numbered,
    the dropped remainder hatched."""
    import matplotlib.pyplot as plt

    sr = cfg.sample_rate
    t = np.arange(y.size) / sr
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.plot(t, y, lw=0.3, color="0.2")
    end = y.size / sr
    ax.axvspan(0, cfg.trim_seconds, color="tab:red", alpha=0.18, label=f"dropped ({cfg.trim_seconds:g} s at each end)")
    ax.axvspan(end - cfg.trim_seconds, end, color="tab:red", alpha=0.18)
    body = max(y.size - 2 * cfg.trim_samples, 0)
    n = body // cfg.clip_samples
    for k in range(n):
        a = cfg.trim_seconds + k * cfg.clip_seconds
        ax.axvspan(a, a + cfg.clip_seconds, color="tab:blue" if k % 2 == 0 else "tab:cyan", alpha=0.15,
                   label="5-second clips" if k == 0 else None)
    rest = cfg.trim_seconds + n * cfg.clip_seconds
    if rest < end - cfg.trim_seconds:
        ax.axvspan(rest, end - cfg.trim_seconds, fill=False, hatch="///", edgecolor="0.5", lw=0,
                   label="remainder (dropped)")
    ax.set(xlim=(0, end), xlabel="time (s)", ylabel="amplitude", title=title or f"{n} clips from a {end:.0f}-s track")
    ax.legend(loc="upper right", fontsize=7, ncols=3)
    fig.tight_layout()
    return fig


def plot_responses(model, layer: str, cfg: ThesisConfig = THESIS, title: str = ""):
    """Magnitude responses of the 8 filters of ``layer`` at the sample rate of that layer's input."""
    import matplotlib.pyplot as plt

    w = model.conv(layer).weight.detach().cpu().numpy()
    rate = cfg.input_rates()[CONV_LAYERS.index(layer)]
    f, db = frequency_response(w, rate, RESPONSE_FFT)
    fig, ax = plt.subplots(figsize=(9, 2.6))
    for k in range(db.shape[0]):
        ax.plot(f, db[k], lw=0.9, label=f"filter {k + 1}")
    ax.set(xlabel=f"frequency (Hz; {layer} reads a signal sampled at {rate:g} Hz)", ylabel="gain (dB)",
           title=title or f"{layer}: frequency responses", xlim=(0, rate / 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncols=4)
    fig.tight_layout()
    return fig

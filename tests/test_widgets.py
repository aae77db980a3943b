"""The static controls and embedded players of the book (thesis_lib.book.widgets, thesis_lib.book.display)."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf

from thesis_lib import book
from thesis_lib.book import widgets


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict]]:
    p = _Collect()
    p.feed(html)
    return p.tags


def test_audio_html_embeds_a_16bit_wav_of_the_clip_at_peak_09():
    sr = 8000
    y = 0.2 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr)
    tags = parse(book.audio_html(y, sr, "a tone"))
    audio = [a for t, a in tags if t == "audio"]
    assert len(audio) == 1 and "controls" in audio[0]
    src = audio[0]["src"]
    assert src.startswith("data:audio/wav;base64,")
    data, rate = sf.read(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), dtype="float64")
    info = sf.info(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert info.subtype == "PCM_16" and info.format == "WAV" and rate == sr
    assert len(data) == y.size
    assert float(audio[0]["data-seconds"]) == pytest.approx(2.0)
    assert np.max(np.abs(data)) == pytest.approx(0.9, abs=1e-3)


def test_audio_html_cuts_long_signals_and_refuses_empty_ones():
    sr = 8000
    tags = parse(book.audio_html(np.ones(20 * sr) * 0.1, sr, max_seconds=3))
    assert float(dict(tags)["audio"]["data-seconds"]) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        book.audio_html(np.zeros(0), sr)


def test_players_show_one_labelled_player_per_clip():
    html = book.players({"a": np.ones(800) * 0.1, "b <&>": np.ones(1600) * 0.1}, 8000)._repr_html_()
    assert html.count("<audio") == 2
    assert "b &lt;&amp;&gt;" in html


def _switch(sliders=()):
    axes = {"layer": ["conv1", "conv2"], "iterations": [5, 50]}
    panels = {(l, i): f"<p>{l} after {i}</p>" for l in axes["layer"] for i in axes["iterations"]}
    return axes, panels, widgets.switcher(axes, panels, sliders=sliders, title="t")._repr_html_()


def test_switcher_has_a_panel_per_combination_and_shows_only_the_first():
    axes, panels, html = _switch()
    tags = parse(html)
    panels_ = [a for t, a in tags if t == "div" and a.get("class") == "tl-panel"]
    assert [p["data-key"] for p in panels_] == ["conv1|5", "conv1|50", "conv2|5", "conv2|50"]
    assert "style" not in panels_[0] and all(p["style"] == "display:none" for p in panels_[1:])
    radios = [a for t, a in tags if t == "input" and a.get("type") == "radio"]
    assert len(radios) == 4
    assert {r["data-axis"] for r in radios} == {"layer", "iterations"}
    assert sum("checked" in r for r in radios) == 2          # one per axis
    assert all("onchange" in r and "tl-switch" in r["onchange"] for r in radios)
    for text in panels.values():
        assert text in html


def test_switcher_slider_axis_becomes_a_range_input_with_its_values():
    _, _, html = _switch(sliders=["iterations"])
    ranges = [a for t, a in parse(html) if t == "input" and a.get("type") == "range"]
    assert len(ranges) == 1
    r = ranges[0]
    assert (r["min"], r["max"], r["value"], r["data-axis"]) == ("0", "1", "0", "iterations")
    assert r["data-options"] == '["5", "50"]'
    assert "oninput" in r


def test_switcher_radio_groups_of_two_widgets_do_not_share_names():
    names = [{a["name"] for t, a in parse(_switch()[2]) if t == "input"} for _ in range(2)]
    assert names[0].isdisjoint(names[1])


def test_switcher_refuses_missing_panels_and_unknown_sliders():
    axes = {"a": [1, 2]}
    with pytest.raises(ValueError, match="no panel"):
        widgets.switcher(axes, {(1,): "x"})
    with pytest.raises(ValueError, match="slider"):
        widgets.switcher(axes, {(1,): "x", (2,): "y"}, sliders=["b"])


def test_explorer_precomputes_every_combination_in_the_static_book(monkeypatch):
    monkeypatch.setenv(book.STATIC_ENV, "1")
    calls = []

    def render(layer, n):
        calls.append((layer, n))
        return f"<b>{layer}-{n}</b>"

    out = widgets.explorer({"layer": ["c1", "c2", "c3"], "n": [1, 2]}, render)
    assert sorted(calls) == sorted((l, n) for l in ["c1", "c2", "c3"] for n in [1, 2])
    html = out._repr_html_()
    assert html.count('class="tl-panel"') == 6 and "<b>c3-2</b>" in html


def test_explorer_in_a_live_kernel_returns_ipywidgets_that_rerun_the_function(monkeypatch):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv(book.STATIC_ENV, raising=False)
    calls = []

    def render(layer, n):
        calls.append((layer, n))
        return "x"

    w = widgets.explorer({"layer": ["c1", "c2"], "n": [1, 2]}, render, live_axes={"layer": ["c1", "c2"], "n": (1, 9, 1)})
    assert isinstance(w, ipywidgets.interactive)
    slider = [c for c in w.children if getattr(c, "description", "") == "n"][0]
    assert isinstance(slider, ipywidgets.IntSlider) and (slider.min, slider.max) == (1, 9)
    slider.value = 7
    assert calls[-1] == ("c1", 7)


def test_figure_html_embeds_a_png_and_closes_the_figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    html = book.figure_html(fig)
    src = dict(parse(html))["img"]["src"]
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)

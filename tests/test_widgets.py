"""The static controls and embedded players of the book (thesis_lib.book.widgets, thesis_lib.book.display)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from thesis_lib import audio, book
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


def _proc_shows(pid: int, marker: bytes, wait_s: float = 10.0) -> bool:
    """Whether /proc/PID/cmdline names ``marker`` within ``wait_s``: a sandbox whose /proc belongs to
    another PID namespace (one CI run: the kernel-parent lookup read nothing) is told apart from a bug."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_a_kernel_run_by_papermill_or_nbconvert_is_headless(monkeypatch):
    """The kernel's parent (JPY_PARENT_PID) names the runner: papermill -> precomputed panels, since
    nbclient hangs on a live explorer's megabytes of HTML; a server (or no kernel) -> live widgets."""
    from thesis_lib.book import display

    monkeypatch.delenv(book.STATIC_ENV, raising=False)
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "papermill", "in.ipynb"])
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "jupyter-lab"])
    try:
        if not (_proc_shows(runner.pid, b"papermill") and _proc_shows(server.pid, b"jupyter-lab")):
            pytest.skip("this /proc does not show the processes the test starts (another PID namespace)")
        monkeypatch.setenv("JPY_PARENT_PID", str(runner.pid))
        assert display.headless_kernel() and book.static_build()
        html = widgets.explorer({"n": [1, 2]}, lambda n: f"<i>{n}</i>")._repr_html_()
        assert html.count('class="tl-panel"') == 2                    # the switcher, not ipywidgets
        monkeypatch.setenv("JPY_PARENT_PID", str(server.pid))
        assert not display.headless_kernel() and not book.static_build()
        for pid in ("", "not-a-pid", "999999999"):
            monkeypatch.setenv("JPY_PARENT_PID", pid)
            assert not display.headless_kernel()
    finally:
        runner.kill()
        server.kill()


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


# ----------------------------------------------------------------------------
# The blind listening test
# ----------------------------------------------------------------------------

SR = 8000
T = np.arange(5 * SR) / SR
QUIET_TONE = 0.2 * np.sin(2 * np.pi * 220 * T)
"""The "original": a quiet sine, crest factor √2."""
LOUD_BUZZ = 0.9 * np.tanh(4 * np.sin(2 * np.pi * 220 * T)) + 0.05 * np.sin(2 * np.pi * 1760 * T)
"""The "result": a near-square buzz, far louder at the same peak (crest factor near 1)."""


def decoded_players(html: str) -> dict[str, np.ndarray]:
    """The samples of each embedded WAV by its player's label, as the browser would play them."""
    labels = re.findall(r'class="tl-audio-label">([^<]*)<', html)
    srcs = [a["src"] for t, a in parse(html) if t == "audio"]
    assert len(labels) == len(srcs)
    return {l: sf.read(io.BytesIO(base64.b64decode(s.split(",", 1)[1])), dtype="float64")[0]
            for l, s in zip(labels, srcs)}


def hidden_answer(html: str) -> list[list[str]]:
    """The order the reveal decodes from ``data-answer``: ``[[kind, label] for A, B]``."""
    listen = [a for t, a in parse(html) if t == "div" and a.get("class") == "tl-listen"]
    assert len(listen) == 1
    return json.loads(base64.b64decode(listen[0]["data-answer"]))


def test_rms_db_is_relative_to_full_scale():
    assert audio.rms_db(np.sin(2 * np.pi * 220 * T)) == pytest.approx(-3.01, abs=0.01)
    assert audio.rms_db(0.1 * np.ones(100)) == pytest.approx(-20.0)
    assert audio.rms_db(np.zeros(100)) == pytest.approx(-240.0)


def test_loudness_match_equalises_rms_and_puts_the_common_peak_at_09():
    a, b = audio.loudness_match([QUIET_TONE, LOUD_BUZZ])
    assert audio.rms_db(a) == pytest.approx(audio.rms_db(b), abs=1e-4)
    # the sine has the larger crest factor, so it sets the common peak; the buzz stays below it
    assert np.max(np.abs(a)) == pytest.approx(0.9, abs=1e-6) and np.max(np.abs(b)) < 0.85
    assert audio.rms_db(QUIET_TONE) < audio.rms_db(LOUD_BUZZ) - 10        # they did differ to begin with
    assert np.corrcoef(a, QUIET_TONE)[0, 1] == pytest.approx(1.0)          # only scaled, never reshaped


def test_loudness_match_refuses_what_it_cannot_match():
    for bad, match in [([], "no signals"), ([QUIET_TONE, np.zeros(0)], "empty"),
                       ([QUIET_TONE, np.zeros(100)], "silent")]:
        with pytest.raises(ValueError, match=match):
            audio.loudness_match(bad)
    nan = QUIET_TONE.copy()
    nan[10] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        audio.loudness_match([nan])
    with pytest.raises(ValueError, match="peak"):
        audio.loudness_match([QUIET_TONE], peak=1.5)


def test_listening_test_has_two_players_a_and_b_a_choice_and_a_reveal():
    html = widgets.listening_test(QUIET_TONE, LOUD_BUZZ, sample_rate=SR, seed=3)._repr_html_()
    tags = parse(html)
    assert set(decoded_players(html)) == {"A", "B"}
    radios = [a for t, a in tags if t == "input" and a.get("type") == "radio"]
    assert [r["value"] for r in radios] == ["A", "B"] and len({r["name"] for r in radios}) == 1
    assert not any("checked" in r for r in radios)                        # no answer is suggested
    button = [a for t, a in tags if t == "button"]
    assert len(button) == 1 and "tl-listen" in button[0]["onclick"] and "data-answer" in button[0]["onclick"]
    answer = [a for t, a in tags if t == "div" and a.get("class") == "tl-listen-answer"]
    assert answer[0]["style"] == "display:none"
    assert "Which one sounds more like metal?" in html


def test_listening_test_order_follows_the_seed_and_the_hidden_answer_matches_the_players():
    seen = set()
    for seed in range(12):
        html = widgets.listening_test(QUIET_TONE, LOUD_BUZZ, sample_rate=SR, seed=seed,
                                      labels=("C-pop clip", "steered toward metal"))._repr_html_()
        answer = hidden_answer(html)
        assert [kind for kind, _ in answer] == list(widgets.listening_order(seed))
        assert {tuple(x) for x in answer} == {("original", "C-pop clip"), ("transformed clip", "steered toward metal")}
        # the player the answer calls the original really holds the original: the sine correlates with it
        played = decoded_players(html)
        original = "AB"[[kind for kind, _ in answer].index("original")]
        other = "B" if original == "A" else "A"
        assert np.corrcoef(played[original], QUIET_TONE)[0, 1] > 0.999 > np.corrcoef(played[other], QUIET_TONE)[0, 1]
        seen.add(original)
    assert seen == {"A", "B"}                                              # not always the original first


def _uid(html: str) -> str:
    return re.search(r'class="tl-listen" id="([^"]+)"', html).group(1)


def test_listening_test_is_the_same_page_for_the_same_seed():
    first, again = (widgets.listening_test(QUIET_TONE, LOUD_BUZZ, sample_rate=SR, seed=7)._repr_html_()
                    for _ in range(2))
    assert _uid(first) != _uid(again)                                      # unique on a page ...
    assert again.replace(_uid(again), _uid(first)) == first                # ... and otherwise identical


def test_listening_test_plays_the_clips_loudness_matched_and_unclipped():
    played = decoded_players(widgets.listening_test(QUIET_TONE, LOUD_BUZZ, sample_rate=SR, seed=0)._repr_html_())
    a, b = played["A"], played["B"]
    assert len(a) == len(b) == QUIET_TONE.size
    assert abs(audio.rms_db(a) - audio.rms_db(b)) < 0.5
    assert max(np.max(np.abs(a)), np.max(np.abs(b))) == pytest.approx(0.9, abs=1e-3)  # one common peak, no clipping


def test_listening_test_gives_nothing_away_before_the_reveal():
    html = widgets.listening_test(QUIET_TONE, LOUD_BUZZ, sample_rate=SR, seed=1,
                                  labels=("C-pop clip", "steered toward metal"))._repr_html_()
    visible = re.sub(r"<[^>]+>", " ", html)                                # text only: no attributes, no scripts
    for word in ("original", "transformed", "C-pop", "steered"):
        assert word not in visible and word not in html                   # not even in plain sight in the source


def test_two_listening_tests_do_not_share_ids_or_radio_groups():
    tags = [parse(widgets.listening_test(QUIET_TONE, LOUD_BUZZ, sample_rate=SR, seed=0)._repr_html_())
            for _ in range(2)]
    ids = [{a["id"] for t, a in tg if "id" in a} for tg in tags]
    names = [{a["name"] for t, a in tg if t == "input"} for tg in tags]
    assert ids[0] and ids[0].isdisjoint(ids[1]) and names[0].isdisjoint(names[1])


def test_listening_test_refuses_bad_clips():
    with pytest.raises(ValueError, match="differ in length"):
        widgets.listening_test(QUIET_TONE, LOUD_BUZZ[:-1], sample_rate=SR)
    nan = LOUD_BUZZ.copy()
    nan[5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        widgets.listening_test(QUIET_TONE, nan, sample_rate=SR)
    with pytest.raises(ValueError, match="empty"):
        widgets.listening_test(np.zeros(0), np.zeros(0), sample_rate=SR)
    with pytest.raises(ValueError, match="silent"):
        widgets.listening_test(np.zeros(100), QUIET_TONE[:100], sample_rate=SR)

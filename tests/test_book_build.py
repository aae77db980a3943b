"""The whole book, as CI runs it: every chapter executed by papermill with small parameters,
nbval on the cells that print fixed facts, ``jupyter-book build -W`` on the executed copies,
and a real browser (Debian's chromium through Playwright) over the built HTML.

The build runs once per session (about five minutes on two cores); the tests then
inspect its results. ``THESIS_BOOK_OUT`` keeps the build in a given folder;
``THESIS_BOOK_BUILT`` points the tests at an existing build instead of building.
"""

from __future__ import annotations

import functools
import html as html_lib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag

import nbformat
import pytest

from thesis_lib import book
from thesis_lib.book import build as bookbuild

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = [p.stem for p in bookbuild.chapters(ROOT)]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    if os.environ.get("THESIS_BOOK_BUILT"):  # inspect an existing build (while working on the tests)
        return Path(os.environ["THESIS_BOOK_BUILT"])
    out = Path(os.environ.get("THESIS_BOOK_OUT") or tmp_path_factory.mktemp("book"))
    env = {**os.environ, book.STATIC_ENV: "1"}
    proc = subprocess.run([sys.executable, "-m", "thesis_lib", "book", "--small", "--out", str(out),
                           "--timeout", "600"], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"book build failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    print(proc.stdout)
    return out


def executed(out: Path, chapter: str):
    return nbformat.read(out / "src" / "book" / f"{chapter}.ipynb", as_version=4)


def test_every_chapter_ran_with_small_parameters_and_without_errors(built):
    timings = json.loads((built / "timings.json").read_text())
    assert timings["small"] is True and timings["parameters"] == {"SMALL": True}
    assert set(CHAPTERS) <= set(timings["seconds"])
    for chapter in CHAPTERS:
        nb = executed(built, chapter)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), chapter
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], chapter
        injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
        if "SMALL" in bookbuild.parameter_names(ROOT / "book" / f"{chapter}.ipynb"):
            assert injected and "SMALL = True" in injected[0].source, chapter
        # No live widget state in a static page: only precomputed controls.
        mimes = {k for c in code for o in c.outputs for k in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" not in mimes, chapter


def test_fixed_facts_are_printed_and_checked_by_nbval(built):
    facts = {"02_data": ["8000 Hz", "40000 samples = 5.0 s", "240000 samples = 30.0 s"],
             "03_network": ["conv1      480 x 8 x 19997", "conv2      480 x 8 x 4992", "conv3      480 x 8 x 1217",
                            "fc         480 x 256", "parameters 2,503,564", "(1086, 32)", "[1000.0, 250.0, 62.5]"]}
    paths = []
    for chapter, expected in facts.items():
        nb = executed(built, chapter)
        checked = [c for c in nb.cells if c.cell_type == "code" and "nbval-check-output" in c.metadata.get("tags", [])]
        assert checked, chapter
        text = "".join(o.get("text", "") for c in checked for o in c.outputs)
        for fact in expected:
            assert fact in text, (chapter, fact)
        paths.append(str(built / "src" / "book" / f"{chapter}.ipynb"))
    env = {**os.environ, book.STATIC_ENV: "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--rootdir", str(built), *paths], cwd=built, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def test_html_has_every_chapter(built):
    html = built / "html"
    for chapter in CHAPTERS:
        assert (html / "book" / f"{chapter}.html").is_file(), chapter
    assert (html / "book" / "bibliography.html").is_file()
    import yaml

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    slug = repo.removeprefix("https://github.com/")
    page = (html / "book" / "06_dreaming.html").read_text()
    assert f"https://colab.research.google.com/github/{slug}/blob/main/book/06_dreaming.ipynb" in page
    assert f"https://mybinder.org/v2/gh/{slug}/main?urlpath=tree/book/06_dreaming.ipynb" in page
    assert "geng2016" not in page and "Geng" in page  # citations are resolved, not raw keys
    for chapter in CHAPTERS:  # Markdown tables printed by cells are rendered as tables
        text = (html / "book" / f"{chapter}.html").read_text()
        assert "|---|" not in text and "| ---: |" not in text, chapter
    assert (html / "book" / "04_training.html").read_text().count("<table") >= 3


# ----------------------------------------------------------------------------
# Honesty of the built pages (issue 11)
# ----------------------------------------------------------------------------

MACHINE_PATH = re.compile(r"(/root/|/home/|/tmp/|\.cache/|/work/)")
"""Paths of the machine that built the book: never on a page."""
TABLE_CHARS = 130
"""Widest table a page column holds: the sum of each column's longest cell, in characters."""
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")


def _visible_text(page: str) -> str:
    """The page's text as a reader sees it: no scripts, styles, embedded data or tags."""
    page = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", page)
    page = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", " ", page)
    page = re.sub(r"(?s)<[^>]+>", " ", page)
    return html_lib.unescape(page)


def _article(page: str) -> str:
    m = re.search(r'(?s)<article class="bd-article".*?</article>', page)
    return m.group(0) if m else page


def _table_width(table: str) -> int:
    widths: dict[int, int] = {}
    for row in re.findall(r"(?s)<tr\b.*?</tr>", table):
        for k, cell in enumerate(re.findall(r"(?s)<t[hd]\b.*?</t[hd]>", row)):
            widths[k] = max(widths.get(k, 0), len(" ".join(_visible_text(cell).split())))
    return sum(widths.values())


def test_pages_show_no_markers_paths_or_overwide_tables(built):
    for chapter in CHAPTERS:
        page = _article((built / "html" / "book" / f"{chapter}.html").read_text())
        text = _visible_text(page)
        assert "NBVAL" not in text, (chapter, "a test marker is shown to readers")
        m = MACHINE_PATH.search(text)
        assert m is None, (chapter, "a machine path is shown", text[max(0, m.start() - 80): m.end() + 80])
        assert "{glue" not in text, (chapter, "an unresolved glue role")
        assert "# Parameters of this chapter" not in text, (chapter, "the parameters cell is shown")
        for table in re.findall(r"(?s)<table\b.*?</table>", page):
            assert _table_width(table) <= TABLE_CHARS, (chapter, _table_width(table), _visible_text(table)[:300])


def test_glued_numbers_are_computed_and_on_the_page(built):
    """Every {glue} role of a chapter names a value its run glued, and chapter 6 quotes measured numbers."""
    glued_pages = 0
    for chapter in CHAPTERS:
        nb = executed(built, chapter)
        glued = {o.metadata["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if "scrapbook" in o.get("metadata", {})}
        used = {k for c in nb.cells if c.cell_type == "markdown" for k in GLUE_ROLE.findall(c.source)}
        assert used <= glued, (chapter, sorted(used - glued))
        if used:
            glued_pages += 1
            text = _visible_text(_article((built / "html" / "book" / f"{chapter}.html").read_text()))
            assert re.search(r"\d", text)
    assert glued_pages >= 1
    nb = executed(built, "06_dreaming")
    assert {"best_conv3_corr", "best_conv1_envelope_corr", "old_iters"} <= {
        o.metadata["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code"
        for o in c.outputs if "scrapbook" in o.get("metadata", {})}


def test_honesty_checks_catch_what_they_look_for():
    """The checks above fail on the things they exist to catch."""
    assert _table_width("<table><tr><th>" + "x" * 200 + "</th></tr></table>") > TABLE_CHARS
    assert _table_width("<table><tr><th>a</th><th>bb</th></tr><tr><td>ccc</td><td>d</td></tr></table>") == 5
    assert MACHINE_PATH.search(_visible_text("<p>net from /root/.cache/thesis_lib/book/abc</p>"))
    assert "NBVAL" in _visible_text("<pre># NBVAL_CHECK_OUTPUT</pre>")
    assert not MACHINE_PATH.search(_visible_text('<img src="data:image/png;base64,AAAA/root/x"/>'))
    assert GLUE_ROLE.findall("corr {glue:text}`best_conv3_corr:.2f` and {glue:md}`best_name`") == [
        "best_conv3_corr", "best_name"]


@pytest.fixture(scope="session")
def served(built):
    handler = functools.partial(_QuietHandler, directory=str(built / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make system-deps installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _pages(built: Path) -> list[str]:
    html = built / "html"
    pages = [p.relative_to(html).as_posix() for p in html.rglob("*.html")
             if not p.relative_to(html).parts[0].startswith("_")]
    assert len(pages) >= len(CHAPTERS) + 2
    return sorted(pages)


_WAIT_IMAGES = """async () => {
  document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });
  await Promise.all([...document.images].map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  return [...document.images].map(i => ({src: i.src.slice(0, 80), w: i.naturalWidth}));
}"""

_AUDIO = """async (a) => {
  if (a.readyState < 1) await new Promise((r, j) => { a.addEventListener('loadedmetadata', r);
                                                    a.addEventListener('error', () => j('audio error')); });
  const duration = a.duration;
  await a.play();
  await new Promise(r => setTimeout(r, 250));
  const t = a.currentTime, paused = a.paused;
  a.pause();
  return {duration, expected: parseFloat(a.dataset.seconds), t, paused};
}"""


def test_every_page_loads_cleanly_in_chromium(built, served, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:100]}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url[:100]}") if r.status >= 400 else None)
    audios = images = switches = listens = 0
    links: dict[str, str] = {}
    for rel in _pages(built):
        target = _redirect_target(built / "html" / rel)
        if target is not None:  # the root index.html only forwards to the first page
            assert (built / "html" / rel).parent.joinpath(target).resolve().is_file(), (rel, target)
            continue
        page.goto(served + rel, wait_until="load")
        for img in page.evaluate(_WAIT_IMAGES):
            assert img["w"] > 0, (rel, img["src"])
            images += 1
        for a in page.query_selector_all("audio"):
            r = a.evaluate(_AUDIO)
            assert abs(r["duration"] - r["expected"]) < 0.01, (rel, r)
            assert r["t"] > 0 and not r["paused"], (rel, "does not play", r)
            audios += 1
        switches += _check_switches(page, rel)
        listens += _check_listening(page, rel)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            if href.startswith(served):
                links.setdefault(href, rel)
        assert not errors, (rel, errors)
    assert images >= 8 and audios >= 10 and switches >= 3 and listens >= 1, (images, audios, switches, listens)
    _check_links(page, links)
    page.close()


def _redirect_target(path: Path) -> str | None:
    """The URL a page forwards to with ``<meta http-equiv="refresh">``, if it does."""
    import re

    m = re.search(r'http-equiv="refresh"[^>]*url=([^"]+)"', path.read_text(), re.I)
    return m.group(1) if m else None


def _check_switches(page, rel: str) -> int:
    """Every precomputed control renders and switches panels without a kernel."""
    n = 0
    for sw in page.query_selector_all(".tl-switch"):
        n += 1
        panels = sw.query_selector_all(".tl-panel")
        controls = sw.query_selector_all("input[data-axis]")
        assert panels and controls, rel
        assert all(c.is_visible() for c in controls), (rel, "hidden control")
        assert sum(p.is_visible() for p in panels) == 1, rel
        radios = [c for c in controls if c.get_attribute("type") == "radio"]
        ranges = [c for c in controls if c.get_attribute("type") == "range"]
        if radios and len({r.get_attribute("data-axis") for r in radios}) == 1 and len(radios) > 1:
            radios[-1].check()
            shown = [p for p in panels if p.is_visible()]
            assert len(shown) == 1 and shown[0].get_attribute("data-key").split("|")[0] == radios[-1].get_attribute("value"), rel
        for r in ranges:
            options = json.loads(r.get_attribute("data-options"))
            r.evaluate("(e) => { e.value = e.max; e.dispatchEvent(new Event('input', {bubbles: true})); }")
            label = sw.query_selector(f'[data-label-for="{r.get_attribute("data-axis")}"]')
            assert label.inner_text() == options[-1], rel
            shown = [p for p in panels if p.is_visible()]
            assert len(shown) == 1 and options[-1] in shown[0].get_attribute("data-key").split("|"), rel
    return n


def _check_listening(page, rel: str) -> int:
    """Every blind listening test hides its answer, then reveals the right one, and leaves the others alone.

    The tests are answered in page order, A for the first, B for the next, and
    so on; after each reveal every later test must still be untouched.
    """
    import base64

    tests = page.query_selector_all(".tl-listen")
    for i, t in enumerate(tests):
        order = [kind for kind, _ in json.loads(base64.b64decode(t.get_attribute("data-answer")))]
        answer = t.query_selector(".tl-listen-answer")
        assert not answer.is_visible() and not answer.inner_text(), (rel, "answer shown before the reveal")
        assert not any(w in t.inner_text() for w in ("original", "transformed")), (rel, "order given away")
        assert len(t.query_selector_all("audio")) == 2, rel
        pick = "AB"[i % 2]
        t.query_selector(f'input[type=radio][value="{pick}"]').check()
        t.query_selector("button").click()
        text = answer.inner_text()
        assert answer.is_visible() and text.startswith(f"You picked {pick}: the {order[i % 2]}."), (rel, text)
        assert f"A was the {order[0]}" in text and f"B the {order[1]}" in text, (rel, text)
        assert t.get_attribute("data-picked") == order[i % 2], rel
        assert all(r.is_disabled() for r in t.query_selector_all("input[type=radio]")), (rel, "choice not locked")
        for later in tests[i + 1:]:
            assert not later.query_selector(".tl-listen-answer").is_visible(), (rel, "another test revealed")
            radios = later.query_selector_all("input[type=radio]")
            assert not any(r.is_checked() or r.is_disabled() for r in radios), (rel, "another test's choice changed")
    return len(tests)


def test_listening_tests_reveal_in_chromium_without_a_kernel(tmp_path, browser):
    """Two blind tests on one static page: each reveals its own answer and leaves the other alone."""
    import numpy as np

    from thesis_lib.book import widgets

    t = np.arange(2 * 8000) / 8000
    tone, buzz = 0.2 * np.sin(2 * np.pi * 220 * t), np.tanh(4 * np.sin(2 * np.pi * 220 * t))
    first = {widgets.listening_order(s)[0]: s for s in range(20)}
    seeds = [first[widgets.ORIGINAL], first[widgets.TRANSFORMED]]        # the original first, then second
    parts = [widgets.listening_test(tone, buzz, sample_rate=8000, seed=s, labels=("a tone", "a buzz"))._repr_html_()
             for s in seeds]
    (tmp_path / "listen.html").write_text(f"<!DOCTYPE html><html><body>{''.join(parts)}</body></html>")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "listen.html").as_uri(), wait_until="load")
    assert _check_listening(page, "listen.html") == 2
    texts = [a.inner_text() for a in page.query_selector_all(".tl-listen-answer")]
    assert texts == ["You picked A: the original. A was the original (a tone), B the transformed clip (a buzz).",
                     "You picked B: the original. A was the transformed clip (a buzz), B the original (a tone)."]
    page.reload(wait_until="load")
    page.query_selector_all(".tl-listen button")[1].click()          # a reveal without a pick still answers
    assert page.query_selector_all(".tl-listen-answer")[1].inner_text().startswith("You did not pick A or B.")
    assert not page.query_selector_all(".tl-listen-answer")[0].is_visible()
    assert not errors, errors
    page.close()


def _check_links(page, links: dict[str, str]) -> None:
    """Every internal link reaches a page, and its #fragment an element of that page."""
    bodies: dict[str, str] = {}
    for href, source in links.items():
        url, frag = urldefrag(href)
        if url not in bodies:
            resp = page.request.get(url)
            assert resp.ok, (source, href, resp.status)
            bodies[url] = resp.text()
        if frag:
            frag = unquote(frag)
            assert f'id="{frag}"' in bodies[url], (source, href)

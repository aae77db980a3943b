"""A small Sphinx extension for the book's HTML: pages that load without console errors.

* Jupyter Book 1.x registers sphinx-thebe's configuration script twice, so every
  page declared ``const THEBE_JS_URL`` twice (a SyntaxError in the browser);
  identical scripts are now included once.
* sphinx-book-theme sets the colour mode from ``localStorage`` or to ``""``, which
  pydata-sphinx-theme reports as an invalid mode on a reader's first visit; an
  empty mode now starts as ``auto``.

Enabled in ``_config.yml`` (``sphinx.extra_extensions``); the browser test of
``tests/test_book_build.py`` checks the result.
"""

from __future__ import annotations

import re
from pathlib import Path

MODE_FIX = "if(!document.documentElement.dataset.mode){document.documentElement.dataset.mode='auto';}"


_INLINE_SCRIPT = re.compile(r"^\s*<script>.*</script>\s*$")


def dedupe_inline_scripts(html: str) -> str:
    """Keep only the first of identical one-line inline ``<script>`` elements."""
    seen, out = set(), []
    for line in html.splitlines(keepends=True):
        if _INLINE_SCRIPT.match(line):
            key = line.strip()
            if key in seen:
                continue
            seen.add(key)
        out.append(line)
    return "".join(out)


def _finish(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = dedupe_inline_scripts(text)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def setup(app):
    app.add_js_file(None, body=MODE_FIX, priority=10)
    # The duplicates are added by handlers that run after any html-page-context hook,
    # so the written pages are cleaned once the build has finished.
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}

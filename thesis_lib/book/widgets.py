"""Controls that work in the static book as well as in a live kernel.

In Jupyter, Colab or Binder a slider can re-run a computation. The built HTML
book has no kernel, so there :func:`switcher` shows *precomputed* variants (one
per combination of the controls' values) behind radio buttons and range
sliders, toggled by a few lines of inline JavaScript that need no network and
no kernel. :func:`explorer` picks the right one: live ipywidgets in a kernel
that a person drives, precomputed panels while the book is built.
:func:`listening_test` puts a blind A/B comparison in the page the same way.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
from typing import Callable, Iterable, Sequence

import numpy as np

from ..audio import loudness_match
from ..config import THESIS
from .display import HTML, PLAYER_SECONDS, players, static_build

_JS = (
    "(function(r){var k=[];"
    "r.querySelectorAll('[data-axis]').forEach(function(g){"
    "if(g.type==='range'){var o=JSON.parse(g.getAttribute('data-options'));var v=o[+g.value];k.push(v);"
    "var l=r.querySelector('[data-label-for=\"'+g.getAttribute('data-axis')+'\"]');if(l){l.textContent=v;}}"
    "else if(g.checked){k.push(g.value);}});"
    "var key=k.join('|');"
    "r.querySelectorAll('.tl-panel').forEach(function(p){p.style.display="
    "(p.getAttribute('data-key')===key)?'':'none';});"
    "})(this.closest('.tl-switch'))"
)
"""Shows the panel whose ``data-key`` is the current values of all controls joined by '|'."""

_counter = itertools.count()


def _key(values: Sequence) -> str:
    return "|".join(str(v) for v in values)


def switcher(axes: dict[str, Sequence], panels: dict[tuple, str], sliders: Iterable[str] = (),
             title: str = "") -> HTML:
    """Precomputed variants behind controls that work without a kernel.

    ``axes`` maps each control's name to its values (in display order);
    ``panels`` maps every combination (a tuple, one value per axis, in the order
    of ``axes``) to the HTML shown for it. Axes named in ``sliders`` become range
    sliders, the others radio buttons. The first value of every axis is shown
    first. Raises ``ValueError`` when a combination has no panel.
    """
    names = list(axes)
    sliders = set(sliders)
    unknown = sliders - set(names)
    if unknown:
        raise ValueError(f"slider axes {sorted(unknown)} are not among the axes {names}")
    combos = list(itertools.product(*(axes[n] for n in names)))
    missing = [c for c in combos if tuple(c) not in panels]
    if missing:
        raise ValueError(f"no panel for {len(missing)} combination(s), e.g. {missing[0]}")
    digest = hashlib.sha1(json.dumps([names, [_key(c) for c in combos]]).encode()).hexdigest()[:8]
    uid = f"tl{digest}{next(_counter)}"
    js = html.escape(_JS, quote=True)
    parts = [f'<div class="tl-switch" id="{uid}" data-axes="{html.escape(json.dumps(names))}">']
    if title:
        parts.append(f'<div class="tl-switch-title"><strong>{html.escape(title)}</strong></div>')
    parts.append('<div class="tl-controls" style="display:flex;flex-wrap:wrap;gap:1.5em;margin:.4em 0">')
    for a, name in enumerate(names):
        values = [str(v) for v in axes[name]]
        esc = html.escape(name)
        if name in sliders:
            opts = html.escape(json.dumps(values), quote=True)
            parts.append(
                f'<label class="tl-control">{esc}: <input type="range" min="0" max="{len(values) - 1}" step="1" '
                f'value="0" data-axis="{esc}" data-options="{opts}" oninput="{js}" onchange="{js}"/> '
                f'<span data-label-for="{esc}">{html.escape(values[0])}</span></label>')
        else:
            parts.append(f'<span class="tl-control" role="radiogroup" aria-label="{esc}">{esc}: ')
            for i, v in enumerate(values):
                checked = ' checked="checked"' if i == 0 else ""
                parts.append(f'<label style="margin-right:.6em"><input type="radio" name="{uid}-{a}" '
                             f'value="{html.escape(v, quote=True)}" data-axis="{esc}"{checked} '
                             f'onchange="{js}"/> {html.escape(v)}</label>')
            parts.append("</span>")
    parts.append("</div>")
    for i, combo in enumerate(combos):
        style = "" if i == 0 else ' style="display:none"'
        parts.append(f'<div class="tl-panel" data-key="{html.escape(_key(combo), quote=True)}"{style}>'
                     f'{panels[tuple(combo)]}</div>')
    parts.append("</div>")
    return HTML("".join(parts))


def explorer(axes: dict[str, Sequence], render: Callable[..., str], sliders: Iterable[str] = (),
             live_axes: dict | None = None, title: str = "", live: bool | None = None):
    """Live sliders in a kernel, precomputed panels in the static book.

    ``render(**values)`` returns the HTML for one combination. With ``live``
    (default: not :func:`~thesis_lib.book.static_build`), returns an ipywidgets
    ``interactive`` whose controls are ``live_axes`` (any ipywidgets
    abbreviation, e.g. ``(1, 200, 1)`` for an integer slider) or ``axes``; the
    function re-runs on every change. Otherwise every combination of ``axes``
    is rendered now and returned as a :func:`switcher`.
    """
    live = (not static_build()) if live is None else live
    if live:
        import ipywidgets
        from IPython.display import HTML as IHTML, display

        def show(**kw):
            display(IHTML(render(**kw)))

        controls = live_axes or {k: list(v) for k, v in axes.items()}
        return ipywidgets.interactive(show, **controls)
    names = list(axes)
    panels = {combo: render(**dict(zip(names, combo)))
              for combo in itertools.product(*(axes[n] for n in names))}
    return switcher(axes, panels, sliders, title)


_REVEAL_JS = (
    "(function(r){var d=JSON.parse(atob(r.getAttribute('data-answer')));"
    "var p=r.querySelector('input[type=radio]:checked');var k=p?d['AB'.indexOf(p.value)][0]:'';"
    "var n=function(i){return d[i][0]+(d[i][1]?' ('+d[i][1]+')':'');};"
    "var o=r.querySelector('.tl-listen-answer');"
    "o.textContent=(p?'You picked '+p.value+': the '+k+'. ':'You did not pick A or B. ')"
    "+'A was the '+n(0)+', B the '+n(1)+'.';o.style.display='';"
    "r.setAttribute('data-picked',k);"
    "r.querySelectorAll('input[type=radio],button').forEach(function(e){e.disabled=true;});"
    "})(this.closest('.tl-listen'))"
)
"""Decodes the order from ``data-answer``, says what the reader picked and what A and B were, locks the choice."""

ORIGINAL, TRANSFORMED = "original", "transformed clip"
"""What the reveal calls the two clips ("You picked B: the transformed clip.")."""


def listening_order(seed: int) -> tuple[str, str]:
    """Which clip plays as A and which as B: a seeded coin flip, so every build of the book is the same."""
    original_first = bool(np.random.default_rng(seed).integers(2))
    return (ORIGINAL, TRANSFORMED) if original_first else (TRANSFORMED, ORIGINAL)


def listening_test(original: np.ndarray, result: np.ndarray, question: str = "Which one sounds more like metal?",
                   sample_rate: int = THESIS.sample_rate, seed: int = 0, labels: tuple[str, str] = ("", "")) -> HTML:
    """A blind A/B test in the page: two loudness-matched players in a seeded order, a choice, a reveal.

    ``original`` and ``result`` (the transformation's output, the same
    length: a difference would show in the players and give the order away)
    are cut to :data:`~thesis_lib.book.display.PLAYER_SECONDS` and matched by
    :func:`~thesis_lib.audio.loudness_match`, so loudness cannot answer
    ``question``; they play as they are after that (no renormalisation per
    player). :func:`listening_order` with ``seed`` decides which is A. The
    reader picks A or B and presses "Reveal", which names both clips
    (``labels``, e.g. ``("C-pop clip", "steered toward metal")``, added in
    parentheses) and what the reader picked, then locks the choice.

    Nothing in the visible text gives the order away before the reveal; it
    lives base64-encoded in the ``data-answer`` attribute. That is a test for
    an honest reader, not a secure one: the page source has the answer.
    Raises ``ValueError`` for clips of different lengths, or empty, silent or
    non-finite ones.
    """
    original = np.asarray(original, np.float64).ravel()
    result = np.asarray(result, np.float64).ravel()
    if original.size != result.size:
        raise ValueError(f"the original and the result differ in length ({original.size} and {result.size} "
                         "samples); the players would give the order away")
    n = int(PLAYER_SECONDS * sample_rate)
    try:
        matched = dict(zip((ORIGINAL, TRANSFORMED), loudness_match([original[:n], result[:n]])))
    except ValueError as e:
        raise ValueError(f"listening test (signal 0 is the original, 1 the result): {e}") from None
    order = listening_order(seed)
    names = dict(zip((ORIGINAL, TRANSFORMED), labels))
    answer = json.dumps([[kind, names[kind]] for kind in order])  # ASCII (\u escapes), so atob() decodes it
    digest = hashlib.sha1(json.dumps([question, list(labels), seed]).encode()).hexdigest()[:8]
    uid = f"tl{digest}{next(_counter)}"
    pick = "".join(f'<label style="margin-right:.6em"><input type="radio" name="{uid}-pick" value="{ab}"/> {ab}</label>'
                   for ab in "AB")
    return HTML(
        f'<div class="tl-listen" id="{uid}" data-answer="{base64.b64encode(answer.encode()).decode("ascii")}">'
        f'<div class="tl-listen-question"><strong>{html.escape(question)}</strong></div>'
        f'{players({ab: matched[kind] for ab, kind in zip("AB", order)}, sample_rate, peak=None)}'
        f'<div class="tl-controls" style="display:flex;flex-wrap:wrap;gap:1em;align-items:center;margin:.4em 0">'
        f'<span role="radiogroup" aria-label="{html.escape(question, quote=True)}">{pick}</span>'
        f'<button type="button" onclick="{html.escape(_REVEAL_JS, quote=True)}">Reveal</button></div>'
        f'<div class="tl-listen-answer" aria-live="polite" style="display:none"></div></div>')

"""Controls that work in the static book as well as in a live kernel.

In Jupyter, Colab or Binder a slider can re-run a computation. The built HTML
book has no kernel, so there :func:`switcher` shows *precomputed* variants (one
per combination of the controls' values) behind radio buttons and range
sliders, toggled by a few lines of inline JavaScript that need no network and
no kernel. :func:`explorer` picks the right one: live ipywidgets in a kernel
that a person drives, precomputed panels while the book is built.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
from typing import Callable, Iterable, Sequence

from .display import HTML, static_build

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

"""Token text: per-token scores as coloured text, like Captum's ``visualize_text`` and SHAP's
text plot. :func:`token_text` returns a :class:`TokenText`, which a notebook shows as HTML
(``_repr_html_``) and :meth:`TokenText.figure` / :meth:`TokenText.save_png` draw as a PNG.

Positive and negative scores share one diverging scale centred at zero: a token's background
runs from white at zero to ``cmap``'s end colour (lightened, so black text stays readable) at
``±v`` (:func:`token_colors`): red where the token raises the explained output relative to the
reference, blue where it lowers it; ``v`` is ``vmax`` or the ``clip_percentile``-th percentile
of ``|score|`` over all the texts shown (:func:`~jaxlift.viz.color_limit`).

Scores per token come from e.g. :func:`jaxlift.token_scores` (``(N, T)``: the embedding axis
summed) of a model explained at its embedding output.
"""
from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.figure import Figure

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.viz._style import (ATTRIBUTION_LABEL, DEFAULT_CMAP, PathLike, as_float_array,
                                color_limit, save_png, wrapped)

LIGHTEN = 0.7
"""How far the most saturated colour goes from white (1: the colormap's end colour itself)."""


def token_colors(scores: ArrayLike, vmax: float, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """``(T, 3)`` RGB background colours in [0, 1] of ``T`` token scores on the diverging scale
    ``(−vmax, vmax)``: with ``u = clip(s/vmax, −1, 1)``, ``1 − LIGHTEN·|u|·(1 − e)`` where
    ``e`` is ``cmap``'s end colour for the sign of ``s`` (``cmap(1)`` for positive, ``cmap(0)`` for
    negative): white at 0 exactly, the (lightened) end colour at ``±vmax`` and beyond."""
    from matplotlib import colormaps

    s = as_float_array(scores, "scores")
    u = np.clip(s / float(vmax), -1.0, 1.0)[..., None]
    cm = colormaps[cmap]
    end = np.where(u > 0, np.asarray(cm(1.0))[:3], np.asarray(cm(0.0))[:3])
    return 1.0 - LIGHTEN * np.abs(u) * (1.0 - end)


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(255 * float(c))):02x}" for c in rgb)


def _rows(tokens, scores) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """``(tokens, scores)`` of each text: one text (a sequence of strings and ``(T,)`` scores)
    or several (a sequence of token sequences and ``(N, T)`` or a list of 1-D scores)."""
    if isinstance(tokens, str):
        raise InputTypeError("tokens must be a sequence of token strings (e.g. text.split()) or a "
                             "sequence of such sequences, not one string")
    toks = list(tokens)
    if not toks:
        raise InputValueError("tokens is empty: pass at least one token")
    several = not isinstance(toks[0], str)
    texts = [tuple(map(str, t)) for t in toks] if several else [tuple(map(str, toks))]
    if several and any(isinstance(t, str) for t in toks):
        raise InputTypeError("tokens mixes strings and sequences of strings")
    if isinstance(scores, (list, tuple)) and several:
        per = [as_float_array(s, f"scores[{i}]") for i, s in enumerate(scores)]
    else:
        arr = as_float_array(scores, "scores")
        if several and arr.ndim != 2 or not several and arr.ndim != 1:
            raise InputValueError(f"scores of shape {arr.shape} do not fit "
                                  + (f"{len(texts)} texts: expected (N, T) = ({len(texts)}, T)"
                                if several else f"one text of {len(texts[0])} tokens: expected "
                                f"({len(texts[0])},)"))
        per = list(arr) if several else [arr]
    if len(per) != len(texts):
        raise InputValueError(f"{len(texts)} texts of tokens but scores for {len(per)}")
    for i, (t, s) in enumerate(zip(texts, per)):
        if s.ndim != 1 or s.shape[0] != len(t):
            raise InputValueError(f"text {i} has {len(t)} tokens but its scores have shape {s.shape}"
                                  "; give one score per token (e.g. jaxlift.token_scores(scores) "
                                  "sums the embedding axis)")
    return list(zip(texts, per))


@dataclasses.dataclass(frozen=True)
class TokenText:
    """Texts whose tokens are coloured by their scores (made by :func:`token_text`).

    ``rows``: ``(tokens, scores)`` per text; ``labels``: one line per text shown before it
    (or ``None``); ``vmax``: the colour limit ``v`` (scale ``(−v, v)``). A notebook displays it
    as HTML (:meth:`to_html`); :meth:`figure` draws it with Matplotlib and :meth:`save_png`
    writes that figure as a PNG."""

    rows: tuple[tuple[tuple[str, ...], np.ndarray], ...]
    labels: tuple[str, ...] | None
    vmax: float
    cmap: str = DEFAULT_CMAP
    unit: str = ATTRIBUTION_LABEL
    title: str | None = None
    legend: str | None = None
    sep: str = " "

    def colors(self) -> list[np.ndarray]:
        """Each text's ``(T, 3)`` RGB token colours (:func:`token_colors`)."""
        return [token_colors(s, self.vmax, self.cmap) for _, s in self.rows]

    def to_html(self) -> str:
        """The texts as an HTML fragment: one ``<span>`` per token, its background the token's
        colour and its ``title`` (tooltip) the score, then the scale and the legend."""
        esc = html.escape
        out = ['<div class="jaxlift-token-text" style="font-family: sans-serif; '
               'line-height: 2.0; max-width: 60em">']
        if self.title:
            out.append(f'<div style="font-weight: bold">{esc(self.title)}</div>')
        for i, ((toks, s), rgb) in enumerate(zip(self.rows, self.colors())):
            if self.labels is not None:
                out.append(f'<div style="color: #555; font-size: smaller">'
                           f'{esc(self.labels[i])}</div>')
            spans = [f'<span style="background-color: {_hex(c)}; color: #000; padding: 1px 2px;'
                     f' border-radius: 3px" title="{v:+.4g}">{esc(t)}</span>'
                     for t, v, c in zip(toks, s, rgb)]
            out.append("<div>" + esc(self.sep).join(spans) + "</div>")
        lo, mid, hi = token_colors(np.array([-self.vmax, 0.0, self.vmax]), self.vmax, self.cmap)
        out.append('<div style="font-size: smaller; color: #333">scale: '
                   f'<span style="background-color: {_hex(lo)}; padding: 1px 4px">'
                   f'{-self.vmax:.3g}</span> '
                   f'<span style="background-color: {_hex(mid)}; padding: 1px 4px; '
                   f'border: 1px solid #ddd">0</span> '
                   f'<span style="background-color: {_hex(hi)}; padding: 1px 4px">'
                   f'+{self.vmax:.3g}</span> {esc(self.unit)}</div>')
        if self.legend:
            out.append(f'<div style="font-size: smaller; color: #333">{esc(self.legend)}</div>')
        out.append("</div>")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.to_html()

    def figure(self, *, width: float = 8.0, fontsize: float = 12.0, dpi: float = 100
               ) -> Figure:
        """The texts drawn with Matplotlib (``width`` inches wide; lines wrap at the edge):
        each token a text on a rounded box of its colour, a colour bar labelled ``unit``
        below. Returns the figure; ``fig.axes[0].texts`` hold the tokens in order (after the
        title and labels, which are texts too) and ``fig.axes[0].patches`` their boxes."""
        return token_text_figure(self, width=width, fontsize=fontsize, dpi=dpi)

    def save_png(self, path: PathLike, **figure_kw) -> Path:
        """Write :meth:`figure` to ``path`` as a PNG (atomically, :func:`~jaxlift.viz.save_png`)
        and return the path."""
        return save_png(self.figure(**figure_kw), path)


def token_text(
    tokens: Sequence[str] | Sequence[Sequence[str]],
    scores: ArrayLike | Sequence[ArrayLike],
    *,
    labels: Sequence[str] | None = None,
    vmax: float | None = None,
    clip_percentile: float | None = None,
    cmap: str = DEFAULT_CMAP,
    unit: str = ATTRIBUTION_LABEL,
    title: str | None = None,
    legend: str | None = None,
    sep: str = " ",
) -> TokenText:
    """Tokens coloured by their scores on one diverging scale (Captum's ``visualize_text``).

    Args:
        tokens: one text's ``T`` token strings, or ``N`` texts' token sequences.
        scores: ``(T,)`` for one text; ``(N, T)`` or ``N`` 1-D arrays (texts of different
            lengths) for several — one score per token, e.g. ``jaxlift.token_scores(...)``.
        labels: ``N`` lines shown above the texts (e.g. "label: positive · predicted: 0.93").
        vmax: the colour limit ``v`` (scale ``(−v, v)``); default from ``clip_percentile``.
        clip_percentile: ``v`` is this percentile of ``|score|`` over every token shown
            (``None`` or 100: the largest), so that one outlier does not wash the rest out.
        cmap: a diverging colormap (red: positive).
        unit: what the scores are (the scale's label), e.g. "contribution to the logit".
        title, legend: a line above; a sentence below (e.g. :func:`~jaxlift.viz.legend_sentence`).
        sep: what goes between tokens in the HTML (``""`` for sub-word pieces that carry
            their own spaces).

    Returns:
        A :class:`TokenText`: HTML in a notebook, :meth:`TokenText.figure` for a Matplotlib
        figure, :meth:`TokenText.save_png` for a file.
    """
    rows = _rows(tokens, scores)
    if labels is not None:
        labels = tuple(map(str, labels))
        if len(labels) != len(rows):
            raise InputValueError(f"labels must have one line per text ({len(rows)}), got "
                                  f"{len(labels)}")
    v = color_limit(*(s for _, s in rows), clip_percentile=clip_percentile, vmax=vmax)
    from matplotlib import colormaps
    if cmap not in colormaps:
        raise InputValueError(f"unknown colormap {cmap!r}")
    return TokenText(tuple(rows), labels, v, cmap, unit, title, legend, sep)


def token_text_figure(text: TokenText, *, width: float = 8.0, fontsize: float = 12.0,
                      dpi: float = 100) -> Figure:
    """:meth:`TokenText.figure`: ``text``'s tokens laid out in lines ``width`` inches wide,
    each on a box of its colour, labels above each text, a colour bar below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import FancyBboxPatch

    if not (float(width) > 0 and float(fontsize) > 0 and float(dpi) > 0):
        raise InputValueError(f"width, fontsize and dpi must be positive, got {width!r}, "
                              f"{fontsize!r}, {dpi!r}")
    fig = Figure(figsize=(width, 2.0), dpi=dpi)
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    prop = FontProperties(family="DejaVu Sans", size=fontsize)

    def points(s: str) -> float:  # width of s in points
        w, _, _ = renderer.get_text_width_height_descent(s, prop, ismath=False)
        return w * 72.0 / dpi

    margin, pad, gap = 10.0, 2.5, points(" ")
    line_h = fontsize * 1.9
    page_w = width * 72.0
    items = []  # ("text"/"token", x, y, string, colour)
    y = margin
    if text.title:
        for line in wrapped(text.title, width - 0.3, fontsize).split("\n"):
            items.append(("title", margin, y, line, None))
            y += line_h
    for i, ((toks, _), rgb) in enumerate(zip(text.rows, text.colors())):
        if text.labels is not None:
            items.append(("label", margin, y, text.labels[i], None))
            y += line_h * 0.85
        x = margin
        for tok, c in zip(toks, rgb):
            w = points(tok) + 2 * pad
            if x > margin and x + w > page_w - margin:
                x, y = margin, y + line_h
            items.append(("token", x, y, tok, (c, w)))
            x += w + gap
        y += line_h * 1.25
    bar_top = y + 4.0
    legend_lines = (wrapped(text.legend, width - 0.3, fontsize * 0.8).split("\n")
                    if text.legend else [])
    height = bar_top + 46.0 + len(legend_lines) * fontsize * 1.3 + margin
    fig.set_size_inches(width, height / 72.0)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0.0, page_w)
    ax.set_ylim(height, 0.0)
    ax.set_axis_off()
    for kind, x, y0, s, extra in items:
        if kind == "token":
            c, w = extra
            ax.add_patch(FancyBboxPatch((x, y0 + 1.0), w, line_h - 6.0,
                                        boxstyle="round,pad=0,rounding_size=3",
                                        facecolor=c, edgecolor="none"))
            ax.text(x + pad, y0 + line_h / 2 - 2.0, s, fontproperties=prop, va="center",
                    ha="left", parse_math=False, color="black")
        else:
            ax.text(x, y0 + line_h / 2 - 2.0, s, va="center", ha="left", parse_math=False,
                    fontsize=fontsize * (1.0 if kind == "title" else 0.85),
                    fontweight="bold" if kind == "title" else "normal",
                    color="black" if kind == "title" else "0.35")
    light = ListedColormap(token_colors(np.linspace(-text.vmax, text.vmax, 256), text.vmax,
                                        text.cmap))
    cax = fig.add_axes((0.25, 1.0 - (bar_top + 12.0) / height, 0.5, 10.0 / height))
    fig.colorbar(ScalarMappable(Normalize(-text.vmax, text.vmax), light), cax=cax,
                 orientation="horizontal", label=text.unit)
    cax.tick_params(labelsize=fontsize * 0.7)
    cax.xaxis.label.set_size(fontsize * 0.8)
    for k, line in enumerate(legend_lines):
        ax.text(page_w / 2, bar_top + 40.0 + (k + 0.5) * fontsize * 1.3, line, ha="center",
                va="center", fontsize=fontsize * 0.8, parse_math=False, color="0.2")
    return fig

"""Matplotlib figures of attribution scores, from any model: the scores are arrays.

Every function takes NumPy or JAX arrays (anything :func:`numpy.asarray` accepts) and returns a
:class:`matplotlib.figure.Figure` built directly (no ``pyplot``), attached to the
non-interactive Agg canvas, so no global figure state leaks and nothing is shown on screen
(in a notebook, the figure displays itself when it is a cell's value). Pass ``save="out.png"``
to any of them, or call :func:`save_png`, to write a PNG atomically (a temporary file in the
target folder, then :func:`os.replace`). :func:`token_text` returns an HTML object for
notebooks (``_repr_html_``) that also renders to a PNG.

Attribution colour scales are diverging and centred at zero: the colour limits are always
``(-v, +v)``, where ``v`` is the given ``vmax`` or the largest ``|score|`` being shown (with
``clip_percentile=p``, the ``p``-th percentile of ``|score|``, so that a few outliers do not
wash the rest out). Red means the score raises the explained output relative to the
reference, blue that it lowers it; ``sign="absolute"`` shows ``|score|`` on a sequential scale
``(0, v)`` instead.

The package, by job (each module's functions are re-exported here):

- :mod:`~jaxlift.viz.images` -- :func:`image_attribution` (Captum-style views of one image:
  heat map, blended overlay, masked image, alpha scaling; sign and percentile clipping),
  :func:`image_heatmap`, :func:`attribution_grid` (one input, maps for one or many
  targets), :func:`examples_grid` (several inputs on one scale).
- :mod:`~jaxlift.viz.grids` -- :func:`method_grid` (examples × attribution methods).
- :mod:`~jaxlift.viz.tabular` -- :func:`feature_bars`, :func:`target_bars` (tabular features,
  sequences' positions).
- :mod:`~jaxlift.viz.sequences` -- :func:`sequence_logo` (one-hot sequence scores as letters).
- :mod:`~jaxlift.viz.text` -- :func:`token_text` (tokens coloured by their scores: HTML and PNG).
- :mod:`~jaxlift.viz.graphs` -- :func:`graph_nodes`, :func:`graph_layout` (numpy layouts).
- :mod:`~jaxlift.viz._style` -- what they share: :func:`sign_filter`, :func:`color_limit`,
  :func:`legend_sentence`, :func:`save_png`.
"""
from __future__ import annotations

from jaxlift._lazy import renamed_attributes
from jaxlift.viz._style import (ABSOLUTE_CMAP, ATTRIBUTION_LABEL, DEFAULT_CMAP, DNA_COLORS,
                                NEG_COLOR, POS_COLOR, SIGNS, color_limit, legend_sentence, PathLike,
                                save_png, sign_filter, symmetric_limit)
from jaxlift.viz.graphs import (circle_layout, connected_components, graph_layout, graph_nodes,
                                spectral_layout, spring_layout)
from jaxlift.viz.grids import SHARES, method_grid
from jaxlift.viz.images import (IMAGE_VIEWS, PANEL_STYLES, attribution_grid, examples_grid,
                                image_attribution, image_heatmap, view_strength)
from jaxlift.viz.sequences import letter_patch, logo_boxes, sequence_logo
from jaxlift.viz.tabular import BAR_ORDERS, feature_bars, magnitude_order, target_bars
from jaxlift.viz.text import TokenText, token_colors, token_text, token_text_figure

__all__ = [
    "image_heatmap",
    "method_grid",
    "feature_bars",
    "examples_grid",
    "sequence_logo",
    "graph_nodes",
    "attribution_grid",
    "target_bars",
    "save_png",
    "symmetric_limit",
    "sign_filter",
    "color_limit",
    "legend_sentence",
    "graph_layout",
    "connected_components",
    "spring_layout",
    "spectral_layout",
    "circle_layout",
    "image_attribution",
    "view_strength",
    "token_text",
    "token_text_figure",
    "token_colors",
    "TokenText",
    "magnitude_order",
    "logo_boxes",
    "letter_patch",
    "SIGNS",
    "IMAGE_VIEWS",
    "PANEL_STYLES",
    "BAR_ORDERS",
    "SHARES",
    "ATTRIBUTION_LABEL",
    "DEFAULT_CMAP",
    "ABSOLUTE_CMAP",
    "DNA_COLORS",
    "POS_COLOR",
    "NEG_COLOR",
    "PathLike",
]

# renamed (issue 27): jaxlift.concepts.top_features is the mask of important features; this
# one is the order of a 1-D score vector by |score|
__getattr__ = renamed_attributes(__name__, globals(), {"top_features": "magnitude_order"})

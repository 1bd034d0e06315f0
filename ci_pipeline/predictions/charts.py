"""The evaluation report's charts drawn as small PNG images, from the points the evaluation already computed.

Churn has a calibration (reliability) chart and a cumulative gain chart; CLV a gain chart of the value captured
and, per predicted-value decile, the mean predicted against the mean actual value. The model is drawn beside each
baseline whose points the report holds (under ``<chart>/<baseline>``) and beside the diagonal (perfect calibration,
random ranking).

The same points give the same bytes: matplotlib's own style (not the user's ``matplotlibrc``), its bundled font,
and no software or date entry in the PNG. matplotlib is imported when a chart is drawn, so importing the package
stays cheap.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence

#: About 640 x 400 pixels: readable on an asset's page, a few tens of KB each.
SIZE_INCHES = (6.4, 4.0)
DPI = 100
#: Colours of the stored PNG's palette.
PALETTE = 64
#: The charts drawn, in the order they are shown.
CHARTS = ("calibration", "gain", "deciles")
#: What a model's gain chart counts as captured.
CAPTURED = {"TransactionalChurn": "churners", "CustomerLifetimeValue": "actual value"}
#: Readable names of the baselines in a legend (others are shown with spaces for underscores).
_BASELINE_LABELS = {
    "bgnbd_p_no_purchase": "BG/NBD P(no purchase)",
    "bgnbd_gamma_gamma": "BG/NBD + Gamma-Gamma",
    "reference_monthly_x_months_x_retention": "reference: monthly spend x months x retention",
    "most_popular": "most popular",
    "own_most_bought": "own most bought",
}
#: The columns each chart reads from its points.
_COLUMNS = {
    "calibration": ("mean_score", "observed_rate"),
    "gain": ("top_share", "captured"),
    "deciles": ("decile", "mean_predicted", "mean_actual"),
}
_MODEL = "model"
#: One style per series: the model stands out, baselines are thinner and dashed.
_STYLES = (
    {"color": "#1f5fa8", "linewidth": 2.2, "marker": "o", "markersize": 4},
    {"color": "#d1771e", "linewidth": 1.4, "marker": "s", "markersize": 3, "linestyle": "--"},
    {"color": "#3a8a3a", "linewidth": 1.4, "marker": "^", "markersize": 3, "linestyle": "-."},
    {"color": "#8a3a8a", "linewidth": 1.4, "marker": "D", "markersize": 3, "linestyle": ":"},
)
_DIAGONAL = {"color": "#888888", "linewidth": 1.0, "linestyle": ":"}


def series_of(charts: Mapping, chart: str) -> dict[str, Sequence[Mapping]]:
    """The model's points of ``chart`` and each baseline's (report keys ``<chart>/<baseline>``), the model first."""
    found = {_MODEL: charts[chart]} if chart in charts else {}
    prefix = f"{chart}/"
    found |= {key[len(prefix) :]: charts[key] for key in sorted(charts) if key.startswith(prefix)}
    return found


def draw_report_charts(model: str, charts: Mapping) -> dict[str, bytes]:
    """Every chart of an evaluation report whose model points exist, as PNG bytes by chart name.

    Args:
        model: the model's name (``TransactionalChurn``, ...), shown in the titles.
        charts: the report's ``charts``: ``calibration``, ``gain``, ``deciles`` and ``<chart>/<baseline>`` points.

    Returns:
        ``{"calibration": b"\\x89PNG...", "gain": ...}``; empty for a report without charts (recommendation).
        A chart whose points hold no usable value says "no data" on the image.

    Raises:
        ValueError: a point lacks a column the chart reads (the message names the chart, series and point).
    """
    drawers: dict[str, Callable[[str, dict], bytes]] = {
        "calibration": calibration_chart,
        "gain": gain_chart,
        "deciles": decile_chart,
    }
    return {chart: drawers[chart](model, series_of(charts, chart)) for chart in CHARTS if chart in charts}


def markdown_image(title: str, png: bytes) -> str:
    """The PNG as a Markdown image with a data URI, which the Dagster UI draws on the asset's page."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def calibration_chart(model: str, series: Mapping[str, Sequence[Mapping]]) -> bytes:
    """Observed rate against mean predicted score per score bin, for the model and each baseline, with the
    diagonal of perfect calibration."""
    lines = _lines("calibration", model, series)

    def draw(ax) -> None:
        ax.plot([0, 1], [0, 1], label="perfectly calibrated", **_DIAGONAL)
        # A 0/1 score (a rule) fills two bins: a line between them would show scores it never gives.
        _plot_lines(ax, lines, joined=3)
        # A little room so that points at 0 and 1 (a rule's) are not cut in half by the frame.
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)

    return _render(
        f"Calibration: {model}",
        "mean predicted probability (per score bin)",
        "observed rate",
        draw if lines else None,
    )


def gain_chart(model: str, series: Mapping[str, Sequence[Mapping]]) -> bytes:
    """Cumulative gain: the share of the positives (churners, actual value) captured by the top share of customers
    ranked by each series' score, with the diagonal of a random order."""
    lines = {name: ([0.0, *xs], [0.0, *ys]) for name, (xs, ys) in _lines("gain", model, series).items()}
    captured = CAPTURED.get(model, "positives")

    def draw(ax) -> None:
        ax.plot([0, 1], [0, 1], label="random order", **_DIAGONAL)
        _plot_lines(ax, lines)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)

    return _render(
        f"Cumulative gain: {model}",
        "share of customers, ranked by score (highest first)",
        f"share of {captured} captured",
        draw if lines else None,
    )


def decile_chart(model: str, series: Mapping[str, Sequence[Mapping]]) -> bytes:
    """Mean predicted against mean actual value per predicted-value decile of the model (1 = highest)."""
    rows = [
        (float(p["decile"]), float(p["mean_predicted"]), float(p["mean_actual"]))
        for p in _checked("deciles", model, _MODEL, series.get(_MODEL, []))
        if all(_finite(p[c]) for c in _COLUMNS["deciles"])
    ]

    def draw(ax) -> None:
        deciles = [r[0] for r in rows]
        ax.bar([d - 0.2 for d in deciles], [r[1] for r in rows], width=0.4, label="predicted", color="#1f5fa8")
        ax.bar([d + 0.2 for d in deciles], [r[2] for r in rows], width=0.4, label="actual", color="#d1771e")
        ax.set_xticks(deciles, [str(int(d)) for d in deciles])
        ax.set_ylim(bottom=0)

    return _render(
        f"Predicted vs actual by decile: {model}",
        "predicted-value decile (1 = highest predictions)",
        "mean value per customer",
        draw if rows else None,
    )


def baseline_label(name: str) -> str:
    """A baseline's name as a legend shows it."""
    if name == _MODEL:
        return "model"
    rule = re.fullmatch(r"rule_no_purchase_(\d+)_days", name)
    if rule:
        return f"rule: no purchase in {rule.group(1)} days"
    return _BASELINE_LABELS.get(name, name.replace("_", " "))


def _lines(chart: str, model: str, series: Mapping) -> dict:
    """Each series' (xs, ys) with its unusable points (None, NaN) left out; series with no point left out."""
    x, y = _COLUMNS[chart]
    lines = {}
    for name, points in series.items():
        usable = [p for p in _checked(chart, model, name, points) if _finite(p[x]) and _finite(p[y])]
        if usable:
            lines[name] = ([float(p[x]) for p in usable], [float(p[y]) for p in usable])
    return lines


def _checked(chart: str, model: str, name: str, points) -> list[Mapping]:
    """The points, refused with a message naming the chart, series and point when a column the chart reads is
    missing."""
    if not isinstance(points, Sequence) or isinstance(points, str | bytes):
        raise ValueError(f"{chart} chart of {model}: the {name} points must be a list of rows, not {type(points)}")
    columns = _COLUMNS[chart]
    for i, point in enumerate(points):
        missing = [c for c in columns if not isinstance(point, Mapping) or c not in point]
        if missing:
            raise ValueError(
                f"{chart} chart of {model}: point {i} of the {name} points has no {', '.join(missing)} "
                f"(each point needs {', '.join(columns)})"
            )
    return list(points)


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plot_lines(ax, lines: Mapping[str, tuple[list, list]], joined: int = 2) -> None:
    """Each series as a line with markers; a series of fewer than ``joined`` points as markers only."""
    for i, (name, (xs, ys)) in enumerate(lines.items()):
        style = _STYLES[min(i, len(_STYLES) - 1)]
        if len(xs) < joined:
            style = style | {"linestyle": "none", "markersize": 6}
        ax.plot(xs, ys, label=baseline_label(name), **style)


def _render(title: str, xlabel: str, ylabel: str, draw: Callable | None) -> bytes:
    """One chart as PNG bytes; ``draw`` None gives a chart that says "no data"."""
    from matplotlib import style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image  # matplotlib's own dependency

    # matplotlib's defaults, not the user's matplotlibrc: the same points give the same image everywhere.
    with style.context("default"):
        figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
        ax = figure.subplots()
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        if draw is None:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=14, color="#888888")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            draw(ax)
            ax.grid(True, linewidth=0.4, alpha=0.5)
            ax.legend(fontsize=8, loc="best")
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
    rgb = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buffer = io.BytesIO()
    # A 64-colour palette keeps a chart near 15 KB instead of 50 KB (the antialiased edges are what takes the
    # colours), with no visible change; Pillow writes no software or date entry, so the bytes depend on the points.
    rgb.convert("RGB").quantize(colors=PALETTE, dither=Image.Dither.NONE).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()

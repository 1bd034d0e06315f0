"""Text charts of match weights (log2 Bayes factors), for the terminal and for asset metadata (Markdown code blocks):
a model's weight per comparison level, and one pair's waterfall from the prior to its total weight.

Examples:
    >>> print("\\n".join(weight_bars([("exact", 8.0), ("else", -4.0)], width=8)))
    exact          │████████  +8.00
    else       ████│          -4.00
"""

from __future__ import annotations

from collections.abc import Sequence

RISE, FALL, AXIS = "█", "░", "│"


def weight_bars(rows: Sequence[tuple[str, float]], width: int = 20) -> list[str]:
    """One line per ``(label, weight)``: a bar left of the axis for a weight against a match, right of it for one
    in favour, ``width`` characters for the largest weight in size; then the weight."""
    largest = max((abs(w) for _, w in rows), default=0.0) or 1.0
    pad = max((len(label) for label, _ in rows), default=0)
    lines = []
    for label, w in rows:
        n = round(abs(w) / largest * width)
        left = (RISE * n if w < 0 else "").rjust(width)
        right = (RISE * n if w > 0 else "").ljust(width)
        lines.append(f"{label.ljust(pad)}  {left}{AXIS}{right}  {w:+.2f}")
    return lines


def waterfall_figure(steps: Sequence[tuple[str, float]], total: str = "total", width: int = 40) -> list[str]:
    """One line per ``(label, weight)`` step, the first being the prior: a bar from the running total before the
    step to the total after it (``█`` a rise, ``░`` a fall) on one axis for every line, with 0 marked ``│``; then a
    line for the final total, drawn from 0. Each line ends with the step's weight and the running total."""
    after, running = [], 0.0
    for _, w in steps:
        running += w
        after.append(running)
    before = [0.0, *after[:-1]]
    low, high = min(0.0, *after), max(0.0, *after)
    span = (high - low) or 1.0

    def column(x: float) -> int:
        return round((x - low) / span * (width - 1))

    zero = column(0.0)
    pad = max(len(label) for label, _ in [*steps, (total, 0.0)])

    def line(label: str, start: float, end: float, mark: str, weight: float) -> str:
        cells = [" "] * width
        cells[zero] = AXIS
        a, b = sorted((column(start), column(end)))
        for i in range(a, b + 1) if start != end else ():
            cells[i] = mark
        return f"{label.ljust(pad)}  {''.join(cells)}  {weight:+7.2f}  {end:+7.2f}"

    lines = [
        line(label, s, e, RISE if w >= 0 else FALL, w) for (label, w), s, e in zip(steps, before, after, strict=True)
    ]
    final = after[-1] if after else 0.0
    lines.append(line(total, 0.0, final, RISE if final >= 0 else FALL, final))
    return lines

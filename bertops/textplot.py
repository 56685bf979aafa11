"""Plots that fit in a line of text (terminal output, markdown artifacts)."""

from __future__ import annotations

SPARK = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line plot: each character is one point (or the mean of a run of points)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [
            sum(values[int(i * step) : int((i + 1) * step)]) / max(1, len(values[int(i * step) : int((i + 1) * step)]))
            for i in range(width)
        ]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[1 + int((v - low) / span * (len(SPARK) - 2))] for v in values)

"""Slopes in log-log coordinates: how fast one figure shrinks with another."""

from __future__ import annotations

import math
from collections.abc import Sequence


def log_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(x) over the points where both are
    positive and finite.

    Args:
        x: abscissae, e.g. radii or distances.
        y: ordinates, e.g. gaps or value changes, one per abscissa.

    Returns:
        The slope b of ``log y = a + b log x``, or None when fewer than two usable
        points, or fewer than two distinct abscissae, remain.

    Example:
        >>> round(log_slope([1.0, 2.0, 4.0], [3.0, 6.0, 12.0]), 12)
        1.0
    """
    points = [
        (math.log(a), math.log(b))
        for a, b in zip(x, y, strict=True)
        if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)
    ]
    if len({a for a, _ in points}) < 2:
        return None
    mean_x = sum(a for a, _ in points) / len(points)
    mean_y = sum(b for _, b in points) / len(points)
    spread = sum((a - mean_x) ** 2 for a, _ in points)
    return sum((a - mean_x) * (b - mean_y) for a, b in points) / spread

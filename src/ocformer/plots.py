"""PNG figures, drawn with matplotlib's object API (no pyplot state) and saved
atomically.

Figures carry no creation date or software stamp, so the same figures give the same
bytes on the same matplotlib version.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ocformer.atomic import write_atomic

DPI = 110


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """An empty figure of ``width`` x ``height`` inches."""
    return Figure(figsize=(width, height), layout="constrained")


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_png(figure: Figure, path: Path) -> None:
    """Write ``figure`` to ``path`` as PNG, atomically."""
    data = png_bytes(figure)
    write_atomic(Path(path), lambda temporary: Path(temporary).write_bytes(data))


def spread_plot(
    figure: Figure,
    groups: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    ylabel: str,
    title: str,
    reference: tuple[float, str] | None = None,
) -> None:
    """One column per group: the mean as a diamond with the range as an error bar,
    every value as a dot beside it; optionally a dashed horizontal reference line.

    Args:
        figure: the figure to draw into.
        groups: the column names.
        values: the values of each group (one per seed).
        ylabel, title: the axis label and the title.
        reference: ``(value, label)`` of a horizontal line.
    """
    axes = figure.add_subplot()
    positions = np.arange(len(groups))
    for position, group in zip(positions, values, strict=True):
        group = np.asarray(group, dtype=np.float64)
        if group.size == 0:
            continue
        mean = group.mean()
        axes.errorbar(
            position,
            mean,
            yerr=[[mean - group.min()], [group.max() - mean]],
            fmt="D",
            color="#1f3b5c",
            markersize=7,
            capsize=6,
        )
        axes.plot(
            np.full(group.size, position + 0.12),
            group,
            "o",
            color="#6b8fb5",
            markersize=4,
        )
    if reference is not None:
        axes.axhline(reference[0], linestyle="--", color="#b2182b", label=reference[1])
        axes.legend(loc="best")
    axes.set_xticks(positions, groups)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)

"""What the commands show on the terminal: rich progress bars on standard error
while they run, and a table of figures on standard output at the end.

A progress bar is a context manager and the ``progress`` callback the library
calls; it shows nothing when standard error is not a terminal:

    with LayerProgress(settings.n_layers) as progress:
        result = train(dataset, settings, progress=progress)
    print_figures("ocformer train: digits (dp)", [("layers", 2), ...])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ocformer.cli import err_console, out_console


def print_figures(title: str, rows: Iterable[tuple[str, Any]]) -> None:
    """A two-column table of (figure, value) rows, printed verbatim, not as markup."""
    table = Table(title=escape(title))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(escape(name), escape(str(value)))
    out_console.print(table)


def progress_bar(text: str = "{task.description}") -> Progress:
    """A bar with ``text``, done / total and the elapsed time, on standard error."""
    return Progress(
        TextColumn(text),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )


class LayerProgress:
    """A bar per DP layer, for ``progress(layer, done, total)`` calls."""

    def __init__(self, n_layers: int):
        self.bar = progress_bar()
        self.tasks: dict[int, Any] = {}
        self.n_layers = n_layers

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, layer: int, done: int, total: int) -> None:
        if layer not in self.tasks:
            self.tasks[layer] = self.bar.add_task(
                f"layer {layer + 1}/{max(self.n_layers, 1)}", total=total
            )
        self.bar.update(self.tasks[layer], completed=done, total=total)


class CountProgress:
    """One bar of ``progress(done, total)`` calls."""

    def __init__(self, description: str):
        self.bar = progress_bar(description)
        self.task = self.bar.add_task(description, total=None)

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


class StepProgress:
    """One bar over ``total`` steps, for ``progress(*names)`` calls made as each
    step starts.

    Args:
        title: the description until the first step starts.
        total: how many steps there are.
        label: the description of a step, formatted with its names, e.g.
            ``"seed {}: {}"`` for ``progress(seed, method)``.
        finish: whether a run that ends without an error fills the bar.
    """

    def __init__(self, title: str, total: int, label: str, *, finish: bool = False):
        self.bar = progress_bar()
        self.total = total
        self.task = self.bar.add_task(title, total=total)
        self.label = label
        self.finish = finish
        self.started = False

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.finish and not any(exc):
            self.bar.update(self.task, completed=self.total)
        self.bar.stop()

    def __call__(self, *names: Any) -> None:
        if self.started:
            self.bar.advance(self.task)
        self.started = True
        self.bar.update(self.task, description=self.label.format(*names))

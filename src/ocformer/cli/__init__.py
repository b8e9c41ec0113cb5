"""Command-line interface: ``ocformer train``, ``predict``, ``policy-table``,
``compare`` and ``verify``.

    ocformer train --data digits --layers 2 --out runs/digits
    ocformer train --data digits --layers 3 --workers 4 --checkpoint runs/ckpt
    ocformer train --resume runs/ckpt
    ocformer train --data order --dry-run
    ocformer policy-table --data order --codes 2 --atoms 4 --out runs/order.table
    ocformer train --policy-table runs/order.table --data order --seed 7
    ocformer predict --model runs/digits --data digits --split test --json
    ocformer compare --data digits --seeds 3 --out runs/compare-digits
    ocformer verify --quick --out runs/verify

Errors in the input end the command with one line on standard error and exit status
2; nothing is written or replaced then. ``--json`` prints plain JSON on standard
output, whatever the terminal.

This package holds the typer ``app``, the two consoles and ``fail``; each command
lives in its own module (``train``, ``policy``, ``predict``, ``compare``,
``verify``), which registers it on ``app`` when imported below. ``options`` holds
the option declarations and checks that several commands share. Heavy modules
(torch, the solver) are imported inside the command functions, so that ``--help``
starts fast.
"""

from __future__ import annotations

import logging
import os

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    # Plain help text: rich markup would take "[default: 2]" for a style and drop it.
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    help="Train small Transformers as an optimal control problem, solved exactly by "
    "dynamic programming over triply quantized measures.",
)
out_console = Console()
err_console = Console(stderr=True)


def fail(error: Exception) -> None:
    """Print one line naming the problem and exit with status 2."""
    # Escaped: messages quote user input and option syntax such as "value[0,1]",
    # which rich would otherwise take for markup and drop.
    message = escape(str(error))
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def main() -> None:
    """Entry point of the ``ocformer`` command."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.WARNING)
    app()


# The command modules register themselves on ``app``; they import it from here, so
# they come last, and their order is the order of ``ocformer --help``.
from ocformer.cli import train, policy, predict, compare, verify  # noqa: E402, F401, I001

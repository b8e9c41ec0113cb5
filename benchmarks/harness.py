"""What every benchmark script shares: seeded problems, timing, and the output.

Benchmarks print a rich table, or with ``--json`` one JSON object on standard output.
They build problems through the library's own path (``ocformer.train.build_problem``),
so what they time is what ``ocformer train`` runs.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import ocformer
from ocformer import ActionConfig, EmbeddingConfig, QuantizerConfig, TrainConfig
from ocformer.data import split_dataset
from ocformer.mdp import QuantizedProblem
from ocformer.train import build_problem

# Eight actions: two attention temperatures, two positional weights, two angles.
SMALL_GRID = {
    "temperature": (0.0, 2.0),
    "position": (-8.0, 8.0),
    "value_gain": (1.0,),
    "angle": (0.0, math.pi / 2),
    "mlp_gain": (1.0,),
}


def make_problem(
    dataset: ocformer.Dataset,
    *,
    n_layers: int,
    dim: int,
    codes: int,
    grid: dict | None = None,
    seed: int = 0,
) -> QuantizedProblem:
    """The quantized MDP of a dataset's training part under a small configuration."""
    config = TrainConfig(
        n_layers=n_layers,
        seed=seed,
        embedding=EmbeddingConfig(dim=dim),
        quantizer=QuantizerConfig(codes=codes),
        actions=ActionConfig(grid=grid),
    )
    split = split_dataset(dataset, test_fraction=config.test_fraction, seed=seed)
    return build_problem(split.train, config).problem


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """Result and wall seconds of one call."""
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def machine() -> dict[str, Any]:
    """A short description of where the figures were measured."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }


def emit(
    title: str,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    *,
    as_json: bool,
) -> None:
    """Print the rows as a table and the summary below it, or everything as JSON."""
    if as_json:
        print(json.dumps({**summary, "rows": list(rows), "machine": machine()}))
        return
    console = Console(width=max(Console().width, 160))
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_format(value) for value in row.values()))
    console.print(table)
    for name, value in summary.items():
        console.print(f"{name}: {_format(value)}")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)

"""``ocformer compare``: train one model with DP and with the baselines, seed by seed.

    ocformer compare --data digits --seeds 3 --out runs/compare-digits

The methods and their budgets are ``ocformer.compare``'s; this module reads the
flags and prints the means over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ocformer.cli import app, fail, out_console
from ocformer.cli.options import (
    Atoms,
    Codebook,
    Cost,
    Data,
    Dim,
    GridAsForTrain,
    Layers,
    NSequences,
    check_out,
    model_flags,
    read_config,
    write_error,
)
from ocformer.cli.terminal import StepProgress
from ocformer.config import TrainConfig, merge
from ocformer.errors import OcformerError

if TYPE_CHECKING:
    from ocformer.compare import Comparison


@app.command()
def compare(
    data: Data = None,
    n_sequences: NSequences = None,
    seeds: Annotated[
        int | None, typer.Option(help="Seeds 0 .. K-1, one split each. [default: 3]")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated, from dp, adam, adam-round, adam-ste, cma, random. "
            "[default: all]"
        ),
    ] = None,
    layers: Layers = None,
    cost: Cost = None,
    codes: Annotated[
        int | None, typer.Option(help="State codewords. [default: 16]")
    ] = None,
    codebook: Codebook = None,
    atoms: Atoms = None,
    dim: Dim = None,
    grid: GridAsForTrain = None,
    steps: Annotated[
        int | None, typer.Option(help="Adam steps, full batch. [default: 200]")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Adam's step size. [default: 0.05]")
    ] = None,
    cma_evaluations: Annotated[
        int | None, typer.Option(help="CMA-ES candidates at most. [default: 600]")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML config file of the model, as for train."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write compare.json, compare.md and PNG plots here."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON.")
    ] = False,
) -> None:
    """Train the same model with DP, Adam, Adam rounded, Adam with a straight-through
    estimator, CMA-ES and random plans, and compare them seed by seed."""
    from ocformer.compare import CompareConfig, write_comparison
    from ocformer.compare import compare as run_comparison
    from ocformer.data import load_dataset

    options = {
        "seeds": seeds,
        "steps": steps,
        "learning_rate": learning_rate,
        "cma_evaluations": cma_evaluations,
    }
    try:
        flags = model_flags(
            layers=layers,
            cost=cost,
            codes=codes,
            codebook=codebook,
            atoms=atoms,
            dim=dim,
            grid=grid,
        )
        base, _ = read_config(config)
        settings = TrainConfig.from_dict(merge(base, flags), str(config or "flags"))
        chosen = {name: value for name, value in options.items() if value is not None}
        if methods is not None:
            chosen["methods"] = tuple(m.strip() for m in methods.split(",") if m)
        comparison_options = CompareConfig(**chosen)
        check_out(out)
        dataset = load_dataset(data or "digits", n_sequences=n_sequences)

        # adam-round rounds adam's fit and is not announced on its own.
        shown = [m for m in comparison_options.methods if m != "adam-round"]
        total = comparison_options.seeds * len(shown)
        with StepProgress("compare", total, "seed {}: {}") as progress:
            comparison = run_comparison(
                dataset, settings, comparison_options, progress=progress
            )
    except OcformerError as error:
        fail(error)

    if out is not None:
        try:
            write_comparison(comparison, out)
        except OSError as error:
            fail(write_error(out, error))
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=1))
    else:
        _print_comparison(comparison, out)


def _print_comparison(comparison: Comparison, out: Path | None) -> None:
    """The table of means over seeds per method, the check of the DP's optimality,
    and where the files went."""
    from ocformer.compare import row_fields

    fields = row_fields(comparison.task, comparison.cost)[4:]
    cost = comparison.cost
    names = {
        "quantized_value": "quantized",
        "train_loss": f"train {cost}",
        "test_loss": f"test {cost}",
        "train_accuracy": "train acc",
        "test_accuracy": "test acc",
        "wall_seconds": "seconds",
        "evaluations": "evals",
    }
    table = Table(
        title=escape(
            f"ocformer compare: {comparison.data} ({comparison.cost}, "
            + (
                f"mean over {seeds} seeds)"
                if (seeds := comparison.options["seeds"]) > 1
                else "one seed)"
            )
        )
    )
    # One column per method: six narrow columns fit an 80-column terminal.
    summary = comparison.summary()
    objectives = {row["method"]: row["objective"] for row in comparison.rows}
    table.add_column("figure", no_wrap=True)
    for entry in summary:
        table.add_column(escape(entry["method"]), justify="right", no_wrap=True)
    table.add_row("minimises", *(objectives[entry["method"]] for entry in summary))
    for name in fields:
        cells = []
        for entry in summary:
            figure = entry.get(name)
            cells.append("-" if figure is None else f"{figure['mean']:.4g}")
        table.add_row(escape(names.get(name, name.replace("_", " "))), *cells)
    out_console.print(table)

    check = comparison.dp_optimal()
    if check["holds"] is not None:
        verdict = "holds" if check["holds"] else "VIOLATED"
        out_console.print(
            escape(
                f"dp's quantized value <= every finite-set plan's, seed by seed: "
                f"{verdict} ({check['checked']} checked)"
            ),
            soft_wrap=True,
        )
    if out is not None:
        out_console.print(
            escape(
                f"ranges over seeds and every row: {out / 'compare.md'}; "
                f"plots: {out}/compare-*.png"
            ),
            soft_wrap=True,
        )

"""``ocformer policy-table``: solve every quantized measure of a tiny configuration
and save the closed-loop policy, for ``ocformer train --policy-table`` to look up.

    ocformer policy-table --data order --codes 2 --atoms 4 --out runs/order.table
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ocformer.cli import app, fail
from ocformer.cli.options import (
    ActionCost,
    Codebook,
    CodebookFile,
    Config,
    Embedding,
    Entries,
    Family,
    GridAsForTrain,
    JsonFigures,
    Layers,
    NSequences,
    Ridge,
    Scale,
    Seed,
    Space,
    Step,
    TestFraction,
    check_table_out,
    model_flags,
    read_config,
)
from ocformer.cli.terminal import CountProgress, print_figures
from ocformer.config import TrainConfig, merge
from ocformer.errors import OcformerError


@app.command("policy-table")
def policy_table_command(
    data: Annotated[
        str | None,
        typer.Option(help="A classification dataset: order, digits or an .npz path."),
    ] = None,
    n_sequences: NSequences = None,
    layers: Layers = None,
    cost: Annotated[
        str | None, typer.Option(help="mse, or error (0-1). [default: mse]")
    ] = None,
    codes: Annotated[
        int | None,
        typer.Option(help="State codewords K (the space grows as K^n_tokens)."),
    ] = None,
    codebook: Codebook = None,
    atoms: Annotated[
        int | None,
        typer.Option(help="N: the table covers every measure of N atoms. [required]"),
    ] = None,
    dim: Annotated[int | None, typer.Option(help="Token dimension d.")] = None,
    embedding: Embedding = None,
    space: Space = None,
    family: Family = None,
    grid: GridAsForTrain = None,
    entries: Entries = None,
    scale: Scale = None,
    codebook_file: CodebookFile = None,
    step: Step = None,
    ridge: Ridge = None,
    action_cost: ActionCost = None,
    test_fraction: TestFraction = None,
    seed: Seed = None,
    config: Config = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the table to this file. [required]")
    ] = None,
    as_json: JsonFigures = False,
) -> None:
    """Solve every quantized measure of a tiny configuration and save the policy.

    The table holds the optimal action of every measure of N atoms at every layer,
    with the embedding, codebook and actions that quantize new data the same way;
    ``ocformer train --policy-table FILE --data ...`` then trains by lookup:

        ocformer policy-table --data order --codes 2 --atoms 4 --grid angle=0 \\
            --grid temperature=1 --out runs/order.table
    """
    import time

    from ocformer.data import load_dataset
    from ocformer.policy import build_policy_table, save_policy_table

    started = time.perf_counter()
    try:
        check_table_out(out)
        flags = model_flags(
            layers=layers,
            cost=cost,
            codes=codes,
            codebook=codebook,
            atoms=atoms,
            dim=dim,
            embedding=embedding,
            space=space,
            family=family,
            grid=grid,
            entries=entries,
            scale=scale,
            codebook_file=codebook_file,
            step=step,
            ridge=ridge,
            action_cost=action_cost,
            test_fraction=test_fraction,
            seed=seed,
        )
        base, _ = read_config(config)
        settings = TrainConfig.from_dict(merge(base, flags), str(config or "flags"))
        dataset = load_dataset(
            data or "order", seed=settings.seed, n_sequences=n_sequences
        )
        with CountProgress("terminal costs") as progress:
            table = build_policy_table(dataset, settings, progress=progress)
    except OcformerError as error:
        fail(error)

    plan, value = table.rollout(table.problem.initial)
    figures = {
        "data": dataset.name,
        "layers": table.n_layers,
        "actions": len(table.actions),
        **table.describe(),
        "training_value": value,
        "training_plan": list(plan),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "path": str(out),
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_policy_table(table, out)
    except OSError as error:
        fail(
            OcformerError(
                f"cannot write `--out` {str(out)!r}: {error}; pass a writable file "
                "path."
            )
        )
    if as_json:
        typer.echo(json.dumps(figures, indent=1))
        return
    print_figures(
        f"ocformer policy-table: {dataset.name}",
        ((name.replace("_", " "), _shown(figure)) for name, figure in figures.items()),
    )


def _shown(figure: object) -> str:
    """A figure as the summary table shows it: lists spaced, floats to 6 digits."""
    if isinstance(figure, list):
        return " ".join(map(str, figure))
    if isinstance(figure, float):
        return f"{figure:.6g}"
    return str(figure)

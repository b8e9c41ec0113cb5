"""``ocformer predict``: evaluate a saved model on a split of a dataset.

    ocformer predict --model runs/digits --data digits --split test --json

When ``--data`` names the training dataset, it is rebuilt as in training (subset
and split).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ocformer.cli import app, fail
from ocformer.cli.options import JsonFigures
from ocformer.cli.terminal import print_figures
from ocformer.errors import OcformerError


@app.command()
def predict(
    model: Annotated[
        Path, typer.Option(help="Directory written by train --out (or its model/).")
    ],
    data: Annotated[str, typer.Option(help="digits, sunspots, order, or a .npz path.")],
    split: Annotated[str, typer.Option(help="test, train or all.")] = "test",
    as_json: JsonFigures = False,
) -> None:
    """Evaluate a saved model on a dataset split reproduced from training."""
    from ocformer.data import load_dataset, same_source, split_dataset
    from ocformer.model import align_dataset, load_model
    from ocformer.train import evaluate

    try:
        if split not in ("test", "train", "all"):
            raise OcformerError(
                f"`--split` must be test, train or all, got {split!r}; use test for "
                "the held-out sequences."
            )
        loaded = load_model(model)
        spec = loaded.config["data"]
        source = spec["source"] or {}
        # The same dataset is rebuilt as in training (subset and split); another one
        # is used whole before the split.
        if same_source(data, source):
            dataset = load_dataset(
                data, seed=source["seed"], n_sequences=source["n_sequences"]
            )
        else:
            dataset = load_dataset(data)
        dataset = align_dataset(loaded, dataset)
        if split != "all":
            parts = split_dataset(
                dataset, test_fraction=spec["test_fraction"], seed=spec["split_seed"]
            )
            dataset = parts.test if split == "test" else parts.train
        figures = evaluate(loaded, dataset, loaded.config["cost"])
    except OcformerError as error:
        fail(error)

    result = {"data": data, "split": split, "n": dataset.n_sequences, **figures}
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    print_figures(
        f"ocformer predict: {data} ({split})",
        (
            (name, f"{value:.6g}" if isinstance(value, float) else str(value))
            for name, value in result.items()
        ),
    )

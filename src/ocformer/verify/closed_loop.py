"""Claim 2: the closed-loop policy rolled out is the data-dependent open-loop plan.

Full-space DP (``ocformer.policy``) solves a tiny configuration for *every* quantized
measure and stores the closed-loop policy as a table. Three comparisons follow, each
between the table and the forward DP (``solver.solve``) that sees one measure only:

- the training measure: ``PolicyTable.rollout`` against the forward DP plan;
- measures drawn at random from the whole space (``PolicyTable.measure``): the table
  is right from any start, not only where it was built;
- new datasets (the order task with other seeds): the table is saved, loaded back
  and "trains" by lookup (``train.train(..., policy_table=...)``, the path of
  ``ocformer train --policy-table FILE``); the same data, quantized with the same
  embedding, codebook and actions, are solved from scratch.

Plans must be equal and values equal to the bit. Digits cannot be used here: its 8
tokens of 10 classes make 2^8 x 10 = 2560 sequence types with only two codewords, and
3.3 million measures of two atoms, beyond a full-space table; this claim therefore
runs on the order task whatever ``--data`` says.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ocformer.config import ActionConfig, QuantizerConfig, TrainConfig
from ocformer.data import load_dataset, split_dataset
from ocformer.embedding import EmbeddingConfig
from ocformer.policy import build_policy_table, load_policy_table, save_policy_table
from ocformer.solver import solve
from ocformer.train import build_problem, train
from ocformer.verify.claim import ClaimResult, Settings

NUMBER = 2
CRITERION = (
    "Every comparison (training measure, sampled measures, new datasets by lookup): "
    "the table's plan equals the forward DP plan and its value equals the DP value "
    "exactly (float64 ==)."
)
# Nine actions (with the identity): two temperatures, two positional weights, two
# value gains; one token feature, so no rotation.
GRID = {
    "temperature": (0.0, 2.0),
    "position": (-8.0, 8.0),
    "value_gain": (-1.0, 1.0),
    "angle": (0.0,),
    "mlp_gain": (1.0,),
}


@dataclass(frozen=True)
class Sizes:
    """The tables and the comparisons.

    Attributes:
        atoms: N, the atoms of every measure of the space.
        n_layers: the horizon.
        sampled: measures of the space drawn at random per table.
        datasets: new datasets trained by lookup per table.
        sequences: sequences per dataset.
    """

    atoms: int
    n_layers: int
    sampled: int
    datasets: int
    sequences: int


QUICK = Sizes(atoms=3, n_layers=2, sampled=20, datasets=4, sequences=64)
FULL = Sizes(atoms=4, n_layers=3, sampled=200, datasets=16, sequences=64)
COSTS = ("mse", "error")


def table_config(cost: str, sizes: Sizes, seed: int) -> TrainConfig:
    """The tiny configuration: one token feature, two codewords, N atoms."""
    return TrainConfig(
        n_layers=sizes.n_layers,
        cost=cost,
        seed=seed,
        embedding=EmbeddingConfig(dim=1),
        quantizer=QuantizerConfig(codes=2, atoms=sizes.atoms),
        actions=ActionConfig(grid=GRID),
    )


def check(settings: Settings) -> ClaimResult:
    """Build the tables and compare them with the forward DP."""
    sizes = QUICK if settings.quick else FULL
    rng = settings.rng(NUMBER)
    rows: list[dict[str, Any]] = []
    tables = []
    for index, cost in enumerate(COSTS):
        seed = settings.seed_for(NUMBER, index)
        config = table_config(cost, sizes, seed)
        dataset = load_dataset("order", seed=seed, n_sequences=sizes.sequences)
        table = build_policy_table(dataset, config)
        tables.append(
            {
                "cost": cost,
                "measures": table.space.size,
                "sequence_types": table.space.n_types,
                "actions": table.problem.n_actions,
                "layers": sizes.n_layers,
                "atoms": sizes.atoms,
                "codes": table.codebook.size,
            }
        )

        rollout = table.rollout(table.problem.initial)
        rows.append(compare(cost, "training", 0, rollout, solve(table.problem)))
        for measure_index in sampled_indices(table.space.size, sizes.sampled, rng):
            measure = table.measure(measure_index)
            forward = solve(table.problem_for(measure))
            rows.append(
                compare(cost, "sampled", measure_index, table.rollout(measure), forward)
            )
        rows.extend(new_datasets(table, config, cost, sizes, settings, index))

    mismatches = [row for row in rows if not row["equal"]]
    differences = [abs(row["table_value"] - row["dp_value"]) for row in rows]
    figures = {
        "comparisons": len(rows),
        "by_kind": {
            kind: sum(row["kind"] == kind for row in rows)
            for kind in ("training", "sampled", "new_data")
        },
        "mismatches": len(mismatches),
        "max_abs_difference": max(differences),
        "tables": tables,
        "rows": rows,
    }
    notes = []
    if settings.data != "order":
        notes.append(
            f"runs on the order task, not {settings.data}: a full-space table of "
            f"{settings.data} is far too large"
        )
    return ClaimResult(
        number=NUMBER,
        name="closed_loop",
        title="Closed loop = open loop",
        checked=(
            f"Two full-space policy tables of the order task (mse and 0-1 error; "
            f"{sizes.n_layers} layers, 9 actions, 2 codewords, {sizes.atoms} atoms: "
            f"{tables[0]['measures']} measures each). Per table: the training "
            f"measure, {sizes.sampled} random measures of the space, and "
            f"{sizes.datasets} new datasets trained by lookup from the saved and "
            "reloaded table, each against the forward DP."
        ),
        criterion=CRITERION,
        passed=not mismatches,
        figures=figures,
        summary=(
            f"{len(rows)} comparisons, {len(mismatches)} mismatches, max |difference| "
            f"{figures['max_abs_difference']:.3g}"
        ),
        notes=tuple(notes),
    )


def compare(cost: str, kind: str, index: int, rollout, forward) -> dict[str, Any]:
    """One comparison of a table's (plan, value) with the forward DP's."""
    plan, value = tuple(rollout[0]), float(rollout[1])
    return {
        "cost": cost,
        "kind": kind,
        "index": int(index),
        "table_plan": list(plan),
        "dp_plan": list(forward.plan),
        "table_value": value,
        "dp_value": forward.value,
        "equal": plan == forward.plan and value == forward.value,
    }


def sampled_indices(size: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` distinct measure indices of a space of ``size`` (all if fewer)."""
    chosen = rng.choice(size, size=min(count, size), replace=False)
    return sorted(int(index) for index in chosen)


def new_datasets(
    table,
    config: TrainConfig,
    cost: str,
    sizes: Sizes,
    settings: Settings,
    table_index: int,
) -> list[dict[str, Any]]:
    """Train on new datasets by lookup in the saved and reloaded table, and solve
    the same quantized problems from scratch."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "policy.table"
        save_policy_table(table, path)
        loaded = load_policy_table(path)
        for index in range(sizes.datasets):
            seed = settings.seed_for(NUMBER, table_index, 1, index)
            dataset = load_dataset("order", seed=seed, n_sequences=sizes.sequences)
            result = train(dataset, policy_table=loaded)
            split = split_dataset(
                dataset, test_fraction=config.test_fraction, seed=config.seed
            )
            problem = build_problem(
                split.train,
                config,
                embedding=loaded.embedding,
                codebook=loaded.codebook,
                actions=loaded.actions,
            ).problem
            scratch = solve(problem)
            lookup = (result.solution.plan, result.solution.value)
            rows.append(compare(cost, "new_data", seed, lookup, scratch))
    return rows


def draw(result: ClaimResult, figure: Figure) -> None:
    """Table value against forward-DP value, per kind of comparison."""
    rows = result.figures["rows"]
    axes = figure.add_subplot()
    values = [row["dp_value"] for row in rows] + [row["table_value"] for row in rows]
    low, high = min(values), max(values)
    axes.plot([low, high], [low, high], color="#999999", linewidth=1, label="equal")
    for kind, marker in (("training", "D"), ("sampled", "o"), ("new_data", "s")):
        chosen = [row for row in rows if row["kind"] == kind]
        axes.plot(
            [row["dp_value"] for row in chosen],
            [row["table_value"] for row in chosen],
            marker,
            alpha=0.7,
            label=f"{kind.replace('_', ' ')} ({len(chosen)})",
        )
    figures = result.figures
    axes.set_xlabel("forward DP value (one measure)")
    axes.set_ylabel("policy table rollout value")
    axes.set_title(
        f"{figures['comparisons']} comparisons, {figures['mismatches']} mismatches, "
        f"max |difference| {figures['max_abs_difference']:.3g}"
    )
    axes.legend(loc="best")

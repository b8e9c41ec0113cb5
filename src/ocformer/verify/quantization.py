"""Claim 3: the quantized-optimal plan is near-optimal as the radii shrink.

The three quantizers are refined step by step, one at a time and then all together:

- state: a uniform token codebook with more levels per axis (its covering radius of X
  shrinks as ``R sqrt(d) / (levels - 1)``; a k-means codebook fitted to the embedded
  data does not cover the points the layers move tokens to, so it is not used here);
- measure: a coreset of more atoms (``--atoms``), up to the whole training measure;
- actions: a finer grid over the *same* parameter box (k values per parameter,
  evenly spaced between the default grid's bounds).

For each level the DP plan of the quantized model is turned into the true model
(``train.build_model``, head refitted on the unquantized trajectory) and its training
cost measured (``train.evaluate``). The reference is the best cost found for the
continuous problem over the same box: Adam restarts over the five layer-family
parameters inside the box (``baselines.fit_adam(space="family")``), and every
quantized plan evaluated (each is a point of the box too). Gaps are measured to that
best, relative to the improvement it makes over the identity (no layers).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ocformer.actions import DEFAULT_GRID
from ocformer.baselines import fit_adam
from ocformer.config import ActionConfig, QuantizerConfig, TrainConfig
from ocformer.data import Dataset, load_dataset, split_dataset
from ocformer.embedding import EmbeddingConfig
from ocformer.solver import solve
from ocformer.train import build_model, build_problem, evaluate
from ocformer.verify.claim import ClaimResult, Settings
from ocformer.verify.rates import log_slope

NUMBER = 3
# The finest joint level must close all but this share of the gap between the
# identity (no layers) and the best cost found.
MAX_RELATIVE_GAP = 0.10
CRITERION = (
    "With all three quantizers at their finest: (a) relative gap (J(plan) - J_best) "
    f"/ (J_identity - J_best) <= {MAX_RELATIVE_GAP:g}, and (b) the gap is no larger "
    "than at the coarsest joint level."
)
LADDERS = ("state", "measure", "action", "joint")


@dataclass(frozen=True)
class Level:
    """One setting of the three quantizers.

    Attributes:
        levels: uniform codebook levels per axis.
        atoms: coreset atoms, or None for the whole training measure.
        grid: values per grid parameter (the box stays the default grid's).
    """

    levels: int
    atoms: int | None
    grid: int


@dataclass(frozen=True)
class Sizes:
    """The ladders and the reference fits.

    Attributes:
        sequences: sequences drawn before the split.
        n_layers: the horizon.
        ladders: the levels of each ladder, coarsest first.
        restarts: Adam restarts (seeds) of the reference.
        steps: Adam steps per restart.
    """

    sequences: int
    n_layers: int
    ladders: dict[str, tuple[Level, ...]]
    restarts: int
    steps: int


QUICK = Sizes(
    sequences=512,
    n_layers=1,
    ladders={
        "state": (Level(3, None, 2), Level(5, None, 2), Level(9, None, 2)),
        "measure": (Level(9, 8, 2), Level(9, 32, 2), Level(9, None, 2)),
        "action": (Level(9, None, 2), Level(9, None, 3), Level(9, None, 4)),
        "joint": (Level(3, 8, 2), Level(5, 32, 3), Level(9, None, 4)),
    },
    restarts=2,
    steps=100,
)
FULL = Sizes(
    sequences=512,
    n_layers=2,
    ladders={
        "state": tuple(Level(n, None, 2) for n in (3, 5, 9, 17, 33)),
        "measure": tuple(Level(9, a, 2) for a in (8, 16, 32, 64, 128, None)),
        "action": (Level(9, None, 2), Level(9, None, 3)),
        "joint": (
            Level(3, 8, 2),
            Level(5, 32, 2),
            Level(9, 128, 3),
            Level(17, None, 3),
        ),
    },
    restarts=6,
    steps=300,
)


def level_config(level: Level, n_layers: int, seed: int) -> TrainConfig:
    """The configuration of one level: 2-d tokens, uniform codebook, grid box."""
    grid = {
        name: tuple(float(v) for v in np.linspace(min(values), max(values), level.grid))
        for name, values in DEFAULT_GRID.items()
    }
    return TrainConfig(
        n_layers=n_layers,
        seed=seed,
        embedding=EmbeddingConfig(dim=2),
        quantizer=QuantizerConfig(
            codebook="uniform", codes=level.levels, atoms=level.atoms
        ),
        actions=ActionConfig(grid=grid),
    )


def check(settings: Settings) -> ClaimResult:
    """Refine the quantizers, cost each plan on the true model, compare to the best."""
    sizes = QUICK if settings.quick else FULL
    seed = settings.seed_for(NUMBER, 0)
    dataset = load_dataset(settings.data, seed=seed, n_sequences=sizes.sequences)
    train = split_dataset(dataset, seed=seed).train

    ladders: dict[str, list[dict[str, Any]]] = {}
    cache: dict[Level, dict[str, Any]] = {}
    for name in LADDERS:
        ladders[name] = []
        for level in sizes.ladders[name]:
            if level not in cache:
                cache[level] = solve_level(train, level, sizes.n_layers, seed)
            ladders[name].append(cache[level])

    # The reference fits live in the box of any level's grid: the same for all.
    config = level_config(Level(3, None, 2), sizes.n_layers, seed)
    embedding = build_problem(train, config).embedding
    identity = true_cost(train, embedding, [], config)
    adam = []
    for restart in range(sizes.restarts):
        fit = fit_adam(
            train,
            embedding,
            config,
            seed=settings.seed_for(NUMBER, 1, restart),
            steps=sizes.steps,
            space="family",
        )
        adam.append(true_cost(train, embedding, list(fit.layers), config))

    best = min(adam + [row["true_cost"] for row in cache.values()])
    figures, notes = summarize(ladders, best=best, identity=identity)
    figures.update(
        adam_costs=adam,
        adam_best=min(adam),
        adam_steps=sizes.steps,
        sequences=train.n_sequences,
        layers=sizes.n_layers,
    )
    return ClaimResult(
        number=NUMBER,
        name="quantization",
        title="Quantized-optimal is near-optimal",
        checked=(
            f"The {train.n_sequences}-sequence {settings.data} training set, "
            f"{sizes.n_layers}-layer problem: uniform codebook levels, coreset atoms "
            "and action grid refined one at a time and jointly; each DP plan costed "
            f"on the true model; reference: {sizes.restarts} Adam restarts "
            f"({sizes.steps} steps) over the grid's parameter box and every plan "
            "evaluated."
        ),
        criterion=CRITERION,
        passed=figures.pop("passed"),
        figures=figures,
        summary=(
            f"relative gap {figures['coarsest_relative_gap']:.3g} (coarsest) -> "
            f"{figures['finest_relative_gap']:.3g} (finest); best found "
            f"{best:.4g}, Adam {min(adam):.4g}, no layers {identity:.4g}"
        ),
        notes=tuple(notes),
    )


def solve_level(
    train: Dataset, level: Level, n_layers: int, seed: int
) -> dict[str, Any]:
    """Solve one level's quantized problem and cost its plan on the true model."""
    config = level_config(level, n_layers, seed)
    setup = build_problem(train, config)
    problem = setup.problem
    solution = solve(problem)
    layers = [problem.actions.weights.select([a]) for a in solution.plan]
    return {
        "levels": level.levels,
        "codes": problem.codebook.size,
        "atoms": problem.initial.n_atoms,
        "atoms_asked": level.atoms,
        "grid": level.grid,
        "actions": problem.n_actions,
        "state_radius": problem.codebook.radius,
        "measure_radius": setup.coreset_distance,
        "action_radius": problem.actions.covering_radius,
        "quantized_value": solution.value,
        "true_cost": true_cost(train, setup.embedding, layers, config),
        "plan": [problem.actions.describe(a) for a in solution.plan],
    }


def true_cost(train: Dataset, embedding, layers, config: TrainConfig) -> float:
    """Training cost of the true model with these layers and a refitted head."""
    model = build_model(train, embedding, layers, config, None)
    return evaluate(model, train, config.cost)["loss"]


def summarize(
    ladders: dict[str, list[dict[str, Any]]], *, best: float, identity: float
) -> tuple[dict[str, Any], list[str]]:
    """Gaps, fitted rates and the criterion.

    Args:
        ladders: per ladder name, the level records (``true_cost`` and the three
            radii), coarsest first.
        best: the best true cost found, J_best.
        identity: the true cost with no layers, J_identity.

    Returns:
        The figures (``passed`` included) and the caveats to print with them.
    """
    notes = []
    improvement = identity - best
    if improvement <= 0:
        notes.append(
            "no layer improves on the identity here: relative gaps are 0 where the "
            "plan costs the best, infinite otherwise"
        )
    rates = {}
    for name, rows in ladders.items():
        for row in rows:
            row["gap"] = row["true_cost"] - best
            row["relative_gap"] = relative(row["gap"], improvement)
        if name == "joint":
            continue
        radius = f"{name}_radius"
        rates[name] = log_slope(
            [row[radius] for row in rows], [row["gap"] for row in rows]
        )
        gaps = [row["gap"] for row in rows]
        if any(gap == 0 for gap in gaps):
            notes.append(
                f"{name}: the gap reaches 0 (a plan as good as the best found); "
                "those levels are left out of its rate"
            )
        if any(later > earlier for earlier, later in itertools.pairwise(gaps)):
            notes.append(
                f"{name}: the gap is not monotone in the radius; its rate is a "
                "least-squares trend, not a bound"
            )
        usable = sum(row["gap"] > 0 and row[radius] > 0 for row in rows)
        if rates[name] is None:
            notes.append(f"{name}: no rate (fewer than two positive gaps)")
        elif usable == 2:
            notes.append(f"{name}: the rate is the slope between two levels only")

    joint = ladders["joint"]
    finest, coarsest = joint[-1], joint[0]
    passed = (
        finest["relative_gap"] <= MAX_RELATIVE_GAP and finest["gap"] <= coarsest["gap"]
    )
    figures = {
        "passed": bool(passed),
        "best_found": best,
        "identity_cost": identity,
        "finest_relative_gap": finest["relative_gap"],
        "coarsest_relative_gap": coarsest["relative_gap"],
        "rates": rates,
        "ladders": ladders,
    }
    return figures, notes


def relative(gap: float, improvement: float) -> float:
    """``gap / improvement``, with 0 / 0 = 0 and a positive gap over no improvement
    infinite."""
    if improvement > 0:
        return gap / improvement
    return 0.0 if gap <= 0 else math.inf


def draw(result: ClaimResult, figure: Figure) -> None:
    """True cost of the quantized plan against each radius, and the joint ladder."""
    figures = result.figures
    ladders = figures["ladders"]
    panels = figure.subplots(2, 2).ravel()
    for axes, name in zip(panels[:3], ("state", "measure", "action"), strict=True):
        # Sorted by radius: a coreset of more atoms is not always closer in W1.
        rows = sorted(ladders[name], key=lambda row: row[f"{name}_radius"])
        radii = [row[f"{name}_radius"] for row in rows]
        axes.plot(radii, [row["true_cost"] for row in rows], "o-", label="DP plan")
        for row, radius in zip(rows, radii, strict=True):
            label = {
                "state": f"{row['codes']}c",
                "measure": f"{row['atoms']}a",
                "action": f"{row['actions']}L",
            }[name]
            axes.annotate(
                label,
                (radius, row["true_cost"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="x-small",
            )
        axes.axhline(
            figures["best_found"], color="#b2182b", linestyle="--", label="best found"
        )
        axes.axhline(
            figures["adam_best"], color="#4d9221", linestyle=":", label="Adam (box)"
        )
        rate = figures["rates"][name]
        fitted = "none" if rate is None else f"{rate:.2f}"
        axes.set_title(f"{name} (log-log rate {fitted})", fontsize="medium")
        axes.set_xlabel(f"{name} radius")
        axes.set_ylabel("true training cost")
        axes.invert_xaxis()
    panels[0].legend(loc="best", fontsize="small")

    joint = ladders["joint"]
    axes = panels[3]
    steps = np.arange(len(joint))
    axes.plot(steps, [row["true_cost"] for row in joint], "D-", label="DP plan")
    axes.axhline(figures["best_found"], color="#b2182b", linestyle="--")
    axes.axhline(
        figures["identity_cost"], color="#999999", linestyle=":", label="no layers"
    )
    labels = [f"{row['codes']}c/{row['atoms']}a/{row['actions']}L" for row in joint]
    axes.set_xticks(steps, labels, fontsize="small")
    axes.set_title("all three refined (codes/atoms/actions)", fontsize="medium")
    axes.set_ylabel("true training cost")
    axes.legend(loc="best", fontsize="small")
